"""The job catalogue: what loads, what is refused and why, and how a request's parameters are resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_shared.catalogue import Catalogue, CatalogueError, InvalidParameters, UnknownJob

REPO_CATALOGUE = Path(__file__).resolve().parents[2] / "infra" / "catalogue.toml"

MINIMAL = """
default = "one"
[jobs.one]
title = "One"
description = "The one job."
databricks_job_id = 7
completion = "poll"
"""


def load(tmp_path: Path, text: str) -> Catalogue:
    path = tmp_path / "catalogue.toml"
    path.write_text(text)
    return Catalogue.load(path)


def test_the_repositorys_catalogue_loads_with_its_default_first() -> None:
    catalogue = Catalogue.load(REPO_CATALOGUE)
    assert catalogue.job(None).name == catalogue.default == "csv-statistics"
    assert {job.completion.value for job in catalogue.jobs.values()} == {"callback", "notification", "poll"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ('default = "two"', "default 'two' is not one of the pipelines"),
        ("databricks_job_name = 'also'", "exactly one"),
        ('completion = "email"', "jobs.one.completion"),
        ("default_timeout_seconds = 100\nmax_timeout_seconds = 10", "exceeds max_timeout_seconds"),
        ('start_scopes = ["read"]', "jobs.one.start_scopes"),
        ("colour = 'blue'", "jobs.one.colour"),
        ('[jobs.one.parameters.callback_url]\ndescription = "x"\ndefault = ""', "reserved for the pipeline"),
        ('[jobs.one.parameters.p]\ndescription = "x"', "either required or has a default"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "a"\npattern = "["', "not a regular expression"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "z"\nallowed = ["a", "b"]', "is itself invalid"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "0"\ninteger = {minimum = 1, maximum = 9}', "itself"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "5"\ninteger = {minimum = 9, maximum = 1}', "exceeds"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = ""\npath = {prefixes = ["data/"]}', "prefixes"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = ""\npath = {prefixes = ["/data"]}', "prefixes"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = ""\nurl = {schemes = ["ftp"]}', "schemes"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = ""\nurl = {hosts = ["Ex ample"]}', "hosts"),
        (
            '[jobs.one.parameters.p]\ndescription = "x"\ndefault = "1"\nallowed = ["1"]\n'
            "integer = {minimum = 1, maximum = 2}",
            "neither a URL",
        ),
    ],
)
def test_a_bad_catalogue_is_refused_naming_the_field(tmp_path: Path, change: str, named: str) -> None:
    if change.startswith(("default =", "completion =")):
        text = MINIMAL.replace(
            change.split(" =")[0] + ' = "' + ("one" if change.startswith("default") else "poll") + '"', change
        )
    else:
        text = MINIMAL + change
    with pytest.raises(CatalogueError) as caught:
        load(tmp_path, text)
    assert named in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_file_that_is_not_toml_or_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="not TOML"):
        load(tmp_path, "default = ")
    with pytest.raises(CatalogueError, match="cannot be read"):
        Catalogue.load(tmp_path / "missing.toml")


def test_parameters_are_resolved_with_defaults_and_every_problem_named() -> None:
    job = Catalogue.load(REPO_CATALOGUE).job("word-frequencies")
    assert job.resolve({"text": "a b a"}) == {"text": "a b a", "top": "10"}

    with pytest.raises(InvalidParameters) as caught:
        job.resolve({"top": "0", "colour": "blue"})

    problems = {p.name: p.problem for p in caught.value.problems}
    assert problems == {
        "colour": "is not a parameter of this job",
        "text": "is required",
        "top": "is 0; it must be from 1 to 100",
    }
    assert caught.value.problems[0].declared == ["text", "top"]


def test_allowed_values_and_timeouts() -> None:
    catalogue = Catalogue.load(REPO_CATALOGUE)
    refresh = catalogue.job("nightly-refresh")
    with pytest.raises(InvalidParameters, match="must be one of 'sales', 'inventory', 'customers'"):
        refresh.resolve({"table": "payroll"})
    assert refresh.timeout(None) == refresh.default_timeout_seconds
    with pytest.raises(InvalidParameters, match=f"at most {refresh.max_timeout_seconds}"):
        refresh.timeout(refresh.max_timeout_seconds + 1)
    with pytest.raises(UnknownJob, match="known: csv-statistics, customer-report"):
        catalogue.job("nope")


#: The rule of csv-statistics' source in the repository's catalogue.
SOURCE = Catalogue.load(REPO_CATALOGUE).job("csv-statistics").parameters["source"]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("/etc/passwd", "must be a path under /Workspace/Shared/pipelines/"),
        ("file:///etc/passwd", "is a URL of scheme 'file'; the schemes allowed are https"),
        ("http://127.0.0.1:8080/emulator/runs?pipeline_id=X", "is a URL of scheme 'http'"),
        ("http://169.254.169.254/latest/meta-data/", "is a URL of scheme 'http'"),
        ("https://example.com/data.csv", "names host 'example.com', which is not an allowed host (none listed)"),
        ("https://169.254.169.254/x.csv", "names host '169.254.169.254', which is not an allowed host"),
        ("https://user@example.com/data.csv", "credentials before its host"),
        ("dbfs:/FileStore/x.csv", "is a URL of scheme 'dbfs'"),
        ("/Workspace/Shared/other/x.csv", "must be a path under /Workspace/Shared/pipelines/"),
        ("/Workspace/Shared/pipelinesX/x.csv", "must be a path under /Workspace/Shared/pipelines/"),
        ("/Workspace/Shared/pipelines/../../../etc/passwd", "without '.' or '..' segments"),
        ("/Workspace/Shared/pipelines/./x.csv", "without '.' or '..' segments"),
        ("/Workspace/Shared/pipelines//x.csv", "without empty segments"),
        ("/Workspace/Shared/pipelines/", "without empty segments"),
        ("/Workspace/Shared/pipelines/x.csv\nrm -rf", "holds a control character"),
        ("samples/customers.csv", "must be a path under /Workspace/Shared/pipelines/"),
    ],
)
def test_a_source_outside_the_rule_is_refused_naming_the_rule(value: str, rule: str) -> None:
    assert rule in (SOURCE.problem_with(value) or "allowed")


@pytest.mark.parametrize(
    "value", ["", "/Workspace/Shared/pipelines/samples/customers.csv", "/Workspace/Shared/pipelines/a b.csv"]
)
def test_a_source_inside_the_rule_or_empty_is_allowed(value: str) -> None:
    assert SOURCE.problem_with(value) is None


def test_a_listed_host_and_scheme_are_allowed_and_nothing_else(tmp_path: Path) -> None:
    catalogue = load(
        tmp_path,
        MINIMAL
        + '[jobs.one.parameters.src]\ndescription = "x"\nrequired = true\n'
        + 'url = {schemes = ["https", "http"], hosts = ["data.example.com"]}\n',
    )
    source = catalogue.job("one").parameters["src"]
    assert source.problem_with("https://data.example.com/a.csv") is None
    assert source.problem_with("http://DATA.example.com./a.csv") is None, "host names compare as DNS does"
    assert "not an allowed host" in (source.problem_with("https://data.example.com.evil.io/a.csv") or "")
    assert "must be an absolute URL" in (source.problem_with("/etc/passwd") or "")
    assert "must be an absolute URL" in (source.problem_with("") or ""), "allow_empty is off by default"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1", None),
        ("100", None),
        ("0", "is 0; it must be from 1 to 100"),
        ("101", "is 101; it must be from 1 to 100"),
        ("-5", "is -5; it must be from 1 to 100"),
        ("07", "must be a whole number from 1 to 100"),
        ("1e2", "must be a whole number from 1 to 100"),
        (" 5", "must be a whole number from 1 to 100"),
        ("9" * 40, "must be a whole number from 1 to 100"),
    ],
)
def test_an_integer_parameter_takes_whole_numbers_in_its_range(value: str, problem: str | None) -> None:
    top = Catalogue.load(REPO_CATALOGUE).job("word-frequencies").parameters["top"]
    assert top.problem_with(value) == problem


def test_the_notebooks_own_source_rule_is_the_catalogues() -> None:
    """The notebook enforces its copy where it reads (notebooks/pipeline_sources.json); the two never drift."""
    policy = json.loads((REPO_CATALOGUE.parents[1] / "notebooks" / "pipeline_sources.json").read_text())
    assert SOURCE.url is not None and SOURCE.path is not None
    assert tuple(policy["schemes"]) == SOURCE.url.schemes
    assert tuple(policy["hosts"]) == SOURCE.url.hosts
    assert tuple(policy["path_prefixes"]) == SOURCE.path.prefixes

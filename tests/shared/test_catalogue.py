"""The job catalogue: what loads, what is refused and why, and how a request's parameters are resolved."""

from __future__ import annotations

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
        ('default = "two"', "default 'two' is not one of the jobs"),
        ("databricks_job_name = 'also'", "exactly one"),
        ('completion = "email"', "jobs.one.completion"),
        ("default_timeout_seconds = 100\nmax_timeout_seconds = 10", "exceeds max_timeout_seconds"),
        ('start_scopes = ["read"]', "jobs.one.start_scopes"),
        ("colour = 'blue'", "jobs.one.colour"),
        ('[jobs.one.parameters.callback_url]\ndescription = "x"\ndefault = ""', "reserved for the pipeline"),
        ('[jobs.one.parameters.p]\ndescription = "x"', "either required or has a default"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "a"\npattern = "["', "not a regular expression"),
        ('[jobs.one.parameters.p]\ndescription = "x"\ndefault = "z"\nallowed = ["a", "b"]', "is itself invalid"),
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
        "top": "must match ^(100|[1-9][0-9]?)$",
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

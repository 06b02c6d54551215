"""Every notebook the bundle names, run end to end as a job's notebook task would run it.

Each run is the emulator's: the harness in its own isolated interpreter with
the standard library only (``python -I -S``), the notebook's folder on its
path, widgets from the job's parameters. Callbacks reach a loopback receiver
and are checked with the gateway's own verification code.
"""

from __future__ import annotations

import ast
import json
import re
import sys

import pytest
import yaml

from pipeline_shared.signing import verify_callback
from tests.support.emulator_process import NOTEBOOKS, REPO_ROOT
from tests.support.emulator_runs import Pipeline, run_notebook

BUNDLE = REPO_ROOT / "infra" / "databricks" / "databricks.yml"
PIPELINE = NOTEBOOKS / "pipeline.py"
WORD_FREQUENCIES = NOTEBOOKS / "word_frequencies.py"
NIGHTLY_REFRESH = NOTEBOOKS / "nightly_refresh.py"
CUSTOMER_EXTRACT = NOTEBOOKS / "customer_extract.py"
CUSTOMER_PUBLISH = NOTEBOOKS / "customer_publish.py"
#: What a notebook may import besides the standard library: the helper synced beside it.
NOTEBOOK_MODULES = {"pipeline_callback", "pipeline_sources", "csv_summary", "onboarding_tables"}


@pytest.fixture
def pipeline(receiver, pipeline_id) -> Pipeline:
    return Pipeline(pipeline_id, f"{receiver.url}/callbacks/databricks")


def callback_of(receiver, pipeline: Pipeline) -> dict:
    """The run's one callback, once its signature verifies under the pipeline's key."""
    [callback] = receiver.wait_for(1)
    assert len(receiver.requests) == 1 and callback.path == "/callbacks/databricks"
    verify_callback(pipeline.key, callback.body, callback.headers)
    return json.loads(callback.body)


def bundle_files() -> list:
    """Every notebook and SQL file a task of the bundle runs, as paths in this repository."""
    jobs = yaml.safe_load(BUNDLE.read_text())["resources"]["jobs"]
    paths = []
    for job in jobs.values():
        for task in job["tasks"]:
            path = (
                task["notebook_task"]["notebook_path"] if "notebook_task" in task else task["sql_task"]["file"]["path"]
            )
            paths.append((BUNDLE.parent / path).resolve())
    return paths


def test_every_file_the_bundle_runs_is_here():
    files = bundle_files()
    assert {path.name for path in files} == {
        "pipeline.py",
        "word_frequencies.py",
        "nightly_refresh.py",
        "customer_extract.py",
        "customer_aggregate.sql",
        "customer_publish.py",
        "onboarding_ingest.py",
        "onboarding_risk_score.py",
        "onboarding_report.py",
    }
    for path in files:
        assert path.is_file(), path
        if path.suffix == ".py":
            assert path.read_text().startswith("# Databricks notebook source\n"), path


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.py")), ids=lambda path: path.name)
def test_notebooks_use_the_standard_library_only(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import has no package to be relative to"
            imported.add(node.module.partition(".")[0])
    assert imported, f"{path.name} imports nothing: is it parsed?"
    assert imported <= set(sys.stdlib_module_names) | NOTEBOOK_MODULES, imported - set(sys.stdlib_module_names)


def test_readme_three_lines_are_the_word_frequencies_notebook():
    readme = (NOTEBOOKS / "README.md").read_text()
    [three_lines] = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert three_lines.count("\n") == 4, "an import, a blank line, a with block and its body"
    assert WORD_FREQUENCIES.read_text().endswith(three_lines)


# -- pipeline.py ------------------------------------------------------------------------------


def source_rule(monkeypatch, tmp_path, **rule):
    """The driver's environment names a rule file (as a cluster's configuration would) for the notebooks run."""
    path = tmp_path / "pipeline_sources.json"
    path.write_text(json.dumps(rule))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(path))


def test_pipeline_reads_its_source_widget_and_calls_back(receiver, pipeline, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    source = tmp_path / "data" / "sales.csv"
    source.write_text("region,units\nnorth,3\nsouth,5\n")
    source_rule(monkeypatch, tmp_path, path_prefixes=[f"{tmp_path}/data/"])

    run = run_notebook(PIPELINE, {**pipeline.inputs, "source": str(source)}, tmp_path / "run")

    assert run.returncode == 0 and run.result["source"] == str(source) and run.result["row_count"] == 2
    payload = callback_of(receiver, pipeline)
    assert payload == {"promise_id": pipeline.promise_id, "status": "success", "result": run.result}
    assert "success callback accepted: HTTP 200 after 1 attempt" in run.stdout


def test_pipeline_refuses_a_loopback_or_local_source_and_reads_nothing(receiver, pipeline, tmp_path):
    # The deployed rule, as a run-now that bypassed the gateway meets it.
    receiver.files["/data/sales.csv"] = b"region\nnorth\n"
    for number, source in enumerate([f"{receiver.url}/data/sales.csv", "/etc/passwd", "file:///etc/passwd"]):
        run = run_notebook(PIPELINE, {**pipeline.inputs, "source": source}, tmp_path / f"run-{number}")

        assert run.returncode == 1 and run.error["type"] == "SourceRefused", run.error
        assert "root:" not in json.dumps(run.error)
    assert receiver.fetched == [], "nothing was fetched"
    reported = [json.loads(r.body) for r in receiver.requests]
    assert [p["error"]["type"] for p in reported] == ["SourceRefused"] * 3, "each run reported its refusal"


def test_pipeline_reads_an_http_source_its_rule_lists(receiver, pipeline, tmp_path, monkeypatch):
    receiver.files["/data/sales.csv"] = b"region,units,price\nnorth,3,2.5\nsouth,,4\nnorth,5,1.5\n"
    source_rule(monkeypatch, tmp_path, schemes=["http"], hosts=["127.0.0.1"], networks=["127.0.0.0/8"])

    run = run_notebook(PIPELINE, {**pipeline.inputs, "source": f"{receiver.url}/data/sales.csv"}, tmp_path)

    region, units, price = run.result["columns"]
    assert run.result["row_count"] == 3
    assert region == {"name": "region", "count": 3, "missing": 0, "type": "text", "distinct": 2}
    assert units == {"name": "units", "count": 2, "missing": 1, "type": "numeric", "min": 3.0, "max": 5.0, "mean": 4.0}
    assert price["mean"] == pytest.approx(8 / 3)
    assert callback_of(receiver, pipeline)["result"] == run.result


def test_pipeline_with_a_missing_source_reports_the_error_and_fails(receiver, pipeline, tmp_path, monkeypatch):
    missing = tmp_path / "missing.csv"
    source_rule(monkeypatch, tmp_path, path_prefixes=[f"{tmp_path}/"])

    run = run_notebook(PIPELINE, {**pipeline.inputs, "source": str(missing)}, tmp_path / "run")

    assert run.returncode == 1 and run.exit_value is None
    assert run.error["type"] == "FileNotFoundError" and "Traceback" in run.error["trace"]
    error = callback_of(receiver, pipeline)["error"]
    assert error["type"] == "FileNotFoundError" and "missing.csv" in error["message"]


def test_pipeline_with_a_bad_callback_url_fails_before_its_data_step(receiver, pipeline, tmp_path):
    run = run_notebook(PIPELINE, {**pipeline.inputs, "callback_url": "gateway:8002"}, tmp_path)
    assert run.error["type"] == "ValueError" and "widget 'callback_url'" in run.error["message"]
    assert receiver.requests == []


# -- word_frequencies.py --------------------------------------------------------------------------


def test_word_frequencies_reports_the_top_words(receiver, pipeline, tmp_path):
    text = "The cat and the hat. THE END, and don't stop: 42 cats!"

    run = run_notebook(WORD_FREQUENCIES, {**pipeline.inputs, "text": text, "top": "3"}, tmp_path)

    assert run.result == {
        "words": [{"word": "the", "count": 3}, {"word": "and", "count": 2}, {"word": "cat", "count": 1}],
        "total_words": 11,
        "distinct_words": 8,
    }
    assert callback_of(receiver, pipeline)["result"] == run.result


def test_word_frequencies_by_hand_counts_with_the_default_top(receiver, tmp_path):
    run = run_notebook(WORD_FREQUENCIES, {"text": " ".join(a + b for a in "abcdef" for b in "vwxyz")}, tmp_path)
    assert len(run.result["words"]) == 10 and run.result["distinct_words"] == 30
    assert receiver.requests == []


@pytest.mark.parametrize("top", ["0", "101", "ten", ""])
def test_word_frequencies_refuses_a_bad_top(receiver, pipeline, tmp_path, top):
    run = run_notebook(WORD_FREQUENCIES, {**pipeline.inputs, "text": "a b", "top": top}, tmp_path)
    assert run.returncode == 1 and run.error["type"] == "ValueError"
    error = callback_of(receiver, pipeline)["error"]
    assert error["type"] == "ValueError" and "parameter 'top'" in error["message"]


# -- the jobs that never call back -------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "rows", "source_rows"), [("sales", 4, 120), ("inventory", 3, 75), ("customers", 3, 60)]
)
def test_nightly_refresh_reports_its_row_counts(tmp_path, table, rows, source_rows):
    run = run_notebook(NIGHTLY_REFRESH, {"table": table}, tmp_path / "first")
    again = run_notebook(NIGHTLY_REFRESH, {"table": table}, tmp_path / "again")

    assert run.result["table"] == table and run.result["rows"] == rows == len(run.result["summary"])
    assert run.result["source_rows"] == source_rows == sum(row["rows"] for row in run.result["summary"])
    assert again.exit_value == run.exit_value, "a refresh of the same table gives the same table"


def test_nightly_refresh_by_hand_refreshes_sales_and_knows_no_callback(tmp_path):
    assert run_notebook(NIGHTLY_REFRESH, {}, tmp_path).result["table"] == "sales"
    source = NIGHTLY_REFRESH.read_text()
    assert "pipeline_callback" not in source and "callback_url" not in source


def test_nightly_refresh_refuses_an_unknown_table(tmp_path):
    run = run_notebook(NIGHTLY_REFRESH, {"table": "orders"}, tmp_path)
    assert run.returncode == 1 and run.error["type"] == "ValueError"
    assert run.error["message"] == "widget 'table' must be one of sales, inventory, customers, not 'orders'"


@pytest.mark.parametrize(("period", "weeks"), [("week", 1), ("month", 4), ("quarter", 13)])
def test_customer_extract_is_the_same_for_the_same_customer(tmp_path, period, weeks):
    widgets = {"customer": "C-1042", "period": period}
    run = run_notebook(CUSTOMER_EXTRACT, widgets, tmp_path / "first")
    again = run_notebook(CUSTOMER_EXTRACT, widgets, tmp_path / "again")

    assert run.result["customer"] == "C-1042" and run.result["period"] == period
    assert weeks <= run.result["orders"] <= 3 * weeks and run.result["items"] >= run.result["orders"]
    assert again.exit_value == run.exit_value


@pytest.mark.parametrize(("customer", "period"), [("1042", "month"), ("C-", "month"), ("C-7\n", "x"), ("C-7", "year")])
def test_customer_extract_refuses_bad_input(tmp_path, customer, period):
    run = run_notebook(CUSTOMER_EXTRACT, {"customer": customer, "period": period}, tmp_path)
    assert run.returncode == 1 and run.error["type"] == "ValueError"
    assert re.match(r"widget '(customer|period)' must be", run.error["message"])


def test_customer_publish_says_where_the_report_is(tmp_path):
    run = run_notebook(CUSTOMER_PUBLISH, {"customer": "C-1042", "period": "quarter"}, tmp_path)
    assert run.result == {
        "published": True,
        "customer": "C-1042",
        "period": "quarter",
        "report_url": "https://reports.example.com/customers/C-1042/quarter",
    }


def test_customer_aggregate_reads_the_job_parameters():
    sql = (NOTEBOOKS / "customer_aggregate.sql").read_text()
    assert ":customer" in sql and ":period" in sql

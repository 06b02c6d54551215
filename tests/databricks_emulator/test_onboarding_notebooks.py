"""The customer-onboarding notebooks, each run as a job's notebook task runs it, and the rules they share.

Ingest reads an upload under the operator's source rule (the driver's
environment names a rule file for a folder of the test's, as a cluster's
configuration would) and writes its table to the folder that stands for
/Volumes/ (``PIPELINE_VOLUMES_ROOT``, as the emulator sets it); risk-score and
report-build read that table back. Every value a caller gives that ingest could
not have written is refused, by the notebooks and by the catalogue.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from databricks_emulator.harness import cell_titled, parse_notebook
from pipeline_shared.catalogue import Catalogue, InvalidParameters
from pipeline_shared.signing import verify_callback
from tests.support.emulator_process import NOTEBOOKS, REPO_ROOT
from tests.support.emulator_runs import Pipeline, import_notebook_module, run_notebook

INGEST = NOTEBOOKS / "onboarding_ingest.py"
RISK_SCORE = NOTEBOOKS / "onboarding_risk_score.py"
REPORT = NOTEBOOKS / "onboarding_report.py"
CATALOGUE = Catalogue.load(REPO_ROOT / "infra" / "catalogue.toml")
#: The emulator image holds this folder at /Workspace, the sample among it.
EMULATOR_WORKSPACE = REPO_ROOT / "infra" / "databricks-emulator" / "workspace"
SAMPLE = EMULATOR_WORKSPACE / "Shared" / "pipelines" / "samples" / "customers.csv"
tables = import_notebook_module("onboarding_tables")

#: Values of `table` no notebook opens and the catalogue refuses.
HOSTILE_TABLES = [
    "/etc/passwd",
    "/Volumes/main/onboarding/ingested/../../../../etc/passwd",
    "/Volumes/main/onboarding/ingested/customers-0123456789abcdef.csv/../../x.csv",
    "/Volumes/main/onboarding/ingested//customers-0123456789abcdef.csv",
    "/Volumes/main/onboarding/ingested/customers-0123456789ABCDEF.csv",
    "/Volumes/main/onboarding/ingested/customers-0123456789abcdef.csv\n",
    "/Volumes/main/onboarding/ingested/customers-0123456789abcdef.csv\x00",
    "/Workspace/Shared/pipelines/samples/customers.csv",
    "file:///Volumes/main/onboarding/ingested/customers-0123456789abcdef.csv",
    "",
]


@pytest.fixture
def pipeline(receiver, pipeline_id) -> Pipeline:
    return Pipeline(pipeline_id, f"{receiver.url}/callbacks/databricks")


@pytest.fixture
def driver(tmp_path, monkeypatch) -> Path:
    """A driver whose source rule allows tmp_path/uploads/ and whose volumes are tmp_path/volumes/."""
    (tmp_path / "uploads").mkdir()
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"path_prefixes": [f"{tmp_path}/uploads/"]}))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(rule))
    monkeypatch.setenv(tables.VOLUMES_ROOT_VARIABLE, str(tmp_path / "volumes"))
    return tmp_path


def callbacks(receiver, pipeline: Pipeline, count: int = 1) -> list[dict]:
    """The run's callbacks, once each signature verifies under the pipeline's key."""
    received = receiver.wait_for(count)
    for callback in received:
        verify_callback(pipeline.key, callback.body, callback.headers)
    return [json.loads(callback.body) for callback in received]


def ingested(driver: Path, text: str, pipeline: Pipeline) -> dict:
    """Ingest ``text`` as an upload; the notebook's result."""
    upload = driver / "uploads" / "customers.csv"
    upload.write_text(text)
    run = run_notebook(INGEST, {**pipeline.inputs, "upload": str(upload)}, driver / "ingest-run")
    return run.result


def test_ingest_writes_the_cleaned_upload_and_calls_back_where(driver, receiver, pipeline):
    upload = driver / "uploads" / "customers.csv"
    upload.write_text(" id , name ,score\n1, Ana ,3\n\n2,Joost,\n1,Ana,3\n,,\n")

    run = run_notebook(INGEST, {**pipeline.inputs, "upload": str(upload)}, driver / "run")

    assert run.returncode == 0
    table = run.result["table"]
    assert run.result == {"table": table, "rows": 2, "columns": ["id", "name", "score"], "source": str(upload)}
    assert table.startswith("/Volumes/main/onboarding/ingested/customers-") and table.endswith(".csv")
    written = driver / "volumes" / table.removeprefix("/Volumes/")
    assert written.read_text() == "id,name,score\n1,Ana,3\n2,Joost,\n", "stripped; blank and repeated rows gone"
    [payload] = callbacks(receiver, pipeline)
    assert payload == {"promise_id": pipeline.promise_id, "status": "success", "result": run.result}


def test_ingest_again_writes_the_same_table(driver, pipeline):
    first = ingested(driver, "id,name\n1,Ana\n", pipeline)
    again = ingested(driver, "id,name\n1,Ana\n", pipeline)
    other = ingested(driver, "id,name\n2,Joost\n", pipeline)

    assert first["table"] == again["table"] != other["table"]
    folder = driver / "volumes" / "main" / "onboarding" / "ingested"
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        Path(result["table"]).name for result in (first, other)
    ), "no temporary file is left behind"


def test_an_empty_upload_is_the_sample_the_emulator_holds():
    for module in ("pipeline_sources", "csv_summary"):
        import_notebook_module(module)  # beside the notebook on a workspace
    namespace: dict = {"__name__": "__main__"}
    cell = cell_titled(parse_notebook(INGEST.read_text()), "Ingest")
    exec(compile(cell.source, f"{INGEST}:Ingest", "exec"), namespace)  # the cell needs no dbutils

    sample = "/Workspace/Shared/pipelines/samples/customers.csv"
    assert namespace["upload_path"]("") == namespace["upload_path"]("  ") == sample
    assert namespace["upload_path"](" /Workspace/Shared/pipelines/a.csv ") == "/Workspace/Shared/pipelines/a.csv"
    assert SAMPLE.is_file(), "the emulator image holds the sample at /Workspace/Shared/pipelines/samples/"
    assert "Empty: the sample /Workspace/Shared/pipelines/samples/customers.csv." in (
        CATALOGUE.job("ingest-upload").parameters["upload"].description
    )
    header, rows = namespace["cleaned"](SAMPLE.read_text(), "sample")
    assert header[0] == "customer_id" and len(rows) == 8


@pytest.mark.parametrize(
    "upload",
    ["/etc/passwd", "/Workspace/Shared/pipelines/../../../etc/passwd", "file:///etc/passwd", "UPLOADS/../../rule.json"],
)
def test_ingest_refuses_an_upload_outside_the_rule_and_writes_nothing(driver, receiver, pipeline, upload):
    upload = upload.replace("UPLOADS", f"{driver}/uploads")

    run = run_notebook(INGEST, {**pipeline.inputs, "upload": upload}, driver / "run")

    assert run.returncode == 1 and run.error["type"] == "SourceRefused", run.error
    assert "root:" not in run.error["message"] and '{"path_prefixes"' not in run.error["message"]
    [payload] = callbacks(receiver, pipeline)
    assert payload["status"] == "failure" and payload["error"]["type"] == "SourceRefused"
    assert not (driver / "volumes").exists(), "nothing was written"


def test_ingest_refuses_a_loopback_url_without_fetching_it(driver, receiver, pipeline):
    receiver.files["/customers.csv"] = b"id\n1\n"
    run = run_notebook(INGEST, {**pipeline.inputs, "upload": f"{receiver.url}/customers.csv"}, driver / "run")

    assert run.error["type"] == "SourceRefused" and receiver.fetched == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "has no header row"),
        ("id,name\n", "has no customer rows"),
        ("id,name\n,\n", "has no customer rows"),
        ("id,\n1,2\n", "column 2 has no name"),
        ("id,id\n1,2\n", "columns named more than once: id"),
        ("id,name\n1\n", "row 2 has 1 fields; the header has 2"),
    ],
)
def test_ingest_says_what_is_wrong_with_an_upload(driver, receiver, pipeline, text, says):
    upload = driver / "uploads" / "bad.csv"
    upload.write_text(text)

    run = run_notebook(INGEST, {**pipeline.inputs, "upload": str(upload)}, driver / "run")

    assert run.error["type"] == "ValueError" and says in run.error["message"], run.error
    assert says in callbacks(receiver, pipeline)[0]["error"]["message"]


def test_risk_score_is_the_share_of_incomplete_customers(driver, receiver, pipeline):
    table = ingested(driver, SAMPLE.read_text(), pipeline)["table"]

    run = run_notebook(RISK_SCORE, {**pipeline.inputs, "table": table}, driver / "score-run")

    # One customer of eight (C-1006) misses values: 12.5 %, rounded half up.
    assert run.result == {"score": 13, "rows": 8, "incomplete_rows": 1}
    assert callbacks(receiver, pipeline, 2)[1] == {
        "promise_id": pipeline.promise_id,
        "status": "success",
        "result": run.result,
    }
    again = run_notebook(RISK_SCORE, {**pipeline.inputs, "table": table}, driver / "score-again")
    assert again.result == run.result, "the same table always scores the same"


@pytest.mark.parametrize(
    ("text", "score"),
    [("id,a\n1,x\n2,y\n", 0), ("id,a\n1,\n2,\n", 100), ("id,a\n1,\n2,y\n3,z\n", 33), ("id,a\n1,\n2,y\n3,\n", 67)],
)
def test_risk_score_runs_from_0_to_100(driver, pipeline, text, score):
    table = ingested(driver, text, pipeline)["table"]
    run = run_notebook(RISK_SCORE, {"table": table}, driver / "score-run")
    assert run.result["score"] == score


def test_report_summarises_each_column(driver, receiver, pipeline):
    table = ingested(driver, SAMPLE.read_text(), pipeline)["table"]

    run = run_notebook(REPORT, {**pipeline.inputs, "table": table}, driver / "report-run")

    report = run.result["report"]
    assert run.result["rows"] == report["rows"] == 8 and report["table"] == table
    columns = {column["name"]: column for column in report["columns"]}
    assert list(columns) == ["customer_id", "name", "country", "signup_year", "orders", "lifetime_value_eur"]
    assert columns["country"] == {"name": "country", "count": 8, "missing": 0, "type": "text", "distinct": 7}
    assert columns["orders"] | {"mean": None} == {
        "name": "orders", "count": 7, "missing": 1, "type": "numeric", "min": 1.0, "max": 41.0, "mean": None,
    }  # fmt: skip
    assert columns["orders"]["mean"] == pytest.approx(101 / 7)
    assert callbacks(receiver, pipeline, 2)[1]["result"] == run.result


@pytest.mark.parametrize("notebook", [RISK_SCORE, REPORT], ids=lambda path: path.stem)
@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_a_table_ingest_could_not_have_written_is_refused_unopened(driver, receiver, pipeline, notebook, table):
    run = run_notebook(notebook, {**pipeline.inputs, "table": table}, driver / "run")

    assert run.returncode == 1 and run.error["type"] == "TableRefused", run.error
    assert "root:" not in run.error["message"]
    [payload] = callbacks(receiver, pipeline)
    assert payload["status"] == "failure" and payload["error"]["type"] == "TableRefused"


@pytest.mark.parametrize("notebook", [RISK_SCORE, REPORT], ids=lambda path: path.stem)
def test_a_table_changed_after_ingest_is_refused(driver, pipeline, notebook):
    table = ingested(driver, "id,a\n1,x\n", pipeline)["table"]
    (driver / "volumes" / table.removeprefix("/Volumes/")).write_text("id,a\n1,\n")

    run = run_notebook(notebook, {"table": table}, driver / "run")

    assert run.error["type"] == "TableRefused" and "no longer matches its name" in run.error["message"]


@pytest.mark.parametrize("notebook", [RISK_SCORE, REPORT], ids=lambda path: path.stem)
def test_a_table_of_the_right_form_that_is_not_there_fails_the_run(driver, notebook):
    run = run_notebook(notebook, {"table": tables.content_name(b"never written")}, driver / "run")
    assert run.returncode == 1 and run.error["type"] == "FileNotFoundError"


@pytest.mark.parametrize("job", ["risk-score", "report-build"])
@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_the_catalogue_refuses_the_same_tables(job, table):
    with pytest.raises(InvalidParameters) as refused:
        CATALOGUE.job(job).resolve({"table": table})
    assert [problem.name for problem in refused.value.problems] == ["table"]


@pytest.mark.parametrize("job", ["risk-score", "report-build"])
def test_the_catalogue_and_the_notebooks_accept_the_same_tables(job):
    table = CATALOGUE.job(job).parameters["table"]
    assert table.pattern == tables.TABLE_PATTERN and table.required
    assert table.path is not None and table.path.prefixes == (tables.TABLE_FOLDER,)
    written = tables.content_name(b"id\n1\n")
    assert CATALOGUE.job(job).resolve({"table": written}) == {"table": written}
    assert tables.checked_table(written) == written


def test_ingest_takes_its_upload_by_csv_statistics_rule():
    """One source rule: csv-statistics' source, ingest's and the pipeline's upload, and the notebooks' file."""
    source = CATALOGUE.job("csv-statistics").parameters["source"]
    for upload in (CATALOGUE.job("ingest-upload").parameters["upload"],
                   CATALOGUE.pipeline("customer-onboarding").parameters["upload"]):  # fmt: skip
        assert (upload.url, upload.path, upload.allow_empty, upload.default, upload.max_length) == (
            source.url, source.path, source.allow_empty, source.default, source.max_length,
        )  # fmt: skip


def test_the_volume_folder_comes_from_the_drivers_environment(tmp_path):
    table = tables.content_name(b"x")
    assert tables.local_path(table, environ={}) == Path(table)
    assert tables.local_path(table, environ={tables.VOLUMES_ROOT_VARIABLE: str(tmp_path)}) == (
        tmp_path / table.removeprefix("/Volumes/")
    )

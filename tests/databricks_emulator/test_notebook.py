"""notebooks/pipeline.py's own pieces, run from its cells: the data step, and the notebook as a whole.

The cells are executed the way the emulator's harness runs a notebook, one
titled cell at a time, so these tests hold the exact code a workspace runs.
Its callback is notebooks/pipeline_callback.py's (test_pipeline_callback.py).
"""

from __future__ import annotations

import json
import re

import pytest

from databricks_emulator.harness import (
    Dbutils,
    InputWidgetNotDefined,
    NotebookExit,
    cell_titled,
    parse_notebook,
)
from tests.support.emulator_process import NOTEBOOK
from tests.support.emulator_runs import import_notebook_module, run_notebook

CELLS = parse_notebook(NOTEBOOK.read_text())
#: The data step imports them, as on a workspace where they sit beside the notebook.
import_notebook_module("pipeline_sources")
import_notebook_module("csv_summary")


@pytest.fixture
def readable(tmp_path, monkeypatch):
    """tmp_path, made a folder the notebook's source rule allows (the driver's environment names the rule)."""
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"path_prefixes": [f"{tmp_path}/"]}))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(rule))
    return tmp_path


def cells(*titles: str) -> dict:
    """A namespace holding what the titled cells define (they need no dbutils)."""
    namespace: dict = {"__name__": "__main__"}
    for title in titles:
        exec(compile(cell_titled(CELLS, title).source, f"{NOTEBOOK}:{title}", "exec"), namespace)
    return namespace


DATA = cells("Data step")


def test_notebook_is_in_databricks_source_format():
    assert NOTEBOOK.read_text().startswith("# Databricks notebook source\n")
    titles = [cell.title for cell in CELLS if cell.is_python]
    assert titles == ["Data step", "Run the pipeline and call back"]
    assert not CELLS[0].is_python, "the first cell is the markdown introduction"


def test_statistics_of_a_csv_file(readable):
    source = readable / "measurements.csv"
    source.write_text("\ufeffsite,depth,temp\nA,1.5,nan\nB,,12\nA,2.5,14\n")

    result = DATA["summarise"]({"source": str(source)})

    site, depth, temp = result["columns"]
    assert result["row_count"] == 3 and result["column_count"] == 3
    assert site == {"name": "site", "count": 3, "missing": 0, "type": "text", "distinct": 2}
    assert depth == {
        "name": "depth",
        "count": 2,
        "missing": 1,
        "type": "numeric",
        "min": 1.5,
        "max": 2.5,
        "mean": 2.0,
    }
    assert temp["type"] == "text", "NaN is not a number a mean could use"
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "no header row"), ("a,b\n1,2\n3\n", "row 3 has 1 fields; the header has 2")],
)
def test_bad_csv_says_what_is_wrong(readable, content, message):
    source = readable / "bad.csv"
    source.write_text(content)
    with pytest.raises(ValueError, match=message):
        DATA["summarise"]({"source": str(source)})


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("s3://bucket/data.csv", "a s3: URL is refused"),
        ("/etc/passwd", "not under an allowed folder (/Workspace/Shared/pipelines/)"),
        ("http://127.0.0.1:8080/emulator/runs", "scheme 'http' is not allowed"),
    ],
)
def test_a_source_outside_the_deployed_rule_is_refused_naming_it(source, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        DATA["summarise"]({"source": source})


def test_dbutils_stand_in_behaves_like_job_widgets():
    dbutils = Dbutils({"callback_url": "http://x"})
    dbutils.widgets.text("callback_url", "", "Callback URL")
    dbutils.widgets.text("source", "")
    assert dbutils.widgets.get("callback_url") == "http://x"
    assert dbutils.widgets.get("source") == ""
    assert dbutils.widgets.getAll() == {"callback_url": "http://x", "source": ""}
    with pytest.raises(InputWidgetNotDefined):
        dbutils.widgets.get("undeclared")
    with pytest.raises(NotebookExit) as stop:
        dbutils.notebook.exit("done")
    assert stop.value.value == "done"
    with pytest.raises(TypeError):
        dbutils.notebook.exit({"not": "a string"})


def test_whole_notebook_run_by_hand_needs_no_callback(tmp_path):
    """Run as a person would in the UI: no widgets set, no callback, the sample's result."""
    run = run_notebook(NOTEBOOK, {}, tmp_path)
    assert run.result["source"] == "built-in sample"
    assert "not reported (no callback_url: run by hand)" in run.stdout

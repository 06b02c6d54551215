"""The notebook's own pieces, run from its cells: signing, callback retries, the data step.

The cells are executed the way the emulator's harness runs a notebook, one
titled cell at a time, so these tests hold the exact code a workspace runs.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databricks_emulator.harness import (
    Dbutils,
    InputWidgetNotDefined,
    NotebookExit,
    cell_titled,
    parse_notebook,
)
from pipeline_shared.signing import derive_callback_key, sign_callback, verify_callback
from tests.databricks_emulator.conftest import NOTEBOOK, free_port
from tests.databricks_emulator.receiver import CallbackReceiver

CELLS = parse_notebook(NOTEBOOK.read_text())
FAST_RETRY = {"first_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


def cells(*titles: str) -> dict:
    """A namespace holding what the titled cells define (they need no dbutils)."""
    namespace: dict = {"__name__": "__main__"}
    for title in titles:
        exec(compile(cell_titled(CELLS, title).source, f"{NOTEBOOK}:{title}", "exec"), namespace)
    return namespace


CALLBACK = cells("Signed callback")
DATA = cells("Data step")


def test_notebook_is_in_databricks_source_format():
    assert NOTEBOOK.read_text().startswith("# Databricks notebook source\n")
    titles = [cell.title for cell in CELLS if cell.is_python]
    assert titles == [
        "Data step",
        "Signed callback",
        "Inputs",
        "Run the pipeline and call back",
        "Exit value",
    ]
    assert not CELLS[0].is_python, "the first cell is the markdown introduction"


@settings(max_examples=50, deadline=None)
@given(
    body=st.binary(max_size=2000).map(lambda raw: base64.b64encode(raw)),
    msg_id=st.from_regex(r"msg_[0-9a-f]{1,32}", fullmatch=True),
    timestamp=st.integers(min_value=1_600_000_000, max_value=2_000_000_000),
)
def test_stdlib_signature_is_byte_for_byte_the_libraries(body, msg_id, timestamp):
    key = derive_callback_key(secrets.token_hex(8), "p:1")
    ours = CALLBACK["signature_headers"](key, body, msg_id, timestamp)
    theirs = sign_callback(key, body, msg_id=msg_id, at=datetime.fromtimestamp(timestamp, UTC))
    assert ours == theirs


def test_fresh_stdlib_signature_verifies_with_the_gateways_code():
    key = derive_callback_key("secret", "pipeline-7:1")
    body = json.dumps({"promise_id": "pipeline-7:1", "status": "success", "result": {}}).encode()
    headers = CALLBACK["signature_headers"](key, body, "msg_1", int(datetime.now(UTC).timestamp()))
    verify_callback(key, body, headers)


@pytest.mark.parametrize("bad_key", ["secret", "whsec_***", ""])
def test_malformed_signing_key_is_named(bad_key):
    with pytest.raises(ValueError, match="callback_signing_key"):
        CALLBACK["signing_key_bytes"](bad_key)


def test_callback_is_retried_on_5xx_with_one_message_id_until_accepted():
    key = derive_callback_key("secret", "p:1")
    with CallbackReceiver() as receiver:
        receiver.answer_with(503, 500, 502)
        status = CALLBACK["post_callback"](
            f"{receiver.url}/cb",
            key,
            {"promise_id": "p:1", "status": "success", "result": {}},
            **FAST_RETRY,
        )
        attempts = receiver.wait_for(4)
    assert status == 200 and len(receiver.requests) == 4
    assert len({attempt.headers["webhook-id"] for attempt in attempts}) == 1
    for attempt in attempts:
        verify_callback(key, attempt.body, attempt.headers)


@pytest.mark.parametrize("refusal", [400, 401, 404, 409, 413, 422])
def test_callback_stops_at_the_first_4xx(refusal):
    with CallbackReceiver() as receiver:
        receiver.answer_with(500, refusal)
        status = CALLBACK["post_callback"](
            f"{receiver.url}/cb",
            derive_callback_key("s", "p:1"),
            {"promise_id": "p:1"},
            **FAST_RETRY,
        )
        receiver.wait_for(2)
    assert status == refusal and len(receiver.requests) == 2


def test_callback_to_nowhere_gives_up_at_its_deadline():
    url = f"http://127.0.0.1:{free_port()}/cb"  # nothing listens there
    status = CALLBACK["post_callback"](
        url,
        derive_callback_key("s", "p:1"),
        {"promise_id": "p:1"},
        deadline_seconds=0.5,
        **FAST_RETRY,
    )
    assert status is None


def test_statistics_of_a_csv_file(tmp_path):
    source = tmp_path / "measurements.csv"
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
def test_bad_csv_says_what_is_wrong(tmp_path, content, message):
    source = tmp_path / "bad.csv"
    source.write_text(content)
    with pytest.raises(ValueError, match=message):
        DATA["summarise"]({"source": str(source)})


def test_unsupported_source_scheme_is_named():
    with pytest.raises(ValueError, match="'source'"):
        DATA["summarise"]({"source": "s3://bucket/data.csv"})


@pytest.mark.parametrize("text", ["[]", '{"a": 1}', "{not json"])
def test_user_parameters_must_be_a_json_object_of_strings(text):
    with pytest.raises(ValueError, match="widget 'parameters'"):
        DATA["parse_user_parameters"](text)


def test_dbutils_stand_in_behaves_like_job_widgets():
    dbutils = Dbutils({"callback_url": "http://x"})
    dbutils.widgets.text("callback_url", "", "Callback URL")
    dbutils.widgets.text("parameters", "{}")
    assert dbutils.widgets.get("callback_url") == "http://x"
    assert dbutils.widgets.get("parameters") == "{}"
    with pytest.raises(InputWidgetNotDefined):
        dbutils.widgets.get("undeclared")
    with pytest.raises(NotebookExit) as stop:
        dbutils.notebook.exit("done")
    assert stop.value.value == "done"
    with pytest.raises(TypeError):
        dbutils.notebook.exit({"not": "a string"})


def test_whole_notebook_run_by_hand_needs_no_callback():
    """Run as a person would in the UI: no widgets set, no callback, the sample's result."""
    namespace = {"__name__": "__main__", "dbutils": Dbutils({})}
    with pytest.raises(NotebookExit) as stop:
        for cell in CELLS:
            if cell.is_python:
                exec(compile(cell.source, cell.title, "exec"), namespace)
    assert json.loads(stop.value.value)["source"] == "built-in sample"

"""notebooks/pipeline_callback.py: the signing, the retries, and the ``with`` block notebooks use.

Callbacks go over real HTTP to a loopback receiver and are checked with the
gateway's own verification code; dbutils is the harness's stand-in, so a
notebook's exit is the same ``NotebookExit`` the emulator sees.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import types
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databricks_emulator.harness import Dbutils, NotebookExit
from pipeline_shared.signing import derive_callback_key, sign_callback, verify_callback
from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_process import free_port
from tests.support.emulator_runs import Pipeline, import_callback_helper

helper = import_callback_helper()
#: Backoff short enough for tests; the deadline stays the default's unless a test sets one.
FAST_BACKOFF = {"first_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
FAST = helper.Retry(**FAST_BACKOFF)


@pytest.fixture
def pipeline(receiver, pipeline_id) -> Pipeline:
    return Pipeline(pipeline_id, f"{receiver.url}/callbacks")


def only_callback(receiver: CallbackReceiver, pipeline: Pipeline) -> dict:
    """The one callback that arrived, once its signature verifies."""
    [callback] = receiver.wait_for(1)
    assert len(receiver.requests) == 1
    verify_callback(pipeline.key, callback.body, callback.headers)
    return json.loads(callback.body)


# -- signing ----------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    body=st.binary(max_size=2000).map(lambda raw: base64.b64encode(raw)),
    msg_id=st.from_regex(r"msg_[0-9a-f]{1,32}", fullmatch=True),
    timestamp=st.integers(min_value=1_600_000_000, max_value=2_000_000_000),
)
def test_stdlib_signature_is_byte_for_byte_the_libraries(body, msg_id, timestamp):
    key = derive_callback_key(secrets.token_hex(8), "p:1")
    ours = helper.signature_headers(key, body, msg_id, timestamp)
    theirs = sign_callback(key, body, msg_id=msg_id, at=datetime.fromtimestamp(timestamp, UTC))
    assert ours == theirs


def test_fresh_stdlib_signature_verifies_with_the_gateways_code():
    key = derive_callback_key("secret", "pipeline-7:1")
    body = json.dumps({"promise_id": "pipeline-7:1", "status": "success", "result": {}}).encode()
    headers = helper.signature_headers(key, body, "msg_1", int(datetime.now(UTC).timestamp()))
    verify_callback(key, body, headers)


@pytest.mark.parametrize("bad_key", ["secret", "whsec_***", ""])
def test_malformed_signing_key_is_named(bad_key):
    with pytest.raises(ValueError, match="callback_signing_key"):
        helper.signing_key_bytes(bad_key)


# -- delivery -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transient", [(503, 500, 502), (429, 429, 503)])
def test_callback_is_retried_on_5xx_and_429_with_one_message_id_until_accepted(receiver, transient):
    key = derive_callback_key("secret", "p:1")
    receiver.answer_with(*transient)
    delivery = helper.post_callback(
        f"{receiver.url}/cb", key, {"promise_id": "p:1", "status": "success", "result": {}}, FAST
    )
    attempts = receiver.wait_for(4)
    assert delivery == helper.Delivery(200, 4) and len(receiver.requests) == 4
    assert len({attempt.headers["webhook-id"] for attempt in attempts}) == 1
    for attempt in attempts:
        verify_callback(key, attempt.body, attempt.headers)


def test_every_attempt_is_signed_with_its_own_time(receiver, monkeypatch):
    """A retry five minutes on would be refused as stale if it kept the first timestamp."""
    clock = iter(range(1_800_000_000, 1_800_010_000, 100))
    monkeypatch.setattr(
        helper, "time", types.SimpleNamespace(time=lambda: next(clock), monotonic=time.monotonic, sleep=time.sleep)
    )
    receiver.answer_with(503, 503)
    helper.post_callback(f"{receiver.url}/cb", derive_callback_key("s", "p:1"), {"promise_id": "p:1"}, FAST)
    stamps = [attempt.headers["webhook-timestamp"] for attempt in receiver.wait_for(3)]
    assert stamps == ["1800000000", "1800000100", "1800000200"]


@pytest.mark.parametrize("refusal", [400, 401, 404, 409, 413, 422])
def test_callback_stops_at_the_first_4xx(receiver, refusal):
    receiver.answer_with(500, refusal)
    delivery = helper.post_callback(f"{receiver.url}/cb", derive_callback_key("s", "p:1"), {"promise_id": "p:1"}, FAST)
    receiver.wait_for(2)
    assert delivery == helper.Delivery(refusal, 2) and len(receiver.requests) == 2


def test_callback_to_nowhere_gives_up_at_its_deadline():
    url = f"http://127.0.0.1:{free_port()}/cb"  # nothing listens there
    started = time.monotonic()
    delivery = helper.post_callback(
        url, derive_callback_key("s", "p:1"), {"promise_id": "p:1"}, helper.Retry(deadline_seconds=0.5, **FAST_BACKOFF)
    )
    assert delivery.status is None and delivery.attempts > 1
    assert time.monotonic() - started < 0.5 + 0.5, "no sleep may run past the deadline"


def test_default_policy_gives_up_after_five_minutes_of_tries():
    assert helper.DEFAULT_RETRY.deadline_seconds == 300
    assert [helper.is_retryable(status) for status in (500, 503, 429, 404, 409, 422)] == [True] * 3 + [False] * 3


# -- the with block -----------------------------------------------------------------------------


def test_clean_exit_reports_success_then_exits_with_the_result(receiver, pipeline, capsys):
    dbutils = Dbutils({**pipeline.inputs, "text": "to be or not"})

    with pytest.raises(NotebookExit) as stop, helper.pipeline_run(dbutils, retry=FAST) as run:
        assert run.pipeline_id == pipeline.pipeline_id
        assert run.parameters == {"text": "to be or not"}, "the pipeline's own inputs are not the notebook's"
        run.result = {"words": 4, "ratio": 0.5}

    payload = only_callback(receiver, pipeline)
    assert payload == {"promise_id": pipeline.promise_id, "status": "success", "result": {"words": 4, "ratio": 0.5}}
    assert json.loads(stop.value.value) == {"words": 4, "ratio": 0.5}
    assert "success callback accepted: HTTP 200 after 1 attempt\n" in capsys.readouterr().out


def test_no_result_is_an_empty_object(receiver, pipeline):
    with pytest.raises(NotebookExit) as stop, helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST):
        pass
    assert only_callback(receiver, pipeline)["result"] == {} and stop.value.value == "{}"


def test_exception_reports_failure_and_goes_on_up(receiver, pipeline):
    with pytest.raises(KeyError, match="text"), helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST) as run:
        run.parameters["text"]

    payload = only_callback(receiver, pipeline)
    assert payload == {
        "promise_id": pipeline.promise_id,
        "status": "failure",
        "error": {"type": "KeyError", "message": "'text'"},
    }


def test_long_error_type_and_message_are_cut_to_what_the_service_takes(receiver, pipeline):
    error_type = type("E" * 300, (Exception,), {})
    with pytest.raises(error_type), helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST):
        raise error_type("x" * 30_000)
    error = only_callback(receiver, pipeline)["error"]
    assert error == {"type": "E" * 200, "message": "x" * 20_000}


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"mean": float("nan")}, "Out of range float"),
        ({"tags": {"a", "b"}}, "set is not JSON serializable"),
        (["not", "an", "object"], "JSON object \\(a dict\\), not list"),
    ],
)
def test_result_that_is_not_a_json_object_is_reported_as_a_failure(receiver, pipeline, result, reason):
    with (
        pytest.raises(helper.PipelineResultError, match=reason),
        helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST) as run,
    ):
        run.result = result
    error = only_callback(receiver, pipeline)["error"]
    assert error["type"] == "PipelineResultError" and "run.result" in error["message"]


def test_refused_callback_leaves_a_success_its_exit_value(receiver, pipeline, capsys):
    receiver.answer_with(409)
    with pytest.raises(NotebookExit) as stop, helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST) as run:
        run.result = {"ok": True}
    assert json.loads(stop.value.value) == {"ok": True} and len(receiver.requests) == 1
    assert "success callback refused: HTTP 409 after 1 attempt" in capsys.readouterr().out


def test_refused_callback_leaves_a_failure_its_exception(receiver, pipeline, capsys):
    receiver.answer_with(401)
    with pytest.raises(ZeroDivisionError), helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST):
        1 / 0  # noqa: B018 (the notebook's own failure)
    assert "failure callback refused: HTTP 401 after 1 attempt" in capsys.readouterr().out


def test_undeliverable_callback_still_exits_with_the_result(pipeline_id, capsys):
    pipeline = Pipeline(pipeline_id, f"http://127.0.0.1:{free_port()}/callbacks")
    retry = helper.Retry(deadline_seconds=0.3, **FAST_BACKOFF)
    with pytest.raises(NotebookExit) as stop, helper.pipeline_run(Dbutils(pipeline.inputs), retry=retry) as run:
        run.result = {"rows": 1}
    assert stop.value.value == '{"rows": 1}'
    assert "success callback not delivered after" in capsys.readouterr().out


def test_run_by_hand_posts_nothing_and_exits_alike(receiver, capsys):
    with pytest.raises(NotebookExit) as stop, helper.pipeline_run(Dbutils({"text": "hi"})) as run:
        assert run.pipeline_id == "" and run.parameters == {"text": "hi"}
        run.result = {"words": 1}
    assert stop.value.value == '{"words": 1}' and receiver.requests == []
    assert "not reported (no callback_url: run by hand)" in capsys.readouterr().out


def test_interrupt_is_not_an_outcome_to_report(receiver, pipeline):
    with pytest.raises(KeyboardInterrupt), helper.pipeline_run(Dbutils(pipeline.inputs), retry=FAST):
        raise KeyboardInterrupt
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("inputs", "widget"),
    [
        ({"callback_url": "ftp://gateway/callbacks"}, "callback_url"),
        ({"callback_signing_key": "whsec_***"}, "callback_signing_key"),
        ({"callback_signing_key": ""}, "callback_signing_key"),
        ({"callback_promise_id": ""}, "callback_promise_id"),
    ],
)
def test_inputs_are_checked_before_the_notebooks_code_runs(receiver, pipeline, inputs, widget):
    with pytest.raises(ValueError, match=f"widget '{widget}'"):
        helper.pipeline_run(Dbutils({**pipeline.inputs, **inputs}))
    assert receiver.requests == []


def test_widgets_are_declared_so_a_run_by_hand_works():
    dbutils = Dbutils({"top": "3"})
    run = helper.pipeline_run(dbutils, defaults={"text": "", "top": "10"})
    for name in ("pipeline_id", "callback_promise_id", "callback_url", "callback_signing_key", "text"):
        assert dbutils.widgets.get(name) == ""
    assert run.parameters == {"text": "", "top": "3"}, "a value the run gives beats the default"


def test_without_get_all_the_declared_names_are_read(pipeline):
    class OlderWidgets:
        """dbutils.widgets of a runtime that has no getAll."""

        def __init__(self, values: dict[str, str]) -> None:
            self._widgets = Dbutils(values).widgets

        def text(self, name: str, default: str, label: str) -> None:
            self._widgets.text(name, default, label)

        def get(self, name: str) -> str:
            return self._widgets.get(name)

    dbutils = types.SimpleNamespace(widgets=OlderWidgets({**pipeline.inputs, "text": "hi", "extra": "x"}))
    run = helper.pipeline_run(dbutils, defaults={"text": "", "top": "10"})
    assert run.parameters == {"text": "hi", "top": "10"} and run.pipeline_id == pipeline.pipeline_id

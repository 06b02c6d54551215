"""A pipeline end to end on the compose stack.

The gateway, worker and notifier run in their own containers and coordinate
through the Resonate server; the emulator really runs the notebook, whose
signed callback goes through the gateway; the mail sink really receives SMTP.
Faults are chosen per pipeline through the emulator's control API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from tests.support.stack_clients import Emulator, Gateway, MailSink, new_id


def test_happy_path_runs_the_notebook_and_emails_the_result(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("happy")

    started = gateway.start(pipeline_id, parameters={})

    assert started.status_code == 202, started.text
    done = gateway.wait_for(pipeline_id, "succeeded")
    assert done["result"]["row_count"] > 0 and done["result"]["columns"]
    run = done["databricks"]
    assert run["run_id"] and str(run["run_id"]) in run["run_page_url"]
    assert done["notification"]["delivered"] is True
    email = mail.wait_for(pipeline_id)
    assert email["envelope_to"] == [f"{pipeline_id}@example.com"]
    assert "succeeded" in email["subject"]
    assert run["run_page_url"] in email["text"] and run["run_page_url"] in email["html"]
    assert email["message_id"] == done["notification"]["message_id"]
    [emulated] = emulator.ended_runs(pipeline_id)
    assert (emulated["run_id"], emulated["result_state"]) == (run["run_id"], "SUCCESS")


def test_notebook_failure_fails_the_pipeline_and_emails_the_cause(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("fails")
    emulator.plan(pipeline_id, notebook="fail")

    gateway.start(pipeline_id)

    # The default job's failed runs wait for a person to repair them (or abandon them).
    done = gateway.wait_for(pipeline_id, "awaiting_repair")
    assert done["error"]["type"] == "FileNotFoundError", done
    email = mail.wait_for(pipeline_id)
    assert "awaiting repair" in email["subject"]
    assert "FileNotFoundError" in email["text"] and done["error"]["message"][:60] in email["text"]
    [emulated] = emulator.ended_runs(pipeline_id)
    assert emulated["result_state"] == "FAILED"
    gateway.http.post(f"/pipelines/{pipeline_id}/abandon")
    assert gateway.wait_for(pipeline_id, "failed")["error"]["type"] == "Abandoned"


def test_bad_tampered_or_expired_signatures_are_401_and_change_nothing(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("forged")
    emulator.plan(pipeline_id, notebook="hang")
    gateway.start(pipeline_id, timeout_seconds=120)
    before = gateway.wait_for(pipeline_id, "waiting")

    body, headers = gateway.signed_callback(pipeline_id, {"status": "success", "result": {"forged": True}})
    attempts = {
        "tampered": gateway.post_callback(body.replace(b"true", b"false"), headers),
        "unsigned": gateway.post_callback(body, {"content-type": "application/json"}),
        "expired": gateway.post_callback(
            *gateway.signed_callback(
                pipeline_id, {"status": "success", "result": {}}, at=datetime.now(UTC) - timedelta(minutes=6)
            )
        ),
        "other pipeline's key": gateway.post_callback(
            body,
            gateway.signed_callback(new_id("other"), {"status": "success", "result": {}})[1],
        ),
    }

    assert {name: r.status_code for name, r in attempts.items()} == dict.fromkeys(attempts, 401)
    assert all(r.json()["code"] == "invalid_signature" for r in attempts.values())
    assert gateway.status(pipeline_id) == before
    assert mail.messages(pipeline_id) == []
    gateway.http.post(f"/pipelines/{pipeline_id}/cancel")  # release the hanging run


def test_duplicate_start_gives_exactly_one_run(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("twice")

    first = gateway.start(pipeline_id, parameters={"source": ""})
    second = gateway.start(pipeline_id, parameters={"source": ""})
    different = gateway.start(pipeline_id, parameters={"source": "/Workspace/Shared/pipelines/elsewhere.csv"})

    assert (first.status_code, second.status_code, different.status_code) == (202, 200, 409)
    gateway.wait_for(pipeline_id, "succeeded")
    assert emulator.counters(pipeline_id)["runs"] == 1


def test_cancel_cancels_the_databricks_run(gateway: Gateway, emulator: Emulator, mail: MailSink) -> None:
    pipeline_id = new_id("cancel")
    emulator.plan(pipeline_id, notebook="hang")
    gateway.start(pipeline_id, timeout_seconds=300)
    gateway.wait_for(pipeline_id, "waiting")

    response = gateway.http.post(f"/pipelines/{pipeline_id}/cancel")

    assert response.status_code == 202, response.text
    done = gateway.wait_for(pipeline_id, "cancelled")
    assert done["error"]["type"] == "Cancelled"
    deadline = time.monotonic() + 30
    while (run := emulator.runs(pipeline_id)[0])["result_state"] != "CANCELED":
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert "cancelled" in mail.wait_for(pipeline_id)["subject"]
    assert gateway.http.post(f"/pipelines/{pipeline_id}/cancel").status_code == 409


def test_timeout_times_out_cancels_the_run_and_emails(gateway: Gateway, emulator: Emulator, mail: MailSink) -> None:
    pipeline_id = new_id("slow")
    emulator.plan(pipeline_id, notebook="hang")

    gateway.start(pipeline_id, timeout_seconds=4)

    done = gateway.wait_for(pipeline_id, "timed_out", timeout=60)
    email = mail.wait_for(pipeline_id)
    assert "timed out" in email["subject"]
    deadline = time.monotonic() + 30
    while (run := emulator.runs(pipeline_id)[0])["result_state"] != "CANCELED":
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert done["databricks"]["run_id"] == run["run_id"]


def test_callback_before_the_workflow_suspends_still_works(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    # run-now is refused three times (the SDK backs off 1-2 s each time), so
    # the trigger step is still retrying, and the workflow not yet suspended,
    # when the callback arrives. Until the workflow has created the callback
    # promise the gateway answers 404 and changes nothing; the test resends,
    # as a notebook's retry would.
    pipeline_id = new_id("early")
    emulator.plan(pipeline_id, notebook="drop_callback", run_now_errors=3, run_now_error_status=503)
    gateway.start(pipeline_id)
    body, headers = gateway.signed_callback(pipeline_id, {"status": "success", "result": {"early": 1}})

    deadline = time.monotonic() + 30
    while (response := gateway.post_callback(body, headers)).status_code == 404:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)

    assert response.status_code == 200, response.text
    assert gateway.status(pipeline_id)["databricks"] is None  # the run is not even recorded yet
    done = gateway.wait_for(pipeline_id, "succeeded")
    assert done["result"] == {"early": 1}
    assert emulator.counters(pipeline_id)["runs"] == 1
    assert mail.wait_for(pipeline_id)["deliveries"] == 1


def test_replayed_callback_resumes_once_and_emails_once(gateway: Gateway, emulator: Emulator, mail: MailSink) -> None:
    pipeline_id = new_id("replay")
    emulator.plan(pipeline_id, notebook="drop_callback", start_delay_seconds=30)
    gateway.start(pipeline_id)
    gateway.wait_for(pipeline_id, "waiting")
    body, headers = gateway.signed_callback(pipeline_id, {"status": "success", "result": {"n": 1}})

    replies = [gateway.post_callback(body, headers) for _ in range(3)]

    assert [r.status_code for r in replies] == [200, 200, 200]
    assert [r.json()["outcome"] for r in replies] == ["accepted", "duplicate", "duplicate"]
    gateway.wait_for(pipeline_id, "succeeded")
    email = mail.wait_for(pipeline_id)
    time.sleep(1)
    assert len(mail.messages(pipeline_id)) == 1 and email["deliveries"] == 1


def test_transient_databricks_errors_still_succeed_with_one_run(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("throttled")
    emulator.plan(pipeline_id, run_now_errors=3, run_now_error_status=429, retry_after_seconds=1)

    gateway.start(pipeline_id)

    gateway.wait_for(pipeline_id, "succeeded", timeout=90)
    counters = emulator.counters(pipeline_id)
    assert (counters["runs"], counters["run_now_rejected"]) == (1, 3)


def test_the_cli_starts_and_follows_a_pipeline(stack) -> None:  # type: ignore[no-untyped-def]
    pipeline_id = new_id("cli")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline_client.cli",
            "--gateway",
            stack.api_url,
            "--interval",
            "0.3",
            "start",
            "--id",
            pipeline_id,
            "--email",
            "cli@example.com",
            "--param",
            "source=",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].split("  ", 1)[1].startswith(f"{pipeline_id}: succeeded")
    assert any(": waiting" in line for line in lines)

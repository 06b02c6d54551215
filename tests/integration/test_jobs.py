"""Any catalogue job on the compose stack: by name, written with the helper, without a callback, multi-task.

The emulator runs the bundle's jobs (infra/databricks/databricks.yml) with
their real notebooks; the gateway and the worker read the repository's
catalogue (infra/catalogue.toml).
"""

from __future__ import annotations

import httpx
import psycopg
import pytest

from pipeline_shared import promise_tree
from tests.support.stack import Stack
from tests.support.stack_clients import NOTIFICATION_CREDENTIALS, Emulator, Gateway, MailSink, new_id


@pytest.fixture
def database(stack: Stack) -> psycopg.Connection:
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as connection:
        yield connection


def checks_prompted_by_notifications(database: psycopg.Connection, pipeline_id: str) -> list[str]:
    rows = database.execute(
        "SELECT id FROM resonate.promises WHERE id LIKE %s ORDER BY id",
        # The checks of its one job step's run (pipeline_shared.promise_tree.hint_check_id).
        (f"{promise_tree.step_base(pipeline_id, '1')}.hint-%",),
    ).fetchall()
    return [row[0] for row in rows]


def test_a_second_job_written_only_with_the_helper_is_started_by_name(gateway: Gateway, mail: MailSink) -> None:
    pipeline_id = new_id("words")

    started = gateway.start(pipeline_id, job="word-frequencies", parameters={"text": "to be or not to be", "top": "2"})

    assert started.status_code == 202, started.text
    done = gateway.wait_for(pipeline_id, "succeeded")
    assert done["job"] == "word-frequencies"
    assert done["result"]["words"][:2] == [{"word": "be", "count": 2}, {"word": "to", "count": 2}], done["result"]
    assert done["databricks"]["report"] is None, "the notebook's callback reported it"
    email = mail.wait_for(pipeline_id)
    assert "Word frequencies" in email["text"]


def test_catalogue_errors_are_named_and_start_nothing(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("bad")
    for body, where in (
        ({"job": "no-such-job"}, "body.job"),
        ({"job": "word-frequencies"}, "body.parameters.text"),
        ({"job": "nightly-refresh", "parameters": {"table": "payroll"}}, "body.parameters.table"),
        ({"parameters": {"label": "x"}}, "body.parameters.label"),
    ):
        response = gateway.start(pipeline_id, **body)
        assert response.status_code == 422 and response.json()["message"].startswith(where), response.text
    assert gateway.http.get(f"/pipelines/{pipeline_id}").status_code == 404
    assert emulator.runs(pipeline_id) == []


def test_a_job_that_never_calls_back_ends_by_its_notification(
    gateway: Gateway, mail: MailSink, database: psycopg.Connection
) -> None:
    pipeline_id = new_id("nightly")

    gateway.start(pipeline_id, job="nightly-refresh", parameters={"table": "inventory"})

    done = gateway.wait_for(pipeline_id, "succeeded")
    assert done["result"]["table"] == "inventory", done["result"]
    [task] = done["databricks"]["report"]["tasks"]
    assert (task["task_key"], task["result_state"]) == ("refresh", "SUCCESS")
    assert checks_prompted_by_notifications(database, pipeline_id), "the notifications prompted checks"
    assert "succeeded" in mail.wait_for(pipeline_id)["subject"]


def test_a_forged_notification_changes_nothing(gateway: Gateway, stack: Stack) -> None:
    running = new_id("forged")
    gateway.start(running, job="nightly-refresh", parameters={"table": "sales"})
    gateway.wait_for(running, "waiting", "succeeded")
    run_id = gateway.status(running)["databricks"]["run_id"]
    forged = {"event_type": "jobs.on_failure", "workspace_id": "1", "run": {"run_id": run_id}, "job": {"job_id": 1}}

    notifications = f"{stack.callback_url}/notifications/databricks"

    wrong = httpx.post(notifications, json=forged, auth=("databricks", "guess"))
    with_credentials = [
        _outcome(httpx.post(notifications, json=forged, auth=NOTIFICATION_CREDENTIALS)) for _ in range(10)
    ]

    assert wrong.status_code == 401
    assert set(with_credentials) <= {"scheduled", "already_scheduled", "ignored"}
    assert with_credentials.count("scheduled") <= 2, "rate-limited: one check per event and window"
    done = gateway.wait_for(running, "succeeded")
    assert done["error"] is None, "the run succeeded; a forged on_failure did not make it fail"


def test_with_notifications_off_the_watchdog_still_ends_the_pipeline(
    gateway: Gateway, emulator: Emulator, database: psycopg.Connection
) -> None:
    pipeline_id = new_id("quiet")
    emulator.notifications(enabled=False)
    try:
        gateway.start(pipeline_id, job="nightly-refresh", parameters={"table": "customers"})
        done = gateway.wait_for(pipeline_id, "succeeded")
    finally:
        emulator.notifications(enabled=True)

    assert done["result"]["table"] == "customers"
    assert checks_prompted_by_notifications(database, pipeline_id) == [], "no notification came"


def test_a_three_task_job_with_one_failing_task_reports_each_task(
    stack: Stack, emulator: Emulator, mail: MailSink
) -> None:
    admin = Gateway(stack.api_url)
    admin.http.headers["authorization"] = f"Bearer {stack.keys.keys['admin']}"
    pipeline_id = new_id("report")
    emulator.plan_run_of(pipeline_id, tasks={"aggregate": {"fail": True, "message": "division by zero in SQL"}})

    started = admin.start(pipeline_id, job="customer-report", parameters={"customer": "C-1042"})

    assert started.status_code == 202, started.text
    done = admin.wait_for(pipeline_id, "failed", "awaiting_repair", timeout=90)
    tasks = {t["task_key"]: t for t in done["databricks"]["report"]["tasks"]}
    assert tasks["extract"]["result_state"] == "SUCCESS"
    assert tasks["aggregate"]["result_state"] == "FAILED"
    assert tasks["publish"]["result_state"] == "UPSTREAM_FAILED"
    assert "aggregate" in done["error"]["message"]
    if done["state"] == "awaiting_repair":
        assert admin.http.post(f"/pipelines/{pipeline_id}/abandon").status_code == 202
        admin.wait_for(pipeline_id, "failed")
    assert "aggregate" in mail.messages(pipeline_id)[-1]["text"]


def _outcome(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return response.json()["outcome"]

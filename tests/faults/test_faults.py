"""Faults under load: every pipeline finishes, with one Databricks run and one email.

Each test runs a batch of concurrent pipelines through the compose stack while
it breaks something for real: ``docker kill -s KILL`` on a container, an
outage of the notifier or the gateway, Databricks throttling and slow
answers, a mail server refusing mail, notebooks that hang or never call back.
The Resonate server's own faults are in test_resonate_killed.py and test_resonate_server.py.
Each ends with :meth:`Batch.assert_exactly_once`.

Where a kill must land between two particular effects, the worker's test-only
pause points (``pipeline_shared.testhooks``) hold every pipeline of the batch
at that line first; the container is killed once all are there. The replacement
process is not armed and runs through, which is the recovery under test.
Fault tests run after every other test (tests/conftest.py) and leave the stack
as they found it: every container they stop is started again.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx

from tests.support.fault_batch import BATCH_SIZE, Batch, PausePoints
from tests.support.replicas import wait_container_healthy

# ── the worker killed at each point ─────────────────────────────────────────


def test_worker_killed_before_run_now(stack, batch: Batch, hooks: PausePoints) -> None:  # type: ignore[no-untyped-def]
    hooks.arm("before_run_now", batch.steps())
    batch.start()
    batch.wait_until(lambda: hooks.stopped("before_run_now") >= set(batch.steps()), "all stopped before run_now")
    assert {pid: batch.emulator.counters(pid)["run_now_calls"] for pid in batch.ids} == dict.fromkeys(batch.ids, 0)

    stack.kill("worker")
    stack.start("worker")

    batch.wait_for("succeeded")
    batch.assert_exactly_once()


def test_worker_killed_after_run_now_before_its_result_is_recorded(stack, batch: Batch, hooks: PausePoints) -> None:  # type: ignore[no-untyped-def]
    hooks.arm("after_run_now", batch.steps())
    batch.start()
    batch.wait_until(lambda: hooks.stopped("after_run_now") >= set(batch.steps()), "all stopped after run_now")
    assert all(batch.gateway.status(pid)["databricks"] is None for pid in batch.ids)  # not recorded

    stack.kill("worker")
    stack.start("worker")

    docs = batch.wait_for("succeeded")
    batch.assert_exactly_once()
    # The replayed step asked again, with the same idempotency token, and got the same run back.
    for pid in batch.ids:
        counters = batch.emulator.counters(pid)
        assert counters["run_now_calls"] == 2, counters
        assert docs[pid]["databricks"]["run_id"] == counters["run_ids"][0]


def test_worker_killed_while_pipelines_are_suspended(stack, batch: Batch) -> None:  # type: ignore[no-untyped-def]
    # The notebooks are held until the worker is dead, then call back while no worker is alive.
    batch.plan(held=True).start()
    batch.wait_for("waiting")

    stack.kill("worker")
    batch.release()
    batch.wait_for("notifying", timeout=90)  # callbacks accepted, outcomes known, nobody to act on them
    assert all(batch.mail.messages(pid) == [] for pid in batch.ids)
    stack.start("worker")

    batch.wait_for("succeeded")
    batch.assert_exactly_once()


def test_worker_killed_after_the_email_before_the_outcome_is_recorded(stack, batch: Batch, hooks: PausePoints) -> None:  # type: ignore[no-untyped-def]
    hooks.arm("after_email", batch.ids)
    batch.start()
    batch.wait_until(lambda: hooks.stopped("after_email") >= set(batch.ids), "all stopped after the email")
    assert all(len(batch.mail.messages(pid)) == 1 for pid in batch.ids)
    assert {doc["state"] for doc in batch.statuses().values()} == {"notifying"}

    stack.kill("worker")
    stack.start("worker")

    batch.wait_for("succeeded")
    batch.assert_exactly_once()  # the replay reads the sent email's receipt; nothing is sent twice


def test_two_workers_one_killed_the_survivor_finishes(stack, batch: Batch, hooks: PausePoints) -> None:  # type: ignore[no-untyped-def]
    replica = f"worker-replica-{uuid.uuid4().hex[:6]}"
    stack.compose("run", "--detach", "--no-deps", "--name", replica, "worker")
    try:
        wait_container_healthy(replica)
        # Pipelines the first worker picks up stop there; the replica's run through.
        hooks.arm("before_run_now", batch.steps())
        batch.start()
        batch.wait_until(lambda: hooks.stopped("before_run_now"), "the first worker holding some pipelines")
        held = hooks.stopped("before_run_now") & set(batch.steps())

        # By container, not by service: `compose kill worker` would kill the replica too.
        subprocess.run(["docker", "kill", "--signal", "KILL", stack.container_name("worker")], check=True)
        batch.wait_for("succeeded", timeout=120)  # with only the replica alive

        batch.assert_exactly_once()
        assert held, "the killed worker held none of the batch; the test proved nothing"
    finally:
        subprocess.run(["docker", "rm", "--force", replica], capture_output=True, check=False)
        stack.start("worker")


# ── the other services down ─────────────────────────────────────────────────


def test_notifier_down_when_callbacks_arrive(stack, batch: Batch) -> None:  # type: ignore[no-untyped-def]
    stack.kill("notifier")
    batch.start()
    batch.wait_for("notifying", timeout=90)
    time.sleep(2)
    assert all(batch.mail.messages(pid) == [] for pid in batch.ids)

    stack.start("notifier")

    batch.wait_for("succeeded")
    batch.assert_exactly_once()


def test_notifier_killed_after_the_mail_server_accepted_the_email(
    stack, batch: Batch, notifier_hooks: PausePoints
) -> None:  # type: ignore[no-untyped-def]
    # The one place a second SMTP delivery can happen: the mail server has the
    # email, the step's result is not recorded, the process dies. The retry
    # sends it again with the same Message-ID, which is how the recipient's
    # server recognises it as the same email.
    notifier_hooks.arm("after_smtp", batch.ids)
    batch.start()
    batch.wait_until(lambda: notifier_hooks.stopped("after_smtp") >= set(batch.ids), "all stopped after SMTP")

    stack.kill("notifier")
    stack.start("notifier")

    batch.wait_for("succeeded")
    docs = batch.assert_exactly_once(deliveries=2)
    assert all(
        doc["notification"]["message_id"] == batch.mail.messages(pid)[0]["message_id"] for pid, doc in docs.items()
    )


def test_gateway_restarted_mid_flight(stack, batch: Batch) -> None:  # type: ignore[no-untyped-def]
    batch.plan(start_delay_seconds=4).start()
    before = batch.wait_for("waiting")

    stack.kill("api")  # the notebooks call back into the outage and retry
    time.sleep(6)
    stack.start("api")

    assert {pid: doc["databricks"] for pid, doc in batch.statuses().items()} == {
        pid: doc["databricks"] for pid, doc in before.items()
    }
    batch.wait_for("succeeded", timeout=120)
    batch.assert_exactly_once()


# ── Databricks misbehaving ──────────────────────────────────────────────────


def test_databricks_throttling_and_slow_answers(batch: Batch) -> None:
    thirds = len(batch.ids) // 3
    for i, pid in enumerate(batch.ids):
        if i < thirds:
            batch.emulator.plan(pid, run_now_errors=3, run_now_error_status=429, retry_after_seconds=1)
        elif i < 2 * thirds:
            batch.emulator.plan(pid, run_now_errors=3, run_now_error_status=503, retry_after_seconds=1)
        else:
            # Answered after the worker's 5 s HTTP timeout: the run exists, the answer is lost.
            batch.emulator.plan(pid, slow_run_now_responses=1, slow_response_seconds=8)
    batch.start()

    batch.wait_for("succeeded", timeout=120)

    batch.assert_exactly_once()
    for i, pid in enumerate(batch.ids):
        counters = batch.emulator.counters(pid)
        expected = (4, 3) if i < 2 * thirds else (2, 0)
        assert (counters["run_now_calls"], counters["run_now_rejected"]) == expected, (pid, counters)


def test_notebook_hanging_times_out_and_the_run_is_cancelled(batch: Batch) -> None:
    batch.plan(notebook="hang").start(timeout_seconds=6)

    batch.wait_for("timed_out", timeout=90)

    batch.assert_exactly_once()
    batch.wait_until(
        lambda: all(batch.emulator.runs(pid)[0]["result_state"] == "CANCELED" for pid in batch.ids),
        "every hanging run cancelled",
    )
    assert all("timed out" in batch.mail.messages(pid)[0]["subject"] for pid in batch.ids)


def test_notebook_exiting_without_calling_back_is_settled_by_the_watchdog(batch: Batch) -> None:
    batch.plan(notebook="drop_callback").start()

    docs = batch.wait_for("succeeded", timeout=90)

    batch.assert_exactly_once()
    dropped = {pid: batch.emulator.counters(pid)["dropped_callbacks"] for pid in batch.ids}
    assert set(dropped.values()) == {1}, f"callbacks swallowed per pipeline: {dropped}"
    assert all(doc["result"]["row_count"] > 0 for doc in docs.values())  # read back with get-output


# ── the mail server misbehaving ─────────────────────────────────────────────


def test_mail_server_refusing_for_a_while_delivers_later_once(batch: Batch, mail_faults: httpx.Client) -> None:
    before = mail_faults.get("/stats").json()["rejected_transient"]
    response = mail_faults.post("/faults/transient", json={"code": 451, "stage": "rcpt", "seconds": 8})
    assert response.status_code == 200, response.text

    batch.start()

    batch.wait_for("succeeded", timeout=150)
    docs = batch.assert_exactly_once()
    assert mail_faults.get("/stats").json()["rejected_transient"] > before  # the refusals really happened
    assert all(doc["notification"]["delivered"] for doc in docs.values())


def test_mail_server_rejecting_permanently_is_recorded_without_retries(batch: Batch, mail_faults: httpx.Client) -> None:
    for pid in batch.ids:
        response = mail_faults.post("/faults/permanent", json={"recipient": f"{pid}@example.com", "code": 550})
        assert response.status_code == 200, response.text
    before = mail_faults.get("/stats").json()["rejected_permanent"]

    batch.start()

    docs = batch.wait_for("succeeded", timeout=90)
    batch.assert_exactly_once(emails=0)
    for doc in docs.values():
        assert doc["notification"]["delivered"] is False
        assert doc["notification"]["smtp_code"] == 550 and "550" in doc["notification"]["error"]
    time.sleep(2)
    # One attempt per pipeline: a permanent refusal is never retried.
    assert mail_faults.get("/stats").json()["rejected_permanent"] - before == BATCH_SIZE


def test_worker_killed_between_repair_run_and_its_record_repairs_once(stack, batch: Batch, hooks: PausePoints) -> None:  # type: ignore[no-untyped-def]
    # The driver is lost on the first attempt only: a transient failure, repaired automatically.
    batch.plan(tasks={"pipeline": {"code": "DRIVER_ERROR", "fail_attempts": 1}})
    hooks.arm("after_repair_run", batch.steps())
    batch.start()
    batch.wait_until(lambda: hooks.stopped("after_repair_run") >= set(batch.steps()), "all stopped after repair_run")

    stack.kill("worker")
    stack.start("worker")

    docs = batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once()
    for pid, doc in docs.items():
        # The replayed step found the repair in the run's history instead of asking for another.
        emulated = batch.emulator.run(doc["databricks"]["run_id"])
        assert len(emulated["repairs"]) == 1, (pid, emulated["repairs"])
        assert [(a["number"], a["outcome"]) for a in doc["attempts"]] == [(0, "failure"), (1, "success")]

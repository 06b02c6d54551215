"""The Resonate server itself killed and restarted: while pipelines wait, during a burst of callbacks, mid-email.

The server is resonate-pg, so "the server" is the Postgres container: every
promise, task and timer is a row in its named volume. Each test runs a batch
of concurrent pipelines, kills the server at a chosen moment, and ends with
:meth:`Batch.assert_exactly_once`: every pipeline final, one Databricks run,
one email. (Cut off and taken down with the whole stack: test_resonate_server.py.)

What carries the work over each outage: the workflows are suspended on
durable promises (nothing to lose in memory), the notebooks retry their
callbacks with backoff while the gateway answers 503, the services' database
pools replace dead connections as they lend them, and task leases move work
that a process held when the server died.
"""

from __future__ import annotations

import time

import httpx

from tests.support.fault_batch import Batch
from tests.support.stack import Stack

#: How long the server stays down after a SIGKILL; longer than the gateway's
#: 5 s wait for a connection, so requests really are refused meanwhile.
DOWN_SECONDS = 6


def _killed_and_restarted(stack: Stack, batch: Batch) -> None:
    stack.kill("resonate")
    # Refused, and told when to come back, rather than a 500.
    response = batch.gateway.http.get(f"/pipelines/{batch.ids[0]}")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "resonate_unavailable"
    assert response.headers["retry-after"].isdigit()
    time.sleep(DOWN_SECONDS)
    stack.start("resonate")


def test_resonate_killed_while_pipelines_wait(stack: Stack, batch: Batch) -> None:
    # The notebooks are held until the server is back: every pipeline is suspended on its
    # callback promise when the server dies, and calls back after it is back.
    batch.plan(held=True).start()
    before = batch.wait_for("waiting")

    _killed_and_restarted(stack, batch)

    # Nothing was forgotten: the same runs, still waiting.
    after = batch.statuses()
    assert {pid: doc["databricks"] for pid, doc in after.items()} == {
        pid: doc["databricks"] for pid, doc in before.items()
    }
    batch.release()
    batch.wait_for("succeeded", timeout=120)
    batch.assert_exactly_once()


def test_resonate_killed_during_a_burst_of_callbacks(stack: Stack, batch: Batch) -> None:
    # Twenty notebooks finish within a second of each other; the server dies
    # as the first of their callbacks is accepted, so the rest meet the outage
    # and retry.
    batch.plan(start_delay_seconds=3).start()
    batch.wait_until(
        lambda: any(doc["state"] in {"notifying", "succeeded"} for doc in batch.statuses().values()),
        "the first callback accepted",
        timeout=60,
    )

    _killed_and_restarted(stack, batch)

    batch.wait_for("succeeded", timeout=180)
    # The first pipelines to be settled are sending their email when the
    # server dies; like those in the next test, an email may reach the mail
    # server twice under one Message-ID (see there, and docs/reliability.md).
    batch.assert_exactly_once(deliveries=range(1, 3))


def test_resonate_killed_while_emails_are_being_sent(stack: Stack, batch: Batch, mail_faults: httpx.Client) -> None:
    # The mail server refuses until the server is back, so every email step is
    # retrying (inside the step, then on Resonate's durable backoff) when the
    # server dies.
    response = mail_faults.post("/faults/transient", json={"code": 451, "stage": "rcpt", "seconds": 600})
    assert response.status_code == 200, response.text
    refused_before = mail_faults.get("/stats").json()["rejected_transient"]
    batch.start()
    batch.wait_for("notifying", timeout=120)  # every outcome known, no email accepted
    batch.wait_until(
        lambda: mail_faults.get("/stats").json()["rejected_transient"] >= refused_before + len(batch.ids),
        "as many refusals as pipelines",
        timeout=60,
    )

    _killed_and_restarted(stack, batch)
    mail_faults.delete("/faults")

    batch.wait_for("succeeded", timeout=180)
    # One email per pipeline, by Message-ID. It may have been handed to the
    # mail server twice: the outage outlasts the test stack's 6 s task lease
    # (TASK_LEASE_SECONDS), so when the server is back it hands each email
    # step, still retrying in the notifier, to a second execution, and both
    # may get through once the mail server accepts again. The copy carries
    # the same Message-ID, which is how the recipient's server tells it is
    # the same email. (With the default 60 s lease an outage this short
    # expires no lease.)
    docs = batch.assert_exactly_once(deliveries=range(1, 3))
    assert all(doc["notification"]["delivered"] for doc in docs.values())

"""The Resonate server itself breaking: cut off by a partition, or taken down with the whole stack.

The server is resonate-pg, so "the server" is the Postgres container: every
promise, task and timer is a row in its named volume. Each test runs a batch
of concurrent pipelines, breaks the server at a chosen moment, and ends with
:meth:`Batch.assert_exactly_once`: every pipeline final, one Databricks run,
one email.

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


def test_resonate_database_unreachable_for_30_s_while_callbacks_arrive(stack: Stack, batch: Batch) -> None:
    # A partition closes nothing: connections go silent. TCP keepalive
    # (RESONATE_KEEPALIVE_SECONDS=3 here) turns the silence into errors, the
    # services report themselves not ready, and the notebooks' callbacks
    # (due 6 s after the start) retry through the outage.
    batch.plan(start_delay_seconds=6).start()
    batch.wait_for("waiting")

    with stack.partitioned("resonate"):
        cut_at = time.monotonic()
        for ops in (stack.worker_ops_url, stack.notifier_ops_url, stack.api_url):
            batch.wait_until(
                lambda ops=ops: "the Resonate database" in (_readiness(ops) or ""),
                f"{ops} reporting the Resonate database unreachable",
                timeout=30,
            )
        time.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))

    for service in ("api", "worker", "notifier"):
        stack.wait_healthy(service)
    batch.wait_for("succeeded", timeout=240)
    batch.assert_exactly_once()


def test_the_whole_stack_taken_down_and_brought_up_with_pipelines_in_flight(stack: Stack, batch: Batch) -> None:
    # `docker compose down` (volumes kept) of everything this project
    # deploys: the gateway, worker, notifier and the Resonate server. The
    # Databricks emulator and the mail sink stand for systems outside the
    # deployment (a workspace, a mail relay) and stay up, as those would.
    # Half the batch is waiting on Databricks; the other half has its outcome
    # and is on the way to its email when everything goes.
    # The waiting half's notebooks are held until the stack is back; the mail server refuses the
    # finishing half's emails until then (the fault is cleared once it is, or after 120 s).
    waiting, finishing = batch.ids[: len(batch.ids) // 2], batch.ids[len(batch.ids) // 2 :]
    for pid in waiting:
        batch.emulator.plan(pid, held=True)
    for pid in finishing:
        batch.emulator.plan(pid, start_delay_seconds=1)
    response = httpx.post(
        f"{stack.mailsink_url}/faults/transient", json={"code": 451, "stage": "rcpt", "seconds": 120}, timeout=10
    )
    assert response.status_code == 200, response.text
    try:
        batch.start()
        batch.wait_until(
            lambda: all(batch.gateway.status(pid)["state"] == "notifying" for pid in finishing),
            "half the batch on the way to its email",
            timeout=60,
        )
        assert all(batch.gateway.status(pid)["state"] == "waiting" for pid in waiting)

        stack.down_and_up("api", "worker", "notifier", "resonate")
    finally:
        httpx.delete(f"{stack.mailsink_url}/faults", timeout=10)
        batch.release(waiting)

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once()


def _readiness(url: str) -> str | None:
    """Why the service at ``url`` is not ready, or None when it is."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return f"readyz did not answer: {exc}"
    return None if response.status_code == 200 else response.json().get("message")

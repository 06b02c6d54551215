"""Batches of concurrent pipelines, and the exactly-once checks every fault test ends with.

Every fault test runs at least :data:`BATCH_SIZE` pipelines at once through
the real stack and finishes by asserting, per pipeline: it reached a final
state, Databricks (the emulator) saw exactly one run, and the mail sink
received exactly one email (one Message-ID).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support.stack_clients import FINAL_STATES, Emulator, Gateway, MailSink, assert_timeline_tells, new_id

BATCH_SIZE = 20

#: Poll interval while waiting for a batch.
POLL_SECONDS = 0.5


class Batch:
    def __init__(self, gateway: Gateway, emulator: Emulator, mail: MailSink, label: str, size: int = BATCH_SIZE):
        self.gateway = gateway
        self.emulator = emulator
        self.mail = mail
        self.ids = [new_id(label) for _ in range(size)]

    def steps(self, step: str = "1") -> list[str]:
        """Job step ``step`` of every pipeline of the batch, as the worker's pause points name a job's run.

        A standalone job runs as its pipeline's step 1 (pipeline_shared.promise_tree.step_base).
        """
        return [f"{pipeline_id}:{step}" for pipeline_id in self.ids]

    def plan(self, **plan: Any) -> Batch:
        for pipeline_id in self.ids:
            self.emulator.plan(pipeline_id, **plan)
        return self

    def release(self, pipeline_ids: list[str] | None = None) -> None:
        """Let the held runs (``plan(held=True)``) of ``pipeline_ids`` (by default the whole batch) go on."""
        for pipeline_id in self.ids if pipeline_ids is None else pipeline_ids:
            self.emulator.release(pipeline_id)

    def start(self, **body: Any) -> Batch:
        """Start every pipeline at once; each must be accepted."""
        with ThreadPoolExecutor(max_workers=len(self.ids)) as pool:
            responses = list(pool.map(lambda pid: self.gateway.start(pid, **body), self.ids))
        assert [r.status_code for r in responses] == [202] * len(self.ids), [r.text for r in responses]
        return self

    def statuses(self, pipeline_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """The status document of each of ``pipeline_ids`` (by default the whole batch), by id."""
        chosen = self.ids if pipeline_ids is None else pipeline_ids
        if not chosen:
            return {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(chosen, pool.map(self.gateway.status, chosen), strict=True))

    def wait_for(self, *states: str, timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Every pipeline's status once all are in one of ``states``.

        A pipeline seen in one of ``states`` that is final is not read again (it stays
        there): a batch's 20 documents every :data:`POLL_SECONDS` are reads the stack
        serves on the cores the other tests share, and most of a fault test is this wait.
        """
        deadline = time.monotonic() + timeout
        final = set(states) & FINAL_STATES
        done: dict[str, dict[str, Any]] = {}
        while True:
            docs = done | self.statuses([pid for pid in self.ids if pid not in done])
            if all(doc["state"] in states for doc in docs.values()):
                return {pid: docs[pid] for pid in self.ids}
            stray = {pid: doc["state"] for pid, doc in docs.items() if doc["state"] in FINAL_STATES - set(states)}
            assert not stray, f"pipelines ended in unexpected states (wanted {states}): {stray}"
            if time.monotonic() > deadline:
                waiting = {pid: doc["state"] for pid, doc in docs.items() if doc["state"] not in states}
                raise AssertionError(f"after {timeout}s, not yet {states}: {waiting}")
            done |= {pid: doc for pid, doc in docs.items() if doc["state"] in final}
            time.sleep(POLL_SECONDS)

    def wait_until(self, predicate: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"after {timeout}s, still not: {what}"
            time.sleep(POLL_SECONDS)

    def assert_exactly_once(
        self, *, runs: int = 1, emails: int = 1, deliveries: int | range = 1
    ) -> dict[str, dict[str, Any]]:
        """Per pipeline: final, ``runs`` runs, ``emails`` distinct emails, each delivered ``deliveries`` times.

        Emails are counted as the recipient's server counts them, by
        Message-ID; ``deliveries`` is how many SMTP transactions carried it
        (a range where a test allows a resend of the same email).
        """
        docs = self.statuses()
        not_final = {pid: doc["state"] for pid, doc in docs.items() if doc["state"] not in FINAL_STATES}
        assert not not_final, f"pipelines lost or stuck: {not_final}"
        run_counts = {pid: self.emulator.counters(pid)["runs"] for pid in self.ids}
        assert run_counts == dict.fromkeys(self.ids, runs), f"Databricks runs per pipeline: {run_counts}"
        if emails:
            # The email may land a moment after the status turns final.
            for pid in self.ids:
                self.mail.wait_for_count(pid, emails, timeout=30)
        messages = {pid: self.mail.messages(pid) for pid in self.ids}
        counts = {pid: len(found) for pid, found in messages.items()}
        assert counts == dict.fromkeys(self.ids, emails), f"emails (distinct Message-IDs) per pipeline: {counts}"
        allowed = range(deliveries, deliveries + 1) if isinstance(deliveries, int) else deliveries
        seen = {pid: [m["deliveries"] for m in found] for pid, found in messages.items()}
        assert all(all(n in allowed for n in d) for d in seen.values()), f"SMTP deliveries per email: {seen}"
        self.assert_timelines(docs)
        return docs

    def assert_timelines(self, docs: dict[str, dict[str, Any]]) -> None:
        """Whatever the fault did, each pipeline's timeline in the index is complete, in order, and agrees."""
        for pipeline_id, doc in docs.items():
            timeline = self.gateway.wait_for_timeline(pipeline_id, doc["state"])
            assert_timeline_tells(doc, timeline["events"])


class PausePoints:
    """A service's test-only pause points (pipeline_shared.testhooks), over its ops port."""

    def __init__(self, ops_url: str) -> None:
        self.http = httpx.Client(base_url=ops_url, timeout=10)

    def arm(self, point: str, pipeline_ids: list[str]) -> None:
        response = self.http.put(f"/test-hooks/{point}", json={"pipelines": pipeline_ids})
        assert response.status_code == 200, response.text

    def stopped(self, point: str) -> set[str]:
        return set(self.http.get("/test-hooks").json()[point])

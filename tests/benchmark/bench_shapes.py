"""The shapes of pipeline the benchmark calls back, and which promises each one's callbacks and email are.

A pipeline's shape decides where its job's callback promise is: the one-job
workflow's (``spec.version`` None) hangs off the pipeline, ``P:1``; a
pipeline run by its code has it under its job step, ``P:N.1``. Every phase
asks its shape (:func:`one_job_shape` for what the gateway started) rather
than building an id itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline_shared import names, promise_tree

from .bench_clients import CALLBACK_RESULT, SignedCallback, callback_promise_for, signed_callback

#: A table ingest could have written (the catalogue's pattern for the pair's `table`).
INGESTED_TABLE = "/Volumes/main/onboarding/ingested/customers-00000000000000be.csv"
#: What each onboarding job's notebook reports (only what the pipeline reads of it).
ONBOARDING_RESULTS = {
    "1": {"table": INGESTED_TABLE, "rows": 6},
    "2": {"score": 10},
    "3": {"report": "/Volumes/main/onboarding/reports/benchmark.md"},
}


@dataclass(frozen=True)
class Shape:
    """One shape of pipeline: how the gateway starts it and which job steps call back, round by round."""

    key: str
    label: str
    #: ``run_pipeline``'s Resonate version the root is dispatched at.
    function_version: int
    #: Whether ``spec.version`` is set (the entry's version: run by its code) or None (the one-job workflow).
    by_code: bool
    job: str
    #: Job steps called back together, round by round; None: the one-job workflow's own run.
    rounds: tuple[tuple[str | None, ...], ...]
    #: The child of the root that asks the notifier for the outcome email (``P:N``).
    outcome_email: str
    parameters: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def jobs(self) -> int:
        return sum(len(steps) for steps in self.rounds)

    def result(self, step: str | None) -> dict[str, Any]:
        return self.results.get(step or "", CALLBACK_RESULT)

    def first_callback(self, pipeline_id: str) -> SignedCallback:
        """The callback of the pipeline's first run (a one-job pipeline's only one)."""
        step = self.rounds[0][0]
        return signed_callback(pipeline_id, step, self.result(step))

    def callback_promise(self, pipeline_id: str) -> str:
        """The promise the first run's callback settles."""
        return callback_promise_for(pipeline_id, self.rounds[0][0])

    def email_rpc(self, pipeline_id: str) -> str:
        """The root's child asking the notifier for the outcome email: its ``created_at`` is when it was asked."""
        return promise_tree.step_base(pipeline_id, self.outcome_email)

    def callbacks(self, pipeline_ids: Sequence[str], round_index: int) -> list[SignedCallback]:
        """Signed callbacks of one round, for every pipeline, pipeline by pipeline."""
        return [
            signed_callback(pipeline_id, step, self.result(step))
            for pipeline_id in pipeline_ids
            for step in self.rounds[round_index]
        ]


#: The one-job workflow's email rpc is its fourth child (callback, trigger, watchdog, email).
LEGACY = Shape("legacy", "one-job workflow (main's shape)", 1, False, "csv-statistics", ((None,),), "4")
#: The job step, then the runner's outcome email.
ONE_JOB = Shape(
    "one_job", "one-job pipeline run by its code", names.RUN_PIPELINE_VERSION, True, "csv-statistics", (("1",),), "2"
)
#: Threshold 100 over a score of 10: no approval; a summary email step, then the outcome email.
ONBOARDING = Shape(
    "onboarding",
    "customer-onboarding (3 jobs)",
    names.RUN_PIPELINE_VERSION,
    True,
    "customer-onboarding",
    (("1",), ("2", "3")),
    "5",
    {"approval_threshold": "100"},
    ONBOARDING_RESULTS,
)


def one_job_shape(spec_version: int | None) -> Shape:
    """The shape of a one-job pipeline the gateway started, from its spec's version."""
    return LEGACY if spec_version is None else ONE_JOB

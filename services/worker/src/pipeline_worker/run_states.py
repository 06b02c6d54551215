"""What each Databricks run state means for a pipeline: still going, or over, and how.

The Jobs API shows a run's state twice: the older ``state``
(``life_cycle_state`` and, once terminated, ``result_state``) and the newer
``status`` (``state`` and ``termination_details``). Every value either can
take is listed here, and a test holds these tables to databricks-sdk's own
enums, so a state Databricks adds fails the tests rather than being read as
"still running" for ever.

The older shape is the richer one for outcomes (only it tells
``SUCCESS_WITH_FAILURES`` and ``UPSTREAM_FAILED`` apart), so it decides; the
newer one is read when a run carries only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["success", "failure", "cancelled"]


@dataclass(frozen=True)
class Verdict:
    """A state's meaning: over or not, and if over, how the pipeline ends."""

    terminal: bool
    status: Status | None = None
    #: Said of it in emails and errors.
    meaning: str = ""


GOING = Verdict(terminal=False)

#: ``state.life_cycle_state``. TERMINATED's outcome is in the result state.
LIFE_CYCLE: dict[str, Verdict | None] = {
    "QUEUED": Verdict(False, meaning="waiting in the job's queue"),
    "PENDING": Verdict(False, meaning="waiting for compute"),
    "BLOCKED": Verdict(False, meaning="blocked on an upstream dependency"),
    "WAITING_FOR_RETRY": Verdict(False, meaning="waiting to retry a failed task"),
    "RUNNING": Verdict(False, meaning="running"),
    "TERMINATING": Verdict(False, meaning="finishing"),
    "TERMINATED": None,
    "SKIPPED": Verdict(True, "failure", "skipped: an earlier run of the job was still active"),
    "INTERNAL_ERROR": Verdict(True, "failure", "ended by an internal error of Databricks"),
}

#: ``state.result_state``, of a job run or of one task.
RESULT: dict[str, Verdict] = {
    "SUCCESS": Verdict(True, "success", "succeeded"),
    # The leaf tasks succeeded; some others failed (allowed by their run_if).
    "SUCCESS_WITH_FAILURES": Verdict(True, "success", "succeeded, with some tasks failed"),
    "FAILED": Verdict(True, "failure", "failed"),
    "TIMEDOUT": Verdict(True, "failure", "stopped by the job's own timeout"),
    "CANCELED": Verdict(True, "cancelled", "cancelled"),
    "MAXIMUM_CONCURRENT_RUNS_REACHED": Verdict(True, "failure", "not started: the job was at its concurrent-run limit"),
    "UPSTREAM_FAILED": Verdict(True, "failure", "not run: a task it depends on failed"),
    "UPSTREAM_CANCELED": Verdict(True, "cancelled", "not run: a task it depends on was cancelled"),
    # Tasks left out by their run_if condition or an if/else branch: not a failure.
    "EXCLUDED": Verdict(True, "success", "excluded by its run condition"),
    "DISABLED": Verdict(True, "failure", "not run: the task is disabled"),
}

#: ``status.state``: the newer shape, which has no outcome of its own.
STATUS: dict[str, Verdict | None] = {
    "QUEUED": LIFE_CYCLE["QUEUED"],
    "PENDING": LIFE_CYCLE["PENDING"],
    "BLOCKED": LIFE_CYCLE["BLOCKED"],
    "WAITING": Verdict(False, meaning="waiting to retry a failed task"),
    "RUNNING": LIFE_CYCLE["RUNNING"],
    "TERMINATING": LIFE_CYCLE["TERMINATING"],
    "TERMINATED": None,
}

#: ``status.termination_details.code`` of a terminated run, for runs that show
#: only the newer shape. Every code not listed is a failure.
TERMINATION_SUCCESS = {"SUCCESS": "succeeded", "SUCCESS_WITH_FAILURES": "succeeded, with some tasks failed"}
TERMINATION_CANCELLED = {"CANCELED", "USER_CANCELED"}


def verdict(
    life_cycle_state: str | None,
    result_state: str | None,
    status_state: str | None = None,
    termination_code: str | None = None,
) -> Verdict:
    """What a run's state means. An unknown state counts as still going: it is logged by the caller."""
    if life_cycle_state is not None:
        known = LIFE_CYCLE.get(life_cycle_state, GOING)
        if known is not None:
            return known
        if result_state is None:
            return Verdict(True, "failure", "terminated without a result")
        return RESULT.get(result_state, Verdict(True, "failure", f"ended {result_state}"))
    if status_state is not None:
        known = STATUS.get(status_state, GOING)
        if known is not None:
            return known
        if termination_code in TERMINATION_SUCCESS:
            return Verdict(True, "success", TERMINATION_SUCCESS[termination_code])
        if termination_code in TERMINATION_CANCELLED:
            return Verdict(True, "cancelled", "cancelled")
        return Verdict(True, "failure", f"ended {termination_code or 'without a termination code'}")
    return GOING

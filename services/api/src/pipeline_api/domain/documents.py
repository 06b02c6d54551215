"""The status document (``GET /pipelines/{id}``) of a pipeline, made from its promises as read.

One reading serves the one-job workflow (a pipeline started before pipelines
were code, whose run is the pipeline's own) and each job step of a pipeline
run by its code (the same workflow one level down, under ``P:N``):
:func:`job_progress` says where a run stands from its promises under its
base. The pipeline's state is the workflow's own for the former, and for the
latter the one the contract gives a pipeline of steps (``PipelineTree.composed_state``,
which the index reads too).
Reads nothing and writes nothing: the caller hands it the promises.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from resonate.types import PromiseRecord

from pipeline_shared import promise_tree
from pipeline_shared.callbacks import stored_settlement
from pipeline_shared.models import (
    Attempt,
    DatabricksRun,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RepairDecision,
    RunError,
    RunReport,
    StepKind,
    TriggerOutcome,
    parameters_in_use,
)
from pipeline_shared.promise_tree import PipelineTree

from ..schemas import DatabricksRunView, NotificationView, PipelineStatus


def iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class JobProgress:
    """Where one run stands while its workflow (the one-job workflow, or a job step) has not ended."""

    state: PipelineState = PipelineState.STARTING
    run: DatabricksRun | None = None
    result: dict[str, Any] | None = None
    error: RunError | None = None
    report: RunReport | None = None
    attempts: list[Attempt] = field(default_factory=list)
    repair_deadline: datetime | None = None
    #: The parameters a repair being made reruns with (its record is not written yet); None: those recorded.
    repairing_with: dict[str, str] | None = None
    #: The promises read that say so, for the document's ``updated_at``.
    touched: list[PromiseRecord] = field(default_factory=list)


def job_progress(tree: PipelineTree, step: str | None = None) -> JobProgress:
    """Where the run of the one-job workflow (``step`` None), or of job step ``step``, stands."""
    base = tree.base(step)
    trigger = tree.get(promise_tree.trigger_step_id(base))
    repairs = tree.repairs(step)
    callback = tree.get(repairs.current_callback_id)
    triggered = TriggerOutcome.model_validate(trigger.value.data) if trigger and trigger.state == "resolved" else None
    progress = JobProgress(
        run=triggered.run if triggered else None,
        attempts=repairs.attempts,
        touched=[r for r in (callback, trigger, *repairs.records) if r is not None],
    )
    window = repairs.open_window
    if window is not None:
        # The run failed; a person may repair or abandon it until the deadline.
        # Its report is the failed run's, as the awaiting email shows it.
        failed = stored_settlement(callback).stored if callback is not None else None
        progress.report, progress.error = (failed.report if failed is not None else None), window.attempt.error
        decision = tree.get(window.decision_promise_id)
        if decision is not None and decision.state == "pending":
            progress.state = PipelineState.AWAITING_REPAIR
            progress.repair_deadline = iso(window.repair_deadline) if window.repair_deadline else None
        else:
            # Decided (the repair is being made), or the window ended (the email is on its way).
            repairing = (
                decision is not None and decision.state == "resolved" and decision.value.data.get("action") == "repair"
            )
            progress.state = PipelineState.WAITING if repairing else PipelineState.NOTIFYING
            if repairing:
                # The repair being made reruns with the decision's parameters (its record is not written
                # yet); the failed attempt's error is history (in ``attempts``), as once the record is.
                progress.report, progress.error = None, None
                with contextlib.suppress(ValidationError):
                    progress.repairing_with = RepairDecision.model_validate(decision.value.data).parameters
    elif callback is not None and callback.state != "pending":
        # The outcome is known; the workflow is repairing, cancelling or emailing.
        progress.state = PipelineState.NOTIFYING
        settled = stored_settlement(callback).stored
        if settled is not None:
            progress.result, progress.error, progress.report = settled.result, settled.error, settled.report
    elif triggered is not None:
        progress.state = PipelineState.WAITING if triggered.run is not None else PipelineState.NOTIFYING
        progress.error = triggered.error
    return progress


def status_of(tree: PipelineTree, spec: PipelineSpec, default_job: str) -> PipelineStatus:
    """The status document of the pipeline whose promises ``tree`` holds (its spine at least; all, if composed)."""
    root = tree.root
    steps = tree.steps() if tree.composed else []
    jobs = [summary.id for summary in steps if summary.kind is StepKind.JOB]
    #: A pipeline with exactly one job step reads as the one-job workflow did: that step's run is its own.
    only = jobs[0] if len(jobs) == 1 else None
    base: dict[str, Any] = {
        "id": spec.id,
        "job": spec.job or default_job,
        "email": spec.email,
        "timeout_seconds": spec.timeout_seconds,
        "created_at": iso(root.created_at),
        "version": spec.version,
        "scheduled_at": iso(spec.scheduled_at) if spec.scheduled_at is not None else None,
        "steps": steps,
    }
    if root.state == "resolved":
        outcome = PipelineOutcome.model_validate(root.value.data)
        receipt = outcome.notification
        ended = tree.job_steps[only].run if only is not None else None
        run, report = outcome.run, outcome.report
        result, error, attempts = outcome.result, outcome.error, outcome.attempts
        if ended is not None:
            # Its run is the step's; its result and error stay the pipeline's own (what its function returned).
            run, report, attempts = ended.run or run, ended.report or report, ended.attempts or attempts
        return PipelineStatus(
            **base,
            **_parameters_view(spec, parameters_in_use(spec.parameters, attempts)),
            state=outcome.state,
            databricks=_run_view(run, report),
            result=result,
            error=error,
            notification=NotificationView(**receipt.model_dump()) if receipt else None,
            attempts=attempts,
            updated_at=iso(root.settled_at or root.created_at),
        )
    if root.state != "pending":
        return PipelineStatus(
            **base,
            **_parameters_view(spec, spec.parameters),
            state=PipelineState.FAILED,
            databricks=None,
            error=RunError(
                type="WorkflowEnded",
                message=f"the pipeline's workflow ended {root.state.replace('_', ' ')} before finishing",
            ),
            updated_at=iso(root.settled_at or root.created_at),
        )
    if tree.composed:
        progress = job_progress(tree, only) if only is not None else JobProgress()
        state = tree.composed_state() or PipelineState.WAITING
        touched = tree.telling()
    else:
        progress = job_progress(tree)
        state = progress.state
        touched = [root, *progress.touched]
    in_use = progress.repairing_with or parameters_in_use(spec.parameters, progress.attempts)
    return PipelineStatus(
        **base,
        **_parameters_view(spec, in_use),
        state=state,
        databricks=_run_view(progress.run, progress.report),
        result=progress.result,
        error=progress.error,
        attempts=progress.attempts,
        repair_deadline=progress.repair_deadline,
        updated_at=iso(max(r.settled_at or r.created_at for r in touched)),
    )


def _parameters_view(spec: PipelineSpec, in_use: dict[str, str]) -> dict[str, Any]:
    """The status document's parameters: what the run now uses, and the start's when a repair changed them."""
    return {"parameters": in_use, "parameters_at_start": spec.parameters if in_use != spec.parameters else None}


def _run_view(run: DatabricksRun | None, report: RunReport | None = None) -> DatabricksRunView | None:
    if run is None:
        return None
    return DatabricksRunView(run_id=run.run_id, run_page_url=run.run_page_url, job_id=run.job_id, report=report)

"""A pipeline run by its code, written into a real Resonate server as the worker's steps leave its promises.

The contract's tree (docs/architecture.md; /pipeline_shared/promise_tree.py):
the root ``P`` (``run_pipeline`` at Resonate version 3, its spec carrying a
version), and one child ``P:N`` per building block: a job step's child
workflow with its record ``P:N.job``, callback ``P:N.1`` and trigger
``P:N.2`` (and, when its run failed, the repair window ``P:N.await1``); an
approval gate's child workflow with its decision ``P:N.1``, record
``P:N.gate`` and request email ``P:N.3``; an email step ``P:N``; the outcome
email ``P:K``. No worker runs: each test decides how far each step got, and
the index must read that back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from resonate.promises import Promises
from resonate.types import Value

from pipeline_api.auth.principals import Principal
from pipeline_shared import names, promise_tree
from pipeline_shared.invocations import dispatch
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    Attempt,
    AttemptRecord,
    DatabricksRun,
    JobRun,
    JobStepRecord,
    Notification,
    NotificationReceipt,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RunError,
    Settlement,
    TriggerOutcome,
)

#: A promise's deadline: far enough that no test sees one time out.
LATER_MS = 3_600_000
#: The pipeline the tree is of (a name the catalogue need not hold: the index reads what was started).
PIPELINE = "customer-onboarding"


def now_ms() -> int:
    return int(time.time() * 1000)


class ComposedPromises:
    """Writes the promises of pipelines run by their code through ``promises`` (a client of the server under test)."""

    def __init__(self, promises: Promises) -> None:
        self._promises = promises

    async def start(self, by: Principal, pipeline_id: str | None = None) -> str:
        """The root, as the gateway dispatches a pipeline of version 1 of its code; its id."""
        spec = PipelineSpec(
            id=pipeline_id or f"cmp-{uuid.uuid4().hex[:16]}",
            email="index@example.com",
            parameters={"upload": "/Workspace/Shared/pipelines/sample.csv", "approval_threshold": "70"},
            timeout_seconds=3600,
            job=PIPELINE,
            version=1,
        )
        await dispatch(
            self._promises,
            spec.id,
            names.RUN_PIPELINE,
            spec.model_dump(mode="json"),
            group=names.WORKER_GROUP,
            origin=spec.id,
            timeout_at=now_ms() + LATER_MS,
            extra_tags={promise_tree.OWNER_TAG: by.id},
            version=names.RUN_PIPELINE_VERSION,
        )
        return spec.id

    async def job_step(
        self,
        pipeline_id: str,
        step: str,
        job: str,
        run_id: int,
        *,
        outcome: str | None = None,
        ended: PipelineState | None = None,
    ) -> None:
        """Job step ``step`` of ``job``: recorded and triggered; its callback settled with ``outcome``; ended."""
        base = promise_tree.step_base(pipeline_id, step)
        started = now_ms()
        await self._child(pipeline_id, base, {"func": "run_job_step", "args": [step]}, parent=pipeline_id)
        record = JobStepRecord(step=step, name=job, job=job, parameters={}, timeout_seconds=600, started_at=started)
        await self._child(pipeline_id, promise_tree.job_step_record_id(base), record, parent=base, value={})
        run = DatabricksRun(run_id=run_id, run_page_url=f"https://databricks.test/#job/7/run/{run_id}", job_id=7)
        callback = promise_tree.callback_promise_id(base)
        await self._child(pipeline_id, callback, {"run": run_id}, parent=base)
        trigger = TriggerOutcome(run=run, started_at=started)
        await self._child(pipeline_id, promise_tree.trigger_step_id(base), {"step": step}, parent=base, value=trigger)
        if outcome is not None:
            error = RunError(type="ValueError", message="bad table") if outcome == "failure" else None
            settled = Settlement(status=outcome, error=error, source="callback", received_at=now_ms())  # type: ignore[arg-type]
            await self._promises.resolve(callback, Value(data=settled.model_dump(mode="json")))
        if ended is not None:
            value = JobRun(step=step, name=job, job=job, state=ended, parameters={}, run=run, started_at=started,
                           ended_at=now_ms())  # fmt: skip
            await self._promises.resolve(base, Value(data=value.model_dump(mode="json")))

    async def awaiting_repair(self, pipeline_id: str, step: str) -> None:
        """Job step ``step``'s failed run waits for a person (its callback settled with a failure first)."""
        base = promise_tree.step_base(pipeline_id, step)
        decision = f"{base}.3"
        await self._child(pipeline_id, decision, {"decision": True}, parent=base)
        failed = Attempt(number=0, started_at=now_ms(), reason="the original run", outcome="failure")
        record = AttemptRecord(attempt=failed, decision_promise_id=decision, repair_deadline=now_ms() + LATER_MS)
        await self._child(pipeline_id, promise_tree.repair_window_id(base, 1), record, parent=base, value={})

    async def gate(
        self,
        pipeline_id: str,
        step: str,
        name: str,
        *,
        decision: ApprovalDecision | None = None,
        notify: tuple[str, ...] = ("approver@example.com",),
    ) -> ApprovalRecord:
        """Approval gate ``name`` at ``step``: opened, its request emailed; decided when ``decision`` is given."""
        base = promise_tree.step_base(pipeline_id, step)
        deadline = now_ms() + LATER_MS
        await self._child(pipeline_id, base, {"func": "run_approval", "args": [step]}, parent=pipeline_id)
        decision_id = promise_tree.callback_promise_id(base)
        await self._child(pipeline_id, decision_id, {"gate": name}, parent=base, timeout_at=deadline)
        record = ApprovalRecord(
            step=step, name=name, message=f"Risk score 91: activate? http://evil.example\n{'x' * 400}",
            scopes=["approve"], deadline=deadline, decision_promise_id=decision_id, notify=list(notify),
            opened_at=now_ms(),
        )  # fmt: skip
        await self._child(pipeline_id, promise_tree.approval_record_id(base), record, parent=base, value={})
        request = Notification(
            pipeline_id=pipeline_id, email="index@example.com", state=PipelineState.AWAITING_APPROVAL,
            parameters={}, kind="approval_request", step=step, approval=record,
        )  # fmt: skip
        await self._email(pipeline_id, f"{base}.3", request, parent=base)
        if decision is not None:
            await self._promises.resolve(decision_id, Value(data=decision.model_dump(mode="json")))
        return record

    async def email_step(self, pipeline_id: str, step: str, subject: str, *, name: str = "email") -> None:
        """Email step ``step`` (``p.email(subject, ..., name=name)``): asked of the notifier, and delivered."""
        note = Notification(
            pipeline_id=pipeline_id, email="customer@example.com", state=PipelineState.WAITING, parameters={},
            kind="step", step=step, step_name=name, subject=subject, lines=["Score 91"],
        )  # fmt: skip
        await self._email(pipeline_id, promise_tree.step_base(pipeline_id, step), note, parent=pipeline_id)

    async def outcome_email(self, pipeline_id: str, step: str) -> None:
        """The outcome email's call, not answered yet."""
        note = Notification(
            pipeline_id=pipeline_id, email="index@example.com", state=PipelineState.SUCCEEDED, parameters={}
        )
        await self._email(pipeline_id, promise_tree.step_base(pipeline_id, step), note, parent=pipeline_id, sent=False)

    async def finish(self, pipeline_id: str, state: PipelineState) -> None:
        await self._promises.resolve(pipeline_id, Value(data=PipelineOutcome(state=state).model_dump(mode="json")))

    async def _email(
        self, pipeline_id: str, promise_id: str, note: Notification, *, parent: str, sent: bool = True
    ) -> None:
        receipt = NotificationReceipt(delivered=True, message_id=f"<{uuid.uuid4().hex}@example.test>") if sent else None
        await dispatch(
            self._promises,
            promise_id,
            names.SEND_PIPELINE_EMAIL,
            note.model_dump(mode="json"),
            group=names.NOTIFIER_GROUP,
            origin=pipeline_id,
            timeout_at=now_ms() + LATER_MS,
            extra_tags={"resonate:parent": parent},
        )
        if receipt is not None:
            await self._promises.resolve(promise_id, Value(data=receipt.model_dump(mode="json")))

    async def _child(
        self,
        pipeline_id: str,
        promise_id: str,
        param: Any,
        *,
        parent: str,
        value: Any = None,
        timeout_at: int | None = None,
    ) -> None:
        data = param.model_dump(mode="json") if hasattr(param, "model_dump") else param
        await self._promises.create(
            promise_id,
            timeout_at=timeout_at or now_ms() + LATER_MS,
            param=Value(data=data),
            tags={"resonate:origin": pipeline_id, "resonate:parent": parent, "resonate:branch": promise_id},
        )
        if value is not None:
            data = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            await self._promises.resolve(promise_id, Value(data=data))

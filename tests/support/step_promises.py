"""A pipeline run by its code, written promise by promise as the contract's tree has it, with no worker running.

The root is created as the gateway creates it (the spec with a version, the
owner's tag) but with no task target, so no worker is asked to run it; each
step is then written where the worker leaves it (contract22: ``P:N`` the
step's own promise, ``P:N.1`` a job step's callback or a gate's decision,
``P:N.2`` a job step's trigger, ``P:N.job`` / ``P:N.gate`` the records). A
test decides which state each step reaches; the gateway must read it back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from resonate.promises import Promises
from resonate.types import PromiseRecord, TaskData, Value

from pipeline_shared import names, promise_tree
from pipeline_shared.models import (
    ApprovalRecord,
    Attempt,
    AttemptRecord,
    DatabricksRun,
    JobRun,
    JobStepRecord,
    Notification,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RunError,
    Settlement,
    TriggerOutcome,
)
from pipeline_shared.promise_tree import OWNER_TAG

#: Far enough that no test sees a promise time out unless it means to.
HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


class ComposedPipeline:
    """One pipeline's promises, written through ``promises`` (a client of the in-process server)."""

    def __init__(self, promises: Promises, owner: str, *, job: str = "onboarding", version: int = 1) -> None:
        self.promises = promises
        self.id = f"c-{uuid.uuid4().hex[:12]}"
        self.owner = owner
        self.spec = PipelineSpec(
            id=self.id, email="owner@example.com", parameters={}, timeout_seconds=3600, job=job, version=version
        )

    async def _create(self, promise_id: str, param: Any, timeout_ms: int = HOUR_MS, **tags: str) -> PromiseRecord:
        return await self.promises.create(
            promise_id,
            timeout_at=now_ms() + timeout_ms,
            param=Value(data=param),
            tags={"resonate:origin": self.id, **tags},
        )

    async def _external(self, promise_id: str, timeout_ms: int = HOUR_MS) -> PromiseRecord:
        """A promise the workflow waits on, to be settled from outside (``ctx.promise``), tagged as Resonate tags it."""
        return await self._create(promise_id, {}, timeout_ms, **{promise_tree.EXTERNAL_TAG: "true"})

    async def root(self) -> PromiseRecord:
        task = TaskData(
            func=names.RUN_PIPELINE,
            args=(self.spec.model_dump(mode="json"),),
            kwargs={},
            version=names.RUN_PIPELINE_VERSION,
        )
        return await self.promises.create(
            self.id,
            timeout_at=now_ms() + HOUR_MS,
            param=Value(data=task),
            tags={"resonate:origin": self.id, OWNER_TAG: self.owner},
        )

    async def job_step(
        self,
        step: str,
        name: str,
        job: str = "csv-statistics",
        *,
        run_id: int = 7,
        parameters: dict[str, str] | None = None,
        external: bool = True,
        triggered: bool = True,
    ) -> str:
        """A job step whose run is going: its own promise, callback, trigger (the run started) and record.

        ``external=False``: its callback promise lacks the tag ``ctx.promise`` gives it, as no worker's would.
        ``triggered=False``: its trigger step is still going (the record written, the run not started yet).
        """
        base = promise_tree.step_base(self.id, step)
        await self._create(base, {"func": "run_job_step", "args": [{}]})
        callback = promise_tree.callback_promise_id(base)
        await (self._external(callback) if external else self._create(callback, {}))
        record = JobStepRecord(
            step=step, name=name, job=job, parameters=parameters or {}, timeout_seconds=600, started_at=now_ms()
        )
        await self._create(promise_tree.job_step_record_id(base), record.model_dump(mode="json"))
        trigger = promise_tree.trigger_step_id(base)
        await self._create(trigger, {})
        if not triggered:
            return base
        run = DatabricksRun(run_id=run_id, run_page_url=f"https://databricks.test/#job/1/run/{run_id}", job_id=1)
        await self.promises.resolve(trigger, Value(data=TriggerOutcome(run=run).model_dump(mode="json")))
        return base

    async def job_step_failed(self, step: str, name: str, **kwargs: Any) -> str:
        """A job step whose run failed and waits for a person: its repair window open, decision pending."""
        base = await self.job_step(step, name, **kwargs)
        failure = Settlement(
            status="failure", error=RunError(type="KeyError", message="colum"), source="callback", received_at=now_ms()
        )
        await self.promises.resolve(promise_tree.callback_promise_id(base), Value(data=failure.model_dump(mode="json")))
        decision = f"{base}.3"
        await self._external(decision)
        attempt = Attempt(
            number=0, started_at=now_ms(), reason="the original run", outcome="failure", error=failure.error
        )
        window = AttemptRecord(attempt=attempt, decision_promise_id=decision, repair_deadline=now_ms() + HOUR_MS)
        await self._create(promise_tree.repair_window_id(base, 1), window.model_dump(mode="json"))
        return decision

    async def after_the_window(self, step: str) -> None:
        """What the worker leaves once job step ``step``'s repair window is shown, none of which the document reads.

        The durable step that wrote the window's record, settled after it; a
        watchdog check of the failed run; the repair request's email, sent.
        """
        base = promise_tree.step_base(self.id, step)
        await self._create(f"{base}.4", {"func": "record_attempt", "args": []})
        await self.promises.resolve(f"{base}.4", Value(data={}))
        await self._create(promise_tree.check_id(base, 2), {"func": "check_run", "args": []})
        notification = Notification(
            pipeline_id=self.id, email="owner@example.com", state=PipelineState.AWAITING_REPAIR, parameters={},
            kind="awaiting_repair", step=step,
        )  # fmt: skip
        task = TaskData(
            func=names.SEND_PIPELINE_EMAIL, args=(notification.model_dump(mode="json"),), kwargs={}, version=1
        )
        await self._create(f"{base}.5", task)
        await self.promises.resolve(f"{base}.5", Value(data={"delivered": True, "message_id": "<r@example.test>"}))

    async def job_step_ended(self, step: str, name: str, result: dict[str, Any], **kwargs: Any) -> None:
        """A job step that succeeded: its callback settled and its own promise holding the JobRun."""
        base = await self.job_step(step, name, **kwargs)
        done = Settlement(status="success", result=result, source="callback", received_at=now_ms())
        await self.promises.resolve(promise_tree.callback_promise_id(base), Value(data=done.model_dump(mode="json")))
        run = JobRun(
            step=step,
            name=name,
            job=kwargs.get("job", "csv-statistics"),
            state=PipelineState.SUCCEEDED,
            parameters={},
            result=result,
            run=DatabricksRun(run_id=kwargs.get("run_id", 7)),
            started_at=now_ms(),
            ended_at=now_ms(),
        )
        await self.promises.resolve(base, Value(data=run.model_dump(mode="json")))

    async def gate(
        self, step: str, name: str, scopes: tuple[str, ...] = ("approve",), deadline_ms: int = HOUR_MS
    ) -> str:
        """An open approval gate: its own promise, its decision promise (timing out at the deadline), its record."""
        base = promise_tree.step_base(self.id, step)
        await self._create(base, {"func": "run_approval_gate", "args": [{}]})
        decision = promise_tree.callback_promise_id(base)
        await self._external(decision, timeout_ms=deadline_ms)
        record = ApprovalRecord(
            step=step,
            name=name,
            message=f"{name}: go on?",
            scopes=list(scopes),
            deadline=now_ms() + deadline_ms,
            decision_promise_id=decision,
            opened_at=now_ms(),
        )
        await self._create(promise_tree.approval_record_id(base), record.model_dump(mode="json"))
        return decision

    async def outcome_email(self, step: str) -> None:
        """The outcome email's call of the notifier, not answered yet: the pipeline's function has returned."""
        notification = Notification(
            pipeline_id=self.id, email="owner@example.com", state=PipelineState.SUCCEEDED, parameters={}
        )
        task = TaskData(
            func=names.SEND_PIPELINE_EMAIL, args=(notification.model_dump(mode="json"),), kwargs={}, version=1
        )
        await self._create(promise_tree.step_base(self.id, step), task)

    async def email_step(self, step: str, subject: str, *, name: str = "email") -> None:
        """Email step ``step`` (``p.email(subject, ..., name=name)``), not answered yet."""
        notification = Notification(
            pipeline_id=self.id,
            email="owner@example.com",
            state=PipelineState.WAITING,
            parameters={},
            kind="step",
            step=step,
            subject=subject,
            step_name=name,
            lines=["hello"],
        )
        task = TaskData(
            func=names.SEND_PIPELINE_EMAIL, args=(notification.model_dump(mode="json"),), kwargs={}, version=1
        )
        await self._create(promise_tree.step_base(self.id, step), task)

    async def finish(self, state: PipelineState, result: dict[str, Any] | None = None) -> None:
        outcome = PipelineOutcome(state=state, result=result)
        await self.promises.resolve(self.id, Value(data=outcome.model_dump(mode="json")))

"""A pipeline's page with steps and approval gates, in process, before the gateway's own branch serves them.

Issue 22's contract (/work/briefs/contract22.md) gives the status document
``version`` and ``steps`` and the domain ``Pipelines.approve``, ``reject``
and ``decide(..., step=)``; the gateway's branch builds them beside the page.
Until they meet, :class:`SteppedPipelines` stands in for the gateway's
Pipelines on a page served by tests.support.ui_gateway: every call goes to the
real one, except that a pipeline given steps here reads with them, and the
decisions are recorded (with who, which gate or step, what comment) and
answered as the contract says, or refused as a test asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from resonate.types import PromiseRecord

from pipeline_api.auth.principals import Principal
from pipeline_api.domain.pipelines import Pipelines
from pipeline_api.schemas import PipelineStatus
from pipeline_shared.errors import PipelineError
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    DatabricksRun,
    RunError,
    StepKind,
    StepState,
    StepSummary,
)
from pipeline_shared.promise_tree import OWNER_TAG

#: 2026-12-01 15:00:00 UTC, in epoch milliseconds: where the steps' times start.
T0_MS = 1_796_137_200_000
RUN_PAGE = "http://localhost:8080/?o=1#job/1001/run/"


class StatusWithSteps(PipelineStatus):
    """The gateway's status document with the two fields the contract adds to it."""

    version: int | None = None
    steps: list[StepSummary] = Field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    action: str
    by: str
    gate: str | None = None
    comment: str = ""
    step: str | None = None
    parameters: dict[str, str] | None = None


@dataclass
class SteppedPipelines:
    real: Pipelines
    roots: dict[str, PromiseRecord] = field(default_factory=dict)
    statuses: dict[str, StatusWithSteps] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    #: What the next decision raises instead of being recorded (a 409 or 403 of the domain).
    refusal: PipelineError | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def show(self, pipeline_id: str, state: str, steps: list[StepSummary], owner: str = "key:alice") -> None:
        """From now on, ``pipeline_id`` is ``owner``'s customer-onboarding, in ``state`` with ``steps``."""
        self.roots[pipeline_id] = PromiseRecord(
            id=pipeline_id, state="pending", tags={OWNER_TAG: owner}, timeout_at=T0_MS + 3 * 86_400_000
        )
        at = datetime.fromtimestamp(T0_MS / 1000, UTC)
        self.statuses[pipeline_id] = StatusWithSteps(
            id=pipeline_id,
            state=state,
            job="customer-onboarding",
            email="me@example.com",
            parameters={"upload": "/Workspace/Shared/pipelines/samples/upload.csv", "approval_threshold": "70"},
            timeout_seconds=3600,
            databricks=None,
            created_at=at,
            updated_at=at,
            version=1,
            steps=steps,
        )

    async def root(self, pipeline_id: str) -> PromiseRecord:
        return self.roots.get(pipeline_id) or await self.real.root(pipeline_id)

    async def status(self, root: PromiseRecord) -> PipelineStatus:
        return self.statuses.get(root.id) or await self.real.status(root)

    async def approve(self, root: PromiseRecord, principal: Principal, gate: str | None, comment: str) -> Any:
        return await self._record(root, Decision("approve", principal.id, gate, comment))

    async def reject(self, root: PromiseRecord, principal: Principal, gate: str | None, comment: str) -> Any:
        return await self._record(root, Decision("reject", principal.id, gate, comment))

    async def decide(
        self,
        root: PromiseRecord,
        principal_id: str,
        action: str,
        parameters: dict[str, str] | None = None,
        step: str | None = None,
    ) -> Any:
        if root.id not in self.statuses:
            return await self.real.decide(root, principal_id, action, parameters)
        return await self._record(root, Decision(action, principal_id, step=step, parameters=parameters))

    async def _record(self, root: PromiseRecord, decision: Decision) -> Any:
        if self.refusal is not None:
            refusal, self.refusal = self.refusal, None
            raise refusal
        self.decisions.append(decision)
        return await self.status(root)


def job_step(number: int, name: str, state: str, *, seconds: tuple[float, float | None], **fields: Any) -> StepSummary:
    """A job step of ``name`` that ran from ``seconds[0]`` to ``seconds[1]`` after T0 (None: still going)."""
    start, end = seconds
    return StepSummary(
        id=str(number),
        kind=StepKind.JOB,
        name=name,
        state=StepState(state),
        job=name,
        run=DatabricksRun(run_id=700 + number, run_page_url=f"{RUN_PAGE}{700 + number}"),
        attempts=fields.pop("attempts", 1),
        started_at=T0_MS + int(start * 1000),
        ended_at=None if end is None else T0_MS + int(end * 1000),
        **fields,
    )


def gate_step(
    number: int,
    scopes: list[str],
    *,
    seconds: tuple[float, float | None],
    decision: ApprovalDecision | None = None,
    name: str = "high-risk",
    message: str = "Risk score 82: activate?",
) -> StepSummary:
    """An approval gate that opened ``seconds[0]`` after T0; open unless decided."""
    start, end = seconds
    approval = ApprovalRecord(
        step=str(number),
        name=name,
        message=message,
        scopes=scopes,
        deadline=T0_MS + 2 * 86_400_000,
        decision_promise_id=f"p:{number}.1",
        opened_at=T0_MS + int(start * 1000),
    )
    state = {None: "awaiting_approval", "approve": "approved", "reject": "rejected", "cancel": "cancelled"}
    return StepSummary(
        id=str(number),
        kind=StepKind.APPROVAL,
        name=name,
        state=StepState(state[decision.action if decision else None]),
        approval=approval,
        decision=decision,
        started_at=T0_MS + int(start * 1000),
        ended_at=None if end is None else T0_MS + int(end * 1000),
    )


def onboarding_steps(gate_scopes: list[str], *, failed_score: bool = False) -> list[StepSummary]:
    """customer-onboarding waiting at its gate: ingest, then the parallel pair, then the gate."""
    score_error = RunError(type="ValueError", message="no column 'income'") if failed_score else None
    return [
        job_step(1, "ingest-upload", "succeeded", seconds=(0, 40), result={"table": "main.onboarding.t1"}),
        job_step(
            2,
            "risk-score",
            "awaiting_repair" if failed_score else "succeeded",
            seconds=(40, 70),
            attempts=2,
            error=score_error,
        ),
        job_step(3, "report-build", "succeeded", seconds=(40, 95)),
        gate_step(4, gate_scopes, seconds=(95, None)),
    ]

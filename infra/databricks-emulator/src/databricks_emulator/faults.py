"""Fault and timing plans, chosen per pipeline through the emulator's control API.

A plan is looked up by the run's ``pipeline_id`` job parameter, falling back
to a settable default, and is fixed into a run when the run is created. None
of this travels through the product's parameters: the notebook stays
pristine, and the harness induces the fault from outside (see ``harness``).

Counters live here too, because fault tests assert on them: how many
``run-now`` calls each pipeline made, how many were refused by an injected
429/503, and which runs it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from databricks_emulator.harness import FAULTS


class FaultPlan(BaseModel):
    """What to do to a pipeline's runs. The default plan does nothing unusual."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``none``; ``fail`` (the data step fails on a missing source); ``hang`` (never
    #: finishes); ``drop_callback`` (the callback is swallowed; the run still succeeds).
    notebook: Literal[FAULTS] = "none"  # type: ignore[valid-type]
    #: Extra time in PENDING before the notebook starts; no process exists meanwhile.
    start_delay_seconds: float = Field(default=0, ge=0, le=86_400)
    #: Overrides the job's timeout for these runs, so a timeout test need not wait an hour.
    timeout_seconds: float | None = Field(default=None, gt=0, le=86_400)
    #: How many run-now calls are refused before one is accepted, and how.
    run_now_errors: int = Field(default=0, ge=0, le=1000)
    run_now_error_status: Literal[429, 503] = 429
    #: The ``Retry-After`` those refusals carry (databricks-sdk sleeps that long, plus up to 1 s).
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    #: How many accepted run-now calls answer only after ``slow_response_seconds``.
    #: The run exists at once; only the answer is late, as when the API is slow
    #: and the client gives up and retries: the retry must find the same run.
    slow_run_now_responses: int = Field(default=0, ge=0, le=1000)
    slow_response_seconds: float = Field(default=0, ge=0, le=600)


@dataclass
class PipelineCounters:
    """What one pipeline id has asked of the emulator."""

    run_now_calls: int = 0
    run_now_rejected: int = 0
    run_ids: list[int] = field(default_factory=list)
    dropped_callbacks: int = 0
    #: Refusals still to come under the current plan; None until the first call.
    errors_left: int | None = None
    #: Slow answers still to come under the current plan; None until the first accepted call.
    slow_left: int | None = None


class FaultRegistry:
    """Plans by pipeline id, the default plan, and every pipeline's counters."""

    def __init__(self) -> None:
        self.default = FaultPlan()
        self.plans: dict[str, FaultPlan] = {}
        self.counters: dict[str, PipelineCounters] = {}

    def plan_for(self, pipeline_id: str) -> FaultPlan:
        return self.plans.get(pipeline_id, self.default)

    def counters_for(self, pipeline_id: str) -> PipelineCounters:
        return self.counters.setdefault(pipeline_id, PipelineCounters())

    def set_default(self, plan: FaultPlan) -> None:
        self.default = plan
        for pipeline_id, counters in self.counters.items():
            if pipeline_id not in self.plans:
                counters.errors_left = counters.slow_left = None

    def set_plan(self, pipeline_id: str, plan: FaultPlan) -> None:
        self.plans[pipeline_id] = plan
        counters = self.counters_for(pipeline_id)
        counters.errors_left = counters.slow_left = None

    def clear_plan(self, pipeline_id: str) -> None:
        self.plans.pop(pipeline_id, None)
        counters = self.counters_for(pipeline_id)
        counters.errors_left = counters.slow_left = None

    def clear_all(self) -> None:
        self.plans.clear()
        self.set_default(FaultPlan())
        for counters in self.counters.values():
            counters.errors_left = counters.slow_left = None

    def take_run_now_error(self, pipeline_id: str) -> FaultPlan | None:
        """The plan whose refusal this run-now call gets, or None when it is accepted."""
        plan = self.plan_for(pipeline_id)
        counters = self.counters_for(pipeline_id)
        if counters.errors_left is None:
            counters.errors_left = plan.run_now_errors
        if counters.errors_left <= 0:
            return None
        counters.errors_left -= 1
        counters.run_now_rejected += 1
        return plan

    def take_slow_response(self, pipeline_id: str) -> float:
        """Seconds to hold back this accepted run-now call's answer (0: answer now)."""
        plan = self.plan_for(pipeline_id)
        counters = self.counters_for(pipeline_id)
        if counters.slow_left is None:
            counters.slow_left = plan.slow_run_now_responses
        if counters.slow_left <= 0:
            return 0.0
        counters.slow_left -= 1
        return plan.slow_response_seconds

"""What a pipeline's page shows of its steps (ui/steps.py): which, which wait for a person, their time chart."""

from __future__ import annotations

from datetime import timedelta

from pipeline_api.ui.steps import (
    awaiting_repair,
    moment,
    open_gates,
    step_outcome,
    step_phases,
    steps_of,
    steps_worth_showing,
)
from pipeline_api.ui.views import chart
from pipeline_shared.models import ApprovalDecision, RunError
from tests.support.ui_steps import T0_MS, StatusWithSteps, gate_step, job_step, onboarding_steps

T0 = moment(T0_MS)


def test_a_single_job_step_is_not_shown_apart_but_any_other_pipeline_of_steps_is() -> None:
    one_job = [job_step(1, "csv-statistics", "succeeded", seconds=(0, 5))]
    job_and_gate = [*one_job, gate_step(2, ["approve"], seconds=(5, None))]

    assert steps_worth_showing(one_job) == []
    assert steps_worth_showing(job_and_gate) == job_and_gate
    assert steps_worth_showing([]) == []


def test_steps_of_reads_a_status_with_steps_and_one_without() -> None:
    class Legacy:
        pass

    status = StatusWithSteps.model_construct(steps=onboarding_steps(["approve"]))

    assert [s.id for s in steps_of(status)] == ["1", "2", "3", "4"]
    assert steps_of(Legacy()) == []


def test_the_gates_open_and_the_job_steps_awaiting_repair_are_found() -> None:
    steps = onboarding_steps(["approve"], failed_score=True)

    assert [g.name for g in open_gates(steps)] == ["high-risk"]
    assert [s.name for s in awaiting_repair(steps)] == ["risk-score"]
    decided = ApprovalDecision(action="approve", by="key:a", decided_at=T0_MS)
    assert open_gates([gate_step(1, ["approve"], seconds=(0, 1), decision=decided)]) == []


def test_a_step_still_going_runs_to_now_while_the_pipeline_is_not_final() -> None:
    steps = onboarding_steps(["approve"])
    now = T0 + timedelta(seconds=300)

    drawn = step_phases(steps, final=False, now=now)

    assert [(p.name, p.seconds, p.open, p.state) for p in drawn] == [
        ("1 ingest-upload", 40.0, False, "succeeded"),
        ("2 risk-score", 30.0, False, "succeeded"),
        ("3 report-build", 55.0, False, "succeeded"),
        ("4 high-risk", 205.0, True, "awaiting_approval"),
    ]
    assert drawn[3].label == "Step 4 high-risk, awaiting approval: 3 min 25 s so far"
    assert drawn[3].css_class == "step-bar step-awaiting_approval"


def test_once_final_a_step_without_an_end_stops_at_the_last_end_known() -> None:
    steps = [job_step(1, "a", "succeeded", seconds=(0, 10)), job_step(2, "b", "cancelled", seconds=(4, None))]

    drawn = step_phases(steps, final=True, now=T0 + timedelta(days=3))

    assert [(p.end - T0).total_seconds() for p in drawn] == [10.0, 10.0]
    assert not any(p.open for p in drawn)


def test_steps_not_started_are_not_drawn_and_the_chart_puts_the_parallel_pair_side_by_side() -> None:
    steps = [*onboarding_steps(["approve"])[:3], job_step(4, "later", "starting", seconds=(0, None))]
    steps[3] = steps[3].model_copy(update={"started_at": None})

    drawn = chart(step_phases(steps, final=False, now=T0 + timedelta(seconds=100)))

    assert drawn is not None and len(drawn.bars) == 3
    assert drawn.bars[1].x == drawn.bars[2].x == round(100 * 40 / 95, 2), "both at 40 s of the 95 s drawn"


def test_a_steps_outcome_says_its_decision_error_or_message_id() -> None:
    decided = ApprovalDecision(action="reject", by="key:b", comment="no", decided_at=T0_MS)
    failed = job_step(1, "a", "failed", seconds=(0, 1), error=RunError(type="KeyError", message="'x'"))

    assert step_outcome(gate_step(1, ["approve"], seconds=(0, 1), decision=decided)) == "rejected by key:b: “no”"
    assert step_outcome(failed) == "KeyError: 'x'"
    assert step_outcome(job_step(1, "a", "succeeded", seconds=(0, 1))) == ""

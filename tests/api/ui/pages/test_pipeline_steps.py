"""A pipeline's page with steps (ui/pages/pipeline.py, ui/steps.py) and its approval gates (ui/pages/approvals.py).

The steps view and its time chart, approve and reject offered only to a
session that may decide the gate, each decision a POST with the CSRF token
that reaches the domain with who, which gate and what comment, a refusal of
the domain shown as a message, and repair and abandon of one job step among
several. The domain's steps come from tests.support.ui_steps until the
gateway's branch serves them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from pipeline_shared.errors import InsufficientScope, PipelineConflict
from pipeline_shared.models import ApprovalDecision
from tests.support.keys_files import write_keys
from tests.support.step_promises import ComposedPipeline
from tests.support.ui_gateway import ALICE, Page, hidden, serve
from tests.support.ui_steps import RUN_PAGE, T0_MS, Decision, SteppedPipelines, gate_step, job_step, onboarding_steps

APPROVER_KEY, APPROVER = mint("approver", frozenset({Scope.APPROVE}), key_id="approver")


@pytest.fixture
async def stepped(page: Page) -> AsyncIterator[tuple[Page, SteppedPipelines, str]]:
    """A signed-in page (alice: start, read, cancel), the stand-in domain, and the id of alice's pipeline of steps."""
    await page.sign_in()
    pipeline_id = f"onboarding-{uuid.uuid4().hex[:8]}"
    pipelines = SteppedPipelines(page.app.state.pipelines)
    page.app.state.pipelines = pipelines
    yield page, pipelines, pipeline_id


def rows(html: str) -> list[list[str]]:
    """The steps table's rows, each cell's text with tags dropped and spaces squeezed."""
    table = re.search(r'<table class="records grid steps">.*?</table>', html, re.S)
    assert table, "no steps table"
    found = []
    for row in re.findall(r'<tr id="step-\d+".*?</tr>', table.group(0), re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        found.append([" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in cells])
    return found


async def test_the_page_shows_each_step_with_its_kind_state_run_attempts_and_decision(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    decided = ApprovalDecision(action="reject", by="key:bob", comment="<b>too</b> risky", decided_at=T0_MS + 99_000)
    steps = [*onboarding_steps(["approve"])[:3], gate_step(4, ["approve"], seconds=(95, 99), decision=decided)]
    await pipelines.show(pipeline_id, "failed", steps)

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text

    assert rows(html) == [
        ["1", "job", "ingest-upload", "succeeded", "run 701", "1", "Result { \"table\": \"main.onboarding.t1\" }"],
        ["2", "job", "risk-score", "succeeded", "run 702", "2", ""],
        ["3", "job", "report-build", "succeeded", "run 703", "1", ""],
        ["4", "approval", "high-risk", "rejected", "—", "—", "rejected by key:bob: “&lt;b&gt;too&lt;/b&gt; risky”"],
    ]  # fmt: skip
    assert f'href="{RUN_PAGE}702"' in html
    assert 'id="step-4"' in html, "an email or a link can point at a step"


async def test_the_time_chart_draws_one_bar_per_step_on_one_axis_with_a_text_alternative(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["approve"]))

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    chart = re.search(r'<figure class="chart steps-chart">.*?</figure>', html, re.S)

    assert chart, "no time chart of the steps"
    bars = re.findall(
        r'<g class="step-bar step-(\w+)( open)?">.*?<rect x="([\d.]+)%" y="\d+" width="([\d.]+)%"', chart[0], re.S
    )
    assert [(state, bool(going)) for state, going, _, _ in bars] == [
        ("succeeded", False), ("succeeded", False), ("succeeded", False), ("awaiting_approval", True),
    ]  # fmt: skip
    starts = [float(x) for _, _, x, _ in bars]
    assert starts[0] == 0 and starts[1] == starts[2] > 0, "the parallel pair starts together, after ingest"
    assert starts[3] > starts[2], "the gate opens after the pair"
    assert 'role="img" aria-labelledby="steps-chart-title steps-chart-desc"' in chart[0]
    desc = re.search(r'<desc id="steps-chart-desc">(.*?)</desc>', chart[0], re.S)[1]
    assert "Step 1 ingest-upload, succeeded: 40.0 s." in desc and "Step 4 high-risk, awaiting approval:" in desc
    assert 'hx-get="/ui/pipelines/' in html, "the page polls while a gate is open"


async def test_a_pipeline_of_one_job_step_reads_as_it_always_did(stepped: tuple[Page, SteppedPipelines, str]) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "waiting", [job_step(1, "csv-statistics", "running", seconds=(0, None))])

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text

    assert 'id="steps"' not in html and "steps-chart" not in html
    assert f'href="/ui/pipelines/{pipeline_id}/cancel"' in html


async def test_approve_and_reject_are_offered_only_to_a_session_holding_a_scope_of_the_gate(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["approve"]))
    not_theirs = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))
    theirs = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text

    assert "/approve" not in not_theirs and "/reject" not in not_theirs
    assert "Risk score 82: activate?" in not_theirs, "the question is shown to whoever may read the pipeline"
    assert f'href="/ui/pipelines/{pipeline_id}/approve?gate=4"' in theirs
    assert f'href="/ui/pipelines/{pipeline_id}/reject?gate=4"' in theirs
    assert f'href="/ui/pipelines/{pipeline_id}/cancel"' in theirs


async def test_approving_confirms_then_posts_the_gate_and_comment_to_the_domain(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))

    form = await page.client.get(f"/ui/pipelines/{pipeline_id}/approve?gate=4")
    decided_by_showing = list(pipelines.decisions)
    response = await page.post(f"/ui/pipelines/{pipeline_id}/approve", {"gate": "4", "comment": "  score checked  "})

    assert form.status_code == 200 and decided_by_showing == [], "showing the form decides nothing"
    assert 'name="gate" value="4"' in form.text and 'name="comment"' in form.text
    assert "Yes, approve it" in form.text and 'name="csrf_token"' in form.text
    assert (response.status_code, response.headers["location"]) == (303, f"/ui/pipelines/{pipeline_id}?done=approve")
    assert pipelines.decisions == [Decision("approve", "key:alice", "4", "score checked")]
    told = (await page.client.get(response.headers["location"])).text
    assert "Approve: asked for." in told


async def test_a_reject_without_the_csrf_token_is_refused_and_reaches_nothing(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))

    response = await page.client.post(f"/ui/pipelines/{pipeline_id}/reject", data={"comment": "no"})

    assert response.status_code == 403 and "csrf_refused" in response.text
    assert pipelines.decisions == []


async def test_a_gate_decided_already_is_a_409_shown_on_the_form_with_the_comment_kept(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))
    pipelines.refusal = PipelineConflict(f"the gate 'high-risk' of pipeline {pipeline_id!r} was decided already")

    response = await page.post(f"/ui/pipelines/{pipeline_id}/reject", {"gate": "high-risk", "comment": "too late?"})

    assert response.status_code == 409
    assert 'id="action-problem">the gate &#39;high-risk&#39; of pipeline' in response.text
    assert ">too late?</textarea>" in response.text
    assert pipelines.decisions == []


async def test_a_decider_the_domain_refuses_gets_the_not_allowed_page(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["approve"]))
    pipelines.refusal = InsufficientScope("approve")

    response = await page.post(f"/ui/pipelines/{pipeline_id}/approve", {"comment": "let me"})

    assert response.status_code == 403 and "Not allowed" in response.text
    assert pipelines.decisions == []


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"comment": "x" * 2001}, "A comment is at most 2000 characters; this one has 2001."),
        ({"gate": "<script>alert(1)</script>"}, "No gate of this pipeline has that name."),
        ({"gate": "4\n5"}, "No gate of this pipeline has that name."),
    ],
    ids=["comment too long", "markup as gate", "newline in gate"],
)
async def test_hostile_decisions_are_refused_with_what_was_wrong_before_the_domain(
    stepped: tuple[Page, SteppedPipelines, str], fields: dict[str, str], says: str
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"]))

    response = await page.post(f"/ui/pipelines/{pipeline_id}/approve", fields)

    assert response.status_code == 422 and says in response.text
    assert "<script>alert" not in response.text
    assert pipelines.decisions == []


async def test_repair_and_abandon_choose_the_job_step_when_several_await_repair(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    steps = [
        job_step(1, "ingest-upload", "succeeded", seconds=(0, 40)),
        job_step(2, "risk-score", "awaiting_repair", seconds=(40, 70)),
        job_step(3, "report-build", "awaiting_repair", seconds=(40, 80)),
    ]
    await pipelines.show(pipeline_id, "awaiting_repair", steps)

    html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
    form = (await page.client.get(f"/ui/pipelines/{pipeline_id}/repair?step=3")).text
    repaired = await page.post(f"/ui/pipelines/{pipeline_id}/repair", {"step": "3"})
    abandoned = await page.post(f"/ui/pipelines/{pipeline_id}/abandon", {"step": "risk-score"})
    hostile = await page.post(f"/ui/pipelines/{pipeline_id}/abandon", {"step": "../2"})

    assert f'href="/ui/pipelines/{pipeline_id}/repair?step=2"' in html
    assert f'href="/ui/pipelines/{pipeline_id}/abandon?step=3"' in html
    assert '<select id="step" name="step">' in form and '<option value="3" selected>' in form
    assert repaired.status_code == abandoned.status_code == 303
    assert hostile.status_code == 422 and "No step of this pipeline has that name." in hostile.text
    assert pipelines.decisions == [
        Decision("repair", "key:alice", step="3", parameters=None),
        Decision("abandon", "key:alice", step="risk-score"),
    ]


async def test_a_step_decision_refused_by_the_domain_is_a_409_on_the_form(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    await pipelines.show(pipeline_id, "awaiting_approval", onboarding_steps(["cancel"], failed_score=True))
    pipelines.refusal = PipelineConflict("several job steps await repair: name one (step_ambiguous)")

    response = await page.post(f"/ui/pipelines/{pipeline_id}/abandon")

    assert response.status_code == 409 and "several job steps await repair" in response.text


async def test_the_list_offers_awaiting_approval_as_a_state_to_filter_by(page: Page) -> None:
    await page.sign_in()

    html = (await page.client.get("/ui/")).text

    assert '<input type="checkbox" name="state" value="awaiting_approval"> awaiting approval</label>' in html


async def test_with_several_gates_open_the_form_asks_which_and_with_none_offers_no_decision(
    stepped: tuple[Page, SteppedPipelines, str],
) -> None:
    page, pipelines, pipeline_id = stepped
    gates = [
        gate_step(1, ["cancel"], seconds=(0, None)),
        gate_step(2, ["cancel"], seconds=(0, None), name="legal", message="Contract signed?"),
    ]
    await pipelines.show(pipeline_id, "awaiting_approval", gates)
    several = (await page.client.get(f"/ui/pipelines/{pipeline_id}/reject?gate=legal")).text
    await pipelines.show(pipeline_id, "awaiting_approval", [gate_step(1, ["approve"], seconds=(0, None))])
    none_for_alice = (await page.client.get(f"/ui/pipelines/{pipeline_id}/reject")).text

    assert '<select id="gate" name="gate">' in several
    assert '<option value="2" selected>2 legal: Contract signed?</option>' in several
    assert 'id="no-gate"' in none_for_alice and "Yes, reject it" not in none_for_alice


@pytest.fixture
async def approvers_page(tmp_path: Path) -> AsyncIterator[Page]:
    """The page, on a keys file that also holds APPROVER (only the approve scope); nobody signed in."""
    keys_file = tmp_path / "api-keys.toml"
    write_keys(keys_file, ALICE, APPROVER)
    async with serve(keys_file) as page:
        yield page


async def test_an_approver_without_read_opens_and_decides_a_gate_naming_approve_only_while_it_is_open(
    approvers_page: Page,
) -> None:
    """A principal holding only ``approve`` may read a pipeline while an open gate of it names that scope."""
    page = approvers_page
    asked = ComposedPipeline(page.harness.resonate.promises, "key:alice")
    await asked.root()
    await asked.job_step_ended("1", "ingest", {"table": "t"})
    decision = await asked.gate("2", "high-risk")
    elsewhere = ComposedPipeline(page.harness.resonate.promises, "key:alice")
    await elsewhere.root()
    await elsewhere.gate("1", "finance-check", scopes=("cancel",))
    signing_in = hidden((await page.client.get("/ui/sign-in")).text, "sign_in_token")
    where = f"/ui/pipelines/{asked.id}"
    signed_in = await page.client.post(
        "/ui/sign-in", data={"credential": APPROVER_KEY, "sign_in_token": signing_in, "next": where}
    )

    shown = await page.client.get(where)
    form = await page.client.get(f"{where}/approve?gate=2")
    not_theirs = await page.client.get(f"/ui/pipelines/{elsewhere.id}")
    page.csrf = hidden(shown.text, "csrf_token")
    approved = await page.post(f"{where}/approve", {"gate": "2", "comment": "fine"})
    after = await page.client.get(where)

    assert (signed_in.status_code, signed_in.headers["location"]) == (303, where)
    assert shown.status_code == 200 and f'href="{where}/approve?gate=2"' in shown.text
    assert f'href="{where}/cancel"' not in shown.text, "approve grants no other action"
    assert form.status_code == 200 and "Yes, approve it" in form.text
    assert not_theirs.status_code == 404, "a gate naming a scope the approver lacks shows nothing"
    assert (approved.status_code, approved.headers["location"]) == (303, f"{where}?done=approve")
    stored = await page.harness.promises_get(decision)
    assert stored.state == "resolved" and stored.value.data["by"] == "key:approver"
    assert stored.value.data["comment"] == "fine"
    assert after.status_code == 404, "once the gate is decided, the approver may no longer read the pipeline"


async def test_an_approver_signing_in_with_nowhere_to_go_is_told_where_their_approvals_are(
    approvers_page: Page,
) -> None:
    page = approvers_page
    signing_in = hidden((await page.client.get("/ui/sign-in")).text, "sign_in_token")
    signed_in = await page.client.post("/ui/sign-in", data={"credential": APPROVER_KEY, "sign_in_token": signing_in})

    listed = await page.client.get(signed_in.headers["location"])

    assert listed.status_code == 403
    assert "open the link in their email" in listed.text

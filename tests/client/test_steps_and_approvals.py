"""Steps and approval gates through the client and the CLI, against the contract-faithful fake gateway.

What each sends (the body of approve, reject, repair and abandon of one
step), how each refusal comes back (409 by its code, 403), how a wait stops at
an approval gate, and how the CLI shows a pipeline of several steps while a
one-job pipeline reads as it always did.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from pipeline_client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    PipelineState,
    StepKind,
    StepState,
)
from pipeline_client.cli import commands as cli
from pipeline_shared import models as shared
from pipeline_shared.models import ApprovalDecision, ApprovalRecord, DatabricksRun, RunError, StepSummary
from tests.client.fake_gateway import FAKE_KEY, FakeGateway, FakeTimeline, status_document, timeline_events
from tests.support.cli_runner import run_cli
from tests.support.loopback_server import loopback_socket, serving, url_of

RUN_PAGE = "http://localhost:8080/?o=1#job/1001/run/"


def job_step(number: int, name: str, state: str, attempts: int = 1, **fields: object) -> StepSummary:
    run = DatabricksRun(run_id=70 + number, run_page_url=f"{RUN_PAGE}{70 + number}")
    return StepSummary(
        id=str(number), kind=shared.StepKind.JOB, name=name, state=shared.StepState(state), job=name, run=run,
        attempts=attempts, started_at=1_790_000_000_000 + number, **fields,
    )  # fmt: skip


def gate_step(number: int, state: str = "awaiting_approval", decision: ApprovalDecision | None = None) -> StepSummary:
    approval = ApprovalRecord(
        step=str(number), name="high-risk", message="Risk score 82: activate?", scopes=["approve"],
        deadline=1_790_100_000_000, decision_promise_id=f"onb-1:{number}.1", opened_at=1_790_000_000_000,
    )  # fmt: skip
    return StepSummary(
        id=str(number), kind=shared.StepKind.APPROVAL, name="high-risk", state=shared.StepState(state),
        approval=approval, decision=decision,
    )  # fmt: skip


def onboarding(state: str = "awaiting_approval") -> dict[str, object]:
    """customer-onboarding at its gate: ingest, the parallel pair, then the gate."""
    steps = [
        job_step(1, "ingest-upload", "succeeded"),
        job_step(2, "risk-score", "succeeded", attempts=2),
        job_step(3, "report-build", "succeeded"),
        gate_step(4),
    ]
    return status_document("onb-1", state, steps)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeGateway, str]]:
    gateway = FakeGateway(statuses={"onb-1": onboarding()})
    sock = loopback_socket()
    async with serving(gateway.app(), sock):
        yield gateway, url_of(sock)


# ── the client ───────────────────────────────────────────────────────────────


async def test_the_status_document_carries_each_step_with_its_gate_and_run(fake: tuple[FakeGateway, str]) -> None:
    _, url = fake
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        status = await client.get("onb-1")

    assert status.state is PipelineState.AWAITING_APPROVAL and not status.state.final
    assert status.version == 1
    assert [(s.id, s.kind, s.state) for s in status.steps] == [
        ("1", StepKind.JOB, StepState.SUCCEEDED),
        ("2", StepKind.JOB, StepState.SUCCEEDED),
        ("3", StepKind.JOB, StepState.SUCCEEDED),
        ("4", StepKind.APPROVAL, StepState.AWAITING_APPROVAL),
    ]
    assert status.step("risk-score").attempts == 2 and status.step("2").run.run_id == 72
    assert [g.name for g in status.open_gates] == ["high-risk"]
    assert status.open_gates[0].approval.scopes == ["approve"] and not status.open_gates[0].state.final
    with pytest.raises(KeyError):
        status.step("no-such-step")


async def test_approve_and_reject_send_the_gate_and_comment_and_return_the_document(
    fake: tuple[FakeGateway, str],
) -> None:
    gateway, url = fake
    with Client(url, api_key=FAKE_KEY) as client:
        approved = await asyncio.to_thread(client.approve, "onb-1", comment="score checked by hand")
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        await client.reject("onb-1", gate="high-risk", comment="no")

    assert approved.id == "onb-1"
    assert [(d.action, d.body) for d in gateway.decisions] == [
        ("approve", {"comment": "score checked by hand"}),
        ("reject", {"gate": "high-risk", "comment": "no"}),
    ]


@pytest.mark.parametrize("code", ["not_awaiting_approval", "gate_ambiguous"])
async def test_a_409_of_a_gate_is_a_conflict_with_its_code(fake: tuple[FakeGateway, str], code: str) -> None:
    gateway, url = fake
    gateway.refuse_next = (409, code)
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        with pytest.raises(Conflict) as refused:
            await client.approve("onb-1")

    assert (refused.value.status, refused.value.code) == (409, code)


async def test_a_key_without_the_gates_scope_is_forbidden(fake: tuple[FakeGateway, str]) -> None:
    gateway, url = fake
    gateway.refuse_next = (403, "may_not_decide")
    with Client(url, api_key=FAKE_KEY) as client, pytest.raises(Forbidden) as refused:
        await asyncio.to_thread(client.reject, "onb-1", comment="not mine to say")

    assert refused.value.code == "may_not_decide"


async def test_repair_and_abandon_name_the_step_only_when_asked(fake: tuple[FakeGateway, str]) -> None:
    gateway, url = fake
    with Client(url, api_key=FAKE_KEY) as client:
        await asyncio.to_thread(client.repair, "onb-1", {"table": "t2"}, step="risk-score")
        await asyncio.to_thread(client.abandon, "onb-1", step="3")
        await asyncio.to_thread(client.abandon, "onb-1")
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        await client.repair("onb-1")
    gateway.refuse_next = (409, "step_ambiguous")
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        with pytest.raises(Conflict) as ambiguous:
            await client.abandon("onb-1")

    assert [(d.action, d.body) for d in gateway.decisions[:4]] == [
        ("repair", {"parameters": {"table": "t2"}, "step": "risk-score"}),
        ("abandon", {"step": "3"}),
        ("abandon", None),
        ("repair", {"parameters": {}}),
    ]
    assert ambiguous.value.code == "step_ambiguous"


def _reads(states: list[str]) -> httpx.MockTransport:
    """A gateway whose stream is away (so wait polls) and whose document goes through ``states``."""
    answers = iter(states)

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(503, json={"code": "index_unavailable", "message": "away"})
        return httpx.Response(200, json=status_document("onb-1", next(answers), [gate_step(1)]))

    return httpx.MockTransport(gateway)


async def test_wait_stops_at_an_approval_gate_unless_told_to_wait_through_it() -> None:
    with Client("http://gateway.test", api_key="k", transport=_reads(["waiting", "awaiting_approval"])) as client:
        stopped = client.wait("onb-1", timeout=10, poll_interval=0.01)
    states = ["awaiting_approval", "awaiting_approval", "succeeded"]
    async with AsyncClient("http://gateway.test", api_key="k", transport=_reads(states)) as client:
        through = await client.wait("onb-1", timeout=10, poll_interval=0.01, stop_at_awaiting_approval=False)

    assert stopped.state is PipelineState.AWAITING_APPROVAL
    assert through.state is PipelineState.SUCCEEDED


# ── the CLI ──────────────────────────────────────────────────────────────────


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


async def test_cli_approve_and_reject_send_gate_and_comment(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    approved = await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "approve", "onb-1", "--comment", "fine")
    rejected = await run_cli(
        monkeypatch, FAKE_KEY, "--gateway", url, "reject", "onb-1", "--gate", "4", "--comment", "too risky", "--json"
    )
    out = capsys.readouterr().out

    assert approved == rejected == 0
    assert [(d.action, d.body) for d in gateway.decisions] == [
        ("approve", {"comment": "fine"}),
        ("reject", {"gate": "4", "comment": "too risky"}),
    ]
    assert json.loads(_lines(out)[-1])["id"] == "onb-1"


async def test_cli_shows_a_409_of_a_gate_with_its_code_and_exits_2(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    gateway.refuse_next = (409, "gate_ambiguous")

    refused = await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "approve", "onb-1")

    assert refused == cli.ERROR_EXIT
    assert "409" in (err := capsys.readouterr().err) and "gate_ambiguous" in err


async def test_cli_repair_and_abandon_take_a_step(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "repair", "onb-1", "--step", "2", "--param", "table=t")
    await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "abandon", "onb-1", "--step", "risk-score")
    await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "abandon", "onb-1")
    capsys.readouterr()

    assert [(d.action, d.body) for d in gateway.decisions] == [
        ("repair", {"parameters": {"table": "t"}, "step": "2"}),
        ("abandon", {"step": "risk-score"}),
        ("abandon", None),
    ]


async def test_cli_show_prints_the_steps_with_their_runs_and_the_gates_question(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake

    shown = await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "show", "onb-1")
    lines = _lines(capsys.readouterr().out)

    assert shown == 0
    assert lines[0].startswith("onb-1: awaiting_approval | gate 'high-risk' asks: Risk score 82: activate?")
    assert "`pipelines approve onb-1`" in lines[0]
    assert lines[1:] == [
        f"  step 1 job ingest-upload: succeeded | {RUN_PAGE}71",
        f"  step 2 job risk-score: succeeded | {RUN_PAGE}72 | 2 attempts",
        f"  step 3 job report-build: succeeded | {RUN_PAGE}73",
        "  step 4 approval high-risk: awaiting_approval | asks: Risk score 82: activate?",
    ]


async def test_cli_show_on_a_terminal_draws_a_table_of_the_steps_with_each_decision(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    decided = ApprovalDecision(action="reject", by="key:carol", comment="too risky", decided_at=1_790_000_100_000)
    failed = job_step(1, "ingest-upload", "failed", error=RunError(type="KeyError", message="'upload'"))
    gateway.statuses["onb-1"] = status_document("onb-1", "failed", [failed, gate_step(2, "rejected", decided)])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")

    await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "status", "onb-1")
    drawn = re.sub(r"\x1b\[[0-9;]*m|\x1b\]8;[^\x1b]*\x1b\\", "", capsys.readouterr().out)

    header = next(line for line in drawn.splitlines() if line.startswith("step "))
    assert header.split() == ["step", "kind", "name", "state", "run", "attempts", "decision"]
    assert "KeyError: 'upload'" in drawn and "reject by key:carol: too risky" in drawn


async def test_a_one_job_pipeline_reads_as_it_always_did(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    gateway.statuses["one"] = status_document("one", "succeeded", [job_step(1, "csv-statistics", "succeeded")])

    await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "status", "one")

    assert _lines(capsys.readouterr().out) == ["one: succeeded"]


async def test_watch_stops_at_an_approval_gate_with_exit_6_and_shows_the_steps(
    fake: tuple[FakeGateway, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, url = fake
    events = timeline_events("onb-1", "awaiting_repair")[:-1]
    gate = {"seq": 200, "at": events[-1]["at"], "kind": "gate_opened", "summary": "gate high-risk", "data": {}}
    gateway.timelines["onb-1"] = FakeTimeline([*events, gate], shown=1)

    watched = await run_cli(monkeypatch, FAKE_KEY, "--gateway", url, "watch", "onb-1")
    lines = _lines(capsys.readouterr().out)

    assert watched == cli.AWAITING_APPROVAL_EXIT == cli.OUTCOME_EXIT["awaiting_approval"] == 6
    assert "`pipelines approve onb-1`" in lines[-5]
    assert lines[-1] == "  step 4 approval high-risk: awaiting_approval | asks: Risk score 82: activate?"


async def test_jobs_says_which_entries_are_pipelines_of_which_jobs_and_their_schedule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {
        "name": "customer-onboarding", "title": "Customer onboarding", "description": "Ingest, score, approve.",
        "default": False, "completion": "callback", "default_timeout_seconds": 3600, "max_timeout_seconds": 7200,
        "parameters": [], "kind": "pipeline", "jobs": ["ingest-upload", "risk-score", "report-build"],
        "version": 1, "schedule": "0 6 * * *",
    }  # fmt: skip
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"jobs": [entry]}))
    with Client("http://gateway.test", api_key="k", transport=transport) as client:
        (job,) = client.jobs()
    monkeypatch.setattr(cli, "Client", lambda *a, **k: Client(*a, **k, transport=transport))

    listed = await run_cli(monkeypatch, "k", "--gateway", "http://gateway.test", "jobs")
    out = capsys.readouterr().out

    assert (job.kind, job.jobs, job.version, job.schedule) == ("pipeline", entry["jobs"], 1, "0 6 * * *")
    assert listed == 0
    assert "  a pipeline (version 1) of the jobs ingest-upload, risk-score, report-build" in out
    assert "  starts by itself on the schedule 0 6 * * * (UTC)" in out

"""The ``pipelines`` command against a gateway on loopback that requires API keys."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from pipeline_client.cli import commands as cli
from pipeline_shared.catalogue import Catalogue
from pipeline_shared.models import RunError
from tests.support.cli_runner import run_cli
from tests.support.gateway_app import keyed_app
from tests.support.loopback_server import loopback_socket, serving, url_of
from tests.support.pipeline_harness import CATALOGUE_FILE, Harness

KEY, ENTRY = mint("cli-user", frozenset({Scope.START, Scope.READ, Scope.CANCEL}))


def keyed_gateway(tmp_path: Path) -> tuple[Harness, Any, Any]:
    """A gateway that takes only KEY, on a fresh in-process pipeline, and a loopback socket to serve it on."""
    harness, app = keyed_app(tmp_path / "keys.toml", ENTRY)
    return harness, app, loopback_socket()


async def test_the_cli_sends_pipelines_api_key_and_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, app, sock = keyed_gateway(tmp_path)
    pipeline_id = f"cli-{uuid.uuid4().hex[:8]}"
    start = ["--gateway", url_of(sock), "start", "--no-follow", "--email", "cli@example.com", "--id", pipeline_id]

    async with serving(app, sock):
        with_key = await run_cli(monkeypatch, KEY, *start)
        printed = capsys.readouterr()
        without_key = await run_cli(monkeypatch, None, "--gateway", url_of(sock), "status", pipeline_id)
        refused = capsys.readouterr()
        wrong_key = await run_cli(monkeypatch, KEY + "x", "--gateway", url_of(sock), "status", pipeline_id)

    assert with_key == 0, printed.err
    assert printed.out.startswith(f"{pipeline_id}: ")
    assert without_key == 2
    assert "401 invalid_token" in refused.err and "PIPELINES_API_KEY is not set" in refused.err
    assert wrong_key == 2
    assert KEY not in refused.err + printed.err + printed.out


async def test_the_cli_lists_the_jobs_and_starts_one_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, app, sock = keyed_gateway(tmp_path)
    gateway = ["--gateway", url_of(sock)]
    pipeline_id = f"cli-{uuid.uuid4().hex[:8]}"

    async with serving(app, sock):
        listed = await run_cli(monkeypatch, KEY, *gateway, "jobs")
        jobs = capsys.readouterr().out
        started = await run_cli(
            monkeypatch, KEY, *gateway, "start", "--no-follow", "--job", "word-frequencies",
            "--email", "cli@example.com", "--id", pipeline_id, "--param", "text=a b a",
        )  # fmt: skip
        start_out = capsys.readouterr()
        refused = await run_cli(monkeypatch, KEY, *gateway, "start", "--job", "word-frequencies", "--email", "c@x.io")
        refusal = capsys.readouterr().err

    assert listed == 0 and jobs.startswith("csv-statistics (default): CSV statistics; completes by callback")
    assert "  --param text=...  The text to count words in. (required)" in jobs
    assert "customer-report" not in jobs, "a job the key may not start is not listed"
    assert started == 0, start_out.err
    assert [call["text"] for call in harness.jobs.run_now_calls] == ["a b a"]
    assert refused == 2 and "422" in refusal and "body.parameters.text: is required" in refusal


async def test_the_cli_follows_to_awaiting_repair_then_repairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, app, sock = keyed_gateway(tmp_path)
    gateway = ["--gateway", url_of(sock), "--interval", "0.05"]
    pipeline_id = f"cli-{uuid.uuid4().hex[:8]}"

    async with serving(app, sock):
        await run_cli(monkeypatch, KEY, *gateway, "start", "--no-follow", "--email", "c@x.io", "--id", pipeline_id)
        run = await harness.wait_for_step_run(pipeline_id, "1")
        typo = RunError(type="KeyError", message="'colum'")
        await harness.settle_step(pipeline_id, "1", status="failure", error=typo)
        followed = await run_cli(monkeypatch, KEY, *gateway, "follow", pipeline_id)
        follow_out = capsys.readouterr().out
        repaired = await run_cli(
            monkeypatch, KEY, *gateway, "repair", pipeline_id, "--param", "source=/Workspace/Shared/pipelines/ok.csv"
        )
        repair_out = capsys.readouterr()

    assert followed == cli.AWAITING_REPAIR_EXIT
    assert f"`pipelines repair {pipeline_id}`" in follow_out
    assert repaired == 0, repair_out.err
    async with asyncio.timeout(5):
        while run.run_id not in harness.jobs.repairs:
            await asyncio.sleep(0.02)
    assert harness.jobs.repairs[run.run_id][0]["source"] == "/Workspace/Shared/pipelines/ok.csv"


async def test_every_command_prints_json_with_json_before_or_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, app, sock = keyed_gateway(tmp_path)
    gateway = ["--gateway", url_of(sock), "--interval", "0.05"]
    pipeline_id = f"cli-{uuid.uuid4().hex[:8]}"
    start = [
        "start",
        "--no-follow",
        "--email",
        "c@x.io",
        "--id",
        pipeline_id,
        "--param",
        "source=/Workspace/Shared/pipelines/a.csv",
    ]

    async with serving(app, sock):
        started = await run_cli(monkeypatch, KEY, *gateway, *start, "--json")
        start_doc = json.loads(capsys.readouterr().out)
        status = await run_cli(monkeypatch, KEY, *gateway, "--json", "status", pipeline_id)
        status_doc = json.loads(capsys.readouterr().out)
        listed = await run_cli(monkeypatch, KEY, *gateway, "jobs", "--json")
        jobs_doc = json.loads(capsys.readouterr().out)
        await harness.wait_for_step_run(pipeline_id, "1")
        await harness.settle_step(pipeline_id, "1", status="success", result={"rows": 3})
        followed = await run_cli(monkeypatch, KEY, *gateway, "follow", pipeline_id, "--json")
        follow_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        refused = await run_cli(monkeypatch, None, *gateway, "status", pipeline_id, "--json")
        refusal = capsys.readouterr()

    assert started == status == listed == 0
    assert start_doc["id"] == status_doc["id"] == pipeline_id
    assert (
        status_doc["parameters"] == {"source": "/Workspace/Shared/pipelines/a.csv"} and status_doc["email"] == "c@x.io"
    )
    assert "csv-statistics" in [job["name"] for job in jobs_doc["jobs"]]
    assert followed == 0 and follow_lines[-1]["state"] == "succeeded"
    assert follow_lines[-1]["result"] == {"rows": 3}
    assert all(line["id"] == pipeline_id for line in follow_lines)
    assert refused == 2 and refusal.out == ""
    error = json.loads(refusal.err)["error"]
    assert error["status"] == 401 and error["code"] == "invalid_token"
    assert "PIPELINES_API_KEY is not set" in error["message"]


async def test_follow_exits_4_for_a_cancelled_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, app, sock = keyed_gateway(tmp_path)
    gateway = ["--gateway", url_of(sock), "--interval", "0.05"]
    pipeline_id = f"cli-{uuid.uuid4().hex[:8]}"

    async with serving(app, sock):
        await run_cli(monkeypatch, KEY, *gateway, "start", "--no-follow", "--email", "c@x.io", "--id", pipeline_id)
        await harness.wait_for_step_run(pipeline_id, "1")
        cancelled = await run_cli(monkeypatch, KEY, *gateway, "cancel", pipeline_id)
        followed = await run_cli(monkeypatch, KEY, *gateway, "follow", pipeline_id)
        out = capsys.readouterr().out

    assert cancelled == 0
    assert followed == cli.OUTCOME_EXIT["cancelled"] == 4
    assert out.splitlines()[-1].split()[1:3] == [f"{pipeline_id}:", "cancelled"]


def test_status_shows_a_long_result_cut_with_an_ellipsis_and_how_to_see_it_whole() -> None:
    """Issue 20, finding 7: `status` cut a long result mid-JSON, with nothing saying so."""
    doc = {"id": "p1", "state": "succeeded", "result": {"columns": [f"column_{n}" for n in range(100)]}}
    whole = json.dumps(doc["result"], sort_keys=True)

    line = cli._describe(doc)

    shown = line.split(" | result ", 1)[1]
    assert shown.startswith(whole[: cli.RESULT_CHARACTERS_SHOWN] + "…"), shown
    assert f"({len(whole)} characters; `pipelines status p1 --json` shows it whole)" in shown
    short = cli._describe({**doc, "result": {"rows": 3}})
    assert short == 'p1: succeeded | result {"rows": 3}', "a short result is shown whole, with no ellipsis"


ROOT = Path(__file__).resolve().parents[2]
#: The guide a newcomer reads: README.md, and docs/ where the CLI's examples now live.
GUIDE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands(program: str) -> list[str]:
    """Every command line of the guide's ``sh`` blocks that runs ``program``, continuation lines joined."""
    text = "\n".join(page.read_text(encoding="utf-8") for page in GUIDE)
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if program in line and not line.lstrip().startswith("#")]


def test_every_cli_example_in_the_readme_is_a_command_it_takes_with_its_jobs_parameters() -> None:
    """Issue 20, finding 10: README's examples are what a newcomer types first; each must at least parse."""
    catalogue = Catalogue.load(CATALOGUE_FILE)
    examples = readme_commands("uv run pipelines ")
    assert len(examples) > 10, "README's examples were not found"
    for example in examples:
        words = shlex.split(example.split("uv run pipelines ", 1)[1], comments=True)
        try:
            args = cli._parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"README: the CLI refuses {example!r}")
        if args.command == "start":
            job = catalogue.job(args.job)
            given = {pair.partition("=")[0] for pair in args.param}
            assert given <= set(job.parameters), f"README: {example!r} names parameters {job.name} lacks"
            assert {name for name, p in job.parameters.items() if p.required} <= given, f"README: {example!r}"


def test_the_readmes_examples_need_no_internet() -> None:
    """Issue 20, finding 10: the first CLI example fetched https://example.com/data.csv."""
    for example in readme_commands("pipelines") + readme_commands("curl "):
        assert "https://example.com" not in example, example

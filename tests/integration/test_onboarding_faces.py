"""The onboarding example from each face a person uses: the client, the CLI and the web page, on the compose stack.

Each runs the three jobs on the emulator and goes through a real approval (a
threshold of 0 asks a person every time), or a middle job repaired by a person.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from playwright.async_api import Page, expect

from pipeline_client import Client
from tests.support.browser import browser_test
from tests.support.gateway_page import sign_in
from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, Gateway, new_id

ONBOARDING = "customer-onboarding"
ASK_A_PERSON = {"approval_threshold": "0"}
#: The risk score job's notebook task (infra/databricks/databricks.yml).
SCORE_TASK = "score"
#: The CLI's exit status when a pipeline waits for a person (docs/using.md#the-cli).
WAITS_FOR_A_PERSON = 6


def test_the_client_starts_it_waits_at_the_gate_approves_and_waits_to_the_end(stack: Stack) -> None:
    pipeline_id = new_id("onboard")
    with Client(stack.api_url) as client:
        client.start(job=ONBOARDING, email=f"{pipeline_id}@example.com", parameters=ASK_A_PERSON, id=pipeline_id)

        waiting = client.wait(pipeline_id, timeout=120)
        assert waiting.state == "awaiting_approval"
        assert [gate.name for gate in waiting.open_gates] == ["high-risk"]

        client.approve(pipeline_id, comment="checked by the client")
        done = client.wait(pipeline_id, timeout=60)

    assert done.state == "succeeded"
    assert [(step.kind, step.state) for step in done.steps] == [
        ("job", "succeeded"),
        ("job", "succeeded"),
        ("job", "succeeded"),
        ("approval", "approved"),
        ("email", "sent"),
    ]
    assert done.steps[3].decision.comment == "checked by the client"


def test_the_client_repairs_the_failed_middle_job_by_its_name(stack: Stack, emulator: Emulator) -> None:
    pipeline_id = new_id("onboard")
    emulator.plan(pipeline_id, tasks={SCORE_TASK: {"fail": True, "fail_attempts": 1, "message": "model not loaded"}})
    with Client(stack.api_url) as client:
        client.start(job=ONBOARDING, email=f"{pipeline_id}@example.com", id=pipeline_id)
        waiting = client.wait(pipeline_id, timeout=120)
        assert waiting.state == "awaiting_repair" and waiting.step("risk-score").state == "awaiting_repair"

        client.repair(pipeline_id, step="risk-score")
        done = client.wait(pipeline_id, timeout=120)

    assert done.state == "succeeded" and done.step("risk-score").attempts == 2
    assert emulator.counters(pipeline_id)["runs"] == 3


def test_the_cli_watches_to_the_gate_approves_and_watches_to_the_end(stack: Stack, gateway: Gateway) -> None:
    pipeline_id = new_id("onboard")
    cli = [sys.executable, "-m", "pipeline_client.cli", "--gateway", stack.api_url]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        # As a shell runs it, bounded: a watch that never stops fails the test rather than hanging it.
        return subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=180, env=os.environ)

    started = run("start", "--id", pipeline_id, "--job", ONBOARDING, "--email", f"{pipeline_id}@example.com",
                  "--param", "approval_threshold=0", "--no-follow")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr

    at_the_gate = run("watch", pipeline_id)
    assert at_the_gate.returncode == WAITS_FOR_A_PERSON, at_the_gate.stdout + at_the_gate.stderr
    approved = run("approve", pipeline_id, "--comment", "from the shell")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    ended = run("watch", pipeline_id)
    assert ended.returncode == 0, ended.stdout + ended.stderr

    done = gateway.status(pipeline_id)
    assert done["state"] == "succeeded" and done["steps"][3]["decision"]["comment"] == "from the shell"


@browser_test
async def test_the_web_page_shows_the_steps_and_a_person_approves_the_gate(
    page: Page, stack: Stack, gateway: Gateway
) -> None:
    pipeline_id = new_id("onboard")
    response = gateway.start(pipeline_id, job=ONBOARDING, parameters=ASK_A_PERSON)
    assert response.status_code == 202, response.text
    gateway.wait_for(pipeline_id, "awaiting_approval", timeout=120)
    await sign_in(page, stack)

    await page.goto(f"{stack.api_url}/ui/pipelines/{pipeline_id}")
    await expect(page.locator("#pipeline-state")).to_have_text("awaiting approval")
    await page.locator(f"a[href='/ui/pipelines/{pipeline_id}/approve?gate=4']").click()
    await page.get_by_label(re.compile("comment", re.IGNORECASE)).fill("approved on the page")
    await page.get_by_role("button", name="Yes, approve it").click()

    await expect(page.locator("#pipeline-state")).to_have_text("succeeded", timeout=90_000)
    done = gateway.status(pipeline_id)
    assert [step["state"] for step in done["steps"]][3:] == ["approved", "sent"]
    assert done["steps"][3]["decision"]["comment"] == "approved on the page"

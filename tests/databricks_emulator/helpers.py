"""What the emulator tests do again and again: build a run's parameters, wait for states."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import Run, RunLifeCycleState

from pipeline_shared.ids import callback_promise_id
from pipeline_shared.signing import derive_callback_key

#: Poll often: the emulator's states last tenths of a second in these tests.
POLL_SECONDS = 0.05


class Pipeline:
    """One pipeline's view of the contract: its promise, its key and its job parameters."""

    def __init__(self, pipeline_id: str, callback_url: str, **user_parameters: str) -> None:
        self.pipeline_id = pipeline_id
        self.secret = f"server-secret-{uuid.uuid4().hex}"
        self.promise_id = callback_promise_id(pipeline_id)
        self.key = derive_callback_key(self.secret, self.promise_id)
        self.job_parameters = {
            "pipeline_id": pipeline_id,
            "callback_promise_id": self.promise_id,
            "callback_url": callback_url,
            "callback_signing_key": self.key,
            "parameters": json.dumps(user_parameters),
        }


def wait_until(workspace: WorkspaceClient, run_id: int, done, timeout: float = 30) -> Run:  # type: ignore[no-untyped-def]
    """Poll runs/get until ``done(run)``; AssertionError naming the last state after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        run = workspace.jobs.get_run(run_id)
        if done(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.state} after {timeout}s")
        time.sleep(POLL_SECONDS)


def wait_terminated(workspace: WorkspaceClient, run_id: int, timeout: float = 30) -> Run:
    return wait_until(
        workspace,
        run_id,
        lambda run: run.state.life_cycle_state == RunLifeCycleState.TERMINATED,
        timeout,
    )


def run_to_end(workspace: WorkspaceClient, job_id: int, pipeline: Pipeline) -> Run:
    """Start a run for ``pipeline`` and wait for it to end."""
    waiter = workspace.jobs.run_now(job_id, job_parameters=pipeline.job_parameters)
    return wait_terminated(workspace, waiter.run_id)


def start_runs(client: httpx.Client, job_id: int, parameters: list[dict[str, str]]) -> list[int]:
    """run-now for each parameter set, 32 at a time over raw HTTP (the client carries the token)."""

    def one(params: dict[str, str]) -> int:
        response = client.post(
            "/api/2.2/jobs/run-now",
            json={
                "job_id": job_id,
                "job_parameters": params,
                "idempotency_token": uuid.uuid4().hex,
            },
        )
        response.raise_for_status()
        return response.json()["run_id"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, parameters))


def set_plan(control: httpx.Client, pipeline_id: str, **plan: object) -> None:
    response = control.put(f"/emulator/faults/pipelines/{pipeline_id}", json=plan)
    assert response.status_code == 200, response.text


def run_details(control: httpx.Client, run_id: int) -> dict:
    response = control.get(f"/emulator/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def counters(control: httpx.Client, pipeline_id: str) -> dict:
    response = control.get(f"/emulator/pipelines/{pipeline_id}")
    assert response.status_code == 200, response.text
    return response.json()

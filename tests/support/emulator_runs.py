"""What the emulator tests do again and again: build a run's parameters, wait for states, run a notebook."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import Run, RunLifeCycleState, RunTask

from databricks_emulator import harness
from pipeline_shared.promise_tree import callback_promise_id
from pipeline_shared.signing import derive_callback_key
from tests.support.emulator_process import NOTEBOOKS

#: Poll often: the emulator's states last tenths of a second in these tests.
POLL_SECONDS = 0.05


class Pipeline:
    """One pipeline's view of the contract: its promise, its key and its job parameters.

    They are the test bundle's pipeline job's parameters: the callback inputs and ``source``.
    """

    def __init__(self, pipeline_id: str, callback_url: str, source: str | None = None) -> None:
        self.pipeline_id = pipeline_id
        self.secret = f"server-secret-{uuid.uuid4().hex}"
        self.promise_id = callback_promise_id(pipeline_id)
        self.key = derive_callback_key(self.secret, self.promise_id)
        #: What the worker sets on every run, whatever the job.
        self.inputs = {
            "pipeline_id": pipeline_id,
            "callback_promise_id": self.promise_id,
            "callback_url": callback_url,
            "callback_signing_key": self.key,
        }
        self.job_parameters = dict(self.inputs)
        if source is not None:
            self.job_parameters["source"] = source


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


#: The life cycle states a run does not leave (unless it is repaired).
TERMINAL_STATES = (RunLifeCycleState.TERMINATED, RunLifeCycleState.SKIPPED, RunLifeCycleState.INTERNAL_ERROR)


def wait_terminated(workspace: WorkspaceClient, run_id: int, timeout: float = 30) -> Run:
    """The run once it has ended: TERMINATED, SKIPPED or INTERNAL_ERROR."""
    return wait_until(workspace, run_id, lambda run: run.state.life_cycle_state in TERMINAL_STATES, timeout)


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


def import_notebook_module(name: str) -> ModuleType:
    """notebooks/<name>.py, as the module the notebooks import (loaded once)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, NOTEBOOKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def import_callback_helper() -> ModuleType:
    """notebooks/pipeline_callback.py, as the module the notebooks import (loaded once)."""
    return import_notebook_module("pipeline_callback")


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook run through the harness ended: its exit value, or the error it raised."""

    returncode: int
    exit_value: str | None
    error: dict | None
    stdout: str

    @property
    def result(self) -> dict:
        assert self.error is None, self.error
        assert self.exit_value is not None, "the notebook ended without dbutils.notebook.exit"
        return json.loads(self.exit_value)


def run_notebook(notebook: Path, widgets: dict[str, str], run_dir: Path, timeout: float = 60) -> NotebookRun:
    """Run ``notebook`` as the emulator runs a job's notebook task: the harness, isolated, stdlib only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "notebook_path": str(notebook),
        "widgets": widgets,
        "fault": harness.FAULT_NONE,
        "run_dir": str(run_dir),
        "outcome_path": str(run_dir / "outcome.json"),
        "callback_sink_url": "http://127.0.0.1:9/unused",
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    process = subprocess.run(
        [sys.executable, "-I", "-S", harness.__file__, str(spec_path)],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    outcome = json.loads((run_dir / "outcome.json").read_text())
    return NotebookRun(process.returncode, outcome["exit_value"], outcome["error"], process.stdout)


def start(workspace: WorkspaceClient, job_id: int, pipeline_id: str | None = None, **parameters: str) -> int:
    """run-now of ``job_id`` (with ``pipeline_id`` for its fault plan, if given); the run id."""
    if pipeline_id is not None:
        parameters["pipeline_id"] = pipeline_id
    return workspace.jobs.run_now(job_id, job_parameters=parameters).run_id


def latest_tasks(run: Run) -> dict[str, RunTask]:
    """Each task's latest attempt: runs/get lists every attempt, oldest first."""
    latest: dict[str, RunTask] = {}
    for task in run.tasks:
        if task.task_key not in latest or task.attempt_number > latest[task.task_key].attempt_number:
            latest[task.task_key] = task
    return latest


def results(run: Run) -> dict[str, str | None]:
    """Each task's latest result state, by key (None when it has none)."""
    return {key: task.state.result_state and task.state.result_state.value for key, task in latest_tasks(run).items()}


def watch(workspace: WorkspaceClient, run_id: int, timeout: float = 30) -> tuple[Run, list[Run]]:
    """Poll the run until it is terminal; the last answer and every answer seen."""
    seen: list[Run] = []
    wait_until(
        workspace, run_id, lambda run: seen.append(run) or run.state.life_cycle_state in TERMINAL_STATES, timeout
    )
    return seen[-1], seen


def set_job_plan(control: httpx.Client, job_id: int, **plan: object) -> None:
    response = control.put(f"/emulator/faults/jobs/{job_id}", json=plan)
    assert response.status_code == 200, response.text


def deliveries(control, run_id: int, count: int, timeout: float = 15) -> list[dict]:  # type: ignore[no-untyped-def]
    """The run's first ``count`` deliveries once each is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        found = control.get("/emulator/notifications", params={"run_id": run_id}).json()["deliveries"]
        if len(found) >= count and all(delivery["status"] != "pending" for delivery in found):
            return found
        assert time.monotonic() < deadline, f"deliveries of run {run_id} after {timeout}s: {found}"
        time.sleep(POLL_SECONDS)

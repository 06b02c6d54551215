"""Hundreds of concurrent runs, as a busy service would start: held cheaply, ended cleanly.

A run waiting in its start delay must cost no process, so 500 of them are
held at once here and then cancelled; the figures for 500 runs that really
execute come from ``bench_concurrent_runs.py`` (too heavy for every CI run).
"""

from __future__ import annotations

import time

import httpx

from tests.support.emulator_runs import POLL_SECONDS, set_plan, start_runs

#: The concurrency the emulator must hold without falling over.
CONCURRENT_RUNS = 500


def states(control: httpx.Client, pipeline_id: str) -> list[dict]:
    return control.get("/emulator/runs", params={"pipeline_id": pipeline_id}).json()["runs"]


def wait_for_all(control: httpx.Client, pipeline_id: str, state: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = states(control, pipeline_id)
        if len(runs) == CONCURRENT_RUNS and all(r["life_cycle_state"] == state for r in runs):
            return runs
        if time.monotonic() > deadline:
            seen = sorted({r["life_cycle_state"] for r in runs})
            raise AssertionError(f"{len(runs)} runs in {seen}, not all {state}, after {timeout}s")
        time.sleep(POLL_SECONDS * 4)


def test_500_concurrent_waiting_runs_cost_no_process_and_cancel_cleanly(emulator, control, pipeline_id):
    set_plan(control, pipeline_id, start_delay_seconds=3600)
    with httpx.Client(base_url=emulator.url, timeout=30, headers={"Authorization": f"Bearer {emulator.token}"}) as api:
        run_ids = start_runs(api, emulator.job_id, [{"pipeline_id": pipeline_id}] * CONCURRENT_RUNS)
        assert len(set(run_ids)) == CONCURRENT_RUNS

        runs = wait_for_all(control, pipeline_id, "PENDING", timeout=15)
        assert all(task["pid"] is None for run in runs for task in run["tasks"])
        started = time.monotonic()
        assert control.get("/healthz").json()["active_runs"] >= CONCURRENT_RUNS
        assert time.monotonic() - started < 1

        for run_id in run_ids:
            assert api.post("/api/2.2/jobs/runs/cancel", json={"run_id": run_id}).status_code == 200
        runs = wait_for_all(control, pipeline_id, "TERMINATED", timeout=15)
    assert all(run["result_state"] == "CANCELED" for run in runs)

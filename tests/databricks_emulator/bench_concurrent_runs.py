"""How the emulator holds up under many concurrent runs; prints a JSON report.

Not collected by pytest (it takes a while and loads the machine): run it by hand,

    uv run python -m tests.databricks_emulator.bench_concurrent_runs --runs 500

It starts its own emulator on a free loopback port and a callback receiver on
127.0.0.1, then measures two things:

- ``delayed``: N runs created at once, each waiting in PENDING behind a start
  delay: how long N run-now calls take, that no process exists while they
  wait, and the emulator's memory with N runs held;
- ``executing``: N runs started at once that really execute the notebook and
  call back: time until all have ended, how many notebook processes ran at
  the same time, their total memory at the peak, and runs/get latency while
  all of that happens.

All traffic stays on loopback, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_process import start_emulator, stop_emulator
from tests.support.emulator_runs import Pipeline, start_runs

#: No phase of the benchmark may take longer than this.
PHASE_DEADLINE_SECONDS = 600


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def runs_of(client: httpx.Client, pipeline_ids: set[str]) -> list[dict]:
    runs = client.get("/emulator/runs").json()["runs"]
    return [run for run in runs if run["pipeline_id"] in pipeline_ids]


def wait_all_terminated(client: httpx.Client, pipeline_ids: set[str], on_poll=None) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while True:
        runs = runs_of(client, pipeline_ids)
        if on_poll:
            on_poll(runs)
        if all(run["life_cycle_state"] == "TERMINATED" for run in runs):
            return time.monotonic() - started
        if time.monotonic() - started > PHASE_DEADLINE_SECONDS:
            raise TimeoutError("runs did not end in time")
        time.sleep(0.2)


def delayed(client: httpx.Client, job_id: int, count: int, emulator_pid: int) -> dict:
    pipeline_id = f"bench-delayed-{uuid.uuid4().hex[:8]}"
    client.put(f"/emulator/faults/pipelines/{pipeline_id}", json={"start_delay_seconds": 3600})
    rss_before = rss_kib(emulator_pid)
    started = time.monotonic()
    start_runs(client, job_id, [{"pipeline_id": pipeline_id}] * count)
    create_seconds = time.monotonic() - started
    while True:  # past QUEUED, into the start delay
        runs = runs_of(client, {pipeline_id})
        if all(run["life_cycle_state"] == "PENDING" for run in runs):
            break
        if time.monotonic() - started > PHASE_DEADLINE_SECONDS:
            raise TimeoutError("runs did not reach PENDING in time")
        time.sleep(0.1)
    health_started = time.monotonic()
    client.get("/healthz").raise_for_status()
    report = {
        "runs": count,
        "run_now_seconds_total": round(create_seconds, 2),
        "pending": sum(run["life_cycle_state"] == "PENDING" for run in runs),
        "processes_while_waiting": len(children_of(emulator_pid)),
        "emulator_rss_mib_added": round((rss_kib(emulator_pid) - rss_before) / 1024, 1),
        "healthz_ms_with_runs_held": round((time.monotonic() - health_started) * 1000, 1),
    }
    for run in runs:
        client.post("/api/2.2/jobs/runs/cancel", json={"run_id": run["run_id"]})
    report["cancel_all_seconds"] = round(wait_all_terminated(client, {pipeline_id}), 2)
    return report


def executing(
    client: httpx.Client,
    job_id: int,
    count: int,
    emulator_pid: int,
    callback_url: str,
    receiver: CallbackReceiver,
) -> dict:
    pipelines = [Pipeline(f"bench-run-{uuid.uuid4().hex[:10]}", callback_url) for _ in range(count)]
    ids = {p.pipeline_id for p in pipelines}
    peak = {"processes": 0, "children_rss_mib": 0.0}
    latencies: list[float] = []
    stop = threading.Event()

    def sample_processes() -> None:
        while not stop.is_set():
            children = children_of(emulator_pid)
            peak["processes"] = max(peak["processes"], len(children))
            rss = sum(rss_kib(child) for child in children) / 1024
            peak["children_rss_mib"] = max(peak["children_rss_mib"], round(rss, 1))
            stop.wait(0.1)

    def poll_latency(runs: list[dict]) -> None:
        if runs:
            began = time.monotonic()
            client.get("/api/2.2/jobs/runs/get", params={"run_id": runs[0]["run_id"]})
            latencies.append((time.monotonic() - began) * 1000)

    sampler = threading.Thread(target=sample_processes, daemon=True)
    sampler.start()
    started = time.monotonic()
    start_runs(client, job_id, [p.job_parameters for p in pipelines])
    wait_all_terminated(client, ids, on_poll=poll_latency)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    runs = runs_of(client, ids)
    callbacks = receiver.wait_for(count, timeout=60)
    return {
        "runs": count,
        "seconds_until_all_ended": round(elapsed, 2),
        "succeeded": sum(run["result_state"] == "SUCCESS" for run in runs),
        "callbacks_received": len(callbacks),
        "peak_concurrent_notebook_processes": peak["processes"],
        "peak_notebook_processes_rss_mib": peak["children_rss_mib"],
        "emulator_rss_mib_after": round(rss_kib(emulator_pid) / 1024, 1),
        "runs_get_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "runs_get_ms_max": round(max(latencies), 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, CallbackReceiver() as receiver:
        emulator = start_emulator(
            Path(tmp),
            DATABRICKS_EMULATOR_QUEUED_SECONDS="0.2",
            DATABRICKS_EMULATOR_PENDING_SECONDS="1",
            DATABRICKS_EMULATOR_TERMINATING_SECONDS="0.3",
        )
        try:
            with httpx.Client(
                base_url=emulator.url,
                timeout=60,
                headers={"Authorization": f"Bearer {emulator.token}"},
            ) as client:
                report = {
                    "cpus": os.cpu_count(),
                    "delayed": delayed(client, emulator.job_id, args.runs, emulator.process.pid),
                    "executing": executing(
                        client,
                        emulator.job_id,
                        args.runs,
                        emulator.process.pid,
                        f"{receiver.url}/cb",
                        receiver,
                    ),
                }
        finally:
            stop_emulator(emulator)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

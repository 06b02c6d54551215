"""Figures 8 and 9: pipelines as code against the one-job workflow, measured side by side.

Three shapes of pipeline, each started as the gateway starts it (its root
created by :class:`.bench_clients.RootStarter`), so the figures do not depend
on which shape the gateway of the commit under test starts:

- ``legacy``: the one-job workflow, ``run_pipeline`` at Resonate version 1,
  ``spec.version`` None (what main's gateway starts before issue 22);
- ``one_job``: the same job run by its code, the shipped ``one-job``
  pipeline, ``run_pipeline`` at version 3 (the gateway's), ``spec.version`` 1;
- ``onboarding``: ``customer-onboarding``, three jobs (ingest, then score and
  report side by side), version 3.

Figure 8 (:func:`code_paths`) calls them back at the figure-1 rate, the
shapes' batches alternating in order from one repeat to the next, and counts
per batch: callback to email latency, the requests Resonate served (calls of
``resonate.resonate_rpc``, counted by Postgres' ``pg_stat_user_functions``),
and each service's CPU. Figure 9 (:func:`waiting_shapes`) holds one-job and
onboarding pipelines waiting, batches alternating, and reads what each more
waiting pipeline of each shape holds: memory (PSS) and Resonate's rows and
bytes, as a least-squares fit on both counts at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from resonate.ids import join_id

from pipeline_shared import promise_tree
from pipeline_shared.catalogue import Catalogue
from pipeline_shared.models import PipelineSpec
from tests.support.stack import REPO_ROOT

from .bench_clients import (
    RESONATE_TABLES,
    STATS_FLUSH_SECONDS,
    ServiceError,
    callback_promise_for,
)
from .bench_load import latency_summary, paced, pool
from .bench_phases import SETUP_CONCURRENCY, SLACK_SECONDS, WAIT_FOREVER_SECONDS, Bench, log
from .bench_shapes import LEGACY, ONBOARDING, ONE_JOB, Shape

#: The catalogue the stack's gateway and worker read (compose mounts this file).
CATALOGUE_FILE = REPO_ROOT / "infra" / "catalogue.toml"
#: The stored procedure every protocol request runs as: one call, one request.
REQUEST_FUNCTION = "resonate_rpc"
#: The outbox drains (the connector's, one per wake of each listening process).
DRAIN_FUNCTIONS = ("dequeue_execute", "dequeue_unblock")
#: The step of onboarding's approval gate (after ingest, score and report).
GATE_STEP = "4"


#: Every shape figure 8 measures, in the order of its first repeat.
SHAPES = (LEGACY, ONE_JOB, ONBOARDING)


def spec_of(shape: Shape, pipeline_id: str, catalogue: Catalogue, **parameters: str) -> PipelineSpec:
    """The spec the gateway would store for a start of ``shape`` with ``parameters`` (defaults filled in)."""
    entry = catalogue.pipeline(shape.job)
    return PipelineSpec(
        id=pipeline_id,
        email=f"{pipeline_id}@example.com",
        parameters=entry.resolve({**shape.parameters, **parameters}),
        timeout_seconds=entry.timeout(None),
        job=shape.job,
        version=entry.version if shape.by_code else None,
    )


def trigger_ids(pipeline_id: str, steps: Sequence[str | None]) -> list[str]:
    """The trigger steps of ``steps``' runs: resolved once each run exists and its pipeline waits on it."""
    return [promise_tree.trigger_step_id(promise_tree.base_of(pipeline_id, step)) for step in steps]


def gate_request_id(pipeline_id: str) -> str:
    """Onboarding gate's approval_request email (``P:4.3``): resolved once the gate waits for its decision."""
    return join_id(promise_tree.step_base(pipeline_id, GATE_STEP), "3")


async def start_roots(
    bench: Bench, shape: Shape, pipeline_ids: Sequence[str], catalogue: Catalogue, **parameters: str
) -> None:
    async def create(pipeline_id: str) -> int:
        spec = spec_of(shape, pipeline_id, catalogue, **parameters)
        await bench.starter.create(spec, version=shape.function_version)
        return 200

    failed = [o for o in await pool(pipeline_ids, SETUP_CONCURRENCY, create) if o.error or o.status != 200]
    if failed:
        raise ServiceError(f"{len(failed)} roots not created; first: {failed[0].error}")


async def wait_waiting(
    bench: Bench, pipeline_ids: Sequence[str], done_ids: Callable[[str], list[str]], timeout: float
) -> int:
    """Wait until each pipeline is suspended with every promise ``done_ids`` names resolved; how many are."""
    deadline = time.monotonic() + timeout
    wanted = {pipeline_id: done_ids(pipeline_id) for pipeline_id in pipeline_ids}
    every = [promise_id for ids in wanted.values() for promise_id in ids]
    while True:
        states = await bench.resonate.states(every)
        suspended = await bench.suspended(pipeline_ids)
        ready = sum(
            1
            for pipeline_id, ids in wanted.items()
            if pipeline_id in suspended and all(states.get(i) == "resolved" for i in ids)
        )
        if ready == len(pipeline_ids) or time.monotonic() >= deadline:
            return ready
        await asyncio.sleep(0.5)


async def wait_settled(bench: Bench, pipeline_ids: Sequence[str], timeout: float) -> int:
    """Wait until every root is settled (the pipeline recorded its outcome); how many are."""
    deadline = time.monotonic() + timeout
    while True:
        states = await bench.resonate.states(pipeline_ids)
        settled = sum(1 for state in states.values() if state != "pending")
        if settled == len(pipeline_ids) or time.monotonic() >= deadline:
            return settled
        await asyncio.sleep(0.5)


# -- figure 8 --------------------------------------------------------------------------


@dataclass
class Counts:
    """Requests counted and CPU used at one instant (after the backends reported their counts)."""

    calls: dict[str, int]
    sample: Any


async def _counts(bench: Bench) -> Counts:
    return Counts(await bench.resonate.function_calls(), bench.sample())


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls of each function between two readings (functions first called in between included)."""
    return {name: after[name] - before.get(name, 0) for name in after if after[name] - before.get(name, 0)}


def requests_per_unit(
    calls: dict[str, int], idle_per_second: dict[str, float], seconds: float, units: int
) -> dict[str, float]:
    """Calls of each function per pipeline (or per job), less what the stack calls idle over the same time."""
    return {
        name: max(0.0, count - idle_per_second.get(name, 0.0) * seconds) / units
        for name, count in sorted(calls.items())
        if units
    }


async def code_paths(bench: Bench) -> dict[str, Any]:
    """Figure 8: the shapes' callback → email latency, Resonate requests and CPU, per pipeline and per job.

    Two kinds of window, each followed by the time Postgres backends may take
    to report their counts, with what the stack does idle over as long
    subtracted:

    - each shape's start: every batch of the shape created and brought to
      wait on its first runs (trigger steps included), shape after shape;
    - each batch's callbacks: from just before its first callback to every
      root settled (the workflow's last step, after the email). Batches of
      the shapes alternate, their order reversed each repeat. Onboarding's
      window also holds the start of its pair (their triggers), which the
      one-job shapes did in their start window.
    """
    p = bench.profile
    catalogue = Catalogue.load(CATALOGUE_FILE)
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)
    await bench.resonate.count_functions()
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    idle_before = await _counts(bench)
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    idle_after = await _counts(bench)
    idle_seconds = idle_after.sample.at - idle_before.sample.at
    idle_rate = {name: n / idle_seconds for name, n in calls_between(idle_before.calls, idle_after.calls).items()}

    plan: list[tuple[int, Shape, list[str]]] = []
    for repeat in range(p.repeats):
        order = SHAPES if repeat % 2 == 0 else tuple(reversed(SHAPES))
        for shape in order:
            count = p.code_onboarding_pipelines if shape is ONBOARDING else p.code_pipelines
            plan.append((repeat, shape, bench.new_ids(f"code{repeat}-{shape.key}", count)))
    starts = {}
    for shape in SHAPES:
        pipeline_ids = [pid for _, batch_shape, ids in plan if batch_shape is shape for pid in ids]
        starts[shape.key] = await _measure_start(bench, shape, pipeline_ids, catalogue, idle_rate)
        log(
            f"  {shape.key}: {starts[shape.key]['waiting']} waiting on their first runs, "
            f"{starts[shape.key]['requests_per_pipeline']:.1f} requests a pipeline to get there"
        )

    batches = []
    for repeat, shape, pipeline_ids in plan:
        batch = await _measure_batch(bench, shape, pipeline_ids, idle_rate)
        batch["repeat"] = repeat
        batches.append(batch)
        latency = batch["callback_to_email"].get("p50_ms")
        log(
            f"  {shape.key} run {repeat + 1}: p50 {latency or 0:.0f} ms, "
            f"{batch['requests_per_pipeline']:.1f} requests a pipeline"
        )
    return {
        "idle_requests_per_second": idle_rate,
        "rate_per_second": p.latency_rate,
        "shapes": {shape.key: {"label": shape.label, "jobs": shape.jobs} for shape in SHAPES},
        "starts": starts,
        "batches": batches,
    }


async def _measure_start(
    bench: Bench, shape: Shape, pipeline_ids: list[str], catalogue: Catalogue, idle_rate: dict[str, float]
) -> dict[str, Any]:
    """Requests and CPU from the roots' creation to every pipeline waiting on its first runs."""
    before = await _counts(bench)
    await start_roots(bench, shape, pipeline_ids, catalogue)
    waiting = await wait_waiting(
        bench, pipeline_ids, lambda pid: trigger_ids(pid, shape.rounds[0]), SLACK_SECONDS + len(pipeline_ids) / 20
    )
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    after = await _counts(bench)
    per_pipeline = requests_per_unit(
        calls_between(before.calls, after.calls), idle_rate, after.sample.at - before.sample.at, len(pipeline_ids)
    )
    cpu = bench.work_cpu(before.sample, after.sample)
    return {
        "pipelines": len(pipeline_ids),
        "waiting": waiting,
        "requests_per_pipeline": per_pipeline.get(REQUEST_FUNCTION, 0.0),
        "calls_per_pipeline": per_pipeline,
        "cpu_ms_per_pipeline": {name: used * 1000 / len(pipeline_ids) for name, used in cpu.items()},
    }


async def _measure_batch(
    bench: Bench, shape: Shape, pipeline_ids: list[str], idle_rate: dict[str, float]
) -> dict[str, Any]:
    p = bench.profile
    await bench.mailsink.clear()
    accepted = (await bench.mailsink.stats())["accepted"]
    before = await _counts(bench)
    outcomes = []
    for index in range(len(shape.rounds)):
        if index:
            await wait_waiting(
                bench,
                pipeline_ids,
                lambda pid, i=index: trigger_ids(pid, shape.rounds[i]),
                SLACK_SECONDS + len(pipeline_ids) / 10,
            )
        outcomes += await paced(shape.callbacks(pipeline_ids, index), p.latency_rate, bench.gateway.callback)
    # Every pipeline's last email is its outcome's, sent before its root settles.
    await bench.mailsink.wait_accepted(accepted + len(pipeline_ids), time.monotonic() + SLACK_SECONDS)
    settled = await wait_settled(bench, pipeline_ids, SLACK_SECONDS)
    emailed = (await bench.mailsink.stats())["accepted"]
    messages = await bench.mailsink.messages()
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    after = await _counts(bench)
    hops = await _resume_hops(bench, shape, pipeline_ids)

    seconds = after.sample.at - before.sample.at
    calls = calls_between(before.calls, after.calls)
    per_pipeline = requests_per_unit(calls, idle_rate, seconds, len(pipeline_ids))
    cpu = bench.work_cpu(before.sample, after.sample)
    last_sent: dict[str, float] = {}
    for o in outcomes:
        if o.ok:
            last_sent[o.item.pipeline_id] = max(last_sent.get(o.item.pipeline_id, 0.0), o.sent)
    last_email: dict[str, int] = {}
    for m in messages:
        if m["pipeline_id"] in last_sent:
            last_email[m["pipeline_id"]] = max(last_email.get(m["pipeline_id"], 0), m["received_at_ms"])
    latencies = [(last_email[pid] - last_sent[pid] * 1000) / 1000 for pid in pipeline_ids if pid in last_email]
    return {
        "shape": shape.key,
        "pipelines": len(pipeline_ids),
        "jobs_per_pipeline": shape.jobs,
        "callbacks": len(outcomes),
        "callbacks_accepted": sum(1 for o in outcomes if o.status == 200),
        "emailed": emailed - accepted,
        "settled": settled,
        "window_seconds": seconds,
        # From the pipeline's last callback to its last email (the outcome's).
        "callback_to_email": latency_summary(latencies),
        "hops": hops,
        "requests_per_pipeline": per_pipeline.get(REQUEST_FUNCTION, 0.0),
        "drains_per_pipeline": sum(per_pipeline.get(name, 0.0) for name in DRAIN_FUNCTIONS),
        "calls_per_pipeline": per_pipeline,
        "cpu_ms_per_pipeline": {name: used * 1000 / len(pipeline_ids) for name, used in cpu.items()},
        # What the batch left behind once finished: set against what a waiting pipeline holds (figure 9).
        "memory_kib_growth_per_pipeline": {
            name: (after.sample.memory_bytes[name] - before.sample.memory_bytes[name]) / 1024 / len(pipeline_ids)
            for name in before.sample.memory_bytes
        },
        "_latencies_ms": [s * 1000 for s in latencies],
    }


async def _resume_hops(bench: Bench, shape: Shape, pipeline_ids: list[str]) -> dict[str, Any]:
    """Where the time after the last callback goes: the worker's resume, then the outcome email (ms, by pipeline).

    From durable state, as figure 7: the last callback promise's ``settled_at``,
    the ``created_at`` of the outcome email's rpc (the resumed workflow asking
    for it), the root's ``settled_at`` (the outcome recorded).
    """
    last = shape.rounds[-1]
    wanted = {
        pid: ([callback_promise_for(pid, step) for step in last], promise_tree.step_base(pid, shape.outcome_email))
        for pid in pipeline_ids
    }
    records = await bench.resonate.promises(
        [i for callbacks, rpc in wanted.values() for i in (*callbacks, rpc)] + list(pipeline_ids)
    )
    resume, recorded = [], []
    for pid, (callbacks, rpc) in wanted.items():
        settled = [records[c].settled_at for c in callbacks if c in records and records[c].settled_at]
        if len(settled) != len(callbacks) or rpc not in records or pid not in records:
            continue
        resume.append((records[rpc].created_at - max(settled)) / 1000)
        if records[pid].settled_at:
            recorded.append((records[pid].settled_at - max(settled)) / 1000)
    return {
        "settled_to_email_rpc": latency_summary(resume),
        "settled_to_root_settled": latency_summary(recorded),
    }


# -- figure 9 --------------------------------------------------------------------------


async def waiting_shapes(bench: Bench) -> dict[str, Any]:
    """Figure 9: what one more waiting pipeline holds, one-job (run by its code) against onboarding.

    Batches alternate between the two, after one warm-up batch of each.
    Half of each onboarding batch waits on
    the pair's runs (score and report, their runs pending in the emulator),
    half at the approval gate (threshold 0: every score needs a person).
    After each batch: each service's memory (PSS) and the Resonate tables'
    rows and bytes; each shape's figure is its coefficient in a least-squares
    fit on both counts.
    """
    p = bench.profile
    catalogue = Catalogue.load(CATALOGUE_FILE)
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)
    counts = {ONE_JOB.key: 0, ONBOARDING.key: 0}
    samples: list[dict[str, Any]] = []
    batches = max(2, p.code_waiting // p.code_waiting_batch)
    # Batch 0 of each shape warms the services up (pools, caches, the
    # allocators' first arenas, Postgres backends touching shared buffers) and
    # is left out of the fit: the first sample is taken after it.
    for number in range(batches + 1):
        for shape in (ONE_JOB, ONBOARDING) if number % 2 == 0 else (ONBOARDING, ONE_JOB):
            pipeline_ids = bench.new_ids(f"wait{number}-{shape.key}", p.code_waiting_batch)
            if shape is ONE_JOB:
                ready = await _one_job_waiting(bench, pipeline_ids, catalogue)
            else:
                ready = await _onboarding_waiting(bench, pipeline_ids, catalogue)
            counts[shape.key] += ready
            if number or shape is ONBOARDING:
                samples.append(await _weigh(bench, counts))
            log(f"  waiting: {counts[ONE_JOB.key]} one-job, {counts[ONBOARDING.key]} onboarding")
    return {
        "warm_up_batches": 1,
        "samples": samples,
        "fit": fit_per_shape(samples),
        "memory_measure": bench.sample().memory_measure,
    }


async def _one_job_waiting(bench: Bench, pipeline_ids: list[str], catalogue: Catalogue) -> int:
    await start_roots(bench, ONE_JOB, pipeline_ids, catalogue)
    timeout = SLACK_SECONDS + len(pipeline_ids) / 10
    return await wait_waiting(bench, pipeline_ids, lambda pid: trigger_ids(pid, ("1",)), timeout)


async def _onboarding_waiting(bench: Bench, pipeline_ids: list[str], catalogue: Catalogue) -> int:
    """Start onboarding pipelines and bring half to the pair's runs, half to the approval gate."""
    timeout = SLACK_SECONDS + len(pipeline_ids) / 5
    await start_roots(bench, ONBOARDING, pipeline_ids, catalogue, approval_threshold="0")
    await wait_waiting(bench, pipeline_ids, lambda pid: trigger_ids(pid, ("1",)), timeout)
    await _call_back(bench, ONBOARDING.callbacks(pipeline_ids, 0))
    pair = await wait_waiting(bench, pipeline_ids, lambda pid: trigger_ids(pid, ("2", "3")), timeout)
    at_gate = pipeline_ids[: len(pipeline_ids) // 2]
    await _call_back(bench, ONBOARDING.callbacks(at_gate, 1))
    gated = await wait_waiting(bench, at_gate, lambda pid: [gate_request_id(pid)], timeout)
    return pair - len(at_gate) + gated


async def _call_back(bench: Bench, callbacks: list) -> None:
    refused = [o for o in await pool(callbacks, SETUP_CONCURRENCY, bench.gateway.callback) if o.status != 200]
    if refused:
        raise ServiceError(f"{len(refused)} callbacks refused; first: {refused[0].status} {refused[0].error}")


async def _weigh(bench: Bench, counts: dict[str, int]) -> dict[str, Any]:
    footprint = await bench.resonate.footprint()
    scrapes = {"worker": bench.worker_metrics, "notifier": bench.notifier_metrics}
    return {
        "waiting": dict(counts),
        "memory_bytes": bench.sample().memory_bytes,
        # What the services' live Python objects hold (resident memory also keeps what was freed).
        "python_blocks": {service: float(await ops.live_blocks()) for service, ops in scrapes.items()},
        "rows": footprint.rows,
        "bytes": footprint.bytes,
        "database_bytes": footprint.database_bytes,
    }


def fit_per_shape(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per shape, what one more waiting pipeline adds: memory by service (bytes), rows and bytes by table.

    A least-squares fit of each measure on the counts of both shapes waiting
    (and a constant); None where the samples cannot separate the shapes.
    """
    shapes = list(samples[0]["waiting"])
    design = np.array([[1.0, *(float(s["waiting"][k]) for k in shapes)] for s in samples])
    if len(samples) < len(shapes) + 2 or np.linalg.matrix_rank(design) < len(shapes) + 1:
        return {
            k: {"memory_bytes": None, "python_blocks": None, "rows": None, "bytes": None, "database_bytes": None}
            for k in shapes
        }

    def coefficients(values: list[float]) -> dict[str, float]:
        solution, *_ = np.linalg.lstsq(design, np.array(values, dtype=float), rcond=None)
        return {k: float(solution[1 + i]) for i, k in enumerate(shapes)}

    by_measure: dict[str, dict[str, dict[str, float]]] = {}
    for measure, names in (
        ("memory_bytes", list(samples[0]["memory_bytes"])),
        ("python_blocks", list(samples[0].get("python_blocks", {}))),
        ("rows", list(RESONATE_TABLES)),
        ("bytes", list(RESONATE_TABLES)),
    ):
        by_measure[measure] = {name: coefficients([s[measure][name] for s in samples]) for name in names}
    database = coefficients([s["database_bytes"] for s in samples])
    return {
        k: {
            "memory_bytes": {name: per[k] for name, per in by_measure["memory_bytes"].items()},
            "python_blocks": {name: per[k] for name, per in by_measure["python_blocks"].items()},
            "rows": {name: per[k] for name, per in by_measure["rows"].items()},
            "bytes": {name: per[k] for name, per in by_measure["bytes"].items()},
            "database_bytes": database[k],
        }
        for k in shapes
    }

"""The benchmark's measurements, one function per figure, each returning plain JSON-able data.

Two stages, because the worker's watchdog interval is one setting for the
whole worker:

- **stage A** (watchdog at the stated polling interval): start-to-email
  overhead with an instant notebook, the polling baseline (the callback
  swallowed, so only the watchdog settles the pipeline), and what the
  watchdog's sweeps cost with many pipelines waiting;
- **stage B** (watchdog at an hour, so no sweep runs while measured):
  callback-to-email latency with its breakdown by hop, callback endpoint
  throughput against ``/healthz``, start throughput, waiting capacity.

Pipelines that wait for the benchmark's own callback run with the emulator's
``start_delay_seconds`` at a day: their run exists but no notebook process
does, and the callback the benchmark sends is the only one, so the clock
starts exactly at the callback request.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .bench_clients import (
    RESONATE_TABLES,
    Emulator,
    Gateway,
    MailSink,
    Metrics,
    ResonateReader,
    RootStarter,
    ServiceError,
    SignedCallback,
    histogram_delta,
    histogram_quantile,
    signed_callback,
)
from .bench_load import Outcome, latency_summary, paced, percentile, pool
from .bench_shapes import LEGACY, Shape, one_job_shape
from .bench_stack import BenchStack, ContainerSample, cpu_used
from .bench_wire import WireTarget, encode_request, saturate_wire

#: A pipeline whose run waits this long in PENDING never finishes during the
#: benchmark: only the benchmark's callback settles it.
WAIT_FOREVER_SECONDS = 86_400
#: Requests in flight while setting up state (starting pipelines, settling them).
SETUP_CONCURRENCY = 16
#: Batches the capacity phase always adds, so memory per pipeline has steady points to fit.
MIN_FILL_BATCHES = 2
#: Longest any wait for the stack to catch up may take beyond what its work needs.
SLACK_SECONDS = 60


@dataclass(frozen=True)
class Profile:
    """How much of everything one benchmark run does."""

    name: str
    #: Runs of each repeated measurement (median and range are reported over them).
    repeats: int
    #: How long the idle stack is watched first, to subtract its CPU use later.
    idle_seconds: float
    #: WATCHDOG_INTERVAL_SECONDS while the polling baseline is measured.
    polling_interval_seconds: float
    overhead_pipelines: int
    overhead_rate: float
    polling_pipelines: int
    polling_rate: float
    watchdog_cost_pipelines: int
    watchdog_cost_seconds: float
    latency_pipelines: int
    latency_rate: float
    throughput_seconds: float
    throughput_warmup_seconds: float
    throughput_concurrency: int
    ramp_rates: tuple[float, ...]
    ramp_step_seconds: float
    ramp_repeats: int
    capacity_target: int
    capacity_batch: int
    #: Longest the capacity phase waits for every waiting pipeline to finish once called back.
    capacity_drain_seconds: float
    #: Figure 8: pipelines a batch of each one-job shape, and of onboarding (three jobs each).
    code_pipelines: int
    code_onboarding_pipelines: int
    #: Figure 9: pipelines of each shape held waiting, and how many are added between weighings.
    code_waiting: int
    code_waiting_batch: int


FULL = Profile(
    name="full",
    repeats=3,
    idle_seconds=5,
    polling_interval_seconds=10,
    overhead_pipelines=30,
    overhead_rate=2,
    polling_pipelines=100,
    polling_rate=15,
    watchdog_cost_pipelines=2_000,
    watchdog_cost_seconds=30,
    latency_pipelines=500,
    latency_rate=20,
    throughput_seconds=5,
    throughput_warmup_seconds=1,
    throughput_concurrency=32,
    ramp_rates=(25, 50, 100, 150, 200, 300, 400),
    ramp_step_seconds=3,
    ramp_repeats=3,
    capacity_target=10_000,
    capacity_batch=1_000,
    capacity_drain_seconds=420,
    code_pipelines=150,
    code_onboarding_pipelines=50,
    code_waiting=1_000,
    code_waiting_batch=250,
)

QUICK = Profile(
    name="quick",
    repeats=2,
    idle_seconds=3,
    polling_interval_seconds=5,
    overhead_pipelines=10,
    overhead_rate=4,
    polling_pipelines=30,
    polling_rate=20,
    watchdog_cost_pipelines=300,
    watchdog_cost_seconds=12,
    latency_pipelines=100,
    latency_rate=20,
    throughput_seconds=2,
    throughput_warmup_seconds=0.5,
    throughput_concurrency=32,
    ramp_rates=(50, 100, 200, 400),
    ramp_step_seconds=1.5,
    ramp_repeats=1,
    capacity_target=1_000,
    capacity_batch=250,
    capacity_drain_seconds=45,
    code_pipelines=60,
    code_onboarding_pipelines=20,
    code_waiting=400,
    code_waiting_batch=200,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """The stack, a client for each service, and the run's unique id prefix."""

    profile: Profile
    stack: BenchStack
    tag: str
    rng: random.Random
    gateway: Gateway = field(init=False)
    emulator: Emulator = field(init=False)
    mailsink: MailSink = field(init=False)
    resonate: ResonateReader = field(init=False)
    notifier_metrics: Metrics = field(init=False)
    worker_metrics: Metrics = field(init=False)
    #: Creates roots as the gateway does, for the shapes of figures 8 and 9.
    starter: RootStarter = field(init=False)
    #: CPU cores each container uses idle; see measure_idle.
    idle_cores: dict[str, float] = field(default_factory=dict)
    #: The shape of pipeline the gateway under test starts; see gateway_shape.
    _gateway_shape: Shape | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.gateway = Gateway(self.stack.url("API_HOST_PORT"))
        self.emulator = Emulator(self.stack.url("DATABRICKS_HOST_PORT"))
        self.mailsink = MailSink(self.stack.url("MAILSINK_HOST_PORT"))
        self.resonate = ResonateReader(self.stack.resonate_dsn())
        self.notifier_metrics = Metrics(self.stack.url("NOTIFIER_OPS_HOST_PORT"))
        self.worker_metrics = Metrics(self.stack.url("WORKER_OPS_HOST_PORT"))
        self.starter = RootStarter(self.stack.resonate_dsn())

    async def close(self) -> None:
        for client in (
            self.gateway,
            self.emulator,
            self.mailsink,
            self.resonate,
            self.notifier_metrics,
            self.worker_metrics,
            self.starter,
        ):
            await client.close()

    async def measure_idle(self, seconds: float) -> dict[str, float]:
        """CPU cores each container uses with nothing to do (health checks, timers), kept to subtract later."""
        before = self.sample()
        await asyncio.sleep(seconds)
        after = self.sample()
        self.idle_cores = {name: used / (after.at - before.at) for name, used in cpu_used(before, after).items()}
        return self.idle_cores

    def work_cpu(self, before: ContainerSample, after: ContainerSample) -> dict[str, float]:
        """CPU seconds each container spent between two samples beyond its idle use."""
        window = after.at - before.at
        return {name: used - self.idle_cores.get(name, 0.0) * window for name, used in cpu_used(before, after).items()}

    def new_ids(self, label: str, count: int) -> list[str]:
        return [f"{self.tag}-{label}-{index:05d}" for index in range(count)]

    # -- shared steps -------------------------------------------------------------------

    async def start_all(self, pipeline_ids: Sequence[str], concurrency: int = SETUP_CONCURRENCY) -> None:
        outcomes = await pool(pipeline_ids, concurrency, self.gateway.start)
        refused = [o for o in outcomes if o.status != 202]
        if refused:
            first = refused[0]
            raise ServiceError(f"{len(refused)} pipeline starts refused; first: {first.status} {first.error}")

    async def suspended(self, pipeline_ids: Sequence[str]) -> set[str]:
        """Which of ``pipeline_ids`` are suspended in Resonate right now."""
        return await self.resonate.task_ids("suspended") & set(pipeline_ids)

    async def wait_suspended(self, pipeline_ids: Sequence[str], timeout: float) -> tuple[int, float]:
        """Wait until every pipeline is suspended on its callback; returns (how many were, seconds waited)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            count = len(await self.suspended(pipeline_ids))
            if count == len(pipeline_ids) or time.monotonic() >= deadline:
                return count, time.monotonic() - started
            await asyncio.sleep(0.25)

    async def gateway_shape(self, pipeline_id: str) -> Shape:
        """The shape of the pipelines the gateway starts, read once from one it started.

        Every start of one gateway has the same shape: the one-job workflow
        (``spec.version`` None) before issue 22, the one-job pipeline run by its
        code after. The shape says where the job's callback promise is.
        """
        if self._gateway_shape is None:
            spec = await self.starter.spec(pipeline_id)
            self._gateway_shape = one_job_shape(spec.version if spec else None)
            log(f"  the gateway starts: {self._gateway_shape.label}")
        return self._gateway_shape

    async def callbacks(self, pipeline_ids: Sequence[str]) -> list[SignedCallback]:
        """The signed callback of each pipeline the gateway started, at its shape's callback promise."""
        shape = await self.gateway_shape(pipeline_ids[0]) if pipeline_ids else LEGACY
        return [shape.first_callback(pipeline_id) for pipeline_id in pipeline_ids]

    async def settle_all(
        self, callbacks: Sequence[SignedCallback], concurrency: int = SETUP_CONCURRENCY
    ) -> list[Outcome]:
        return await pool(callbacks, concurrency, self.gateway.callback)

    async def emails(self, pipeline_ids: Sequence[str], already_accepted: int, timeout: float) -> dict[str, dict]:
        """Wait for one email per pipeline (counted by the sink), then return them by pipeline id."""
        await self.mailsink.wait_accepted(already_accepted + len(pipeline_ids), time.monotonic() + timeout)
        wanted = set(pipeline_ids)
        return {m["pipeline_id"]: m for m in await self.mailsink.messages() if m["pipeline_id"] in wanted}

    async def run_times(self, pipeline_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """start_time and end_time (epoch ms) of each pipeline's Databricks run."""
        wanted = set(pipeline_ids)
        run_ids = {r["pipeline_id"]: r["run_id"] for r in await self.emulator.runs() if r["pipeline_id"] in wanted}
        times: dict[str, dict[str, int]] = {}

        async def fetch(pipeline_id: str) -> int:
            run = await self.emulator.run(run_ids[pipeline_id])
            times[pipeline_id] = {"start_time": run["start_time"], "end_time": run["end_time"]}
            return 200

        await pool(list(run_ids), 8, fetch)
        return times

    def sample(self) -> ContainerSample:
        return self.stack.sample()


# -- stage A ---------------------------------------------------------------------------


async def start_to_email(bench: Bench, repeat: int) -> dict[str, Any]:
    """Figure 2: POST /pipelines to the email in the sink, the notebook finishing at once."""
    p = bench.profile
    await bench.emulator.set_default_plan()
    await bench.mailsink.clear()
    accepted = (await bench.mailsink.stats())["accepted"]
    pipeline_ids = bench.new_ids(f"start{repeat}", p.overhead_pipelines)
    outcomes = await paced(pipeline_ids, p.overhead_rate, bench.gateway.start)
    sent = {o.item: o.sent for o in outcomes if o.status == 202}
    mails = await bench.emails(pipeline_ids, accepted, timeout=SLACK_SECONDS)
    runs = await bench.run_times(pipeline_ids)
    total, run, rest = [], [], []
    for pipeline_id, at in sent.items():
        if pipeline_id in mails and pipeline_id in runs:
            seconds = (mails[pipeline_id]["received_at_ms"] - at * 1000) / 1000
            in_databricks = (runs[pipeline_id]["end_time"] - runs[pipeline_id]["start_time"]) / 1000
            total.append(seconds)
            run.append(in_databricks)
            rest.append(seconds - in_databricks)
    return {
        "pipelines": len(pipeline_ids),
        "rate_per_second": p.overhead_rate,
        "emailed": len(mails),
        "start_to_email": latency_summary(total),
        "emulated_run": latency_summary(run),
        "outside_the_run": latency_summary(rest),
    }


async def polling_baseline(bench: Bench, repeat: int) -> dict[str, Any]:
    """Figure 3: the same pipelines with the callback swallowed; only the watchdog settles them.

    Each run takes a random time, uniform over one watchdog interval, so runs
    end at every phase of the check cycle, as real jobs do. The clock starts
    when the run ends (the notebook's callback goes out just before).
    """
    p = bench.profile
    interval = bench.stack.watchdog_interval_seconds
    pipeline_ids = bench.new_ids(f"poll{repeat}", p.polling_pipelines)
    delays = {pipeline_id: bench.rng.uniform(0, interval) for pipeline_id in pipeline_ids}

    async def plan(pipeline_id: str) -> int:
        await bench.emulator.set_plan(pipeline_id, notebook="drop_callback", start_delay_seconds=delays[pipeline_id])
        return 200

    await pool(pipeline_ids, SETUP_CONCURRENCY, plan)
    await bench.mailsink.clear()
    accepted = (await bench.mailsink.stats())["accepted"]
    outcomes = await paced(pipeline_ids, p.polling_rate, bench.gateway.start)
    started = [o.item for o in outcomes if o.status == 202]
    timeout = len(pipeline_ids) / p.polling_rate + 3 * interval + SLACK_SECONDS
    mails = await bench.emails(started, accepted, timeout=timeout)
    runs = await bench.run_times(started)
    waited = [
        (mails[pid]["received_at_ms"] - runs[pid]["end_time"]) / 1000
        for pid in started
        if pid in mails and pid in runs and runs[pid]["end_time"]
    ]
    sources = await _settlement_sources(bench, started)
    return {
        "pipelines": len(pipeline_ids),
        "rate_per_second": p.polling_rate,
        "watchdog_interval_seconds": interval,
        "emailed": len(mails),
        "settled_by": sources,
        "run_end_to_email": latency_summary(waited),
        "_latencies_ms": [seconds * 1000 for seconds in waited],
    }


async def _settlement_sources(bench: Bench, pipeline_ids: Sequence[str]) -> dict[str, int]:
    """Who settled each pipeline's callback promise (callback, watchdog, ...), counted."""
    counts: dict[str, int] = {}
    shape = await bench.gateway_shape(pipeline_ids[0]) if pipeline_ids else LEGACY
    for record in (await bench.resonate.promises([shape.callback_promise(p) for p in pipeline_ids])).values():
        data = record.value if record.state == "resolved" else None
        source = data.get("source", "unknown") if isinstance(data, dict) else record.state
        counts[source] = counts.get(source, 0) + 1
    return counts


async def watchdog_cost(bench: Bench) -> dict[str, Any]:
    """What the watchdog's sweeps cost with many pipelines waiting on runs still going, at the polling interval.

    Sweeps are counted by the worker's ``watchdog_sweeps_total``, runs read by
    ``watchdog_checks_total``, Jobs API calls by the emulator; CPU is what the
    containers used in the window beyond their idle use. A sweep lists every
    watch record and every active run, so its cost is fitted per waiting
    pipeline and projected to 10,000 waiting at the compose default of 60 s.
    """
    p = bench.profile
    interval = bench.stack.watchdog_interval_seconds
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)
    pipeline_ids = bench.new_ids("watch", p.watchdog_cost_pipelines)
    await bench.start_all(pipeline_ids)
    waiting, _ = await bench.wait_suspended(pipeline_ids, timeout=SLACK_SECONDS)
    log(f"  {waiting} waiting; measuring for {p.watchdog_cost_seconds:g} s")
    counts_before, calls_before = await _watchdog_counts(bench), await bench.emulator.calls()
    before = bench.sample()
    await asyncio.sleep(p.watchdog_cost_seconds)
    after = bench.sample()
    counts, calls = await _watchdog_counts(bench), await bench.emulator.calls()
    sweeps, reads = (counts[key] - counts_before[key] for key in ("sweeps", "reads"))
    extra = bench.work_cpu(before, after)
    window = after.at - before.at

    log(f"  {sweeps} sweeps, {reads} runs read; settling")
    accepted = (await bench.mailsink.stats())["accepted"]
    await bench.settle_all(await bench.callbacks(pipeline_ids))
    await bench.mailsink.wait_accepted(accepted + len(pipeline_ids), time.monotonic() + 3 * SLACK_SECONDS)
    per_sweep = {name: extra[name] * 1000 / sweeps if sweeps else None for name in extra}
    return {
        "watchdog_interval_seconds": interval,
        "waiting_pipelines": waiting,
        "window_seconds": window,
        "sweeps": sweeps,
        "runs_read": reads,
        "jobs_api_calls_per_sweep": {
            name: (calls[name] - calls_before[name]) / sweeps if sweeps else None
            for name in ("runs_list_calls", "runs_get_calls")
        },
        "cpu_ms_per_sweep": per_sweep,
        # A sweep's cost per waiting pipeline; the report projects it to 10,000 waiting at 60 s.
        "cpu_us_per_waiting_pipeline_per_sweep": {
            name: ms * 1000 / waiting if ms is not None and waiting else None for name, ms in per_sweep.items()
        },
    }


async def _watchdog_counts(bench: Bench) -> dict[str, int]:
    samples = await bench.worker_metrics.scrape()
    return {
        "sweeps": int(samples.get("watchdog_sweeps_total", 0)),
        "reads": int(samples.get("watchdog_checks_total", 0)),
    }


# -- stage B ---------------------------------------------------------------------------


@dataclass
class LatencyRun:
    figures: dict[str, Any]
    callbacks: list[SignedCallback]


async def callback_to_email(bench: Bench, repeat: int) -> LatencyRun:
    """Figure 1 and the data of figure 7: the benchmark's callback request to the email in the sink."""
    p = bench.profile
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)
    pipeline_ids = bench.new_ids(f"cb{repeat}", p.latency_pipelines)
    await bench.start_all(pipeline_ids)
    suspended, waited = await bench.wait_suspended(pipeline_ids, timeout=SLACK_SECONDS + len(pipeline_ids) / 20)
    log(f"  {suspended} suspended ({waited:.1f} s after the last start); calling back at {p.latency_rate:g}/s")
    await bench.mailsink.clear()
    accepted = (await bench.mailsink.stats())["accepted"]
    notifier_before = await bench.notifier_metrics.scrape()
    callbacks = await bench.callbacks(pipeline_ids)
    cpu_before = bench.sample()
    outcomes = await paced(callbacks, p.latency_rate, bench.gateway.callback)
    mails = await bench.emails(pipeline_ids, accepted, timeout=SLACK_SECONDS)
    cpu_after = bench.sample()
    notifier_after = await bench.notifier_metrics.scrape()
    log(f"  {len(mails)} emails; tracing")

    sent = {o.item.pipeline_id: o for o in outcomes}
    latencies = [
        (mails[pid]["received_at_ms"] - sent[pid].sent * 1000) / 1000
        for pid in pipeline_ids
        if pid in mails and sent[pid].ok
    ]
    shape = await bench.gateway_shape(pipeline_ids[0])
    hops = await _hop_breakdown(bench, shape, pipeline_ids, sent, mails, notifier_before, notifier_after)
    used = bench.work_cpu(cpu_before, cpu_after)
    figures = {
        "pipelines": len(pipeline_ids),
        "suspended_before_callbacks": suspended,
        "rate_per_second": p.latency_rate,
        "callbacks_accepted": sum(1 for o in outcomes if o.status == 200),
        "emailed": len(mails),
        "callback_to_email": latency_summary(latencies),
        "callback_response": latency_summary([o.seconds for o in outcomes if o.ok]),
        "generator_lag_ms_max": max(o.sent - o.due for o in outcomes) * 1000,
        "cpu_ms_per_pipeline": {name: seconds * 1000 / len(pipeline_ids) for name, seconds in used.items()},
        "cpu_cores_busy": {name: seconds / (cpu_after.at - cpu_before.at) for name, seconds in used.items()},
        "hops": hops,
        "_latencies_ms": [s * 1000 for s in latencies],
    }
    return LatencyRun(figures, callbacks)


async def _hop_breakdown(
    bench: Bench,
    shape: Shape,
    pipeline_ids: Sequence[str],
    sent: dict[str, Outcome],
    mails: dict[str, dict],
    notifier_before: dict[str, float],
    notifier_after: dict[str, float],
) -> dict[str, Any]:
    """Figure 7: where the callback-to-email time goes.

    Per pipeline, from timestamps that already exist: the benchmark's send
    (T0); the gateway's accept time, kept in the settlement (T1); the callback
    promise's settle time in Resonate (T2); the creation of the email rpc's
    promise by the resumed workflow (T4); the sink's arrival time (T7). The
    notifier's histograms split T4..T7 further (means over the same window):
    ``email_pickup_seconds`` is T1 to the notifier starting, so the notifier
    pickup is its mean minus that of T1..T4.
    """
    per_hop: dict[str, list[float]] = {
        "gateway": [],
        "resonate_settle": [],
        "worker_resume": [],
        "t1_to_t4": [],
        "t1_to_t7": [],
    }

    records = await bench.resonate.promises(
        [promise_id for pid in pipeline_ids for promise_id in (shape.callback_promise(pid), shape.email_rpc(pid))]
    )
    for pipeline_id in pipeline_ids:
        callback, rpc = records.get(shape.callback_promise(pipeline_id)), records.get(shape.email_rpc(pipeline_id))
        if callback is None or rpc is None or callback.state != "resolved" or pipeline_id not in mails:
            continue
        t0 = sent[pipeline_id].sent * 1000
        t1 = callback.value["received_at"]
        t2 = callback.settled_at
        t4 = rpc.created_at
        t7 = mails[pipeline_id]["received_at_ms"]
        per_hop["gateway"].append(t1 - t0)
        per_hop["resonate_settle"].append(t2 - t1)
        per_hop["worker_resume"].append(t4 - t2)
        per_hop["t1_to_t4"].append(t4 - t1)
        per_hop["t1_to_t7"].append(t7 - t1)
    pickup = histogram_delta(notifier_before, notifier_after, "email_pickup_seconds")
    smtp = histogram_delta(notifier_before, notifier_after, "smtp_delivery_seconds")
    traced = len(per_hop["gateway"])

    def mean(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    pickup_ms = pickup["mean_seconds"] * 1000 if pickup["mean_seconds"] is not None else None
    t1_t4, t1_t7 = mean(per_hop["t1_to_t4"]), mean(per_hop["t1_to_t7"])
    means = {
        "gateway": mean(per_hop["gateway"]),
        "resonate_settle": mean(per_hop["resonate_settle"]),
        "worker_resume": mean(per_hop["worker_resume"]),
        "notifier_pickup": pickup_ms - t1_t4 if pickup_ms is not None and t1_t4 is not None else None,
        "notifier_and_smtp": t1_t7 - pickup_ms if pickup_ms is not None and t1_t7 is not None else None,
    }
    return {
        "traced": traced,
        "mean_ms": means,
        "p50_ms": {name: percentile(values, 50) for name, values in per_hop.items() if not name.startswith("t1_")},
        "p95_ms": {name: percentile(values, 95) for name, values in per_hop.items() if not name.startswith("t1_")},
        "smtp_transaction_mean_ms": smtp["mean_seconds"] * 1000 if smtp["mean_seconds"] is not None else None,
        "smtp_transaction_p95_ms": _ms(histogram_quantile(smtp["buckets"], 0.95)),
        "notifier_observations": pickup["count"],
    }


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None


async def callback_throughput(bench: Bench, callbacks: list[SignedCallback], repeat: int) -> dict[str, Any]:
    """Figure 4: closed-loop requests/s of the callback endpoint and of /healthz, same generator, same process.

    The callbacks repeat outcomes already recorded, so each one is
    authenticated, validated, settled against Resonate and found a duplicate:
    the endpoint's full work, without starting new emails that would compete
    for the same two cores. Besides requests/s, the gateway's CPU time per
    request is reported: on a machine shared with the load generator (and
    other work), it is the steadier measure of what each request costs.
    """
    p = bench.profile
    base = bench.stack.url("API_HOST_PORT")
    # Signed now: signatures older than 5 minutes are refused.
    fresh = [signed_callback(c.pipeline_id, c.step) for c in callbacks]
    requests = {
        "trivial": [encode_request("GET", f"{base}/healthz")],
        "callback": [encode_request("POST", f"{base}/callbacks/databricks", c.body, c.headers) for c in fresh],
    }
    results: dict[str, Any] = {}
    order = ["trivial", "callback"] if repeat % 2 == 0 else ["callback", "trivial"]
    for name in order:
        before = bench.stack.sample(("api", "resonate"))
        run = await saturate_wire(
            WireTarget.of(base),
            requests[name],
            p.throughput_concurrency,
            p.throughput_seconds,
            p.throughput_warmup_seconds,
        )
        after = bench.stack.sample(("api", "resonate"))
        used = cpu_used(before, after)
        elapsed = after.at - before.at
        # CPU is sampled over the warm-up too; requests answered then count at the measured rate.
        served = run.per_second * elapsed
        results[name] = {
            "requests_per_second": run.per_second,
            "completed": run.completed,
            "failed": run.failed,
            "statuses": {str(k): v for k, v in run.statuses.items()},
            "latency": latency_summary(run.latencies),
            "api_cpu_cores_busy": used["api"] / elapsed,
            "resonate_cpu_cores_busy": used["resonate"] / elapsed,
            "api_cpu_us_per_request": used["api"] / served * 1e6 if served else None,
            "resonate_cpu_us_per_request": used["resonate"] / served * 1e6 if served else None,
        }
    results["ratio"] = results["callback"]["requests_per_second"] / results["trivial"]["requests_per_second"]
    trivial_cost, callback_cost = (results[n]["api_cpu_us_per_request"] for n in ("trivial", "callback"))
    results["gateway_cost_ratio"] = trivial_cost / callback_cost if trivial_cost and callback_cost else None
    results["concurrency"] = p.throughput_concurrency
    results["seconds"] = p.throughput_seconds
    return results


@dataclass
class RampRun:
    figures: dict[str, Any]
    started: list[str]


async def start_ramp(bench: Bench, repeat: int) -> RampRun:
    """Figure 5: POST /pipelines open-loop at rising rates until the p95 start latency passes 1 s.

    Latency counts from when each request was due, so a gateway that falls
    behind is charged for the wait. The pipelines stay waiting and count
    towards the capacity figure.
    """
    p = bench.profile
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)
    steps: list[dict[str, Any]] = []
    started: list[str] = []
    for rate in p.ramp_rates:
        pipeline_ids = bench.new_ids(f"ramp{repeat}-{int(rate)}", max(1, int(rate * p.ramp_step_seconds)))
        outcomes = await paced(pipeline_ids, rate, bench.gateway.start)
        ok = [o for o in outcomes if o.status == 202]
        started.extend(o.item for o in ok)
        first_due = min(o.due for o in outcomes)
        last_done = max(o.sent + o.seconds for o in outcomes)
        latencies = [o.latency_from_due for o in ok]
        p95 = percentile(latencies, 95)
        step = {
            "target_per_second": rate,
            "achieved_per_second": len(ok) / (last_done - first_due),
            "failed": len(outcomes) - len(ok),
            "latency": latency_summary(latencies),
        }
        steps.append(step)
        log(
            f"  ramp {repeat}: {rate:g}/s -> {step['achieved_per_second']:.0f}/s, p95 {p95 * 1000 if p95 else 0:.0f} ms"
        )
        if p95 is None or p95 > 1.0 or step["failed"]:
            break
    passing = [s for s in steps if s["failed"] == 0 and s["latency"].get("p95_ms", 1e9) <= 1000]
    best = max(passing, key=lambda s: s["achieved_per_second"]) if passing else None
    drained, drain_seconds = await bench.wait_suspended(started, timeout=SLACK_SECONDS + len(started) / 20)
    figures = {
        "steps": steps,
        "max_rate_with_p95_under_1s": best["achieved_per_second"] if best else None,
        "p95_ms_at_max_rate": best["latency"]["p95_ms"] if best else None,
        "first_rate_over_1s": steps[-1]["target_per_second"] if steps and steps[-1] is not best else None,
        "started": len(started),
        "suspended_after_drain": drained,
        "worker_drain_seconds": drain_seconds,
    }
    return RampRun(figures, started)


async def waiting_capacity(
    bench: Bench, waiting: list[str], baseline: ContainerSample, deadline: float
) -> dict[str, Any]:
    """Figure 6: fill up to the target of simultaneously suspended pipelines, weigh them, then finish them all.

    Weighed after every batch: each service's memory, and the rows and bytes
    of each table of the Resonate database.
    """
    p = bench.profile
    await bench.emulator.set_default_plan(start_delay_seconds=WAIT_FOREVER_SECONDS)

    async def weigh(count: int) -> dict[str, Any]:
        return {
            "waiting": count,
            "memory_bytes": bench.sample().memory_bytes,
            "database": await bench.resonate.footprint(),
        }

    samples: list[dict[str, Any]] = [{"waiting": 0, "memory_bytes": baseline.memory_bytes, "database": None}]
    waiting = list(waiting)
    suspended = len(await bench.suspended(waiting))
    samples.append(await weigh(suspended))
    batch_number = 0
    fill_started = time.monotonic()
    # At least two batches even when the start ramps already reached the
    # target or the run's budget is spent: memory and rows per pipeline are
    # read from the steady batches. Beyond those, the budget decides.
    while batch_number < MIN_FILL_BATCHES or (
        suspended < p.capacity_target and time.monotonic() < deadline - p.capacity_drain_seconds
    ):
        batch = bench.new_ids(
            f"cap{batch_number}", max(p.capacity_batch // 2, min(p.capacity_batch, p.capacity_target - suspended))
        )
        batch_number += 1
        await bench.start_all(batch)
        waiting.extend(batch)
        suspended, _ = await bench.wait_suspended(waiting, timeout=SLACK_SECONDS + len(batch) / 20)
        samples.append(await weigh(suspended))
        log(f"  {suspended} pipelines suspended")
    fill_seconds = time.monotonic() - fill_started
    reached = len(await bench.suspended(waiting))
    fill_cut_by_budget = reached < p.capacity_target and time.monotonic() >= deadline - p.capacity_drain_seconds

    # What waiting costs: CPU beyond idle with everything suspended and no checks due.
    quiet_before = bench.sample()
    await asyncio.sleep(5)
    quiet_after = bench.sample()
    quiet = bench.work_cpu(quiet_before, quiet_after)
    quiet_seconds = quiet_after.at - quiet_before.at

    callbacks = await bench.callbacks(waiting)
    accepted = (await bench.mailsink.stats())["accepted"]
    finished_before = await _succeeded(bench)
    settle_started = time.monotonic()
    outcomes = await bench.settle_all(callbacks, concurrency=32)
    settle_seconds = time.monotonic() - settle_started
    accepted_callbacks = sum(1 for o in outcomes if o.status == 200)
    # Bounded by the drain's own time, not the run's budget: whether all complete is a target.
    drain_bound = time.monotonic() + p.capacity_drain_seconds
    emailed = await bench.mailsink.wait_accepted(accepted + accepted_callbacks, drain_bound) - accepted
    drain_seconds = time.monotonic() - settle_started
    # The workflow ends after its email (one more resume of the worker), so
    # the count of succeeded pipelines trails the emails: wait for it too.
    while (succeeded := await _succeeded(bench) - finished_before) < emailed and time.monotonic() < drain_bound:
        await asyncio.sleep(0.5)
    finish_seconds = time.monotonic() - settle_started
    after = bench.sample()
    database_after = await bench.resonate.footprint()

    def per_waiting(value_of: Callable[[dict[str, Any]], float]) -> float | None:
        # The slope while the waiting count grows in steady batches: the first
        # sample (an empty stack) also carries the allocator's high-water mark
        # from the start ramps' bursts, which is not memory held per pipeline.
        filled = [(s["waiting"], value_of(s)) for s in samples if s["waiting"] > 0]
        return _slope(filled) if len(filled) >= 3 else None

    def per_thousand_mib(value_of: Callable[[dict[str, Any]], float]) -> float | None:
        slope = per_waiting(value_of)
        return slope * 1000 / 2**20 if slope is not None else None

    peak = samples[-1]["memory_bytes"]
    rows_per_waiting = {t: per_waiting(lambda s, t=t: s["database"].rows[t]) for t in RESONATE_TABLES}
    # A finished pipeline keeps its rows until resonate.gc collects it (RESONATE_RETENTION_DAYS):
    # what a waiting one holds, plus what finishing changed, per pipeline finished. Only
    # known when every one finished: rows of pipelines half-way are neither.
    all_completed = emailed == reached and succeeded >= reached
    peak_rows = samples[-1]["database"].rows
    rows_per_finished = {
        t: rows_per_waiting[t] + (database_after.rows[t] - peak_rows[t]) / reached
        if all_completed and reached and rows_per_waiting[t] is not None
        else None
        for t in RESONATE_TABLES
    }
    return {
        "target": p.capacity_target,
        "reached_suspended": reached,
        "fill_seconds": fill_seconds,
        "samples": [
            {
                "waiting": s["waiting"],
                "memory_mib": _mib(s["memory_bytes"]),
                "database": asdict(s["database"]) if s["database"] else None,
            }
            for s in samples
        ],
        "memory_mib_per_1000_waiting": {s: per_thousand_mib(lambda x, s=s: x["memory_bytes"][s]) for s in peak},
        "memory_growth_mib": {s: (peak[s] - baseline.memory_bytes[s]) / 2**20 for s in baseline.memory_bytes},
        "memory_measure": after.memory_measure,
        "database_rows_per_waiting": rows_per_waiting,
        "database_rows_per_finished": rows_per_finished,
        "database_mib_per_1000_waiting": {
            **{t: per_thousand_mib(lambda s, t=t: s["database"].bytes[t]) for t in RESONATE_TABLES},
            "database": per_thousand_mib(lambda s: s["database"].database_bytes),
        },
        "database_after_completion": asdict(database_after),
        "extra_cpu_cores_while_waiting": {name: used / quiet_seconds for name, used in quiet.items()},
        "callbacks_sent": len(outcomes),
        "callbacks_accepted": accepted_callbacks,
        "callbacks_per_second": len(outcomes) / settle_seconds,
        "emailed": emailed,
        "succeeded": succeeded,
        "all_completed": all_completed,
        # The run's time budget, not the stack, stopped the fill short of the target.
        "fill_cut_by_budget": fill_cut_by_budget,
        "drain_seconds": drain_seconds,
        "finish_seconds": finish_seconds,
        # From the last callback sent to the last pipeline final (issue 23: within 70 s).
        "final_after_last_callback_seconds": finish_seconds - settle_seconds,
        "completed_per_second": emailed / drain_seconds if drain_seconds else None,
        "memory_mib_after_completion": _mib(after.memory_bytes),
    }


async def _succeeded(bench: Bench) -> int:
    samples = await bench.worker_metrics.scrape()
    # Summed over jobs: the counter is labelled by job as well as by state.
    prefix = "pipelines_finished_total{"
    return int(
        sum(
            value
            for key, value in samples.items()
            if key.startswith(prefix) and "state=succeeded" in key[len(prefix) : -1].split(",")
        )
    )


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def _mib(memory: dict[str, int]) -> dict[str, float]:
    return {name: round(value / 2**20, 1) for name, value in memory.items()}

"""Turning the phases' raw figures into what is published: results.json, summary.md, plot.png.

Every repeated figure is reported as its median over the runs and its range
(min to max): with two or three runs, a standard deviation would suggest a
precision the data does not have.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt

from .bench_clients import RESONATE_TABLES as RESONATE_TABLE_ORDER
from .bench_load import spread

#: Where `--publish` copies the latest figures; docs/benchmark.md shows them from there.
PUBLISHED_DIR = Path(__file__).parent / "results"
RESULT_FILES = ("results.json", "summary.md", "plot.png")

#: The issues' targets for this 2-core machine (issue 23's where it tightened an earlier one).
TARGET_CALLBACK_P50_MS = 15
TARGET_CALLBACK_P95_MS = 40
#: Issue 23: CPU per pipeline from callback to email, this project's services and Postgres together.
TARGET_CPU_MS_PER_PIPELINE = 13
#: Issue 23: 10,000 called back, every one final within this long of the last callback.
TARGET_FINAL_AFTER_LAST_CALLBACK_SECONDS = 70
TARGET_STARTS_PER_SECOND = 250
#: Issue 23: what the watchdog may cost with 10,000 pipelines waiting at the 60 s default.
TARGET_WATCHDOG_CORES = 0.1
TARGET_POLLING_RATIO = 30
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_WAITING = 10_000
TARGET_MIB_PER_1000_WAITING = 50
#: Whose memory the memory target counts: this project's services and its
#: Resonate server, not the emulator and the mail sink, which stand in for
#: Databricks and a mail server.
OWN_SERVICES = ("api", "worker", "notifier", "resonate")

#: Figure 8's shapes, in the order the report lists them (see bench_code.SHAPES).
CODE_SHAPES = {
    "legacy": "(a) one-job workflow",
    "one_job": "(b) one-job, run by its code",
    "onboarding": "(c) onboarding, per job",
}
#: Figure 9's shapes.
WAITING_SHAPES = {"one_job": "one-job (run by its code)", "onboarding": "onboarding"}
#: Live Python objects a waiting pipeline may leave in the worker, in allocated blocks: below one, it left none.
HELD_NOTHING_BLOCKS = 1.0

#: How the report names a container where its compose service name says too little.
SERVICE_LABELS = {"resonate": "Resonate (Postgres)"}

HOP_LABELS = {
    "gateway": "gateway (request in, signature, accept)",
    "resonate_settle": "Resonate (Postgres): settle the callback promise",
    "worker_resume": "worker resume (NOTIFY, dequeue, acquire, replay, ask for the email)",
    "notifier_pickup": "notifier pickup (Resonate hands over the email)",
    "notifier_and_smtp": "notifier + SMTP (compose, send, sink stores it)",
}


def label(service: str) -> str:
    return SERVICE_LABELS.get(service, service)


def _pick(runs: Sequence[dict[str, Any]], *path: str) -> list[Any]:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return values


def _ratios(top: Sequence[float | None], bottom: Sequence[float | None]) -> list[float | None]:
    return [t / b if t is not None and b else None for t, b in zip(top, bottom, strict=False)]


def aggregate(raw: dict[str, Any]) -> dict[str, Any]:
    """The published figures, from the phases' per-run data."""
    figures: dict[str, Any] = {}
    latency_runs = raw.get("callback_to_email", [])
    if latency_runs:
        figures["callback_to_email_ms"] = {
            q: spread(_pick(latency_runs, "callback_to_email", f"{q}_ms")) for q in ("p50", "p95", "p99")
        }
        figures["callback_to_email_ms"]["pipelines_per_run"] = latency_runs[0]["pipelines"]
        figures["callback_to_email_ms"]["rate_per_second"] = latency_runs[0]["rate_per_second"]
        figures["cpu_ms_per_pipeline"] = {
            service: spread(_pick(latency_runs, "cpu_ms_per_pipeline", service))
            for service in latency_runs[0]["cpu_ms_per_pipeline"]
        }
        figures["hops_mean_ms"] = {hop: spread(_pick(latency_runs, "hops", "mean_ms", hop)) for hop in HOP_LABELS}
        figures["hops_p95_ms"] = {
            hop: spread(_pick(latency_runs, "hops", "p95_ms", hop))
            for hop in ("gateway", "resonate_settle", "worker_resume")
        }
        figures["smtp_transaction_mean_ms"] = spread(_pick(latency_runs, "hops", "smtp_transaction_mean_ms"))
    start_runs = raw.get("start_to_email", [])
    if start_runs:
        figures["start_to_email_ms"] = {
            q: spread(_pick(start_runs, "start_to_email", f"{q}_ms")) for q in ("p50", "p95", "p99")
        }
        figures["start_to_email_ms"]["emulated_run_p50"] = spread(_pick(start_runs, "emulated_run", "p50_ms"))
        figures["start_to_email_ms"]["pipelines_per_run"] = start_runs[0]["pipelines"]
    polling_runs = raw.get("polling_baseline", [])
    if polling_runs:
        poll_p50 = _pick(polling_runs, "run_end_to_email", "p50_ms")
        poll_p95 = _pick(polling_runs, "run_end_to_email", "p95_ms")
        figures["polling_ms"] = {
            "p50": spread(poll_p50),
            "p95": spread(poll_p95),
            "watchdog_interval_seconds": polling_runs[0]["watchdog_interval_seconds"],
            "pipelines_per_run": polling_runs[0]["pipelines"],
            "settled_by": polling_runs[-1]["settled_by"],
        }
        if latency_runs:
            figures["polling_ms"]["ratio_p50"] = spread(
                _ratios(poll_p50, _pick(latency_runs, "callback_to_email", "p50_ms"))
            )
            figures["polling_ms"]["ratio_p95"] = spread(
                _ratios(poll_p95, _pick(latency_runs, "callback_to_email", "p95_ms"))
            )
    throughput_runs = raw.get("callback_throughput", [])
    if throughput_runs:
        figures["throughput_rps"] = {
            "callback": spread(_pick(throughput_runs, "callback", "requests_per_second")),
            "trivial": spread(_pick(throughput_runs, "trivial", "requests_per_second")),
            "ratio": spread(_pick(throughput_runs, "ratio")),
            "api_cpu_busy_callback": spread(_pick(throughput_runs, "callback", "api_cpu_cores_busy")),
            "api_cpu_busy_trivial": spread(_pick(throughput_runs, "trivial", "api_cpu_cores_busy")),
            "resonate_cpu_busy_callback": spread(_pick(throughput_runs, "callback", "resonate_cpu_cores_busy")),
            "api_us_per_callback": spread(_pick(throughput_runs, "callback", "api_cpu_us_per_request")),
            "api_us_per_trivial": spread(_pick(throughput_runs, "trivial", "api_cpu_us_per_request")),
            "resonate_us_per_callback": spread(_pick(throughput_runs, "callback", "resonate_cpu_us_per_request")),
            "gateway_cost_ratio": spread(_pick(throughput_runs, "gateway_cost_ratio")),
            "concurrency": throughput_runs[0]["concurrency"],
        }
    ramp_runs = raw.get("start_ramp", [])
    if ramp_runs:
        figures["start_throughput_per_second"] = spread(_pick(ramp_runs, "max_rate_with_p95_under_1s"))
        figures["start_p95_ms_at_that_rate"] = spread(_pick(ramp_runs, "p95_ms_at_max_rate"))
    capacity = raw.get("waiting_capacity")
    if capacity:
        # .get: a run from before a figure was added still reads (that figure None, deciding nothing).
        figures["waiting"] = {
            key: capacity.get(key)
            for key in (
                "target",
                "reached_suspended",
                "memory_mib_per_1000_waiting",
                "memory_growth_mib",
                "memory_measure",
                "database_rows_per_waiting",
                "database_rows_per_finished",
                "database_mib_per_1000_waiting",
                "all_completed",
                "fill_cut_by_budget",
                "emailed",
                "succeeded",
                "drain_seconds",
                "finish_seconds",
                "final_after_last_callback_seconds",
                "completed_per_second",
                "callbacks_per_second",
                "extra_cpu_cores_while_waiting",
            )
        }
    if raw.get("code_paths"):
        figures["code_paths"] = code_path_figures(raw["code_paths"])
    if raw.get("code_waiting"):
        figures["code_waiting"] = code_waiting_figures(raw["code_waiting"])
    cost = raw.get("watchdog_cost")
    if cost and "sweeps" in cost:
        per_waiting = cost["cpu_us_per_waiting_pipeline_per_sweep"]
        own = [per_waiting.get(s) for s in OWN_SERVICES]
        figures["watchdog_sweep"] = {
            **{
                key: cost[key]
                for key in (
                    "watchdog_interval_seconds",
                    "waiting_pipelines",
                    "sweeps",
                    "runs_read",
                    "jobs_api_calls_per_sweep",
                    "cpu_ms_per_sweep",
                    "cpu_us_per_waiting_pipeline_per_sweep",
                )
            },
            # 10,000 waiting, one sweep a minute: what our services and Postgres spend on it (the
            # emulator's share, standing in for Databricks' listing, apart).
            "cores_for_10000_waiting_at_60s": sum(own) * 10_000 / 60 / 1e6 if None not in own else None,
        }
    return figures


def code_path_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Figure 8 by shape: median and range over its batches; requests and CPU also per job."""
    by_shape: dict[str, Any] = {}
    for shape, meta in raw["shapes"].items():
        runs = [b for b in raw["batches"] if b["shape"] == shape]
        if not runs:
            continue
        jobs = meta["jobs"]
        start = raw.get("starts", {}).get(shape)
        start_requests = start["requests_per_pipeline"] if start else None
        start_cpu = _own_cpu(start["cpu_ms_per_pipeline"]) if start else None
        functions = sorted({name for run in runs for name in run["calls_per_pipeline"] if is_procedure(name)})
        services = list(runs[0]["cpu_ms_per_pipeline"])
        by_shape[shape] = {
            "label": meta["label"],
            "jobs": jobs,
            "pipelines_per_run": runs[0]["pipelines"],
            "p50_ms": spread(_pick(runs, "callback_to_email", "p50_ms")),
            "p95_ms": spread(_pick(runs, "callback_to_email", "p95_ms")),
            "resume_p50_ms": spread(_pick(runs, "hops", "settled_to_email_rpc", "p50_ms")),
            "recorded_p50_ms": spread(_pick(runs, "hops", "settled_to_root_settled", "p50_ms")),
            "requests_per_pipeline": spread(_pick(runs, "requests_per_pipeline")),
            "requests_per_job": spread([r["requests_per_pipeline"] / jobs for r in runs]),
            "drains_per_pipeline": spread(_pick(runs, "drains_per_pipeline")),
            "calls_per_pipeline": {
                name: spread([run["calls_per_pipeline"].get(name, 0.0) for run in runs]) for name in functions
            },
            "cpu_ms_per_pipeline": {s: spread(_pick(runs, "cpu_ms_per_pipeline", s)) for s in services},
            "cpu_ms_per_job": {s: spread([run["cpu_ms_per_pipeline"][s] / jobs for run in runs]) for s in services},
            "own_cpu_ms_per_job": spread([_own_cpu(run["cpu_ms_per_pipeline"]) / jobs for run in runs]),
            "start_requests_per_job": spread([start_requests / jobs if start else None]),
            "start_own_cpu_ms_per_job": spread([start_cpu / jobs if start else None]),
            "start_calls_per_pipeline": {
                name: v for name, v in (start["calls_per_pipeline"] if start else {}).items() if is_procedure(name)
            },
            "whole_requests_per_job": spread(
                [(start_requests + r["requests_per_pipeline"]) / jobs if start else None for r in runs]
            ),
            "whole_own_cpu_ms_per_job": spread(
                [(start_cpu + _own_cpu(r["cpu_ms_per_pipeline"])) / jobs if start else None for r in runs]
            ),
            "memory_kib_growth_per_pipeline": {
                s: spread(_pick(runs, "memory_kib_growth_per_pipeline", s)) for s in OWN_SERVICES
            },
            "emailed": sum(r["emailed"] for r in runs),
            "settled": sum(r["settled"] for r in runs),
            "pipelines": sum(r["pipelines"] for r in runs),
        }
    return {
        "rate_per_second": raw["rate_per_second"],
        "idle_requests_per_second": raw["idle_requests_per_second"].get("resonate_rpc", 0.0),
        "shapes": by_shape,
    }


def is_procedure(function: str) -> bool:
    """Whether a function of the schema is one a request runs (promise_create, task_fence, dequeue_execute, ...).

    Not the entry point itself (``resonate_rpc``, the total), nor the helpers
    it calls (``_lock``, ``_promise_json``, ...), nor the timers' and the
    collector's (``process_*``, ``gc``).
    """
    return function.startswith(("promise_", "task_", "schedule_", "dequeue_"))


def _own_cpu(per_service: dict[str, float]) -> float:
    """CPU of this project's services and its Resonate server together (not the emulator or the sink)."""
    return sum(per_service.get(s, 0.0) for s in OWN_SERVICES)


def code_waiting_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Figure 9 by shape: memory (KiB) by service, rows and KiB by table, per more waiting pipeline."""
    reached = raw["samples"][-1]["waiting"]
    shapes: dict[str, Any] = {}
    for shape, fit in raw["fit"].items():
        if fit["memory_bytes"] is None:
            shapes[shape] = {"waiting": reached.get(shape, 0), "memory_kib": None}
            continue
        shapes[shape] = {
            "waiting": reached.get(shape, 0),
            "memory_kib": {s: v / 1024 for s, v in fit["memory_bytes"].items()},
            "own_memory_kib": sum(fit["memory_bytes"].get(s, 0.0) for s in OWN_SERVICES) / 1024,
            "python_blocks": fit.get("python_blocks") or {},
            "rows": fit["rows"],
            "table_kib": {t: v / 1024 for t, v in fit["bytes"].items()},
            "database_kib": fit["database_bytes"] / 1024,
        }
    return {"shapes": shapes, "memory_measure": raw.get("memory_measure", {})}


def _code_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's guarantees: a pipeline run by its code costs no more than the one-job workflow did."""
    found: list[dict[str, Any]] = []

    def compare(name: str, value: float | None, bound: float | None, unit: str, against: str) -> None:
        met = None if value is None or bound is None else value <= bound
        wanted = f"<= {_fmt(bound, 1)}{unit} ({against})"
        found.append({"target": name, "wanted": wanted, "measured": value, "unit": unit, "met": met, "digits": 1})

    shapes = figures.get("code_paths", {}).get("shapes", {})
    # (target, the shape measured, the shape it may not exceed, the figure, its unit)
    for name, measured, bound, figure, unit in (
        ("(b) callback to email p50", "one_job", "legacy", "p50_ms", " ms"),
        ("(b) Resonate requests per pipeline, callback to end", "one_job", "legacy", "requests_per_pipeline", ""),
        ("(b) Resonate requests per pipeline, start to end", "one_job", "legacy", "whole_requests_per_job", ""),
        ("(c) Resonate requests per job, start to end", "onboarding", "one_job", "whole_requests_per_job", ""),
        ("(c) CPU per job, start to end (own services)", "onboarding", "one_job", "whole_own_cpu_ms_per_job", " ms"),
    ):
        if shapes.get(measured) and shapes.get(bound):
            against = "(a)'s" if bound == "legacy" else "(b)'s per pipeline"
            compare(name, shapes[measured][figure]["median"], shapes[bound][figure]["median"], unit, against)
    waiting = figures.get("code_waiting", {}).get("shapes", {})
    single, composed = waiting.get("one_job"), waiting.get("onboarding")
    if single and composed and single.get("memory_kib") and composed.get("memory_kib"):
        compare(
            "onboarding waiting: worker memory per pipeline",
            composed["memory_kib"].get("worker"),
            single["memory_kib"].get("worker"),
            " KiB",
            "one-job's",
        )
        for key, shape in (("one_job", single), ("onboarding", composed)):
            blocks = shape.get("python_blocks", {}).get("worker")
            if blocks is not None:
                # A pipeline kept in the worker would be hundreds of objects: under one block each is none.
                compare(
                    f"{WAITING_SHAPES[key]} waiting: worker's live Python objects per pipeline",
                    blocks,
                    HELD_NOTHING_BLOCKS,
                    " blocks",
                    "nothing held",
                )
    return found


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the figure that decides it, and whether it was met."""
    found: list[dict[str, Any]] = []

    def check(name: str, value: Any, bound: float, at_most: bool, unit: str = "", whose: str = "") -> None:
        # No figure (its phase failed or ran out of time) decides nothing either way.
        met = None if value is None else value <= bound if at_most else value >= bound
        bound_text = _fmt(bound) if isinstance(bound, int) else f"{bound:g}"
        wanted = f"{'<=' if at_most else '>='} {bound_text}{unit}{whose}"
        found.append({"target": name, "wanted": wanted, "measured": value, "unit": unit, "met": met})

    cb = figures.get("callback_to_email_ms")
    if cb:
        p50, p95 = cb["p50"]["median"], cb["p95"]["median"]
        check("callback to email p50", p50, TARGET_CALLBACK_P50_MS, True, " ms")
        check("callback to email p95", p95, TARGET_CALLBACK_P95_MS, True, " ms")
    polling = figures.get("polling_ms", {})
    if "ratio_p50" in polling:
        ratio = polling["ratio_p50"]["median"]
        check("polling / callback latency (p50)", ratio, TARGET_POLLING_RATIO, False, "x")
    throughput = figures.get("throughput_rps")
    if throughput:
        ratio = throughput["ratio"]["median"]
        check("callback / `/healthz` throughput", ratio, TARGET_THROUGHPUT_RATIO, False)
    waiting = figures.get("waiting")
    if waiting:
        reached, goal = waiting["reached_suspended"], waiting["target"]
        name = "pipelines waiting at once"
        if goal == TARGET_WAITING:
            check(name, reached, TARGET_WAITING, False)
        else:
            # --quick fills to fewer: it cannot show the target either way.
            measured = f"{reached:,}; --quick fills to {goal:,}"
            found.append({"target": name, "wanted": f">= {TARGET_WAITING:,}", "measured": measured, "met": None})
        found.append(
            {
                "target": "all of them complete",
                "wanted": "all",
                "measured": f"{waiting['emailed']:,} of {reached:,} emailed in {waiting['drain_seconds']:.0f} s",
                "met": bool(waiting["all_completed"]),
            }
        )
        per_service = [waiting["memory_mib_per_1000_waiting"].get(s) for s in OWN_SERVICES]
        total = sum(per_service) if None not in per_service else None
        whose = f" ({', '.join(label(s) for s in OWN_SERVICES)} together)"
        check("memory per 1,000 waiting", total, TARGET_MIB_PER_1000_WAITING, True, " MiB", whose)
        if goal == TARGET_WAITING:
            final = waiting.get("final_after_last_callback_seconds")
            check("10,000 called back: all final after the last callback", final,
                  TARGET_FINAL_AFTER_LAST_CALLBACK_SECONDS, True, " s")  # fmt: skip
    cpu = figures.get("cpu_ms_per_pipeline")
    if cpu:
        own = [cpu[s]["median"] if s in cpu else None for s in OWN_SERVICES]
        whose = f" ({', '.join(label(s) for s in OWN_SERVICES)} together)"
        total_cpu = sum(own) if None not in own else None
        check("CPU per pipeline, callback to email", total_cpu, TARGET_CPU_MS_PER_PIPELINE, True, " ms", whose)
    if "start_throughput_per_second" in figures:
        starts = figures["start_throughput_per_second"]["median"]
        check("starts a second with p95 under 1 s", starts, TARGET_STARTS_PER_SECOND, False, "/s")
    sweep = figures.get("watchdog_sweep")
    if sweep:
        cores = sweep["cores_for_10000_waiting_at_60s"]
        check("watchdog: 10,000 waiting at the 60 s default", cores, TARGET_WATCHDOG_CORES, True, " cores")
    return found + _code_targets(figures)


# -- Markdown --------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _spread(figure: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """``median unit (min to max, n runs)``, or just the value for one run."""
    if not figure or figure.get("median") is None:
        return "n/a"
    runs = len([v for v in figure["runs"] if v is not None])
    median = f"{_fmt(figure['median'], digits)}{unit}"
    if runs == 1:
        return median
    return f"{median} ({_fmt(figure['min'], digits)} to {_fmt(figure['max'], digits)}, n={runs})"


def _by_service(values: dict[str, Any], services: Sequence[str], digits: int, unit: str = "") -> str:
    return ", ".join(f"{label(s)} {_fmt(values.get(s), digits)}{unit}" for s in services)


def _header(result: dict[str, Any]) -> list[str]:
    meta = result["benchmark"]
    machine = meta["machine"]
    changes = " with uncommitted changes" if machine.get("uncommitted_changes") else ""
    return [
        f"# Benchmark results ({meta['profile']})",
        "",
        f"`{meta['command']}` on {meta['started_at']}: {meta['elapsed_seconds']:.0f} s in all, "
        f"of which {meta['stack_start_seconds']:.0f} s starting the stack.",
        "",
        f"Machine: {machine.get('cores')} cores ({machine.get('cpu_model')}), {machine.get('memory_gib')} GiB, "
        f"{machine.get('platform')}; Docker {machine.get('docker')}, compose {machine.get('compose')}, "
        f"files {', '.join(machine.get('compose_files', []))}; commit {machine.get('commit')}{changes}.",
        f"Load average (1/5/15 min) before: {_load(meta['load_average_before'])}; "
        f"after: {_load(meta['load_average_after'])}. The load generator runs on the same cores as the stack.",
        "",
        "Each figure: median over the runs (range, number of runs).",
        "",
    ]


#: The "met" column, by a target's verdict (None: this run could not decide it).
VERDICTS = {True: "yes", False: "**no**", None: "not tested"}


def _measured(target: dict[str, Any]) -> str:
    value = target["measured"]
    digits = target.get("digits", 2 if isinstance(value, float) and value < 10 else 0)
    return _fmt(value, digits) + (target.get("unit", "") if value is not None else "")


def _targets_table(result: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['wanted']} | {_measured(t)} | {VERDICTS[t['met']]} |")
    missed = [t for t in result["targets"] if t["met"] is False]
    untested = [t for t in result["targets"] if t["met"] is None]
    lines.append("")
    if missed:
        lines.append(f"**{len(missed)} of {len(result['targets'])} targets missed:**")
        lines += [f"- **{t['target']}**: {_measured(t)}, wanted {t['wanted']}." for t in missed]
    else:
        lines.append("Every target this run measured was met.")
    if untested:
        reasons = "; ".join(
            f"{t['target']} ({'no figure' if t['measured'] is None else t['measured']})" for t in untested
        )
        lines += ["", f"Not tested by this run: {reasons}."]
    return [*lines, ""]


def _latency_lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cb = figures.get("callback_to_email_ms")
    if cb:
        lines += [
            f"**1. Callback → email** ({cb['pipelines_per_run']} pipelines a run, callbacks at "
            f"{cb['rate_per_second']:g}/s; from the signed callback request to the message stored by the mail sink): "
            f"p50 {_spread(cb['p50'], unit=' ms')}, p95 {_spread(cb['p95'], unit=' ms')}, "
            f"p99 {_spread(cb['p99'], unit=' ms')}.",
            "",
        ]
    se = figures.get("start_to_email_ms")
    if se:
        lines += [
            f"**2. Start → email**, the notebook finishing at once ({se['pipelines_per_run']} pipelines a run): "
            f"p50 {_spread(se['p50'], unit=' ms')}, p95 {_spread(se['p95'], unit=' ms')}; of which the emulated "
            f"Databricks run (a notebook process) p50 {_spread(se['emulated_run_p50'], unit=' ms')}.",
            "",
        ]
    poll = figures.get("polling_ms")
    if poll:
        lines += [
            f"**3. Polling baseline**: the callback swallowed, so the watchdog settles each pipeline, at "
            f"`WATCHDOG_INTERVAL_SECONDS={poll['watchdog_interval_seconds']:g}`; runs end uniformly over the "
            f"interval; {poll['pipelines_per_run']} pipelines a run, settled by {poll['settled_by']}. "
            f"Run end → email p50 {_spread(poll['p50'], unit=' ms')}, p95 {_spread(poll['p95'], unit=' ms')}. "
            f"Ratio to the callback path: p50 {_spread(poll.get('ratio_p50'), 0, 'x')}, "
            f"p95 {_spread(poll.get('ratio_p95'), 0, 'x')}.",
            "",
        ]
    return lines


def _throughput_lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    tp = figures.get("throughput_rps")
    if tp:
        lines += [
            f"**4. Callback endpoint throughput** (closed loop, {tp['concurrency']} connections, the same raw "
            f"HTTP/1.1 generator for both): `POST /callbacks/databricks` {_spread(tp['callback'], unit='/s')} "
            f"vs `GET /healthz` {_spread(tp['trivial'], unit='/s')}; ratio {_spread(tp['ratio'], 2)}. "
            f"Gateway CPU per request: {_spread(tp['api_us_per_callback'], 0, ' µs')} per callback (and Resonate "
            f"(Postgres) {_spread(tp['resonate_us_per_callback'], 0, ' µs')}), "
            f"{_spread(tp['api_us_per_trivial'], 0, ' µs')} "
            f"per /healthz, a cost ratio of {_spread(tp['gateway_cost_ratio'], 2)}. Gateway busy: "
            f"{_spread(tp['api_cpu_busy_callback'], 2)} cores on callbacks, {_spread(tp['api_cpu_busy_trivial'], 2)} "
            "on /healthz (the load generator shares the two cores).",
            "",
        ]
    if "start_throughput_per_second" in figures:
        p95_there = _spread(figures["start_p95_ms_at_that_rate"], unit=" ms")
        lines += [
            f"**5. Start throughput**: {_spread(figures['start_throughput_per_second'], unit=' pipelines/s')} "
            f"with the p95 start latency under 1 s (p95 there: {p95_there}).",
            "",
        ]
    return lines


def _capacity_lines(figures: dict[str, Any]) -> list[str]:
    waiting = figures.get("waiting")
    if not waiting:
        return []
    services = OWN_SERVICES
    complete = "yes" if waiting["all_completed"] else "**no**"
    cut_fill = "; filling stopped when the run's time budget was spent" if waiting.get("fill_cut_by_budget") else ""
    tables = list(waiting["database_rows_per_waiting"])
    mib = waiting["database_mib_per_1000_waiting"]
    return [
        f"**6. Waiting capacity**: {_fmt(waiting['reached_suspended'])} pipelines suspended at once "
        f"(target {_fmt(waiting['target'])}{cut_fill}). Memory ({_memory_measure(waiting)}) per 1,000 more "
        "waiting (slope while filling): "
        f"{_by_service(waiting['memory_mib_per_1000_waiting'], services, 2, ' MiB')}; growth from the empty stack: "
        f"{_by_service(waiting['memory_growth_mib'], services, 1, ' MiB')}. CPU beyond idle while they wait: "
        f"{_by_service(waiting['extra_cpu_cores_while_waiting'], services, 3)} cores. Once called back: "
        f"{_fmt(waiting['emailed'])} emailed in {_fmt(waiting['drain_seconds'], 0)} s, "
        f"{_fmt(waiting['succeeded'])} succeeded in {_fmt(waiting['finish_seconds'], 0)} s "
        f"({_fmt(waiting['completed_per_second'], 0)} emails/s; callbacks sent at "
        f"{_fmt(waiting['callbacks_per_second'], 0)}/s); all complete: {complete}.",
        "",
        "What a waiting pipeline costs in the Resonate database (slope while filling): rows per waiting "
        f"pipeline: {_by_service(waiting['database_rows_per_waiting'], tables, 2)}; bytes per 1,000 waiting "
        f"(`pg_total_relation_size`, indexes included): {_by_service(mib, tables, 2, ' MiB')}; the whole database "
        f"(`pg_database_size`) {_fmt(mib['database'], 2)} MiB. {_finished_rows(waiting, tables)}",
        "",
    ]


def _finished_rows(waiting: dict[str, Any], tables: list[str]) -> str:
    finished = waiting["database_rows_per_finished"]
    if all(value is None for value in finished.values()):
        return "What a finished pipeline keeps is not known: not every pipeline finished."
    return (
        f"A finished pipeline keeps {_by_service(finished, tables, 2)} rows until `resonate.gc` collects it "
        "(`RESONATE_RETENTION_DAYS` after it ended)."
    )


def _memory_measure(waiting: dict[str, Any]) -> str:
    """PSS, and the services measured by RSS instead (where /proc could not be read)."""
    by_rss = [label(s) for s, measure in waiting.get("memory_measure", {}).items() if measure == "rss"]
    return "PSS" + (f"; RSS for {', '.join(by_rss)}, whose /proc could not be read" if by_rss else "")


def _hop_lines(figures: dict[str, Any]) -> list[str]:
    hops = figures.get("hops_mean_ms")
    if not hops:
        return []
    lines = [
        "**7. Where the callback → email time goes** (mean per hop over the figure-1 pipelines; "
        "p95 where each pipeline is traced):",
        "",
        "| hop | mean | p95 |",
        "|---|---|---|",
    ]
    for hop, name in HOP_LABELS.items():
        p95 = figures["hops_p95_ms"].get(hop)
        lines.append(f"| {name} | {_spread(hops[hop], 1, ' ms')} | {_spread(p95, 1, ' ms') if p95 else '-'} |")
    cpu = ", ".join(f"{label(s)} {_spread(v, 1)}" for s, v in figures["cpu_ms_per_pipeline"].items())
    lines += [
        "",
        "SMTP transaction alone (the notifier's `smtp_delivery_seconds`, QUIT included): "
        f"{_spread(figures['smtp_transaction_mean_ms'], 1, ' ms')} mean.",
        "",
        f"CPU per pipeline on the callback → email path, beyond idle (ms): {cpu}.",
        "",
    ]
    return lines


def _watchdog_lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    sweep = figures.get("watchdog_sweep")
    if sweep:
        per_service = _by_service(sweep["cpu_ms_per_sweep"], list(sweep["cpu_ms_per_sweep"]), 1)
        calls = sweep["jobs_api_calls_per_sweep"]
        lines += [
            f"**Cost of the watchdog** ({_fmt(sweep['waiting_pipelines'])} pipelines waiting on runs still going, "
            f"one sweep every {sweep['watchdog_interval_seconds']:g} s; {sweep['sweeps']} sweeps, "
            f"{sweep['runs_read']} runs read): each sweep {per_service} ms CPU, "
            f"{_fmt(calls['runs_list_calls'], 0)} `runs/list` and {_fmt(calls['runs_get_calls'], 0)} `runs/get` "
            "calls. At the compose default of 60 s, 10,000 waiting pipelines would cost our services and "
            f"Postgres {_fmt(sweep['cores_for_10000_waiting_at_60s'], 3)} cores (the cost per waiting pipeline "
            "per sweep, projected).",
            "",
        ]
    return lines


def _code_lines(figures: dict[str, Any]) -> list[str]:
    code = figures.get("code_paths")
    if not code or not code["shapes"]:
        return []
    shapes = [k for k in CODE_SHAPES if k in code["shapes"]]
    per = {k: code["shapes"][k] for k in shapes}

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {name} | " + " | ".join(cell(per[k]) for k in shapes) + " |"

    services = list(next(iter(per.values()))["cpu_ms_per_pipeline"])
    counts = ", ".join(f"{CODE_SHAPES[k]} {per[k]['pipelines_per_run']}" for k in shapes)
    lines = [
        "**8. Pipelines as code against the one-job workflow** (each shape's root created as the gateway "
        f"creates it; pipelines a run: {counts}; callbacks at {code['rate_per_second']:g}/s; the shapes' "
        "runs alternate. (c) is `customer-onboarding`: ingest, then score and report side by side, no "
        "approval, a summary email step and the outcome email; its figures are per job, its latency from the "
        "pipeline's last callback to its last email. Requests: calls of `resonate.resonate_rpc` "
        "(`pg_stat_user_functions`), less "
        f"{_fmt(code['idle_requests_per_second'], 2)}/s counted idle; start → waiting: from the root's "
        "creation (the gateway's create; not its read before it, nor its CPU) to the pipeline suspended on its "
        "first runs, triggers included; callback → end: from the first callback to the root settled (for (c) "
        "this holds the pair's triggers too)):",
        "",
        "| per pipeline (c: per job) | " + " | ".join(CODE_SHAPES[k] for k in shapes) + " |",
        "|---|" + "---|" * len(shapes),
        row("callback → email p50", lambda f: _spread(f["p50_ms"], unit=" ms")),
        row("callback → email p95", lambda f: _spread(f["p95_ms"], unit=" ms")),
        row("last callback settled → outcome email asked, p50", lambda f: _spread(f["resume_p50_ms"], unit=" ms")),
        row("last callback settled → outcome recorded, p50", lambda f: _spread(f["recorded_p50_ms"], unit=" ms")),
        row("Resonate requests, start → waiting", lambda f: _spread(f["start_requests_per_job"], 1)),
        row("Resonate requests, callback → end", lambda f: _spread(f["requests_per_job"], 1)),
        row("**Resonate requests, start → end**", lambda f: _spread(f["whole_requests_per_job"], 1)),
        row(
            "outbox drains (`dequeue_*`), callback → end",
            lambda f: _spread(_per_job(f["drains_per_pipeline"], f["jobs"]), 1),
        ),
    ]
    for service in services:
        lines.append(
            row(f"CPU {label(service)}, callback → end (ms)", lambda f, s=service: _spread(f["cpu_ms_per_job"][s], 1))
        )
    lines += [
        row("CPU, own services, callback → end (ms)", lambda f: _spread(f["own_cpu_ms_per_job"], 1)),
        row("CPU, own services, start → waiting (ms)", lambda f: _spread(f["start_own_cpu_ms_per_job"], 1)),
        row("**CPU, own services, start → end (ms)**", lambda f: _spread(f["whole_own_cpu_ms_per_job"], 1)),
    ]
    lines.append(
        row(
            "worker memory left once finished (KiB per pipeline)",
            lambda f: _spread(f["memory_kib_growth_per_pipeline"].get("worker"), 2),
        )
    )
    lines += [
        "",
        "Requests per pipeline by the protocol procedure they ran (callback → end: median over the runs; "
        "a create or settle inside a task runs as `task_fence`):",
        "",
    ]
    for k in shapes:
        start = ", ".join(f"{name} {_fmt(v, 1)}" for name, v in per[k]["start_calls_per_pipeline"].items() if v >= 0.05)
        calls = per[k]["calls_per_pipeline"]
        named = ", ".join(
            f"{name} {_fmt(v['median'], 1)}" for name, v in calls.items() if v["median"] and v["median"] >= 0.05
        )
        lines.append(
            f"- {CODE_SHAPES[k].replace(', per job', '')}, per pipeline: start → waiting: {start or 'n/a'}; "
            f"callback → end: {named}."
        )
    return [*lines, ""]


def _per_job(figure: dict[str, Any], jobs: int) -> dict[str, Any]:
    scale = [v / jobs if v is not None else None for v in figure["runs"]]
    return spread(scale)


def _waiting_code_lines(figures: dict[str, Any]) -> list[str]:
    waiting = figures.get("code_waiting")
    if not waiting:
        return []
    shapes = [k for k in WAITING_SHAPES if waiting["shapes"].get(k, {}).get("memory_kib")]
    if not shapes:
        return ["**9. Nothing held while waiting**: the samples could not separate the shapes.", ""]
    per = {k: waiting["shapes"][k] for k in shapes}

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {name} | " + " | ".join(cell(per[k]) for k in shapes) + " |"

    lines = [
        "**9. Nothing held while waiting** ("
        + ", ".join(f"{_fmt(per[k]['waiting'])} {WAITING_SHAPES[k]}" for k in shapes)
        + " pipelines waiting, added in alternating batches; half the onboarding ones on the pair's runs, "
        "half at the approval gate; per more waiting pipeline, least-squares on both counts; memory "
        f"{_memory_measure(waiting)}):",
        "",
        "| per waiting pipeline | " + " | ".join(WAITING_SHAPES[k] for k in shapes) + " |",
        "|---|" + "---|" * len(shapes),
    ]
    for service in OWN_SERVICES:
        lines.append(row(f"memory {label(service)} (KiB)", lambda f, s=service: _fmt(f["memory_kib"].get(s), 2)))
    for service in ("worker", "notifier"):
        lines.append(
            row(
                f"live Python objects after a full collection, {label(service)} (allocated blocks)",
                lambda f, s=service: _fmt(f.get("python_blocks", {}).get(s), 2),
            )
        )
    for table in RESONATE_TABLE_ORDER:
        lines.append(
            row(
                f"`resonate.{table}` rows (KiB)",
                lambda f, t=table: f"{_fmt(f['rows'].get(t), 2)} ({_fmt(f['table_kib'].get(t), 2)})",
            )
        )
    lines.append(row("whole database (KiB, `pg_database_size`)", lambda f: _fmt(f["database_kib"], 2)))
    return [*lines, ""]


def summary_markdown(result: dict[str, Any]) -> str:
    figures = result["figures"]
    lines = _header(result) + _targets_table(result) + ["## Figures", ""]
    lines += _latency_lines(figures) + _throughput_lines(figures) + _capacity_lines(figures) + _hop_lines(figures)
    lines += _watchdog_lines(figures)
    lines += _code_lines(figures) + _waiting_code_lines(figures)
    if result.get("errors"):
        lines += ["## Errors", "", *(f"- {e}" for e in result["errors"]), ""]
    return "\n".join(lines)


def _load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


# -- plot ------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    raw, figures = result["raw"], result["figures"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    meta = result["benchmark"]
    fig.suptitle(
        f"resonate-databricks benchmark ({meta['profile']}, {meta['machine'].get('cores')} cores, "
        f"load before {_load(meta['load_average_before'])})",
        fontsize=12,
    )

    ax = axes[0][0]
    for index, run in enumerate(raw.get("callback_to_email", [])):
        values = sorted(run["_latencies_ms"])
        if values:
            ax.plot(values, [i / len(values) for i in range(len(values))], label=f"callback, run {index + 1}")
    for index, run in enumerate(raw.get("polling_baseline", [])):
        values = sorted(run.get("_latencies_ms", []))
        if values:
            ax.plot(
                values, [i / len(values) for i in range(len(values))], linestyle="--", label=f"polling, run {index + 1}"
            )
    ax.set_xscale("log")
    ax.set_xlabel("ms to the email (log)")
    ax.set_ylabel("fraction of pipelines")
    ax.set_title("1+3. Callback vs polling (watchdog) latency")
    ax.axvline(TARGET_CALLBACK_P95_MS, color="grey", linewidth=0.8)
    ax.legend(fontsize=7)

    ax = axes[0][1]
    hops = figures.get("hops_mean_ms", {})
    names = [h for h in HOP_LABELS if hops.get(h, {}).get("median") is not None]
    left = 0.0
    for name in names:
        value = max(0.0, hops[name]["median"])
        ax.barh([0], [value], left=left, label=f"{name} {value:.1f} ms")
        left += value
    ax.set_yticks([])
    ax.set_ylim(-1.5, 0.6)
    ax.set_xlabel("ms (mean)")
    ax.set_title("7. Callback → email by hop")
    ax.legend(fontsize=7, loc="lower center", ncol=2)

    ax = axes[0][2]
    tp = figures.get("throughput_rps")
    if tp:
        labels = ["GET /healthz", "POST /callbacks/databricks"]
        medians = [tp["trivial"]["median"], tp["callback"]["median"]]
        errors = [
            [m - tp[k]["min"] for m, k in zip(medians, ("trivial", "callback"), strict=True)],
            [tp[k]["max"] - m for m, k in zip(medians, ("trivial", "callback"), strict=True)],
        ]
        ax.bar(labels, medians, yerr=errors, capsize=6, color=["#999999", "#3b75af"])
        ax.set_ylabel("requests/s")
        ax.set_title(f"4. Gateway throughput (ratio {tp['ratio']['median']:.2f})")

    ax = axes[1][0]
    for index, run in enumerate(raw.get("start_ramp", [])):
        steps = run["steps"]
        ax.plot(
            [s["achieved_per_second"] for s in steps],
            [s["latency"].get("p95_ms", float("nan")) for s in steps],
            marker="o",
            label=f"ramp {index + 1}",
        )
    ax.axhline(1000, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("pipelines started per second")
    ax.set_ylabel("p95 start latency, ms (log)")
    ax.set_title("5. Start throughput")
    ax.legend(fontsize=7)

    ax = axes[1][1]
    capacity = raw.get("waiting_capacity")
    if capacity:
        samples = capacity["samples"]
        for service in OWN_SERVICES:
            ax.plot(
                [s["waiting"] for s in samples],
                [s["memory_mib"][service] for s in samples],
                marker=".",
                label=label(service),
            )
        weighed = [s for s in samples if s["database"]]
        ax.plot(
            [s["waiting"] for s in weighed],
            [s["database"]["database_bytes"] / 2**20 for s in weighed],
            marker=".",
            linestyle="--",
            label="Resonate database, pg_database_size",
        )
        ax.set_xlabel("pipelines suspended")
        ax.set_ylabel("MiB (services: PSS)")
        ax.set_title(f"6. Waiting capacity ({capacity['reached_suspended']:,} reached)")
        ax.legend(fontsize=7)

    ax = axes[1][2]
    cpu = figures.get("cpu_ms_per_pipeline")
    if cpu:
        services = list(cpu)
        ax.bar([label(s) for s in services], [cpu[s]["median"] for s in services], color="#5a9e6f")
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_ylabel("CPU ms per pipeline")
        ax.set_title("CPU per callback → email, by container")

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(result: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (directory / "summary.md").write_text(summary_markdown(result))
    plot(result, directory / "plot.png")


def publish(directory: Path) -> None:
    PUBLISHED_DIR.mkdir(exist_ok=True)
    for name in RESULT_FILES:
        shutil.copyfile(directory / name, PUBLISHED_DIR / name)

"""``uv run python -m tests.benchmark [--quick]``: measure the stack, write JSON, Markdown and a plot.

By default it builds and starts its own compose stack (project
``resonate-databricks-bench``, host ports 28000 and up, see
:mod:`.bench_stack`), runs every phase (:mod:`.bench_phases`), writes
``bench-results/<time>/{results.json,summary.md,plot.png}`` and removes the
stack. ``--use-running`` measures a benchmark stack that is already up (one
left by ``--keep``) instead of rebuilding it, ``--publish`` copies the
results to ``tests/benchmark/results/`` where docs/benchmark.md shows them.

The whole run is bounded: ``--quick`` aims at 3 minutes, the full run at 20
on two cores, besides figures 8 and 9 (about 4 and 8 minutes more;
``--only-code`` runs those alone). The capacity phase, the only open-ended one, stops filling
when the run's budget is spent and reports how far it got; it always adds
its two minimum batches (its figures are slopes over them) and waits for
their emails up to its own drain time, so a slow machine overruns the
budget by those rather than lose figure 6.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from tests.support.stack import REPO_ROOT

from . import bench_code as code
from . import bench_phases as phases
from .bench_report import aggregate, publish, targets, write
from .bench_stack import (
    PORT_OFFSET,
    PROJECT_NAME,
    QUIET_WATCHDOG_SECONDS,
    BenchStack,
    StackError,
    load_average,
    machine_facts,
)

#: Where results go unless --out says otherwise (gitignored).
DEFAULT_OUT = REPO_ROOT / "bench-results"
#: The run's time budget by profile, in seconds, besides figures 8 and 9 (whose
#: time is added to it). On the Postgres server the full run's other phases
#: take about 7 minutes, and filling 10,000 waiting pipelines and draining them
#: about 9 more (measured 2026-12-01), so the full budget is 20 minutes; the
#: quick one stays 3, less a margin for teardown.
BUDGET_SECONDS = {"full": 20 * 60, "quick": 170}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and one ramp: about 3 minutes")
    parser.add_argument(
        "--use-running", action="store_true", help="measure the benchmark stack already up; do not rebuild or remove it"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards (for --use-running)")
    parser.add_argument("--publish", action="store_true", help="copy the results to tests/benchmark/results/")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default: bench-results)")
    parser.add_argument("--project", default=PROJECT_NAME, help=f"compose project name (default: {PROJECT_NAME})")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=PORT_OFFSET,
        help=f"added to compose's default host ports (default: {PORT_OFFSET})",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the polling baseline's run durations")
    parser.add_argument(
        "--only-code",
        action="store_true",
        help="measure only figures 8 and 9 (pipelines as code against the one-job workflow)",
    )
    return parser.parse_args(argv)


async def measure(
    profile: phases.Profile, stack: BenchStack, args: argparse.Namespace, clock_start: float
) -> dict[str, Any]:
    budget_end = clock_start + BUDGET_SECONDS[profile.name]
    raw: dict[str, Any] = {}
    errors: list[str] = []
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    bench = phases.Bench(profile, stack, tag=f"b{uuid.uuid4().hex[:6]}", rng=random.Random(seed))
    raw["seed"] = seed

    async def phase(name: str, coroutine: Any) -> Any:
        started = time.monotonic()
        phases.log(f"{name} ...")
        try:
            value = await coroutine
        except Exception as exc:  # one failed phase must not lose the others' figures
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            phases.log(f"{name} FAILED: {exc}\n{traceback.format_exc()}")
            return None
        load = os.getloadavg()[0]
        raw.setdefault("load_average_after_phase", {})[name] = load
        phases.log(f"{name} done in {time.monotonic() - started:.0f} s (load average {load:.2f})")
        return value

    try:
        raw["idle_cpu_cores"] = await bench.measure_idle(profile.idle_seconds)
        if args.only_code:
            stack.set_watchdog_interval(QUIET_WATCHDOG_SECONDS)
            raw["code_paths"] = await phase("pipelines as code: callback → email", code.code_paths(bench))
            raw["code_waiting"] = await phase("pipelines as code: waiting", code.waiting_shapes(bench))
            return {"raw": raw, "errors": errors}
        # Stage A: the watchdog at the polling interval.
        for repeat in range(profile.repeats):
            run = await phase(f"start→email run {repeat + 1}", phases.start_to_email(bench, repeat))
            if run:
                raw.setdefault("start_to_email", []).append(run)
        for repeat in range(profile.repeats):
            run = await phase(f"polling baseline run {repeat + 1}", phases.polling_baseline(bench, repeat))
            if run:
                raw.setdefault("polling_baseline", []).append(run)
        raw["watchdog_cost"] = await phase("watchdog sweep cost", phases.watchdog_cost(bench))

        # Stage B: the watchdog out of the way.
        phases.log(f"worker recreated with WATCHDOG_INTERVAL_SECONDS={QUIET_WATCHDOG_SECONDS}")
        raw["worker_recreate_seconds"] = stack.set_watchdog_interval(QUIET_WATCHDOG_SECONDS)
        last_callbacks = None
        for repeat in range(profile.repeats):
            run = await phase(f"callback→email run {repeat + 1}", phases.callback_to_email(bench, repeat))
            if run:
                raw.setdefault("callback_to_email", []).append(run.figures)
                last_callbacks = run.callbacks
        if last_callbacks:
            for repeat in range(profile.repeats):
                run = await phase(
                    f"throughput run {repeat + 1}", phases.callback_throughput(bench, last_callbacks, repeat)
                )
                if run:
                    raw.setdefault("callback_throughput", []).append(run)
        # Figures 8 and 9 take their own time: the budget of the capacity phase is kept.
        code_started = time.monotonic()
        raw["code_paths"] = await phase("pipelines as code: callback → email", code.code_paths(bench))
        raw["code_waiting"] = await phase("pipelines as code: waiting", code.waiting_shapes(bench))
        budget_end += time.monotonic() - code_started
        baseline = stack.sample()
        waiting: list[str] = []
        for repeat in range(profile.ramp_repeats):
            run = await phase(f"start ramp {repeat + 1}", phases.start_ramp(bench, repeat))
            if run:
                raw.setdefault("start_ramp", []).append(run.figures)
                waiting.extend(run.started)
        raw["waiting_capacity"] = await phase(
            "waiting capacity", phases.waiting_capacity(bench, waiting, baseline, deadline=budget_end)
        )
    finally:
        await bench.close()
    return {"raw": raw, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = phases.QUICK if args.quick else phases.FULL
    clock_start = time.monotonic()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = load_average()
    stack = BenchStack(
        project=args.project, port_offset=args.port_offset, watchdog_interval_seconds=profile.polling_interval_seconds
    )
    phases.log(f"{profile.name} benchmark; load average {load_before[0]:.2f}; starting the stack ({args.project})")
    try:
        stack_seconds = stack.up(fresh=not args.use_running)
    except StackError as exc:
        print(f"the benchmark stack did not start: {exc}", file=sys.stderr)
        return 2
    phases.log(f"stack up in {stack_seconds:.0f} s")
    try:
        outcome = asyncio.run(measure(profile, stack, args, clock_start))
    finally:
        if not (args.keep or args.use_running):
            phases.log("removing the stack")
            stack.down()
    result: dict[str, Any] = {
        "benchmark": {
            "profile": profile.name,
            "command": "uv run python -m tests.benchmark " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "started_at": started_at,
            "elapsed_seconds": time.monotonic() - clock_start,
            "stack_start_seconds": stack_seconds,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "machine": machine_facts(),
            "profile_settings": vars(profile),
            "polling_watchdog_interval_seconds": profile.polling_interval_seconds,
            "quiet_watchdog_interval_seconds": QUIET_WATCHDOG_SECONDS,
        },
        **outcome,
    }
    result["figures"] = aggregate(result["raw"])
    result["targets"] = targets(result["figures"])
    directory = args.out / time.strftime("%Y%m%d-%H%M%S")
    write(result, directory)
    if args.publish:
        publish(directory)
    print((directory / "summary.md").read_text())
    phases.log(f"results in {directory}" + (" and tests/benchmark/results/" if args.publish else ""))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's report of figures 8 and 9: medians over batches, per job, and the issue's guarantees.

In process, from made-up raw data shaped as the phases write it.
"""

from __future__ import annotations

from typing import Any

from tests.benchmark.bench_report import aggregate, summary_markdown, targets

SERVICES = ("api", "resonate", "worker", "notifier", "databricks", "mailsink")


def _batch(shape: str, p50: float, requests: float, worker_cpu: float, *, jobs: int = 1) -> dict[str, Any]:
    return {
        "shape": shape,
        "pipelines": 50,
        "jobs_per_pipeline": jobs,
        "emailed": 50,
        "settled": 50,
        "callback_to_email": {"count": 50, "p50_ms": p50, "p95_ms": 2 * p50},
        "hops": {
            "settled_to_email_rpc": {"count": 50, "p50_ms": p50 / 2},
            "settled_to_root_settled": {"count": 50, "p50_ms": p50 * 1.5},
        },
        "requests_per_pipeline": requests,
        "drains_per_pipeline": 3.0 * jobs,
        "calls_per_pipeline": {
            "resonate_rpc": requests,
            "promise_create": requests / 2,
            "task_heartbeat": 0.01,
            "_lock": 2 * requests,
        },
        "cpu_ms_per_pipeline": dict.fromkeys(SERVICES, 1.0) | {"worker": worker_cpu},
        "memory_kib_growth_per_pipeline": dict.fromkeys(SERVICES, 0.0) | {"worker": 0.5 * jobs},
    }


def _start(requests: float, worker_cpu: float) -> dict[str, Any]:
    return {
        "pipelines": 150,
        "waiting": 150,
        "requests_per_pipeline": requests,
        "calls_per_pipeline": {"resonate_rpc": requests, "task_fence": requests - 3, "_lock": 9.0},
        "cpu_ms_per_pipeline": dict.fromkeys(SERVICES, 0.0) | {"worker": worker_cpu},
    }


def _code_paths(one_job_requests: float, onboarding_requests: float) -> dict[str, Any]:
    batches = []
    for repeat, (legacy_p50, one_job_p50) in enumerate([(40.0, 42.0), (44.0, 43.0), (41.0, 40.0)]):
        batches += [
            _batch("legacy", legacy_p50, 17.0, 10.0),
            _batch("one_job", one_job_p50, one_job_requests, 12.0),
            _batch("onboarding", 90.0, onboarding_requests, 30.0, jobs=3),
        ]
        for batch in batches[-3:]:
            batch["repeat"] = repeat
    return {
        "idle_requests_per_second": {"resonate_rpc": 0.5},
        "rate_per_second": 20,
        "shapes": {
            "legacy": {"label": "one-job workflow", "jobs": 1},
            "one_job": {"label": "one-job by code", "jobs": 1},
            "onboarding": {"label": "onboarding", "jobs": 3},
        },
        "starts": {"legacy": _start(8.0, 4.0), "one_job": _start(10.0, 5.0), "onboarding": _start(12.0, 6.0)},
        "batches": batches,
    }


def _weighing(one_job: int, onboarding: int) -> dict[str, Any]:
    return {"waiting": {"one_job": one_job, "onboarding": onboarding}}


def _code_waiting(
    worker_one_job: float, worker_onboarding: float, blocks_one_job: float = 0.1, blocks_onboarding: float = -0.2
) -> dict[str, Any]:
    tables = ("promises", "tasks", "callbacks", "listeners", "task_resumes", "outbox", "schedules")

    def fit(worker: float, promises: float, blocks: float) -> dict[str, Any]:
        return {
            "memory_bytes": {"api": 0.0, "worker": worker * 1024, "notifier": 0.0, "resonate": 4096.0},
            "python_blocks": {"worker": blocks, "notifier": 0.0},
            "rows": dict.fromkeys(tables, 0.0) | {"promises": promises},
            "bytes": dict.fromkeys(tables, 0.0) | {"promises": promises * 700},
            "database_bytes": promises * 800,
        }

    return {
        "samples": [_weighing(0, 0), _weighing(1000, 1000)],
        "fit": {
            "one_job": fit(worker_one_job, 7.0, blocks_one_job),
            "onboarding": fit(worker_onboarding, 21.5, blocks_onboarding),
        },
        "memory_measure": {"worker": "pss"},
    }


def _verdicts(raw: dict[str, Any]) -> dict[str, bool | None]:
    return {t["target"]: t["met"] for t in targets(aggregate(raw))}


def test_each_shape_is_reported_as_its_median_over_its_batches_and_onboarding_per_job() -> None:
    figures = aggregate({"code_paths": _code_paths(19.0, 45.0)})["code_paths"]["shapes"]
    assert figures["legacy"]["p50_ms"]["median"] == 41.0
    assert figures["one_job"]["p50_ms"]["median"] == 42.0
    assert figures["one_job"]["p50_ms"]["runs"] == [42.0, 43.0, 40.0]
    assert figures["onboarding"]["requests_per_pipeline"]["median"] == 45.0
    assert figures["onboarding"]["requests_per_job"]["median"] == 15.0
    assert figures["onboarding"]["cpu_ms_per_job"]["worker"]["median"] == 10.0
    # api, Resonate, worker and notifier: the project's own services.
    assert figures["onboarding"]["own_cpu_ms_per_job"]["median"] == 11.0
    assert figures["legacy"]["calls_per_pipeline"]["promise_create"]["median"] == 8.5
    # The start's window and the callbacks' together, per job.
    assert figures["onboarding"]["start_requests_per_job"]["median"] == 4.0
    assert figures["onboarding"]["whole_requests_per_job"]["median"] == 19.0
    assert figures["onboarding"]["whole_own_cpu_ms_per_job"]["median"] == 13.0
    assert figures["one_job"]["whole_requests_per_job"]["median"] == 29.0
    assert figures["one_job"]["start_calls_per_pipeline"] == {"task_fence": 7.0}


def test_the_guarantees_are_met_when_code_costs_no_more_than_the_one_job_workflow() -> None:
    verdicts = _verdicts({"code_paths": _code_paths(17.0, 45.0), "code_waiting": _code_waiting(0.7, 0.6)})
    assert verdicts["(b) callback to email p50"] is False  # 42 ms against 41 ms: reported as measured
    assert verdicts["(b) Resonate requests per pipeline, callback to end"] is True
    assert verdicts["(b) Resonate requests per pipeline, start to end"] is False  # 27 against 25
    assert verdicts["(c) Resonate requests per job, start to end"] is True  # 19 against 27
    assert verdicts["(c) CPU per job, start to end (own services)"] is True  # 13 ms against 20 ms
    assert verdicts["onboarding waiting: worker memory per pipeline"] is True
    assert verdicts["onboarding waiting: worker's live Python objects per pipeline"] is True
    assert verdicts["one-job (run by its code) waiting: worker's live Python objects per pipeline"] is True


def test_a_waiting_pipeline_that_leaves_objects_in_the_worker_misses_nothing_held() -> None:
    raw = {"code_paths": _code_paths(17.0, 45.0), "code_waiting": _code_waiting(0.7, 0.6, 0.2, 350.0)}
    verdicts = _verdicts(raw)
    assert verdicts["onboarding waiting: worker's live Python objects per pipeline"] is False
    assert verdicts["one-job (run by its code) waiting: worker's live Python objects per pipeline"] is True
    summary = summary_markdown(_result(raw))
    assert "| live Python objects after a full collection, worker (allocated blocks) | 0.20 | 350.00 |" in summary


def test_a_guarantee_missed_is_said_with_its_figures() -> None:
    raw = {"code_paths": _code_paths(21.0, 90.0), "code_waiting": _code_waiting(0.5, 0.9)}
    verdicts = _verdicts(raw)
    assert verdicts["(b) Resonate requests per pipeline, callback to end"] is False
    assert verdicts["(c) Resonate requests per job, start to end"] is False  # 34 per job against 31
    assert verdicts["onboarding waiting: worker memory per pipeline"] is False
    summary = summary_markdown(_result(raw))
    assert "**(b) Resonate requests per pipeline, callback to end**: 21.0, wanted <= 17.0 ((a)'s)." in summary
    assert "**(c) Resonate requests per job, start to end**: 34.0, wanted <= 31.0 ((b)'s per pipeline)." in summary
    assert "| onboarding waiting: worker memory per pipeline | <= 0.5 KiB (one-job's) | 0.9 KiB | **no** |" in summary
    assert "| Resonate requests, callback → end | 17.0 (17.0 to 17.0, n=3) | 21.0 (21.0 to 21.0, n=3) | 30.0" in summary
    assert "| Resonate requests, start → waiting | 8.0 | 10.0 | 4.0 |" in summary
    assert (
        "| last callback settled → outcome email asked, p50 | 20 ms (20 to 22, n=3) | 21 ms (20 to 22, n=3) |"
        in summary
    )
    assert "| `resonate.promises` rows (KiB) | 7.00 (4.79) | 21.50 (14.70) |" in summary
    # The procedures requests run, not the entry point nor its helpers; too rare to show: left out.
    assert (
        "- (c) onboarding, per pipeline: start → waiting: task_fence 9.0; callback → end: promise_create 45.0."
        in summary
    )
    assert "| worker memory left once finished (KiB per pipeline) | 0.50 (0.50 to 0.50, n=3) | 0.50" in summary


def test_without_the_new_phases_no_new_target_or_figure_appears() -> None:
    raw = {"code_paths": None}
    assert not [t for t in targets(aggregate(raw)) if t["target"].startswith(("(b)", "(c)", "onboarding"))]
    assert "**8." not in summary_markdown(_result(raw))


def _result(raw: dict[str, Any]) -> dict[str, Any]:
    figures = aggregate(raw)
    return {
        "benchmark": {
            "profile": "quick",
            "command": "uv run python -m tests.benchmark --quick",
            "started_at": "2026-12-05 09:00:00 UTC",
            "elapsed_seconds": 100.0,
            "stack_start_seconds": 10.0,
            "load_average_before": [0.1, 0.2, 0.3],
            "load_average_after": [1.0, 1.0, 1.0],
            "machine": {"cores": 2, "compose_files": ["compose.yaml"]},
        },
        "raw": raw,
        "figures": figures,
        "targets": targets(figures),
        "errors": [],
    }


def _watchdog_cost(worker_ms: float) -> dict[str, Any]:
    """A sweep phase of 2,000 waiting: 3 sweeps, the worker's ``worker_ms`` and Postgres' 20 ms per sweep."""
    per_sweep = {
        "api": 0.0,
        "resonate": 20.0,
        "worker": worker_ms,
        "notifier": 0.0,
        "databricks": 30.0,
        "mailsink": 0.0,
    }
    return {
        "watchdog_interval_seconds": 10,
        "waiting_pipelines": 2_000,
        "window_seconds": 30.0,
        "sweeps": 3,
        "runs_read": 0,
        "jobs_api_calls_per_sweep": {"runs_list_calls": 80.0, "runs_get_calls": 0.0},
        "cpu_ms_per_sweep": per_sweep,
        "cpu_us_per_waiting_pipeline_per_sweep": {name: ms * 1000 / 2_000 for name, ms in per_sweep.items()},
    }


def test_the_watchdog_is_projected_to_10000_waiting_at_60_s_from_our_services_cost_alone() -> None:
    # (20 + 40) ms per sweep of 2,000 waiting: 30 us each; 10,000 of them once a minute: 0.005 cores.
    figures = aggregate({"watchdog_cost": _watchdog_cost(40.0)})
    assert round(figures["watchdog_sweep"]["cores_for_10000_waiting_at_60s"], 6) == 0.005
    assert _verdicts({"watchdog_cost": _watchdog_cost(40.0)})["watchdog: 10,000 waiting at the 60 s default"] is True
    # 2.4 s of the worker's CPU a sweep of 2,000 is 1.2 ms each: 0.2 cores at 10,000: missed, and said.
    raw = {"watchdog_cost": _watchdog_cost(2_380.0)}
    assert _verdicts(raw)["watchdog: 10,000 waiting at the 60 s default"] is False
    summary = summary_markdown(_result(raw))
    assert "80 `runs/list` and 0 `runs/get` calls" in summary
    assert "**watchdog: 10,000 waiting at the 60 s default**: 0.20 cores, wanted <= 0.1 cores." in summary


def test_a_watchdog_figure_of_the_checks_before_the_sweep_decides_nothing() -> None:
    old = {"watchdog_interval_seconds": 10, "checks": 500, "cpu_ms_per_check_total": 7.8}
    assert "watchdog_sweep" not in aggregate({"watchdog_cost": old})
    assert "watchdog: 10,000 waiting at the 60 s default" not in _verdicts({"watchdog_cost": old})


def _capacity(final_after_last_callback: float | None) -> dict[str, Any]:
    """A capacity phase that filled to 10,000 and finished them all, ``final_after_last_callback`` s after."""
    memory = {service: 1.0 for service in ("api", "worker", "notifier", "resonate")}
    figures = {
        "target": 10_000,
        "reached_suspended": 10_000,
        "memory_mib_per_1000_waiting": memory,
        "all_completed": True,
        "emailed": 10_000,
        "succeeded": 10_000,
        "drain_seconds": 90.0,
        "finish_seconds": 120.0,
        "completed_per_second": 111.0,
    }
    if final_after_last_callback is not None:
        figures["final_after_last_callback_seconds"] = final_after_last_callback
    return figures


def test_ten_thousand_called_back_are_final_within_70_s_of_the_last_callback_or_it_is_missed() -> None:
    name = "10,000 called back: all final after the last callback"
    assert _verdicts({"waiting_capacity": _capacity(65.0)})[name] is True
    assert _verdicts({"waiting_capacity": _capacity(344.4)})[name] is False
    # A run from before the figure existed decides nothing.
    assert _verdicts({"waiting_capacity": _capacity(None)})[name] is None

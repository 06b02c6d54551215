"""The worker's Prometheus metrics."""

from prometheus_client import Counter, Gauge

PIPELINES_FINISHED = Counter(
    "pipelines_finished_total",
    "Pipelines that reached a final state, by state (succeeded, failed, cancelled, timed_out) and catalogue job.",
    ["state", "job"],
)
RUNS_TRIGGERED = Counter("databricks_runs_triggered_total", "Successful run-now calls (replays included).")
WATCHDOG_CHECKS = Counter(
    "watchdog_checks_total",
    "Runs the missed-callback watchdog read from Databricks: those its sweep did not find active (or found "
    "overdue), and those a notification prompted. Grows with the runs that end, not with the number waiting.",
)
WATCHDOG_SWEEPS = Counter("watchdog_sweeps_total", "Watchdog sweeps this worker made (one per interval per group).")
WATCHDOG_SWEEP_FAILURES = Counter(
    "watchdog_sweep_failures_total", "Watchdog sweeps that failed (the database away); the next interval sweeps again."
)
WATCHDOG_WATCHED = Gauge(
    "watchdog_watched_runs",
    "Runs waited on (their callback not yet settled) at the latest sweep, if this worker made it; else 0, so that "
    "the group's max is the figure.",
)
WATCHDOG_SETTLEMENTS = Counter(
    "watchdog_settlements_total",
    "Callback promises settled by the watchdog because no callback came, by status.",
    ["status"],
)
PIPELINE_OVERDUE_CHECKS = Counter(
    "pipeline_overdue_checks_total",
    "Watchdog reads that found a pipeline still waiting past its job's expected duration, by catalogue job.",
    ["job"],
)
STEPS_FINISHED = Counter(
    "pipeline_steps_finished_total",
    "Steps of pipelines run by their code, counted when their pipeline ends, by kind (job, approval, email), "
    "final state and pipeline.",
    ["kind", "state", "pipeline"],
)
REPAIRS = Counter(
    "databricks_repairs_total",
    "Failed runs repaired (their failed tasks rerun), by who decided: automatic (the job's policy) or person.",
    ["by"],
)


def export_from_zero(job_names: list[str]) -> None:
    """Create each labelled series at 0, so that ``increase()`` sees its first event (Prometheus
    only sees a series once it exists: one that first appears at 1 looks like no change)."""
    for job in job_names:
        PIPELINE_OVERDUE_CHECKS.labels(job=job)
    for by in ("automatic", "person"):
        REPAIRS.labels(by=by)

"""Run the worker: ``python -m pipeline_worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvloop

from pipeline_shared import names
from pipeline_shared.logs import configure_logging
from pipeline_shared.ops import run_resonate_worker
from pipeline_shared.resonate_client import connect
from pipeline_shared.schedules import register_firing_starter
from pipeline_shared.settings import load_settings
from pipeline_shared.testhooks import WORKER_POINTS, TestHooks
from pipeline_shared.tracing import configure_tracing

from . import metrics
from .databricks import DatabricksConfig, DatabricksJobs
from .registration import load_pipelines
from .runner import run_pipeline, run_pipeline_separate_watch
from .settings import WorkerSettings
from .steps import WorkerDeps
from .sweep import DatabaseWatchedRuns, sweep_every_interval
from .watchdog import WATCH_RETRY, watch_databricks_run
from .workflows import run_pipeline as run_one_job_pipeline

logger = logging.getLogger("pipeline_worker")


async def main() -> None:
    settings = load_settings(WorkerSettings)
    configure_logging("worker", settings.LOG_LEVEL)
    configure_tracing("pipeline-worker")  # off unless an OTEL_EXPORTER_OTLP_*ENDPOINT is set

    databricks = DatabricksJobs(
        DatabricksConfig(
            host=settings.DATABRICKS_HOST,
            credentials=settings.databricks_credentials(),
            http_timeout_seconds=settings.DATABRICKS_HTTP_TIMEOUT_SECONDS,
            retry_timeout_seconds=settings.DATABRICKS_RETRY_TIMEOUT_SECONDS,
            max_concurrent_calls=settings.DATABRICKS_MAX_CONCURRENT_CALLS,
        )
    )
    link = connect(settings, names.WORKER_GROUP, max_concurrent_tasks=settings.MAX_CONCURRENT_TASKS)
    resonate = link.resonate
    hooks = TestHooks(enabled=settings.WORKER_TEST_HOOKS, points=WORKER_POINTS)
    deps = WorkerDeps(
        databricks=databricks,
        promises=resonate.promises,
        catalogue=settings.catalogue,
        signing_secret=settings.CALLBACK_SIGNING_SECRET,
        callback_url=settings.GATEWAY_CALLBACK_URL,
        idempotency_namespace=settings.DATABRICKS_IDEMPOTENCY_NAMESPACE,
        watchdog_interval_seconds=settings.WATCHDOG_INTERVAL_SECONDS,
        report_output_budget_bytes=settings.REPORT_OUTPUT_BUDGET_BYTES,
        hooks=hooks,
    )
    resonate.with_dependency(deps)
    metrics.export_from_zero(list(settings.catalogue.jobs))
    load_pipelines(settings.pipeline_modules, settings.catalogue)
    resonate.register(run_one_job_pipeline, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_ONE_JOB_VERSION)
    resonate.register(
        run_pipeline_separate_watch, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_SEPARATE_WATCH_VERSION
    )
    resonate.register(run_pipeline, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_VERSION)
    resonate.register(watch_databricks_run, name=names.WATCH_DATABRICKS_RUN, retry_policy=WATCH_RETRY)
    # A catalogue schedule's firing starts its pipeline here (the gateway keeps the schedules).
    register_firing_starter(resonate)
    logger.info(
        "Databricks at %s, signing in with %s; catalogue %s: %s",
        settings.DATABRICKS_HOST,
        settings.databricks_credentials().describe(),
        settings.JOB_CATALOGUE_FILE,
        ", ".join(f"{job.name} ({job.databricks_job}, {job.completion})" for job in settings.catalogue.jobs.values()),
    )
    if link.database is None:
        raise RuntimeError("a deployed worker runs on the resonate-pg database, which its watchdog's sweep reads")
    # The watchdog's sweep: one per interval across the worker group, made by whichever worker asks first.
    sweeping = asyncio.create_task(sweep_every_interval(deps, DatabaseWatchedRuns(link.database, names.WORKER_GROUP)))
    try:
        await run_resonate_worker("worker", link, settings.OPS_PORT, hooks.routes())
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
        databricks.close()


if __name__ == "__main__":
    # uvloop: the process is mostly network I/O (Resonate's database, and
    # Databricks or SMTP); it made the gateway's requests markedly cheaper
    # (see the benchmark).
    uvloop.run(main())

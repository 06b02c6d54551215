"""The gateway's Prometheus metrics."""

from prometheus_client import Counter, Gauge

PIPELINES_STARTED = Counter(
    "pipelines_started_total", "Pipelines started through the gateway, by catalogue job.", ["job"]
)
CANCELS = Counter("pipeline_cancels_total", "Pipelines cancelled at a user's request.")
CALLBACKS = Counter(
    "callbacks_total",
    "Notebook callbacks that settled a pipeline (accepted) or repeated its outcome (duplicate).",
    ["outcome"],
)
CALLBACK_REJECTIONS = Counter(
    "callback_rejections_total",
    "Notebook callbacks refused, by reason (the error code they got).",
    ["reason"],
)
NOTIFICATIONS = Counter(
    "databricks_notifications_total",
    "Databricks job notifications accepted, by what they prompted: scheduled (a check of the run), "
    "already_scheduled (one was on its way for that event and window), ignored (no pipeline waits on the run).",
    ["outcome"],
)
REPAIR_DECISIONS = Counter(
    "pipeline_repair_decisions_total",
    "Decisions about pipelines awaiting repair, by action: repair or abandon.",
    ["action"],
)
APPROVALS = Counter(
    "approvals_total",
    "Decisions at pipelines' approval gates made through the gateway, by decision: approve or reject.",
    ["decision"],
)
INDEX_PROJECTIONS = Counter(
    "pipeline_index_projections_total",
    "Pipelines written to the pipeline index from Resonate's state (one per pipeline per batch of changes).",
)
INDEX_PROJECTION_FAILURES = Counter(
    "pipeline_index_projection_failures_total",
    "Pipelines the index could not project from their promises (retried; the log says why).",
)
INDEX_LAG = Gauge(
    "pipeline_index_lag_seconds",
    "How long the oldest change the projector last took had waited: how far the index trails Resonate.",
)
INDEX_AWAITING_PEOPLE = Gauge(
    "pipelines_awaiting_people",
    "Pipelines the index shows waiting for a person, by what for: approval (a gate is open) or repair (a run "
    "awaits repair). Read from the index by every gateway every few seconds.",
    ["awaiting"],
)
INDEX_STEPS_IN_FLIGHT = Gauge(
    "pipeline_steps_in_flight",
    "Steps of the pipelines that have not ended, by kind (job, approval, email) and state, as the index shows them.",
    ["kind", "state"],
)

"""The gateway's Prometheus metrics."""

from prometheus_client import Counter

PIPELINES_STARTED = Counter("pipelines_started_total", "Pipelines started through the gateway.", ["job"])
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

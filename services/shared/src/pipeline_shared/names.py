"""Resonate group and function names: the only way services address each other.

A group is named after the service that listens on it (compose service name =
Resonate group). Functions are dispatched across services by these registered
names, never by importing another service's code.
"""

from typing import Final

#: The gateway's group. It starts workflows and settles promises; no durable
#: function is registered on it.
API_GROUP: Final = "api"
#: The worker's group: the pipeline workflow and its Databricks steps.
WORKER_GROUP: Final = "worker"
#: The notifier's group: the email step.
NOTIFIER_GROUP: Final = "notifier"

#: The pipeline workflow, registered by the worker. Its root promise id is the
#: pipeline id.
RUN_PIPELINE: Final = "run_pipeline"
#: Its versions (Resonate keeps a task's version for its whole life): 1, the
#: one-job workflow that pipelines started before pipelines were code finish
#: on; 2 and 3, the runner of a pipeline's function (``PipelineSpec.version``
#: set). A job step at 3 schedules its run's first watchdog check in its
#: trigger step rather than in a step of its own; pipelines started at 2 keep
#: their children's order to the end.
RUN_PIPELINE_ONE_JOB_VERSION: Final = 1
RUN_PIPELINE_SEPARATE_WATCH_VERSION: Final = 2
RUN_PIPELINE_VERSION: Final = 3
#: One link of the missed-callback watchdog chain, registered by the worker.
WATCH_DATABRICKS_RUN: Final = "watch_databricks_run"
#: A schedule's firing (pipeline_shared.schedules), registered by the worker: it
#: starts the scheduled pipeline's root. Its promise id is the firing's.
START_SCHEDULED_PIPELINE: Final = "start_scheduled_pipeline"
#: The email step, registered by the notifier.
SEND_PIPELINE_EMAIL: Final = "send_pipeline_email"

# The pipeline's own inputs to a job that calls back: Databricks job
# parameters, which reach the notebook as widgets. They are the contract
# between the worker and notebooks/pipeline_callback.py (and
# infra/databricks/databricks.yml, which declares them on every such job).
# The user's parameters are job parameters of their own, declared per job in
# the bundle and the catalogue.
JOB_PARAM_PIPELINE_ID: Final = "pipeline_id"
JOB_PARAM_CALLBACK_PROMISE_ID: Final = "callback_promise_id"
JOB_PARAM_CALLBACK_URL: Final = "callback_url"
JOB_PARAM_CALLBACK_SIGNING_KEY: Final = "callback_signing_key"

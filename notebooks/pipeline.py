# Databricks notebook source
# MAGIC %md
# MAGIC # Pipeline: CSV statistics with a signed callback
# MAGIC
# MAGIC The pipeline service starts this notebook as a job run, then **waits for it to call
# MAGIC back**. It does a small data step; `pipeline_callback` (next to this notebook) posts the
# MAGIC outcome to the service and ends the notebook with the result as its exit value.
# MAGIC
# MAGIC **Inputs** are job parameters, pushed down to this notebook as widgets:
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `source` | the CSV: a workspace file or an https URL the operator allows; empty for a built-in sample |
# MAGIC | `pipeline_id` | the pipeline this run belongs to (for the log) |
# MAGIC | `callback_promise_id` | the promise the callback settles |
# MAGIC | `callback_url` | where to `POST` the outcome; empty when run by hand |
# MAGIC | `callback_signing_key` | the `whsec_...` key for this promise only |
# MAGIC
# MAGIC `source` is this notebook's own parameter (the job and the catalogue declare it); the
# MAGIC other four are the pipeline's, set by the service and read by `pipeline_callback`.
# MAGIC
# MAGIC **Data step**: reads the CSV at `source` (a small built-in sample when there is none) if
# MAGIC the operator's rule allows it (`pipeline_sources.json` beside this notebook: folders, https
# MAGIC hosts; never loopback, link-local or private addresses unless listed), counts rows and
# MAGIC columns, and describes each column: numeric columns get
# MAGIC count/min/max/mean, other columns their number of distinct values.
# MAGIC
# MAGIC **Callback**: `{"promise_id", "status": "success", "result"}`, or
# MAGIC `{"promise_id", "status": "failure", "error": {"type", "message"}}`, signed with
# MAGIC Standard Webhooks headers. It is retried on connection errors, 5xx and 429 (never on
# MAGIC other 4xx) for at most 5 minutes. A failed data step is reported, then re-raised so the
# MAGIC run is marked failed.
# MAGIC
# MAGIC **Exit value**: the result as JSON, readable through `jobs/runs/get-output` if the
# MAGIC callback is lost.
# MAGIC
# MAGIC Only the Python standard library is used: the notebook runs on any compute as it is.

# COMMAND ----------

# DBTITLE 1,Data step
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
import pipeline_sources
from csv_summary import csv_statistics

#: A CSV larger than this is refused rather than read into the driver's memory.
MAX_SOURCE_BYTES = 50 * 1024 * 1024
#: How long an http(s) source may take to answer.
SOURCE_TIMEOUT_SECONDS = 60

#: Used when the user gives no `source`, so a pipeline can be tried without data of its own.
SAMPLE_CSV = """city,country,population,area_km2,founded
Lisbon,Portugal,545796,100.05,
Porto,Portugal,231962,41.42,
Utrecht,Netherlands,361924,99.21,1122
Ghent,Belgium,265086,156.18,
Graz,Austria,298479,127.57,1128
Bologna,Italy,387971,140.86,
"""


def read_source(source, policy=None):
    """The text of the CSV at `source`: an https URL of a listed host, or a file under a listed folder.

    Workspace files (`/Workspace/...`) and Unity Catalog volumes (`/Volumes/...`) are local paths
    on the driver; `dbfs:/x` is `/dbfs/x`. What is allowed is the operator's rule, checked where the
    file is opened or the connection made (`pipeline_sources`): a source outside it is refused
    before anything is read.
    """
    policy = policy or pipeline_sources.load_policy()
    return pipeline_sources.read_text(source, policy, MAX_SOURCE_BYTES, SOURCE_TIMEOUT_SECONDS)


def summarise(user_parameters):
    """The pipeline's result for the user's parameters."""
    source = user_parameters.get("source", "").strip()
    if not source:
        return csv_statistics(SAMPLE_CSV, "built-in sample")
    return csv_statistics(read_source(source), source)


# COMMAND ----------

# DBTITLE 1,Run the pipeline and call back
from pipeline_callback import pipeline_run

with pipeline_run(dbutils, defaults={"source": ""}) as run:
    run.result = summarise(run.parameters)

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
import csv
import io
import math

import pipeline_sources

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
    raw = pipeline_sources.read_source(source, policy, MAX_SOURCE_BYTES, SOURCE_TIMEOUT_SECONDS)
    if len(raw) > MAX_SOURCE_BYTES:
        raise ValueError(f"source {source} is larger than {MAX_SOURCE_BYTES} bytes")
    return raw.decode("utf-8-sig")


def parse_number(text):
    """The finite float in `text`, or None (NaN and infinities count as text)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe_column(name, values):
    """Statistics of one column.

    Empty cells are missing; a column whose other cells are all numbers is numeric.
    """
    present = [value for value in values if value.strip() != ""]
    numbers = [parse_number(value) for value in present]
    description = {"name": name, "count": len(present), "missing": len(values) - len(present)}
    if present and all(number is not None for number in numbers):
        description.update(
            type="numeric",
            min=min(numbers),
            max=max(numbers),
            mean=math.fsum(numbers) / len(numbers),
        )
    else:
        description.update(type="text", distinct=len(set(present)))
    return description


def csv_statistics(text, source_name):
    """Row and column statistics of a CSV document whose first row is the header."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ValueError(f"{source_name} has no header row")
    header, body = rows[0], [row for row in rows[1:] if row]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{source_name} row {number} has {len(row)} fields; the header has {len(header)}"
            )
    return {
        "source": source_name,
        "row_count": len(body),
        "column_count": len(header),
        "columns": [
            describe_column(name, [row[i] for row in body]) for i, name in enumerate(header)
        ],
    }


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

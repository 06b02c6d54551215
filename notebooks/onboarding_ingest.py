# Databricks notebook source
# MAGIC %md
# MAGIC # Customer onboarding, job 1 of 3: ingest the upload
# MAGIC
# MAGIC Reads the customer's CSV at the job parameter `upload`, cleans it, and writes the clean
# MAGIC copy where the next two jobs (`onboarding_risk_score.py`, `onboarding_report.py`) read it:
# MAGIC the volume `/Volumes/main/onboarding/ingested/`, in a file named after its content
# MAGIC (`onboarding_tables`), so a rerun writes the same file. The result, reported with a signed
# MAGIC callback and as the exit value, is `{"table", "rows", "columns", "source"}`: `table` is what
# MAGIC the next jobs take as their own `table` parameter.
# MAGIC
# MAGIC `upload` follows the same rule as `pipeline.py`'s `source` (`pipeline_sources`, the
# MAGIC operator's `pipeline_sources.json`): a workspace file under `/Workspace/Shared/pipelines/`
# MAGIC or an https URL of a listed host. Empty: the sample
# MAGIC `/Workspace/Shared/pipelines/samples/customers.csv`.
# MAGIC
# MAGIC **Cleaning**: cells and column names lose their surrounding spaces; blank rows and rows
# MAGIC repeated exactly are dropped. An upload without a header, with an empty or repeated column
# MAGIC name, a row of the wrong width, or no customer rows at all is refused, naming what is wrong.

# COMMAND ----------

# DBTITLE 1,Ingest
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
import csv
import io

import onboarding_tables
import pipeline_sources
from csv_summary import parse_csv

#: An upload larger than this is refused rather than read into the driver's memory.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: How long an https upload may take to answer.
UPLOAD_TIMEOUT_SECONDS = 60
#: What an empty `upload` reads, so the pipeline can be tried without data of one's own.
SAMPLE_UPLOAD = "/Workspace/Shared/pipelines/samples/customers.csv"


def upload_path(upload):
    """Where the upload is: the parameter, or the sample when it is empty."""
    return upload.strip() or SAMPLE_UPLOAD


def cleaned(text, source_name):
    """The header and the distinct, non-blank rows of the upload, every cell stripped."""
    header, body = parse_csv(text, source_name)
    header = [name.strip() for name in header]
    if not all(header):
        raise ValueError(f"{source_name}: column {header.index('') + 1} has no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"{source_name}: columns named more than once: {', '.join(repeated)}")
    rows = {}
    for row in body:
        stripped = tuple(cell.strip() for cell in row)
        if any(stripped):
            rows.setdefault(stripped, None)  # a dict keeps the first of each in order
    if not rows:
        raise ValueError(f"{source_name} has no customer rows")
    return header, list(rows)


def ingest(upload):
    """Read, clean and write the upload; the job's result."""
    source = upload_path(upload)
    policy = pipeline_sources.load_policy()
    text = pipeline_sources.read_text(source, policy, MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT_SECONDS)
    header, rows = cleaned(text, source)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    table = onboarding_tables.write_table(out.getvalue())
    return {"table": table, "rows": len(rows), "columns": header, "source": source}


# COMMAND ----------

# DBTITLE 1,Run as a pipeline job
from pipeline_callback import pipeline_run

with pipeline_run(dbutils, defaults={"upload": ""}) as run:
    run.result = ingest(run.parameters["upload"])

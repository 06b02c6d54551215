# Databricks notebook source
# MAGIC %md
# MAGIC # Customer onboarding, job 2 of 3: risk score
# MAGIC
# MAGIC Scores the customer table ingest wrote (the job parameter `table`, a path ingest gave as
# MAGIC its result) from 0 to 100: the share of customer rows with a missing value, in percent,
# MAGIC rounded half up. The same table always gets the same score. The result, reported with a
# MAGIC signed callback and as the exit value, is `{"score", "rows", "incomplete_rows"}`; the
# MAGIC onboarding pipeline asks a person to approve when the score reaches its threshold.
# MAGIC
# MAGIC `table` is refused unless it is a file ingest could have written
# MAGIC (`/Volumes/main/onboarding/ingested/customers-<16 hex>.csv`) whose content still matches
# MAGIC its name (`onboarding_tables`): nothing else is opened.

# COMMAND ----------

# DBTITLE 1,Score
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
import onboarding_tables
from csv_summary import parse_csv


def risk_score(table):
    """The table's score: percent of rows with an empty cell, rounded half up (0 to 100)."""
    _, rows = parse_csv(onboarding_tables.read_table(table), table)
    incomplete = sum(1 for row in rows if any(cell.strip() == "" for cell in row))
    # Integer arithmetic, so 12.5 is 13 on every platform (round() would give 12).
    score = (200 * incomplete + len(rows)) // (2 * len(rows)) if rows else 0
    return {"score": score, "rows": len(rows), "incomplete_rows": incomplete}


# COMMAND ----------

# DBTITLE 1,Run as a pipeline job
from pipeline_callback import pipeline_run

with pipeline_run(dbutils, defaults={"table": ""}) as run:
    run.result = risk_score(run.parameters["table"])

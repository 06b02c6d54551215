# Databricks notebook source
# MAGIC %md
# MAGIC # Customer onboarding, job 3 of 3: report
# MAGIC
# MAGIC Builds the customer's onboarding report from the table ingest wrote (the job parameter
# MAGIC `table`, checked as `onboarding_risk_score.py` checks it): how many customers, and each
# MAGIC column described as the CSV statistics describe one (`csv_summary`: numeric columns get
# MAGIC count/min/max/mean, others their number of distinct values; empty cells count as missing).
# MAGIC The result, reported with a signed callback and as the exit value, is
# MAGIC `{"report": {"table", "rows", "columns": [...]}, "rows"}`.

# COMMAND ----------

# DBTITLE 1,Report
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
import onboarding_tables
from csv_summary import csv_statistics


def onboarding_report(table):
    """The report of the table, and its number of rows."""
    statistics = csv_statistics(onboarding_tables.read_table(table), table)
    report = {"table": table, "rows": statistics["row_count"], "columns": statistics["columns"]}
    return {"report": report, "rows": statistics["row_count"]}


# COMMAND ----------

# DBTITLE 1,Run as a pipeline job
from pipeline_callback import pipeline_run

with pipeline_run(dbutils, defaults={"table": ""}) as run:
    run.result = onboarding_report(run.parameters["table"])

# Databricks notebook source
# MAGIC %md
# MAGIC # Customer report, task 3 of 3: publish
# MAGIC
# MAGIC Publishes the report the SQL task (`customer_aggregate.sql`) built for `customer` and
# MAGIC `period`, and exits with where it is, as JSON: `{"published": true, "customer",
# MAGIC "period", "report_url"}`. This task's exit value is the pipeline's result (the catalogue's
# MAGIC `result_task`). The job runs it only when the extract and the aggregate succeeded.

# COMMAND ----------

# DBTITLE 1,Publish
# ruff: noqa: F821 (the runtime provides dbutils)
import json
import urllib.parse

#: Where published reports are read; the report of a customer and period has its own path.
REPORTS_URL = "https://reports.example.com/customers"

dbutils.widgets.text("customer", "", "Customer id (C-...)")
dbutils.widgets.text("period", "month", "Period (week, month or quarter)")
customer = dbutils.widgets.get("customer").strip()
period = dbutils.widgets.get("period").strip()
if not customer:
    raise ValueError("widget 'customer' is required: the id of the customer whose report to publish")

report_url = f"{REPORTS_URL}/{urllib.parse.quote(customer)}/{urllib.parse.quote(period)}"
print(f"published the {period} report of {customer}: {report_url}")
dbutils.notebook.exit(json.dumps({"published": True, "customer": customer, "period": period, "report_url": report_url}))

# Databricks notebook source
# MAGIC %md
# MAGIC # Test notebook: the last task of the report job
# MAGIC
# MAGIC Exits with `published`, padded to `report_bytes` when that is larger (to see how much of
# MAGIC an exit value get-output returns).

# COMMAND ----------

# ruff: noqa: F821 (the runtime provides dbutils)
dbutils.widgets.text("report_bytes", "0")
size = int(dbutils.widgets.get("report_bytes"))
dbutils.notebook.exit("published".ljust(size, "."))

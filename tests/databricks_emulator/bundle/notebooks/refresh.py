# Databricks notebook source
# MAGIC %md
# MAGIC # Test notebook: refreshes a table and tells nobody (the job's notifications do)

# COMMAND ----------

# ruff: noqa: F821 (the runtime provides dbutils)
dbutils.widgets.text("table", "sales")
print(f"refreshed {dbutils.widgets.get('table')}")

# Databricks notebook source
# MAGIC %md
# MAGIC # Test notebook: the first task of the report job

# COMMAND ----------

# ruff: noqa: F821 (the runtime provides dbutils)
import json

dbutils.widgets.text("customer", "")
customer = dbutils.widgets.get("customer")
print(f"extracting the orders of {customer}")
dbutils.notebook.exit(json.dumps({"customer": customer, "orders": 3}))

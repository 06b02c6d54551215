# Databricks notebook source
# MAGIC %md
# MAGIC # Test notebook: the shape of a CSV, reported with a signed callback
# MAGIC
# MAGIC Reads the CSV at the `source` widget (a path or an http(s) URL; a six-row sample when
# MAGIC empty), reports its rows and columns to `callback_url` signed with `callback_signing_key`,
# MAGIC and exits with the same result. A failure is reported, then raised.

# COMMAND ----------

# DBTITLE 1,Inputs
# ruff: noqa: F821 (the runtime provides dbutils)
import csv
import io
import json
import urllib.request

from callback import post_signed

for name in ("pipeline_id", "callback_promise_id", "callback_url", "callback_signing_key", "source"):
    dbutils.widgets.text(name, "")
promise_id = dbutils.widgets.get("callback_promise_id")
callback_url = dbutils.widgets.get("callback_url").strip()
signing_key = dbutils.widgets.get("callback_signing_key")
source = dbutils.widgets.get("source").strip()

# COMMAND ----------

# DBTITLE 1,Shape and callback
SAMPLE = "city,country,population,area,founded\n" + "x,y,1,2,3\n" * 6


def read(source):
    if not source:
        return SAMPLE, "built-in sample"
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            return response.read().decode(), source
    with open(source) as handle:
        return handle.read(), source


try:
    text, name = read(source)
    header, *rows = list(csv.reader(io.StringIO(text)))
    result = {"source": name, "row_count": len(rows), "column_count": len(header), "columns": header}
except Exception as error:
    if callback_url:
        failure = {"type": type(error).__name__, "message": str(error)}
        post_signed(callback_url, signing_key, {"promise_id": promise_id, "status": "failure", "error": failure})
    raise
if callback_url:
    post_signed(callback_url, signing_key, {"promise_id": promise_id, "status": "success", "result": result})

# COMMAND ----------

# DBTITLE 1,Exit value
dbutils.notebook.exit(json.dumps(result))

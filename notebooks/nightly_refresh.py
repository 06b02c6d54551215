# Databricks notebook source
# MAGIC %md
# MAGIC # Nightly refresh
# MAGIC
# MAGIC Rebuilds one reporting table, `table` (`sales`, `inventory` or `customers`), from its
# MAGIC source rows, and exits with the row counts as JSON.
# MAGIC
# MAGIC This notebook knows nothing of the pipeline service, as a notebook written before it
# MAGIC would not: no callback, no signing key. The job's webhook notifications tell the service
# MAGIC when a run starts and ends, and the service then reads the outcome (this exit value, or
# MAGIC the error) from the run itself.
# MAGIC
# MAGIC The source rows are built in memory so that the notebook runs anywhere, and each refresh
# MAGIC of a table gives the same table.

# COMMAND ----------

# DBTITLE 1,Inputs
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
dbutils.widgets.text("table", "sales", "Table (sales, inventory or customers)")
table = dbutils.widgets.get("table")

# COMMAND ----------

# DBTITLE 1,Refresh
REGIONS = ("north", "south", "east", "west")
SEGMENTS = ("retail", "wholesale", "online")

#: Each table's source rows, the column its reporting table groups them by, and the column it
#: sums (None: it only counts).
TABLES = {
    "sales": (
        [{"region": REGIONS[i % 4], "units": i * 7 % 11 + 1} for i in range(120)],
        "region",
        "units",
    ),
    "inventory": (
        [{"warehouse": f"W{i % 3 + 1}", "on_hand": i * 13 % 50} for i in range(75)],
        "warehouse",
        "on_hand",
    ),
    "customers": (
        [{"segment": SEGMENTS[i % 3], "customer": f"C-{1000 + i}"} for i in range(60)],
        "segment",
        None,
    ),
}


def refresh(table):
    """The reporting table rebuilt from its source rows: one row a group, with its count (and sum)."""
    if table not in TABLES:
        raise ValueError(f"widget 'table' must be one of {', '.join(TABLES)}, not {table!r}")
    rows, key, measure = TABLES[table]
    groups = {}
    for row in rows:
        group = groups.setdefault(row[key], {key: row[key], "rows": 0})
        group["rows"] += 1
        if measure is not None:
            group[measure] = group.get(measure, 0) + row[measure]
    return {
        "table": table,
        "source_rows": len(rows),
        "rows": len(groups),
        "summary": sorted(groups.values(), key=lambda group: group[key]),
    }


summary = refresh(table)
print(f"refreshed {table}: {summary['rows']} rows from {summary['source_rows']} source rows")

# COMMAND ----------

# DBTITLE 1,Exit value
import json

dbutils.notebook.exit(json.dumps(summary))

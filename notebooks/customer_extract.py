# Databricks notebook source
# MAGIC %md
# MAGIC # Customer report, task 1 of 3: extract
# MAGIC
# MAGIC Extracts one customer's orders for the period, for the SQL task (`customer_aggregate.sql`)
# MAGIC to aggregate and `customer_publish` to publish. Inputs: the job parameters `customer`
# MAGIC (an id like `C-1042`) and `period` (`week`, `month` or `quarter`).
# MAGIC
# MAGIC The orders are derived from the customer and the period, so the notebook runs anywhere
# MAGIC and a repeated run extracts the same orders; a real extract would read them from the
# MAGIC order system and write `reports.customer_orders`. Its exit value is the extract's
# MAGIC summary as JSON. Like the job's other tasks, it knows nothing of the pipeline service,
# MAGIC which reads the run's outcome by polling.

# COMMAND ----------

# DBTITLE 1,Inputs
# ruff: noqa: E402, F821 (each cell imports what it uses; the runtime provides dbutils)
import re

#: What a customer id looks like; anything else is refused before any work.
CUSTOMER_ID = re.compile(r"C-[0-9]+")
PERIODS = {"week": 7, "month": 30, "quarter": 91}

dbutils.widgets.text("customer", "", "Customer id (C-...)")
dbutils.widgets.text("period", "month", "Period (week, month or quarter)")
customer = dbutils.widgets.get("customer").strip()
period = dbutils.widgets.get("period").strip()
if not CUSTOMER_ID.fullmatch(customer):
    raise ValueError(f"widget 'customer' must be a customer id like C-1042, not {customer!r}")
if period not in PERIODS:
    raise ValueError(f"widget 'period' must be one of {', '.join(PERIODS)}, not {period!r}")

# COMMAND ----------

# DBTITLE 1,Extract
import random


def extract_orders(customer, period):
    """The customer's orders in the period: the same ones for the same customer and period."""
    rng = random.Random(f"{customer}/{period}")  # a str seed is hashed the same on every run
    count = rng.randint(1, 3) * PERIODS[period] // 7  # one to three orders a week
    return [
        {"order": f"{customer}-{number:05d}", "items": rng.randint(1, 5), "amount": round(rng.uniform(5, 250), 2)}
        for number in range(1, count + 1)
    ]


orders = extract_orders(customer, period)
extract = {
    "customer": customer,
    "period": period,
    "orders": len(orders),
    "items": sum(order["items"] for order in orders),
    "amount": round(sum(order["amount"] for order in orders), 2),
}
print(f"extracted {extract['orders']} orders of {customer} for the {period}")

# COMMAND ----------

# DBTITLE 1,Exit value
import json

dbutils.notebook.exit(json.dumps(extract))

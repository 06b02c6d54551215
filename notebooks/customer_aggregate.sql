-- Customer report, task 2 of 3: aggregate (a SQL task on the job's SQL warehouse).
--
-- Sums the orders that customer_extract wrote to reports.customer_orders into one row of
-- reports.customer_summaries for the customer and period, which customer_publish then
-- publishes. The job parameters `customer` and `period` reach this file as the named
-- parameters :customer and :period. A MERGE keyed by customer and period, so a repeated run
-- (a repair) replaces its own row and runs for other customers never touch it.
--
-- Not executed by the Databricks emulator, which has no SQL warehouse.

CREATE TABLE IF NOT EXISTS reports.customer_summaries (
  customer_id STRING NOT NULL,
  period STRING NOT NULL,
  period_start DATE NOT NULL,
  orders BIGINT NOT NULL,
  items BIGINT NOT NULL,
  amount DECIMAL(18, 2) NOT NULL,
  refreshed_at TIMESTAMP NOT NULL
);

MERGE INTO reports.customer_summaries AS summary
USING (
  SELECT
    :customer AS customer_id,
    :period AS period,
    date_trunc(:period, current_date()) :: DATE AS period_start,
    count(*) AS orders,
    coalesce(sum(items), 0) AS items,
    coalesce(sum(amount), 0) :: DECIMAL(18, 2) AS amount,
    current_timestamp() AS refreshed_at
  FROM reports.customer_orders
  WHERE customer_id = :customer
    AND order_date >= date_trunc(:period, current_date())
) AS fresh
ON summary.customer_id = fresh.customer_id AND summary.period = fresh.period
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *;

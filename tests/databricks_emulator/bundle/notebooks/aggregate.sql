-- The report job's SQL task: the emulator models it as a timed step and never reads this.
SELECT customer, count(*) AS orders FROM orders GROUP BY customer;

-- The watchdog's sweep (services/worker pipeline_worker/watchdog.py).
--
-- A waiting job step leaves one watch record per run it waits on: a pending
-- promise of its pipeline tagged pipelines:watch (its value, the callback
-- promise it watches). Once an interval one worker lists them all, lists the
-- workspace's active runs, and reads from Databricks only the runs no longer
-- active. resonate-pg cannot search promises (promise.search answers 501), so
-- the list is read here, through one function the watchdog's role may call.

-- Only pending records are indexed: the index is as large as the number of
-- runs being waited on, however many finished pipelines the table keeps.
CREATE INDEX pipelines_watch_records ON resonate.promises (id)
    WHERE state = 'pending' AND tags ? 'pipelines:watch';

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipelines_watchdog') THEN
        CREATE ROLE pipelines_watchdog NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA pipelines TO pipelines_watchdog;

-- The pending watch records after ``after`` (by id), at most ``page`` of
-- them, each with the state of the callback promise it watches; a record or
-- callback past its timeout reads as timed out (the timer job may not have
-- run yet). Only what a watch needs: no other promise is readable this way.
CREATE FUNCTION pipelines.watched_runs(after text, page integer, now_ms bigint)
    RETURNS TABLE (id text, state text, param_headers jsonb, param_data text, value_headers jsonb, value_data text,
                   tags jsonb, timeout_at bigint, created_at bigint, settled_at bigint, callback_state text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT w.id, w.state, w.param_headers, w.param_data, w.value_headers, w.value_data, w.tags, w.timeout_at,
           w.created_at, w.settled_at,
           CASE WHEN c.id IS NULL THEN 'missing'
                WHEN c.state = 'pending' AND c.timeout_at <= now_ms THEN 'rejected_timedout'
                ELSE c.state END
      FROM resonate.promises w
      LEFT JOIN resonate.promises c ON c.id = w.tags->>'pipelines:watch'
     WHERE w.state = 'pending' AND w.tags ? 'pipelines:watch'
       AND w.id > after AND w.timeout_at > now_ms
     ORDER BY w.id
     LIMIT least(greatest(page, 1), 1000)
$$;
REVOKE ALL ON FUNCTION pipelines.watched_runs(text, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.watched_runs(text, integer, bigint) TO pipelines_watchdog;

-- One sweep per interval per worker group: every worker asks for the
-- interval it is in, and the first to ask sweeps it. A sweep whose worker
-- dies is not retried; the next interval's sweep reads everything again.
CREATE TABLE pipelines.watchdog_sweep (
    worker_group text NOT NULL,
    interval_start bigint NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (worker_group, interval_start)
);

CREATE FUNCTION pipelines.claim_sweep(worker_group text, interval_start bigint) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    -- A day of claims is kept: enough to see the sweeps in the table.
    DELETE FROM pipelines.watchdog_sweep s WHERE s.claimed_at < clock_timestamp() - interval '1 day';
    INSERT INTO pipelines.watchdog_sweep (worker_group, interval_start)
    VALUES (claim_sweep.worker_group, claim_sweep.interval_start) ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION pipelines.claim_sweep(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.claim_sweep(text, bigint) TO pipelines_watchdog;

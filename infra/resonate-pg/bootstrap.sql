-- Brings a resonate-pg database to the state this deployment wants. Run by
-- entrypoint.sh on every start, after the schema is in place, so that a
-- changed setting takes effect on the next restart. Every statement is
-- idempotent. psql variables: database, timer_interval, retention_days, index_logins,
-- watchdog_logins, cron_history; login roles and passwords arrive on standard input.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- Timers (promise timeouts, delayed tasks, lease expiry) advance only when
-- process_timeouts() runs. The schema schedules it every 5 s; a second keeps
-- a timed-out pipeline or a delayed watchdog check from waiting up to 5 s
-- more than asked. pg_cron is the one driver: the connector's own switches
-- itself off after its first failure, and the services' roles may not run it.
SELECT cron.schedule_in_database('resonate_process_timeouts', :'timer_interval',
    'SELECT resonate.process_timeouts()', :'database') AS timer_job \gset

-- A schedule's cron is in UTC (the catalogue's [pipelines.NAME.schedule]).
-- resonate-pg's _next_cron reads the cron's fields in the session's TimeZone,
-- which is the server's default for pg_cron but may be a client's own when a
-- schedule is created; pinned here, a firing's time is the same whoever asks.
ALTER FUNCTION resonate._next_cron(text, bigint) SET timezone = 'UTC';

-- Finished workflows stay until collected. gc() deletes at most 10,000
-- promises a call, so running it every minute keeps up with 600,000 an hour.
SELECT cron.schedule_in_database('resonate_gc', '* * * * *',
    format('SELECT resonate.gc((extract(epoch FROM now()) * 1000)::bigint - %s::bigint * 86400000)',
           :'retention_days'),
    :'database') AS gc_job \gset

-- pg_cron records every run; at one timer run a second that is 86,400 rows a
-- day. Keep a short window: enough to see a failing job.
SELECT cron.schedule_in_database('resonate_cron_history', '*/10 * * * *',
    format('DELETE FROM cron.job_run_details WHERE end_time < now() - interval %L', :'cron_history'),
    :'database') AS history_job \gset

-- One login role per service, each holding only the schema's least-privilege
-- role. Passwords are set on every start, so changing one is a restart.
CREATE TEMP TABLE wanted_login (name text PRIMARY KEY, password text NOT NULL);
\copy wanted_login FROM pstdin
SELECT format('CREATE ROLE %I LOGIN', name) FROM wanted_login
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', name, password) FROM wanted_login \gexec
SELECT format('GRANT resonate_worker TO %I', name) FROM wanted_login \gexec
-- A service taken out of the list can no longer log in (its role stays, so
-- nothing that names it breaks).
SELECT format('ALTER ROLE %I NOLOGIN', r.rolname)
  FROM pg_roles r
  JOIN pg_auth_members m ON m.member = r.oid
  JOIN pg_roles g ON g.oid = m.roleid AND g.rolname = 'resonate_worker'
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname NOT IN (SELECT name FROM wanted_login) \gexec

SELECT count(*) AS logins FROM wanted_login \gset
\echo resonate-pg: timers every :timer_interval, settled workflows kept :retention_days days, :logins login roles

-- The logins that keep and read the pipeline index (the gateway's); its
-- migrations made the role (infra/pipeline-index).
SELECT format('GRANT pipelines_index TO %I', name)
  FROM regexp_split_to_table(:'index_logins', '\s+') AS name WHERE name <> '' \gexec

-- The logins whose watchdog sweeps the waiting runs (the worker's); its
-- migration made the role (infra/pipeline-index/migrations/0006).
SELECT format('GRANT pipelines_watchdog TO %I', name)
  FROM regexp_split_to_table(:'watchdog_logins', '\s+') AS name WHERE name <> '' \gexec

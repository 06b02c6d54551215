-- Brings a resonate-pg database to the state this deployment wants: login
-- roles, their grants, and the pg_cron jobs. Run by apply.sh (at every start
-- of the image, and by `apply` against a Postgres of your own) after the
-- schema and migrations are in place, so that a changed setting takes effect
-- on the next run. Every statement is idempotent, and none needs a superuser:
-- the role running it created the roles it grants (so holds ADMIN OPTION on
-- them) and owns the schema. psql variables: database, cron_database,
-- timer_interval, retention_days, index_logins, watchdog_logins,
-- cron_history; login roles and passwords arrive on standard input.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- A schedule's cron is in UTC (the catalogue's [pipelines.NAME.schedule]).
-- resonate-pg's _next_cron reads the cron's fields in the session's TimeZone,
-- which is the server's default for pg_cron but may be a client's own when a
-- schedule is created; pinned here, a firing's time is the same whoever asks.
ALTER FUNCTION resonate._next_cron(text, bigint) SET timezone = 'UTC';

-- One login role per service, each holding only the schema's least-privilege
-- role. Passwords are set on every run (each start of the image, each apply),
-- so changing one takes a restart or an apply.
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
 WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname NOT IN (SELECT name FROM wanted_login)
   -- Not the role running this: a role that is not a superuser is made a
   -- member (WITH ADMIN OPTION) of every role it creates, resonate_worker too.
   AND NOT m.admin_option AND r.rolname <> current_user \gexec

SELECT count(*) AS logins FROM wanted_login \gset

-- The logins that keep and read the pipeline index (the gateway's); its
-- migrations made the role (infra/pipeline-index).
SELECT format('GRANT pipelines_index TO %I', name)
  FROM regexp_split_to_table(:'index_logins', '\s+') AS name WHERE name <> '' \gexec

-- The logins whose watchdog sweeps the waiting runs (the worker's); its
-- migration made the role (infra/pipeline-index/migrations/0006).
SELECT format('GRANT pipelines_watchdog TO %I', name)
  FROM regexp_split_to_table(:'watchdog_logins', '\s+') AS name WHERE name <> '' \gexec

-- The jobs live in the database pg_cron runs in (cron.database_name: often
-- `postgres` on a managed service, the resonate database in this image) and
-- each is scheduled into the database it works on. A job runs as the role
-- that scheduled it, which owns the schema; scheduled again under the same
-- name by the same role, a job is updated in place.
\connect :cron_database
SET client_min_messages = warning;

-- pg_cron 1.4 and later keep cron.schedule_in_database from PUBLIC, and not
-- every managed service grants it to its admin role. Where the role may not
-- call it, the job is scheduled here with cron.schedule and moved to its
-- database with UPDATE cron.job, the way Amazon RDS documents it ("Scheduling
-- a cron job for a database other than postgres"); apply.sh checks first that
-- one of the two is allowed. One statement, so pg_cron never sees the job in
-- the wrong database. A temporary function: nothing is left behind.
CREATE FUNCTION pg_temp.schedule_job(job text, schedule text, command text, db text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    IF has_function_privilege('cron.schedule_in_database(text,text,text,text,text,boolean)', 'EXECUTE') THEN
        RETURN cron.schedule_in_database(job, schedule, command, db);
    END IF;
    id := cron.schedule(job, schedule, command);
    IF db <> current_database() THEN
        UPDATE cron.job SET database = db WHERE jobid = id;
    END IF;
    RETURN id;
END
$$;

-- Timers (promise timeouts, delayed tasks, lease expiry) advance only when
-- process_timeouts() runs. The schema schedules it every 5 s; a second keeps
-- a timed-out pipeline or a delayed watchdog check from waiting up to 5 s
-- more than asked. pg_cron is the one driver: the connector's own switches
-- itself off after its first failure, and the services' roles may not run it.
SELECT pg_temp.schedule_job('resonate_process_timeouts', :'timer_interval',
    'SELECT resonate.process_timeouts()', :'database') AS timer_job \gset

-- Finished workflows stay until collected. gc() deletes at most 10,000
-- promises a call, so running it every minute keeps up with 600,000 an hour.
SELECT pg_temp.schedule_job('resonate_gc', '* * * * *',
    format('SELECT resonate.gc((extract(epoch FROM now()) * 1000)::bigint - %s::bigint * 86400000)',
           :'retention_days'),
    :'database') AS gc_job \gset

-- pg_cron records every run; at one timer run a second that is 86,400 rows a
-- day. Keep a short window: enough to see a failing job.
-- It works on pg_cron's own table, so it runs in pg_cron's database; run by a
-- role that is not a superuser it sees, and deletes, its own jobs' runs only
-- (pg_cron's row security), which are these jobs'.
SELECT pg_temp.schedule_job('resonate_cron_history', '*/10 * * * *',
    format('DELETE FROM cron.job_run_details WHERE end_time < now() - interval %L', :'cron_history'),
    :'cron_database') AS history_job \gset

\echo resonate-pg: timers every :timer_interval, settled workflows kept :retention_days days, :logins login roles

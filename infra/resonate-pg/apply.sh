#!/usr/bin/env bash
# Bring a Postgres database to the state the services need: resonate.sql, the
# pipeline index's migrations, the login roles and the pg_cron jobs.
#
# One script, two callers:
#   - the image's own start (entrypoint.sh), over the bootstrap Unix socket as
#     the cluster's superuser, before the server listens on TCP;
#   - `docker run <image> apply`, against a Postgres 16+ the team already runs
#     (a managed service, say), named by the standard libpq variables (PGHOST,
#     PGPORT, PGUSER, PGPASSWORD, PGSSLMODE, ...) and run as its admin role,
#     which need not be a superuser (docs/production.md, "Bring your own
#     Postgres", says what it needs and why).
# Every step is idempotent: a second run changes nothing but re-setting the
# login roles' passwords. A step that cannot be done stops the run with a
# message naming what is missing; resonate.sql and each migration go in as one
# transaction each, so nothing is half applied.
#
# It writes no file (a Kubernetes Job may run it on a read-only file system).
#
# Settings (environment), beyond libpq's:
#   RESONATE_PG_DATABASE         the database holding the schema (default: PGDATABASE,
#                                else resonate); created if missing (needs CREATEDB)
#   RESONATE_PG_CRON_DATABASE    the database pg_cron keeps its jobs in (its
#                                cron.database_name); default: that setting where
#                                this role may read it, else postgres (pg_cron's default)
#   RESONATE_PG_LOGINS           login roles to create, space-separated; each gets
#                                the schema's least-privilege role resonate_worker
#                                and the password in RESONATE_PG_PASSWORD_<role>
#   RESONATE_PG_INDEX_LOGINS     login roles (of RESONATE_PG_LOGINS) that keep and read
#                                the pipeline index, space-separated (the gateway's)
#   RESONATE_PG_WATCHDOG_LOGINS  login roles (of RESONATE_PG_LOGINS) whose watchdog lists
#                                the runs being waited on, space-separated (the worker's)
#   RESONATE_PG_TIMER_INTERVAL   how often timers are advanced (default "1 second")
#   RESONATE_PG_RETENTION_DAYS   settled workflows are deleted this long after
#                                they finished (default 30)
#   RESONATE_PG_CRON_HISTORY     how long pg_cron keeps each run's record (default "1 hour")
set -euo pipefail

log() { printf 'resonate-pg: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

#: Where the image keeps what it applies (infra/resonate-pg/Dockerfile puts them there).
SCHEMA_DIR=/opt/resonate-pg/schema
MIGRATIONS=/opt/pipeline-index/migrations
BOOTSTRAP_SQL=/opt/resonate-pg/bootstrap.sql
#: The oldest Postgres resonate.sql supports (its header: "Postgres 16+").
MIN_SERVER_VERSION_NUM=160000
#: Where a missing database is created from: every Postgres has it, managed ones included.
MAINTENANCE_DATABASE=postgres
#: pg_cron's scheduling function for a job in another database; PUBLIC may not
#: call it (pg_cron 1.4 revokes it), so the role needs it granted, or UPDATE on
#: cron.job to move a job (bootstrap.sql), or to be a superuser.
SCHEDULE_IN_DATABASE='cron.schedule_in_database(text,text,text,text,text,boolean)'

DATABASE="${RESONATE_PG_DATABASE:-${PGDATABASE:-resonate}}"
[[ "$DATABASE" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] \
    || die "RESONATE_PG_DATABASE (or PGDATABASE): '$DATABASE' is not a plain database name (lower case letters, digits, _)"
if [[ -n "${RESONATE_PG_DATABASE:-}" && -n "${PGDATABASE:-}" && "$RESONATE_PG_DATABASE" != "$PGDATABASE" ]]; then
    die "RESONATE_PG_DATABASE ($RESONATE_PG_DATABASE) and PGDATABASE ($PGDATABASE) name two databases; set one"
fi
RETENTION_DAYS="${RESONATE_PG_RETENTION_DAYS:-30}"
[[ "$RETENTION_DAYS" =~ ^[1-9][0-9]{0,4}$ ]] || die "RESONATE_PG_RETENTION_DAYS: '$RETENTION_DAYS' is not a whole number of days (1 or more)"
export PGAPPNAME="${PGAPPNAME:-resonate-pg-apply}"

# Roles and their passwords, as "name<TAB>password" lines for bootstrap.sql's
# standard input (never on a command line, where `ps` would show them).
logins=""
for role in ${RESONATE_PG_INDEX_LOGINS:-}; do
    [[ " ${RESONATE_PG_LOGINS:-} " == *" $role "* ]] || die "RESONATE_PG_INDEX_LOGINS: '$role' is not one of RESONATE_PG_LOGINS"
done
for role in ${RESONATE_PG_WATCHDOG_LOGINS:-}; do
    [[ " ${RESONATE_PG_LOGINS:-} " == *" $role "* ]] || die "RESONATE_PG_WATCHDOG_LOGINS: '$role' is not one of RESONATE_PG_LOGINS"
done
for role in ${RESONATE_PG_LOGINS:-}; do
    [[ "$role" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "RESONATE_PG_LOGINS: '$role' is not a plain role name"
    password_var="RESONATE_PG_PASSWORD_$role"
    password="${!password_var:-}"
    [[ -n "$password" ]] || die "set $password_var: the password of login role $role"
    [[ "$password" != *[$'\t\n\r']* ]] || die "$password_var: a password cannot hold tabs or line breaks"
    # COPY's text format: a backslash is an escape, so it is doubled.
    logins+="$role"$'\t'"${password//\\/\\\\}"$'\n'
done

run_psql() { psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 "$@"; }
query() { run_psql --dbname="$1" --tuples-only --no-align --command="$2"; }
# Runs psql, showing its messages only when it fails; then stops with $1.
psql_or_die() {
    local reason="$1" output
    shift
    if ! output="$(run_psql "$@" 2>&1 >/dev/null)"; then
        printf '%s\n' "$output" >&2
        die "$reason"
    fi
}

# --- Where, as whom, and what the server offers ------------------------------------
# Every check comes before the first write, so a run refused leaves the server as it was.

target="${PGHOST:-the default socket}${PGPORT:+:$PGPORT}"
missing=""
probe="$DATABASE"
if ! query "$DATABASE" "SELECT 1" >/dev/null 2>&1; then
    if ! exists="$(query "$MAINTENANCE_DATABASE" "SELECT count(*) FROM pg_database WHERE datname = '$DATABASE'" 2>&1)"; then
        printf '%s\n' "$exists" >&2
        die "cannot connect to Postgres at $target as ${PGUSER:-$(id -un)} (database $DATABASE, nor $MAINTENANCE_DATABASE to create it)"
    fi
    if [[ "$exists" != 0 ]]; then
        query "$DATABASE" "SELECT 1" >/dev/null || die "cannot connect to database $DATABASE at $target"
    fi
    missing=yes
    probe="$MAINTENANCE_DATABASE"
fi

IFS='|' read -r server_version user superuser createrole createdb < <(query "$probe" "SELECT
    current_setting('server_version_num'), current_user, rolsuper, rolsuper OR rolcreaterole, rolsuper OR rolcreatedb
    FROM pg_roles WHERE rolname = current_user")
((server_version >= MIN_SERVER_VERSION_NUM)) \
    || die "Postgres $(query "$probe" "SHOW server_version") is too old: resonate-pg needs 16 or later"
[[ "$createrole" == t ]] \
    || die "role $user has neither SUPERUSER nor CREATEROLE: it creates resonate_worker, pipelines_index, pipelines_watchdog and the login roles"
[[ -z "$missing" || "$createdb" == t ]] \
    || die "database $DATABASE does not exist and role $user may not create it (no CREATEDB): create it owned by $user, or grant CREATEDB"

# pg_cron keeps its jobs in one database, cron.database_name (`postgres` unless
# set). Only a superuser or a member of pg_read_all_settings may read that
# setting; anyone else is refused, which still tells that pg_cron is loaded:
# a server without it does not know the setting at all.
if cron_setting="$(query "$probe" "SHOW cron.database_name" 2>&1)"; then
    if [[ -n "${RESONATE_PG_CRON_DATABASE:-}" && "$RESONATE_PG_CRON_DATABASE" != "$cron_setting" ]]; then
        die "pg_cron runs in database $cron_setting (its cron.database_name), not $RESONATE_PG_CRON_DATABASE: set RESONATE_PG_CRON_DATABASE=$cron_setting"
    fi
elif [[ "$cron_setting" == *"unrecognized configuration parameter"* ]]; then
    die "pg_cron is not loaded on this server: add pg_cron to shared_preload_libraries (a managed service's parameter or flag: docs/production.md), set cron.database_name, restart, then CREATE EXTENSION pg_cron in that database"
else
    # Refused to this role: pg_cron is loaded; its database is the one named, or pg_cron's default.
    cron_setting=""
fi
CRON_DATABASE="${RESONATE_PG_CRON_DATABASE:-${cron_setting:-postgres}}"
[[ "$CRON_DATABASE" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] || die "RESONATE_PG_CRON_DATABASE: '$CRON_DATABASE' is not a plain database name"

# pg_cron created in its database (by a superuser here, if missing), and this role allowed to schedule from there.
check_pg_cron() {
    local version
    version="$(query "$CRON_DATABASE" "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")" \
        || die "cannot connect to database $CRON_DATABASE, where pg_cron keeps its jobs (RESONATE_PG_CRON_DATABASE)"
    if [[ -z "$version" ]]; then
        [[ "$superuser" == t ]] \
            || die "pg_cron is not created in database $CRON_DATABASE: as the server's administrator, CREATE EXTENSION pg_cron there (or, if cron.database_name names another database, set RESONATE_PG_CRON_DATABASE to it)"
        log "creating extension pg_cron in database $CRON_DATABASE"
        psql_or_die "could not create extension pg_cron in database $CRON_DATABASE (is cron.database_name '$CRON_DATABASE'?)" \
            --dbname="$CRON_DATABASE" --command="CREATE EXTENSION pg_cron"
    fi
    # Into another database: with schedule_in_database, or by moving the job (bootstrap.sql says why).
    [[ "$(query "$CRON_DATABASE" "SELECT has_schema_privilege('cron', 'USAGE')
        AND (has_function_privilege('$SCHEDULE_IN_DATABASE', 'EXECUTE') OR has_table_privilege('cron.job', 'UPDATE')
             OR current_database() = '$DATABASE')")" == t ]] \
        || die "role $user may not schedule pg_cron jobs into database $DATABASE: in database $CRON_DATABASE, GRANT USAGE ON SCHEMA cron TO $user; GRANT EXECUTE ON FUNCTION $SCHEDULE_IN_DATABASE TO $user"
}

# pg_cron's database is checked before anything is written, unless it is the
# database still to be created (the image's first start, as the superuser).
if [[ -z "$missing" || "$CRON_DATABASE" != "$DATABASE" ]]; then
    check_pg_cron
fi
if [[ -n "$missing" ]]; then
    log "creating database $DATABASE"
    psql_or_die "could not create database $DATABASE" --dbname="$MAINTENANCE_DATABASE" --command="CREATE DATABASE \"$DATABASE\""
    if [[ "$CRON_DATABASE" == "$DATABASE" ]]; then
        check_pg_cron
    fi
fi
[[ "$(query "$DATABASE" "SELECT has_database_privilege(current_database(), 'CREATE')")" == t ]] \
    || die "role $user may not create schemas in database $DATABASE: make it the database's owner, or GRANT CREATE ON DATABASE $DATABASE TO $user"

# --- resonate.sql ------------------------------------------------------------------

installed=""
if [[ "$(query "$DATABASE" "SELECT to_regprocedure('resonate.get_schema_version()') IS NOT NULL")" == t ]]; then
    installed="$(query "$DATABASE" "SELECT resonate.get_schema_version()")"
fi
bundled="$(cat "$SCHEMA_DIR/VERSION")"
if [[ -z "$installed" ]]; then
    log "applying resonate.sql (schema $bundled, commit $(cat "$SCHEMA_DIR/COMMIT"))"
    # Its notices and warnings (pg_cron scheduled, or not from here) are
    # expected: the jobs are scheduled below, in pg_cron's own database.
    psql_or_die "resonate.sql did not apply; the database is as it was" \
        --dbname="$DATABASE" --single-transaction --file="$SCHEMA_DIR/resonate.sql"
elif [[ "$installed" != "$bundled" ]]; then
    die "the database holds resonate-pg schema $installed, this image carries $bundled; resonate.sql has no upgrade path, so migrate by hand or keep the older image"
else
    log "schema $installed already in place"
fi

# --- The pipeline index's migrations ---------------------------------------------

# In order, each in one transaction with its record in pipelines.schema_migrations.
# An applied migration whose file has changed since, or a database that has one
# this image does not carry, stops the run: a migration is never rewritten.
psql_or_die "could not create the pipeline index's migration record" --dbname="$DATABASE" \
    --command="SET client_min_messages = warning" \
    --command="CREATE SCHEMA IF NOT EXISTS pipelines" \
    --command="CREATE TABLE IF NOT EXISTS pipelines.schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"
carried=""
for file in "$MIGRATIONS"/[0-9][0-9][0-9][0-9]_*.sql; do
    name="$(basename "$file" .sql)"
    version="$((10#${name%%_*}))"
    carried+=" $version"
    digest="$(sha256sum "$file" | cut -d' ' -f1)"
    applied="$(query "$DATABASE" "SELECT sha256 FROM pipelines.schema_migrations WHERE version = $version")"
    if [[ -z "$applied" ]]; then
        log "pipeline index: applying migration $name"
        psql_or_die "pipeline index migration $name did not apply; the database is as it was" \
            --dbname="$DATABASE" --single-transaction --file="$file" \
            --command="INSERT INTO pipelines.schema_migrations (version, name, sha256) VALUES ($version, '$name', '$digest')"
    elif [[ "$applied" != "$digest" ]]; then
        die "pipeline index migration $name changed after it was applied (sha256 $applied, now $digest); add a new migration instead"
    fi
done
unknown="$(query "$DATABASE" "SELECT string_agg(name, ', ') FROM pipelines.schema_migrations WHERE version NOT IN (0${carried// /, })")"
[[ -z "$unknown" ]] || die "the database has pipeline index migrations this image does not carry ($unknown); run the newer image"
log "pipeline index at migration $(query "$DATABASE" "SELECT max(version) FROM pipelines.schema_migrations")"

# --- Login roles and pg_cron jobs ----------------------------------------------------

printf '%s' "$logins" | run_psql --dbname="$DATABASE" \
    --set=database="$DATABASE" \
    --set=cron_database="$CRON_DATABASE" \
    --set=timer_interval="${RESONATE_PG_TIMER_INTERVAL:-1 second}" \
    --set=retention_days="$RETENTION_DAYS" \
    --set=cron_history="${RESONATE_PG_CRON_HISTORY:-1 hour}" \
    --set=index_logins="${RESONATE_PG_INDEX_LOGINS:-}" \
    --set=watchdog_logins="${RESONATE_PG_WATCHDOG_LOGINS:-}" \
    --file="$BOOTSTRAP_SQL" \
    || die "the login roles or pg_cron jobs could not be set (above: what failed)"
log "applied to database $DATABASE as $user (pg_cron in $CRON_DATABASE)"

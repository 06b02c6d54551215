#!/usr/bin/env bash
# Start resonate-pg: Postgres 17 with pg_cron and the resonate.sql schema.
#
# Every start, in order:
#   1. a cluster is created on first start (an empty data directory);
#   2. Postgres runs on its Unix socket only, while bootstrap.sql brings the
#      database to the wanted state: the schema applied once (never over a
#      different version), timers driven by pg_cron every second, finished
#      workflows collected after the retention period, pg_cron's own run
#      history kept short, one login role per service;
#   3. Postgres is restarted listening on TCP. Clients (and the healthcheck)
#      can reach it only from here on, so "reachable" means "bootstrapped".
# A bootstrap that fails stops the container with the reason; nothing is half
# applied, because the schema goes in as one transaction.
#
# Settings (environment):
#   POSTGRES_PASSWORD            the superuser's password (required)
#   POSTGRES_USER                the superuser (default postgres)
#   RESONATE_PG_DATABASE         the database holding the schema (default resonate)
#   RESONATE_PG_LOGINS           login roles to create, space-separated; each gets
#                                the schema's least-privilege role resonate_worker
#                                and the password in RESONATE_PG_PASSWORD_<role>
#   RESONATE_PG_TIMER_INTERVAL   how often timers are advanced (default "1 second")
#   RESONATE_PG_RETENTION_DAYS   settled workflows are deleted this long after
#                                they finished (default 30)
#   RESONATE_PG_CRON_HISTORY     how long pg_cron keeps each run's record (default "1 hour")
#   RESONATE_PG_INDEX_LOGINS     login roles (of RESONATE_PG_LOGINS) that keep and read
#                                the pipeline index, space-separated (the gateway's)
#   RESONATE_PG_WATCHDOG_LOGINS  login roles (of RESONATE_PG_LOGINS) whose watchdog lists
#                                the runs being waited on, space-separated (the worker's)
#   RESONATE_PG_MAX_CONNECTIONS  Postgres max_connections (default 200)
set -euo pipefail

: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the Resonate database superuser password}"
SUPERUSER="${POSTGRES_USER:-postgres}"
DATABASE="${RESONATE_PG_DATABASE:-resonate}"
[[ "$DATABASE" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "RESONATE_PG_DATABASE: '$DATABASE' is not a plain database name"
RETENTION_DAYS="${RESONATE_PG_RETENTION_DAYS:-30}"
[[ "$RETENTION_DAYS" =~ ^[1-9][0-9]{0,4}$ ]] || die "RESONATE_PG_RETENTION_DAYS: '$RETENTION_DAYS' is not a whole number of days (1 or more)"
SCHEMA_FILE=/opt/resonate-pg/schema/resonate.sql
#: Where the bootstrap server listens; no TCP until bootstrap is done.
BOOTSTRAP_SOCKET_DIR="$(mktemp -d)"

log() { printf 'resonate-pg: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Options on the command line rather than in postgresql.conf, so that a data
# directory made by an older image still runs with this image's settings.
server_options=(
    -c shared_preload_libraries=pg_cron
    -c "cron.database_name=$DATABASE"
    # Jobs run in background workers rather than over libpq connections,
    # which would take connection slots and need to authenticate.
    -c cron.use_background_workers=on
    -c max_worker_processes=16
    -c cron.max_running_jobs=8
    # Quiet: no log line for every timer tick, only problems.
    -c cron.log_statement=off
    -c cron.log_min_messages=warning
    -c "max_connections=${RESONATE_PG_MAX_CONNECTIONS:-200}"
    -c password_encryption=scram-sha-256
)

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "no cluster in $PGDATA; creating one"
    initdb --pgdata="$PGDATA" --username="$SUPERUSER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    # Any address may connect, with a password; the container's network is
    # the boundary, and compose publishes the port on 127.0.0.1 only.
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
fi

log "bootstrapping (Unix socket only)"
pg_ctl --pgdata="$PGDATA" --wait --silent --log="$BOOTSTRAP_SOCKET_DIR/bootstrap.log" \
    -o "$(printf '%q ' "${server_options[@]}") -c listen_addresses='' -c unix_socket_directories=$BOOTSTRAP_SOCKET_DIR" \
    start || { cat "$BOOTSTRAP_SOCKET_DIR/bootstrap.log" >&2; die "Postgres did not start"; }

psql_as_superuser() {
    psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --host="$BOOTSTRAP_SOCKET_DIR" --username="$SUPERUSER" "$@"
}

query() { psql_as_superuser --dbname="$1" --tuples-only --no-align --command="$2"; }

# Roles and their passwords, as "name password" lines on standard input of
# bootstrap.sql (never on a command line, where `ps` would show them).
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

if [[ "$(query postgres "SELECT count(*) FROM pg_database WHERE datname = '$DATABASE'")" == 0 ]]; then
    log "creating database $DATABASE"
    psql_as_superuser --dbname=postgres --command="CREATE DATABASE \"$DATABASE\""
fi

installed=""
if [[ "$(query "$DATABASE" "SELECT to_regprocedure('resonate.get_schema_version()') IS NOT NULL")" == t ]]; then
    installed="$(query "$DATABASE" "SELECT resonate.get_schema_version()")"
fi
bundled="$(cat /opt/resonate-pg/schema/VERSION)"
if [[ -z "$installed" ]]; then
    log "applying resonate.sql (schema $bundled, commit $(cat /opt/resonate-pg/schema/COMMIT))"
    # Its notices (pg_cron scheduled, and so on) are expected; errors are not.
    if ! psql_as_superuser --dbname="$DATABASE" --single-transaction --file="$SCHEMA_FILE" \
        2>"$BOOTSTRAP_SOCKET_DIR/schema.log"; then
        cat "$BOOTSTRAP_SOCKET_DIR/schema.log" >&2
        die "resonate.sql did not apply; the database is as it was"
    fi
elif [[ "$installed" != "$bundled" ]]; then
    die "the database holds resonate-pg schema $installed, this image carries $bundled; resonate.sql has no upgrade path, so migrate by hand or keep the older image"
else
    log "schema $installed already in place"
fi

# The pipeline index's migrations (infra/pipeline-index/migrations), in order,
# each in one transaction with its record in pipelines.schema_migrations. An
# applied migration whose file has changed since, or a database that has one
# this image does not carry, stops the start: a migration is never rewritten.
MIGRATIONS=/opt/pipeline-index/migrations
psql_as_superuser --dbname="$DATABASE" --command="SET client_min_messages = warning" \
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
        psql_as_superuser --dbname="$DATABASE" --single-transaction --file="$file" \
            --command="INSERT INTO pipelines.schema_migrations (version, name, sha256) VALUES ($version, '$name', '$digest')" \
            2>"$BOOTSTRAP_SOCKET_DIR/migration.log" \
            || { cat "$BOOTSTRAP_SOCKET_DIR/migration.log" >&2; die "pipeline index migration $name did not apply; the database is as it was"; }
    elif [[ "$applied" != "$digest" ]]; then
        die "pipeline index migration $name changed after it was applied (sha256 $applied, now $digest); add a new migration instead"
    fi
done
unknown="$(query "$DATABASE" "SELECT string_agg(name, ', ') FROM pipelines.schema_migrations WHERE version NOT IN (0${carried// /, })")"
[[ -z "$unknown" ]] || die "the database has pipeline index migrations this image does not carry ($unknown); run the newer image"
log "pipeline index at migration $(query "$DATABASE" "SELECT max(version) FROM pipelines.schema_migrations")"

printf '%s' "$logins" | psql_as_superuser --dbname="$DATABASE" \
    --set=database="$DATABASE" \
    --set=timer_interval="${RESONATE_PG_TIMER_INTERVAL:-1 second}" \
    --set=retention_days="$RETENTION_DAYS" \
    --set=cron_history="${RESONATE_PG_CRON_HISTORY:-1 hour}" \
    --set=index_logins="${RESONATE_PG_INDEX_LOGINS:-}" \
    --set=watchdog_logins="${RESONATE_PG_WATCHDOG_LOGINS:-}" \
    --file=/opt/resonate-pg/bootstrap.sql

pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
rm -rf "$BOOTSTRAP_SOCKET_DIR"
log "ready; serving on port 5432"
exec postgres "${server_options[@]}" -c listen_addresses='*'

#!/usr/bin/env bash
# Start resonate-pg: Postgres 17 with pg_cron and the resonate.sql schema; or,
# with the argument `apply`, apply the same to a Postgres of your own.
#
# `resonate-pg apply` runs apply.sh against the server the libpq variables
# name (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE, ...) and exits: see
# apply.sh and docs/production.md ("Bring your own Postgres").
#
# Every start, in order:
#   1. a cluster is created on first start (an empty data directory);
#   2. Postgres runs on its Unix socket only, while apply.sh (the same script
#      `apply` runs) brings the database to the wanted state as the superuser:
#      the schema applied once (never over a different version), the pipeline
#      index's migrations, timers driven by pg_cron every second, finished
#      workflows collected after the retention period, pg_cron's own run
#      history kept short, one login role per service;
#   3. Postgres is restarted listening on TCP. Clients (and the healthcheck)
#      can reach it only from here on, so "reachable" means "bootstrapped".
# A bootstrap that fails stops the container with the reason; nothing is half
# applied, because the schema and each migration go in as one transaction.
#
# Settings (environment), beyond apply.sh's (the database, the login roles,
# timers, retention, cron history):
#   POSTGRES_PASSWORD            the superuser's password (required)
#   POSTGRES_USER                the superuser (default postgres)
#   RESONATE_PG_DATABASE         the database holding the schema (default resonate);
#                                pg_cron runs in it too (cron.database_name)
#   RESONATE_PG_MAX_CONNECTIONS  Postgres max_connections (default 200)
set -euo pipefail

log() { printf 'resonate-pg: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

#: The one script that applies schema, migrations, roles and pg_cron jobs.
APPLY=/opt/resonate-pg/apply.sh

case "${1:-}" in
    apply) exec "$APPLY" ;;
    "") ;;
    *) die "unknown command '$1': run the image with no command to start the server, or with 'apply' to apply the schema to a Postgres of your own" ;;
esac

: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the Resonate database superuser password}"
SUPERUSER="${POSTGRES_USER:-postgres}"
DATABASE="${RESONATE_PG_DATABASE:-resonate}"
[[ "$DATABASE" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "RESONATE_PG_DATABASE: '$DATABASE' is not a plain database name"
#: Where the bootstrap server listens; no TCP until bootstrap is done.
BOOTSTRAP_SOCKET_DIR="$(mktemp -d)"

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

# The same apply as `resonate-pg apply`, as the superuser over the private
# socket; pg_cron keeps its jobs in the resonate database here.
(
    unset PGDATABASE PGPASSWORD PGSERVICE
    PGHOST="$BOOTSTRAP_SOCKET_DIR" PGUSER="$SUPERUSER" PGPORT=5432 \
        RESONATE_PG_DATABASE="$DATABASE" RESONATE_PG_CRON_DATABASE="$DATABASE" "$APPLY"
) || {
    pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop || true
    die "the bootstrap did not finish (above: why); the server was not started"
}

pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
rm -rf "$BOOTSTRAP_SOCKET_DIR"
log "ready; serving on port 5432"
exec postgres "${server_options[@]}" -c listen_addresses='*'

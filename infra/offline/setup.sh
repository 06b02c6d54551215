#!/usr/bin/env bash
# Prepare a Debian machine that has no image registry to run the compose stack.
#
# Why this exists: CI machines (and some developer boxes) reach Debian's
# package mirror and PyPI, but no Docker Hub, ghcr or GitHub downloads. So the
# Docker Engine, the compose plugin and a Python base image cannot be pulled;
# this script makes them from Debian packages instead. It changes nothing that
# is already in place, so running it again is cheap (a few seconds).
#
# Steps, each skipped when its result already exists:
#   1. Docker Engine from Debian's `docker.io` package;
#   2. dockerd started in the background, waited for until `docker info` answers;
#   3. the compose v2 CLI plugin, taken from Debian 13's `docker-compose` package;
#   4. a Python 3.13 base image built from a Debian 13 debootstrap, carrying this
#      machine's CA bundle so pip and uv in image builds trust its TLS proxy;
#   5. the pinned resonate-pg schema (resonate.sql) copied from a local mirror
#      into infra/resonate-pg/schema/ (git ignores it), since GitHub cannot be
#      reached; the image build checks its sha256 either way.
# Then run the stack with the override that builds every image from that base:
#   COMPOSE_FILE=compose.yaml:infra/offline/compose.yaml docker compose up --build
#
# Settings (environment): OFFLINE_BASE_IMAGE, OFFLINE_DEBIAN_MIRROR,
# OFFLINE_CA_BUNDLE, OFFLINE_DOCKERD_LOG, OFFLINE_WORK_DIR, OFFLINE_RESONATE_PG_DIR.
# Needs root for the steps that install or start something.
set -euo pipefail

#: The base image the override builds every Python service from.
BASE_IMAGE="${OFFLINE_BASE_IMAGE:-resonate-databricks/python:3.13-trixie}"
#: Where the Debian 13 packages come from (the base image and the compose plugin).
DEBIAN_MIRROR="${OFFLINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
#: This machine's CA bundle; it includes the TLS proxy's CA where there is one.
CA_BUNDLE="${OFFLINE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
#: Where a dockerd started by this script writes its log.
DOCKERD_LOG="${OFFLINE_DOCKERD_LOG:-/var/log/dockerd.log}"
#: Scratch space for the debootstrap tree and downloaded packages.
WORK_DIR="${OFFLINE_WORK_DIR:-${TMPDIR:-/tmp}}"
#: The repository this script belongs to.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
#: A local mirror of resonate-pg holding resonate.sql (the shared/ folder
#: beside the repository on this project's machines).
RESONATE_PG_DIR="${OFFLINE_RESONATE_PG_DIR:-$REPO_ROOT/../shared/vendor/resonate-pg}"
#: Where the resonate-pg image build looks for a local copy of the schema.
SCHEMA_COPY="$REPO_ROOT/infra/resonate-pg/schema/resonate.sql"
#: A system-wide plugin directory the docker CLI searches.
PLUGIN_DIR=/usr/libexec/docker/cli-plugins
#: Oldest compose that understands the override (`!reset`, `profiles`).
MIN_COMPOSE_VERSION=2.24.0
#: How long dockerd may take to answer after it is started.
DOCKERD_START_TIMEOUT_SECONDS=60
#: Image label holding the CA bundle's digest, so a changed bundle rebuilds the base.
CA_LABEL=org.resonate-databricks.ca-bundle-sha256

log() { printf '[offline] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ "$(id -u)" == 0 ]] || die "$1 needs root; run this script as root (or with sudo)."
}

# apt-get with a private state directory ($1), so Debian 13 packages can be
# fetched on a Debian 12 host without touching its sources or package database.
trixie_apt() {
    local root="$1"
    shift
    mkdir -p "$root/lists/partial" "$root/cache/archives/partial"
    printf 'deb %s trixie main\n' "$DEBIAN_MIRROR" >"$root/sources.list"
    : >"$root/status"
    apt-get -qq \
        -o Dir::Etc::SourceList="$root/sources.list" \
        -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$root/lists" \
        -o Dir::State::Status="$root/status" \
        -o Dir::Cache="$root/cache" \
        -o APT::Sandbox::User=root \
        "$@"
}

# "v2.26.1-desktop.1" -> 0 when >= the wanted version, 1 otherwise.
version_at_least() {
    local have="${1#v}" want="$2"
    have="${have%%[-+]*}"
    [[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" == "$want" ]]
}

ensure_engine() {
    if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
        log "docker engine: installed ($(dockerd --version))"
        return
    fi
    require_root "installing docker.io"
    log "docker engine: missing; installing Debian's docker.io package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's service start fails where there is no init system; the
    # binaries are installed regardless and dockerd is started below.
    apt-get install -y -qq docker.io >/dev/null || command -v dockerd >/dev/null \
        || die "apt-get install docker.io failed"
    log "docker engine: installed ($(dockerd --version))"
}

daemon_answers() { docker info >/dev/null 2>&1; }

# The pid of a dockerd that is already running, from its pid file, if any.
running_dockerd_pid() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null)" && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_daemon() {
    if daemon_answers; then
        log "dockerd: running"
        return
    fi
    require_root "starting dockerd"
    local pid
    if pid="$(running_dockerd_pid)"; then
        log "dockerd: process $pid exists but does not answer yet; waiting for it"
    else
        log "dockerd: not running; starting it in the background (log: $DOCKERD_LOG)"
        setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
        pid=$!
    fi
    local deadline=$((SECONDS + DOCKERD_START_TIMEOUT_SECONDS))
    until daemon_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during start (see $DOCKERD_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${DOCKERD_START_TIMEOUT_SECONDS}s (see $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
    log "dockerd: answering ($(docker version --format '{{.Server.Version}}'))"
}

ensure_compose() {
    local have
    if have="$(docker compose version --short 2>/dev/null)" \
        && version_at_least "$have" "$MIN_COMPOSE_VERSION"; then
        log "compose plugin: present ($have)"
        return
    fi
    require_root "installing the compose plugin"
    log "compose plugin: ${have:+too old ($have), }installing Debian 13's docker-compose into $PLUGIN_DIR"
    local dir
    dir="$(mktemp -d "$WORK_DIR/resonate-offline-compose.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this directory.
    trap "rm -rf '$dir'" EXIT
    trixie_apt "$dir/apt" update
    (cd "$dir" && trixie_apt "$dir/apt" download docker-compose)
    dpkg -x "$dir"/docker-compose_*.deb "$dir/unpacked"
    install -D -m 0755 "$dir/unpacked/usr/libexec/docker/cli-plugins/docker-compose" \
        "$PLUGIN_DIR/docker-compose"
    rm -rf "$dir"
    trap - EXIT
    have="$(docker compose version --short)" || die "docker compose does not run after install"
    version_at_least "$have" "$MIN_COMPOSE_VERSION" \
        || die "docker compose $have is older than $MIN_COMPOSE_VERSION; another plugin may shadow $PLUGIN_DIR"
    log "compose plugin: installed ($have)"
}

base_image_ca_digest() {
    docker image inspect --format "{{index .Config.Labels \"$CA_LABEL\"}}" "$BASE_IMAGE" 2>/dev/null
}

ensure_base_image() {
    [[ -r "$CA_BUNDLE" ]] || die "CA bundle $CA_BUNDLE is not readable"
    local want have
    want="$(sha256sum "$CA_BUNDLE" | cut -d' ' -f1)"
    if have="$(base_image_ca_digest)"; then
        if [[ "$have" == "$want" ]]; then
            log "base image: $BASE_IMAGE present"
            return
        fi
        log "base image: $BASE_IMAGE carries another CA bundle; rebuilding it"
    else
        log "base image: $BASE_IMAGE missing; building it from a Debian 13 debootstrap (about 40 s)"
    fi
    require_root "debootstrap"
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "base image: installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local tree
    tree="$(mktemp -d "$WORK_DIR/resonate-offline-rootfs.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this tree.
    trap "rm -rf '$tree' '$tree.log'" EXIT
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        trixie "$tree" "$DEBIAN_MIRROR" >"$tree.log" 2>&1 \
        || { tail -n 20 "$tree.log" >&2; die "debootstrap failed (log above)"; }
    rm -f "$tree.log"
    install -m 0644 "$CA_BUNDLE" "$tree/etc/ssl/certs/ca-certificates.crt"
    # Package lists, downloaded .debs, docs and translations are not needed to
    # run Python and would double the image.
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/* \
        "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/locale/*
    tar -C "$tree" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        --change "LABEL $CA_LABEL=$want" \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$tree"
    trap - EXIT
    log "base image: built $BASE_IMAGE ($(docker run --rm "$BASE_IMAGE" python --version))"
}

ensure_schema_copy() {
    local source="$RESONATE_PG_DIR/resonate.sql"
    if [[ -f "$SCHEMA_COPY" ]] && [[ ! -f "$source" ]]; then
        log "resonate-pg schema: local copy present ($SCHEMA_COPY)"
        return
    fi
    [[ -f "$source" ]] || die "no resonate.sql in $RESONATE_PG_DIR (set OFFLINE_RESONATE_PG_DIR to a local mirror of resonate-pg)"
    if cmp -s "$source" "$SCHEMA_COPY"; then
        log "resonate-pg schema: local copy present"
        return
    fi
    install -m 0644 "$source" "$SCHEMA_COPY"
    log "resonate-pg schema: copied from $RESONATE_PG_DIR (the image build checks its sha256)"
}

main() {
    local started=$SECONDS
    ensure_engine
    ensure_daemon
    ensure_compose
    ensure_base_image
    ensure_schema_copy
    log "ready in $((SECONDS - started))s; run the stack with:"
    log "  COMPOSE_FILE=compose.yaml:infra/offline/compose.yaml docker compose up --build"
}

# Sourcing the script (for testing a step) defines the functions without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi

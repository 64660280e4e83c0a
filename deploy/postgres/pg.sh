#!/usr/bin/env bash
# deploy/postgres/pg.sh — a throw-away PostgreSQL server for tests.
#
#   deploy/postgres/pg.sh start    # start (or reuse) the server; last stdout line = SQLAlchemy URL
#   deploy/postgres/pg.sh stop     # fast shutdown; no-op if not running
#   deploy/postgres/pg.sh status   # prints running/stopped; exit 0 if running, 3 if not
#   deploy/postgres/pg.sh url      # prints the SQLAlchemy URL without starting anything
#   deploy/postgres/pg.sh clean    # stop, then wipe the data dir
#
# Runs its own instance with initdb/pg_ctl (never the Debian cluster service), listening on
# 127.0.0.1 only, with role and database "distillguard" (password "distillguard"). If no
# server binaries are found under /usr/lib/postgresql/*/bin, Debian's `postgresql` package is
# installed. PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
# system user (created if missing). The test runner calls `pg.sh start` before pytest and
# `pg.sh stop` after, and exports the printed URL as DISTILLGUARD_TEST_POSTGRES_URL.
#
# Environment (all optional):
#   DISTILLGUARD_PG_PORT   TCP port (default 55432)
#   DISTILLGUARD_PG_DIR    data, socket and log dir (default /tmp/distillguard-pg); must be
#                          reachable by the postgres user, so avoid paths under /root
set -euo pipefail

PORT="${DISTILLGUARD_PG_PORT:-55432}"
DIR="${DISTILLGUARD_PG_DIR:-/tmp/distillguard-pg}"
DB_USER=distillguard
DB_PASSWORD=distillguard
DB_NAME=distillguard
URL="postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"

PGDATA_DIR="$DIR/data"
SOCKDIR="$DIR/sock"
LOGDIR="$DIR/logs"
LOGFILE="$LOGDIR/postgres.log"

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { echo "pg.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Sets PGBIN to the newest PostgreSQL server binaries; returns 1 if there are none.
find_pg_bin() {
    local d
    PGBIN=""
    # shellcheck disable=SC2012  # ls + sort -V: newest major version last
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/psql" ] && PGBIN="$d"
    done
    [ -n "$PGBIN" ]
}

# Like find_pg_bin, but installs Debian's postgresql package if there are no binaries.
ensure_pg_bin() {
    find_pg_bin && return 0
    [ "$(id -u)" -eq 0 ] || die "no PostgreSQL server found in /usr/lib/postgresql/*/bin; install 'postgresql'"
    log "installing Debian's postgresql package"
    # Do not let the package create (and start) its own 'main' cluster: we run our own instance.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/distillguard.conf
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1
    local opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    apt-get install "${opts[@]}" postgresql >"$LOGDIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$LOGDIR/apt.log" 2>&1 && apt-get install "${opts[@]}" postgresql >>"$LOGDIR/apt.log" 2>&1; } \
        || { tail -n 20 "$LOGDIR/apt.log" >&2; die "apt-get install postgresql failed"; }
    find_pg_bin || die "postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
}

# As root, server commands run as the postgres user; otherwise as the current user.
if [ "$(id -u)" -eq 0 ]; then
    RUN_AS=postgres
    as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
    RUN_AS="$(id -un)"
    as_pg() { "$@"; }
fi

ensure_pg_user() {
    [ "$RUN_AS" = postgres ] || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    log "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
}

pg_running() { [ -n "${PGBIN:-}" ] && [ -f "$PGDATA_DIR/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1; }

# psql as the superuser over the unix socket (trust auth for local connections).
psql_admin() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U postgres -d postgres "$@"; }

init_cluster() {
    log "initialising a new cluster in $PGDATA_DIR"
    rm -rf "$PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    chown "$RUN_AS:" "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOGDIR/initdb.log" 2>&1 \
        || { tail -n 20 "$LOGDIR/initdb.log" >&2; die "initdb failed"; }
    # Throw-away test server: durability off, loopback only (port/socket are set at start).
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# --- added by deploy/postgres/pg.sh ---
listen_addresses = '127.0.0.1'
max_connections = 100
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] %u@%d '
EOF
    # Loopback TCP needs the password; local socket trusts (used only by this script).
    cat >"$PGDATA_DIR/pg_hba.conf" <<EOF
# TYPE  DATABASE  USER  ADDRESS         METHOD
local   all       all                   trust
host    all       all   127.0.0.1/32    scram-sha-256
EOF
}

# CREATEDB: the tests create (and drop) a throw-away database per test.
ensure_role_and_db() {
    psql_admin <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  ELSE
    ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END
\$\$;
-- tests drop their databases WITH (FORCE): ending an autovacuum worker there needs this
GRANT pg_signal_backend TO $DB_USER;
SQL
    if [ -z "$(psql_admin -At -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
        psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    fi
}

cmd_start() {
    ensure_pg_bin
    if pg_running; then
        # A postmaster that was just killed can still look alive for a moment: trust pg_isready.
        for _ in $(seq 1 60); do
            if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
                ensure_role_and_db
                log "already running on 127.0.0.1:$PORT"
                echo "$URL"
                return 0
            fi
            pg_running || break
            sleep 0.5
        done
        pg_running && die "a server is running on $PGDATA_DIR but not accepting connections on port $PORT"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "port $PORT is already in use by another process"
    fi
    ensure_pg_user
    mkdir -p "$SOCKDIR" "$LOGDIR"
    [ -f "$PGDATA_DIR/PG_VERSION" ] || init_cluster
    chown -R "$RUN_AS:" "$DIR"
    chmod 755 "$DIR" "$SOCKDIR"

    log "starting PostgreSQL $("$PGBIN/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$PORT (dir $DIR)"
    if ! as_pg "$PGBIN/pg_ctl" start -D "$PGDATA_DIR" -l "$LOGFILE" -w -t 60 \
            -o "-p $PORT -k $SOCKDIR -c listen_addresses=127.0.0.1" >"$LOGDIR/pg_ctl.log" 2>&1 9>&-; then
        tail -n 20 "$LOGDIR/pg_ctl.log" "$LOGFILE" >&2 || true
        die "pg_ctl start failed"
    fi
    for _ in $(seq 1 120); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
        sleep 0.5
    done
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { tail -n 20 "$LOGFILE" >&2; die "server not ready after 60s"; }
    ensure_role_and_db
    log "ready"
    echo "$URL"
}

cmd_stop() {
    if ! find_pg_bin || ! pg_running; then
        log "not running"
        return 0
    fi
    log "stopping"
    as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >>"$LOGDIR/pg_ctl.log" 2>&1 \
        || as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA_DIR" -m immediate -w -t 30 >>"$LOGDIR/pg_ctl.log" 2>&1 \
        || die "could not stop the server (see $LOGDIR/pg_ctl.log)"
    log "stopped"
}

cmd_status() {
    if find_pg_bin && pg_running; then
        echo "running on 127.0.0.1:$PORT"
        return 0
    fi
    echo "stopped"
    return 3
}

cmd_clean() {
    cmd_stop
    rm -rf "$DIR"
    log "removed $DIR"
}

[ $# -eq 1 ] || usage
case "$1" in
    url) echo "$URL"; exit 0 ;;
    start|stop|status|clean) ;;
    *) usage ;;
esac
mkdir -p "$DIR" "$LOGDIR"
# One pg.sh at a time per data dir (fd 9 is closed for the server itself).
exec 9>"$DIR/.lock"
flock -w 120 9 || die "another pg.sh holds $DIR/.lock"
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
esac

#!/usr/bin/env bash
# Production-mode backing services for tests and demos: PostgreSQL and Redis on 127.0.0.1.
# Idempotent: installs Debian's packages only when missing, starts what is not running, creates
# the `vaultbench` role (LOGIN CREATEDB, so Django's test runner can create test_vaultbench) and
# database, and waits until both services answer.
# Sourced: exports DATABASE_URL and CELERY_BROKER_URL. Run: prints `export ...` lines on stdout
# (progress goes to stderr), so `eval "$(.ci/lib/services.sh)"` works too. Needs root.

_vb_services() {
    local pg_port=5432 redis_port=6379
    local db_user=vaultbench db_pass=vaultbench db_name=vaultbench
    local missing=()

    command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
        || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "services: installing ${missing[*]}" >&2
        # Do not let package scripts start services with their own configuration.
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
            apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || return 1
    fi

    # --- PostgreSQL -------------------------------------------------------------------------
    local pg_ver
    pg_ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    if ! pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" {found=1} END {exit !found}'; then
        echo "services: creating PostgreSQL $pg_ver cluster 'main'" >&2
        pg_createcluster "$pg_ver" main --port "$pg_port" >&2 || return 1
    fi
    # Listen on 127.0.0.1 only (Debian's default, localhost, also binds ::1).
    local conf_d="/etc/postgresql/$pg_ver/main/conf.d" want="listen_addresses = '127.0.0.1'"
    if [ "$(cat "$conf_d/vaultbench.conf" 2>/dev/null)" != "$want" ]; then
        mkdir -p "$conf_d"
        echo "$want" >"$conf_d/vaultbench.conf"
        # A running cluster only picks up listen_addresses on restart.
        if pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" && $4 == "online" {f=1} END {exit !f}'; then
            pg_ctlcluster "$pg_ver" main restart >&2 || return 1
        fi
    fi
    if ! pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" && $4 == "online" {f=1} END {exit !f}'; then
        echo "services: starting PostgreSQL $pg_ver" >&2
        pg_ctlcluster "$pg_ver" main start >&2 || {
            echo "services: PostgreSQL did not start; see /var/log/postgresql/" >&2; return 1; }
    fi
    local i
    for i in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p "$pg_port" || {
        echo "services: PostgreSQL is not answering on 127.0.0.1:$pg_port" >&2; return 1; }

    _vb_psql() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$pg_port" "$@"); }
    if [ "$(_vb_psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$db_user'")" != "1" ]; then
        echo "services: creating role $db_user" >&2
        _vb_psql -c "CREATE ROLE $db_user LOGIN CREATEDB PASSWORD '$db_pass'" >&2 || return 1
    else
        _vb_psql -c "ALTER ROLE $db_user LOGIN CREATEDB PASSWORD '$db_pass'" >&2 || return 1
    fi
    if [ "$(_vb_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != "1" ]; then
        echo "services: creating database $db_name" >&2
        _vb_psql -c "CREATE DATABASE $db_name OWNER $db_user" >&2 || return 1
    fi
    PGPASSWORD=$db_pass psql -X -q -h 127.0.0.1 -p "$pg_port" -U "$db_user" -d "$db_name" \
        -tAc "SELECT 1" >/dev/null || {
        echo "services: cannot log in to PostgreSQL as $db_user over TCP" >&2; return 1; }

    # --- Redis ------------------------------------------------------------------------------
    if [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" != "PONG" ]; then
        echo "services: starting Redis on 127.0.0.1:$redis_port" >&2
        redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
            --logfile /var/log/vaultbench-redis.log --dir /tmp >&2 || return 1
        for i in $(seq 1 30); do
            [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = "PONG" ] && break
            sleep 1
        done
    fi
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = "PONG" ] || {
        echo "services: Redis is not answering on 127.0.0.1:$redis_port" >&2; return 1; }

    export DATABASE_URL="postgres://$db_user:$db_pass@127.0.0.1:$pg_port/$db_name"
    export CELERY_BROKER_URL="redis://127.0.0.1:$redis_port/0"
    echo "services: PostgreSQL and Redis ready" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _vb_services
    echo "export DATABASE_URL=$DATABASE_URL"
    echo "export CELERY_BROKER_URL=$CELERY_BROKER_URL"
else
    _vb_services && {
        echo "DATABASE_URL=$DATABASE_URL" >&2
        echo "CELERY_BROKER_URL=$CELERY_BROKER_URL" >&2
    }
fi

#!/usr/bin/env bash
# Make sure a Docker engine (and debootstrap, for the offline base image) is available.
# Idempotent: does nothing when the engine already answers. Source it or run it, as root,
# on Debian bookworm. The engine runs without a bridge or iptables rules: sandboxes use
# --network none, and CI containers often cannot manage iptables.

_vb_docker_engine() {
    local log=${VAULTBENCH_DOCKERD_LOG:-/var/log/vaultbench-dockerd.log}
    local pidfile=${VAULTBENCH_DOCKERD_PIDFILE:-/var/run/docker.pid}
    local apt_updated=0

    _vb_apt_install() {
        if [ "$apt_updated" = 0 ]; then
            echo "docker-engine: apt-get update" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
            apt_updated=1
        fi
        echo "docker-engine: apt-get install $*" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
    }

    if ! command -v dockerd >/dev/null 2>&1; then
        _vb_apt_install docker.io || { echo "docker-engine: cannot install docker.io" >&2; return 1; }
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        _vb_apt_install debootstrap || { echo "docker-engine: cannot install debootstrap" >&2; return 1; }
    fi

    # The fault suite (tests/faults) runs agents with a clock two hours off under faketime.
    if ! command -v faketime >/dev/null 2>&1; then
        _vb_apt_install faketime || echo "docker-engine: faketime not installed; the fault suite will fail in CI" >&2
    fi

    # gVisor (Debian's runsc) as an optional sandbox runtime (sandbox_runtime = "runsc"; see
    # evaluator/sandbox_runtime.py). Registered in daemon.json; a running engine reloads its
    # runtimes on SIGHUP, without a restart.
    if ! command -v runsc >/dev/null 2>&1; then
        _vb_apt_install runsc || echo "docker-engine: runsc (gVisor) not installed; sandboxes use runc" >&2
    fi
    local runsc_registered=0
    if command -v runsc >/dev/null 2>&1; then
        mkdir -p /etc/docker
        python3 - "$(command -v runsc)" <<'PY' && runsc_registered=1
import json, os, sys
path = "/etc/docker/daemon.json"
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
wanted = {"path": sys.argv[1], "runtimeArgs": ["--network=none", "--oci-seccomp"]}
if config.get("runtimes", {}).get("runsc") == wanted:
    sys.exit(1)  # already registered: nothing to reload
config.setdefault("runtimes", {})["runsc"] = wanted
json.dump(config, open(path, "w"), indent=2)
PY
    fi

    if docker info >/dev/null 2>&1; then
        if [ "$runsc_registered" = 1 ] && [ -s "${VAULTBENCH_DOCKERD_PIDFILE:-/var/run/docker.pid}" ]; then
            echo "docker-engine: runsc registered; reloading the engine's runtimes (SIGHUP)" >&2
            kill -HUP "$(cat "${VAULTBENCH_DOCKERD_PIDFILE:-/var/run/docker.pid}")" && sleep 1
        fi
        echo "docker-engine: engine already running" >&2
        return 0
    fi

    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "docker-engine: dockerd is running but not answering yet; waiting" >&2
    else
        echo "docker-engine: starting dockerd (log: $log)" >&2
        # Detached in a session of its own (setsid --fork): not a child of the script that sourced
        # this, so that script's `wait` never waits for the engine, and its Ctrl-C never reaches it.
        setsid --fork dockerd --bridge=none --iptables=false </dev/null >>"$log" 2>&1
    fi

    local i
    for i in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            echo "docker-engine: engine ready after ${i}s" >&2
            return 0
        fi
        sleep 1
    done
    echo "docker-engine: dockerd did not answer within 60 s; last lines of $log:" >&2
    tail -n 20 "$log" >&2 2>/dev/null || true
    return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _vb_docker_engine
else
    _vb_docker_engine
fi

#!/usr/bin/env bash
# Make sure a Docker engine (and debootstrap, for the offline base image) is available.
# Idempotent: does nothing when the engine already answers. Source it or run it, as root,
# on Debian bookworm. The engine runs without a bridge or iptables rules: sandboxes use
# --network none, and CI containers often cannot manage iptables.

_vb_docker_engine() {
    local log=/var/log/vaultbench-dockerd.log
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

    if docker info >/dev/null 2>&1; then
        echo "docker-engine: engine already running" >&2
        return 0
    fi

    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "docker-engine: dockerd is running but not answering yet; waiting" >&2
    else
        echo "docker-engine: starting dockerd (log: $log)" >&2
        nohup dockerd --bridge=none --iptables=false >>"$log" 2>&1 &
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

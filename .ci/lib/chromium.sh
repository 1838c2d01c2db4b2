#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it through
# executable_path; `playwright install` downloads are not used). Idempotent: does nothing when
# /usr/bin/chromium exists. Source it or run it, as root, on Debian bookworm.

_vb_chromium() {
    if [ -x /usr/bin/chromium ]; then
        echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown))" >&2
        return 0
    fi
    echo "chromium: apt-get install chromium" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >&2 || {
        echo "chromium: cannot install chromium" >&2
        return 1
    }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _vb_chromium
else
    _vb_chromium
fi

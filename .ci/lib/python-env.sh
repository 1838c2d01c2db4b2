#!/usr/bin/env bash
# Creates .venv with the pinned requirements. Idempotent: reinstalls only when requirements.txt
# changed (a stamp file keeps its hash). Source it: it exports PATH with .venv/bin first.
#
# In CI (CI=true) a clone without .venv gets a symlink to a virtual environment kept per hash of
# requirements.txt under $VAULTBENCH_CI_CACHE (default /var/cache/vaultbench): installing the
# pinned closure (torch included, 2 GB) takes minutes, and every fresh clone on the same machine
# would install exactly the same files. A changed requirements.txt gets a new environment.
set -euo pipefail
_vb_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_vb_python="${PYTHON:-python3}"
if ! "$_vb_python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    echo "python-env: Python 3.11 is required ($_vb_python is $("$_vb_python" --version 2>&1))" >&2
    exit 1
fi
_vb_want="$(sha256sum "$_vb_root/requirements.txt" | cut -d' ' -f1)"

# Creates (or brings up to date) the environment at $1 and writes the stamp last, so an
# interrupted install is redone by the next run.
_vb_make_venv() {
    local venv=$1
    if [ ! -x "$venv/bin/python" ]; then
        echo "python-env: creating $venv" >&2
        "$_vb_python" -m venv "$venv"
    fi
    if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$_vb_want" ]; then
        echo "python-env: installing requirements.txt into $venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$_vb_root/requirements.txt"
        echo "$_vb_want" >"$venv/.requirements.sha256"
    fi
}

if [ "${CI:-}" = "true" ] && { [ ! -e "$_vb_root/.venv" ] || [ -L "$_vb_root/.venv" ]; }; then
    _vb_cache="${VAULTBENCH_CI_CACHE:-/var/cache/vaultbench}"
    _vb_shared="$_vb_cache/venv-$("$_vb_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-${_vb_want:0:16}"
    mkdir -p "$_vb_cache"
    # One installer at a time (two CI runs may start together); the others wait and reuse it.
    (
        flock 9
        _vb_make_venv "$_vb_shared"
    ) 9>"$_vb_shared.lock"
    ln -sfn "$_vb_shared" "$_vb_root/.venv"
    # Each requirements.txt leaves a 2 GB environment: those unused for 3 days go (the lock file's
    # time is the last use; one in use now holds its lock, so flock -n skips it).
    touch "$_vb_shared.lock"
    for _vb_old in $(find "$_vb_cache" -maxdepth 1 -name 'venv-*.lock' -mtime +3); do
        flock -n "$_vb_old" rm -rf "${_vb_old%.lock}" "$_vb_old" || true
    done
    echo "python-env: .venv -> $_vb_shared (CI cache)" >&2
else
    _vb_make_venv "$_vb_root/.venv"
fi
export PATH="$_vb_root/.venv/bin:$PATH"

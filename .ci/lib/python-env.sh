#!/usr/bin/env bash
# Creates .venv with the pinned requirements. Idempotent: reinstalls only when requirements.txt
# changed (a stamp file keeps its hash). Source it: it exports PATH with .venv/bin first.
set -euo pipefail
_vb_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_vb_python="${PYTHON:-python3}"
if ! "$_vb_python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    echo "python-env: Python 3.11 is required ($_vb_python is $("$_vb_python" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$_vb_root/.venv/bin/python" ]; then
    echo "python-env: creating .venv" >&2
    "$_vb_python" -m venv "$_vb_root/.venv"
fi
_vb_stamp="$_vb_root/.venv/.requirements.sha256"
_vb_want="$(sha256sum "$_vb_root/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$_vb_stamp" 2>/dev/null)" != "$_vb_want" ]; then
    echo "python-env: installing requirements.txt" >&2
    "$_vb_root/.venv/bin/pip" install -q --disable-pip-version-check -r "$_vb_root/requirements.txt"
    echo "$_vb_want" >"$_vb_stamp"
fi
export PATH="$_vb_root/.venv/bin:$PATH"

#!/usr/bin/env bash
# `make cluster`: the real servers the run needs come from the OS packages, installed when missing
# (CI runs as root); the Python side from uv.lock's `cluster` group, in .venv-cluster/. Everything runs in a temporary
# directory that the run removes.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/os_packages.sh redis-server=redis-server "/usr/lib/postgresql/*/bin/pg_ctl=postgresql"
# The packages start their own servers; the run starts its own, on free ports, and needs none of those.
if [[ $(id -u) -eq 0 ]]; then
    service redis-server stop >/dev/null 2>&1 || true
fi
exec .venv-cluster/bin/python scripts/cluster/run.py "$@"

#!/usr/bin/env bash
# Airflow's UI over the demo's takes: an api-server on 127.0.0.1 (port $KLING_UI_PORT, 8080 by
# default) on the metadata DB `make demo` filled, with the Kling plugin. Open the address it prints.
# Simple auth manager, every user an admin: for a look on this machine, not for a shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/.venv/bin
export AIRFLOW_HOME=${AIRFLOW_HOME:-$root/.demo/airflow}
[ -f "$AIRFLOW_HOME/airflow.db" ] || { echo "No demo database at $AIRFLOW_HOME: run 'make demo' first."; exit 1; }
port=${KLING_UI_PORT:-8080}
export AIRFLOW__CORE__DAGS_FOLDER=$root/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$port AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$port
# The budgets the demo spent from, read from its ledger (the simulator need not run for that).
budgets='{"budgets": {"examples": {"videos": 20, "video_seconds": 200, "period": "day"}}, "budget_store": "kling_ledger"}'
AIRFLOW_CONN_KLING_DEFAULT=$("$bin/python" -c 'import json, sys; print(json.dumps({"conn_type": "kling", "host": "http://127.0.0.1:9", "password": "sim-token", "extra": json.loads(sys.argv[1])}))' "$budgets")
AIRFLOW_CONN_KLING_LEDGER=$("$bin/python" -c 'import json, sys; print(json.dumps({"conn_type": "sqlite", "host": sys.argv[1]}))' "$AIRFLOW_HOME/kling-budget-ledger.db")
export AIRFLOW_CONN_KLING_DEFAULT AIRFLOW_CONN_KLING_LEDGER
echo "The Kling page: http://127.0.0.1:$port/plugin/kling (each take: its task's 'Kling take' tab). Ctrl-C stops it."
exec "$bin/airflow" api-server --host 127.0.0.1 --port "$port" --workers 1

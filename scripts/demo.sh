#!/usr/bin/env bash
# Run dags/kling_text_to_video.py end to end with `airflow dags test` (deferral included).
# Without RUNCOMFY_API_TOKEN it runs against the RunComfy simulator started here, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/.venv/bin

export AIRFLOW_HOME=${AIRFLOW_HOME:-$root/.demo/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$root/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export KLING_VIDEO_DIR=${KLING_VIDEO_DIR:-$root/.demo/videos}
mkdir -p "$AIRFLOW_HOME" "$KLING_VIDEO_DIR"
log=$AIRFLOW_HOME/demo.log

"$bin/airflow" db migrate >"$log" 2>&1 || { cat "$log"; exit 1; }

if [ -n "${RUNCOMFY_API_TOKEN:-}" ]; then
    echo "Using RunComfy with the token from RUNCOMFY_API_TOKEN (this generation is billed)."
    AIRFLOW_CONN_KLING_DEFAULT=$("$bin/python" -c 'import json, os; print(json.dumps({"conn_type": "kling", "password": os.environ["RUNCOMFY_API_TOKEN"]}))')
else
    url_file=$(mktemp)
    "$bin/kling-simulator" --port 0 --url-file "$url_file" --queue-seconds 2 --run-seconds 3 >>"$log" 2>&1 &
    sim_pid=$!
    trap 'kill "$sim_pid" 2>/dev/null || true; rm -f "$url_file"' EXIT
    for _ in $(seq 100); do [ -s "$url_file" ] && break; sleep 0.1; done
    [ -s "$url_file" ] || { echo "the simulator did not start"; cat "$log"; exit 1; }
    echo "Using the RunComfy simulator at $(cat "$url_file") (set RUNCOMFY_API_TOKEN to use RunComfy)."
    AIRFLOW_CONN_KLING_DEFAULT=$("$bin/python" -c 'import json, sys; print(json.dumps({"conn_type": "kling", "host": open(sys.argv[1]).read(), "password": "sim-token"}))' "$url_file")
    export KLING_POLL_INTERVAL=1
fi
export AIRFLOW_CONN_KLING_DEFAULT

if ! "$bin/airflow" dags test kling_text_to_video >>"$log" 2>&1; then
    tail -n 60 "$log"
    echo "The demo DAG failed; full log: $log"
    exit 1
fi
if ! grep -q "state=success" "$log"; then
    tail -n 60 "$log"
    echo "The demo DAG did not succeed; full log: $log"
    exit 1
fi
grep -o "Kling video ready: .*bytes" "$log" | tail -n 1
video=$(ls -t "$KLING_VIDEO_DIR"/*.mp4 | head -n 1)
echo "The MP4 landed at: $video"

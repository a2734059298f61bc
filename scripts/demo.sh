#!/usr/bin/env bash
# Run the example DAGs end to end with `airflow dags test` (deferral included): text to video,
# the batch (simulator only: on RunComfy it would bill three more videos), and the manifest writer.
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
    # The batch spends from a budget of 20 videos a day, its ledger in SQLite beside the demo.
    budgets='{"budgets": {"examples": {"videos": 20, "video_seconds": 200, "period": "day"}}, "budget_store": "kling_ledger"}'
    AIRFLOW_CONN_KLING_DEFAULT=$("$bin/python" -c 'import json, sys; print(json.dumps({"conn_type": "kling", "host": open(sys.argv[1]).read(), "password": "sim-token", "extra": json.loads(sys.argv[2])}))' "$url_file" "$budgets")
    AIRFLOW_CONN_KLING_LEDGER=$("$bin/python" -c 'import json, sys; print(json.dumps({"conn_type": "sqlite", "host": sys.argv[1]}))' "$AIRFLOW_HOME/kling-budget-ledger.db")
    export AIRFLOW_CONN_KLING_LEDGER KLING_BUDGET=examples KLING_POLL_INTERVAL=1
fi
export AIRFLOW_CONN_KLING_DEFAULT

run_dag() {
    if ! "$bin/airflow" dags test "$1" >"$AIRFLOW_HOME/$1.log" 2>&1 || ! grep -q "state=success" "$AIRFLOW_HOME/$1.log"; then
        tail -n 60 "$AIRFLOW_HOME/$1.log"
        echo "The example DAG $1 failed; full log: $AIRFLOW_HOME/$1.log"
        exit 1
    fi
}

"$bin/airflow" pools set kling_generations 2 "Concurrent Kling generations" --include-deferred >>"$log" 2>&1

run_dag kling_text_to_video
grep -o "Kling video ready: .*" "$AIRFLOW_HOME/kling_text_to_video.log" | tail -n 1 | sed "s/ \[airflow[.].*//"
video=$(ls -t "$KLING_VIDEO_DIR"/*.mp4 | head -n 1)
echo "The MP4 landed at: $video (its poster frame: ${video%.mp4}.jpg)"

if [ -z "${RUNCOMFY_API_TOKEN:-}" ]; then  # a batch on RunComfy would bill three more videos
    run_dag kling_batch_prompts
    grep -o "Kling batch: .*" "$AIRFLOW_HOME/kling_batch_prompts.log" | tail -n 1
    echo "The batch's budget, as \`kling budget\` shows it:"
    "$bin/kling" --json budget
fi

run_dag kling_on_new_video
grep -o "Kling video manifest: .*" "$AIRFLOW_HOME/kling_on_new_video.log" | tail -n 1

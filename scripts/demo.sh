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

# Image to video, from a bucket: on the simulator, an S3 API on loopback holds the key visual and
# signs it; RunComfy itself could not fetch a loopback URL, so there it runs only on KLING_IMAGE
# (an image of yours RunComfy can reach, with KLING_IMAGE_CONN_ID for its store).
if [ -z "${RUNCOMFY_API_TOKEN:-}" ]; then
    s3_file=$(mktemp)
    "$bin/python" -m airflow_provider_kling.testing.s3 --url-file "$s3_file" --sample s3://brand/key-visual.png >>"$log" 2>&1 &
    s3_pid=$!
    trap 'kill "$sim_pid" "$s3_pid" 2>/dev/null || true; rm -f "$url_file" "$s3_file"' EXIT
    for _ in $(seq 100); do [ -s "$s3_file" ] && break; sleep 0.1; done
    [ -s "$s3_file" ] || { echo "the loopback S3 did not start"; cat "$log"; exit 1; }
    AIRFLOW_CONN_KLING_IMAGES=$("$bin/python" -c 'import json, sys; from airflow_provider_kling.testing.s3 import ACCESS_KEY, SECRET_KEY; print(json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": {"endpoint_url": open(sys.argv[1]).read(), "region_name": "us-east-1", "config_kwargs": {"signature_version": "s3v4"}}}))' "$s3_file")
    export AIRFLOW_CONN_KLING_IMAGES
    run_dag kling_image_to_video
    run_dag kling_storyboard
elif [ -n "${KLING_IMAGE:-}" ]; then
    run_dag kling_image_to_video
    # A film bills three more videos, and its shots must land where RunComfy can be signed a URL.
    if [ -n "${KLING_FILM_SHOTS:-}" ]; then run_dag kling_storyboard; fi
else
    echo "Image to video skipped on RunComfy: set KLING_IMAGE to an image RunComfy can fetch (an https URL, or an object-store URI with KLING_IMAGE_CONN_ID) to run it (billed)."
fi
if [ -f "$AIRFLOW_HOME/kling_image_to_video.log" ]; then
    grep -o "Kling image to video: .*" "$AIRFLOW_HOME/kling_image_to_video.log" | tail -n 1 | sed "s/ \[airflow[.].*//"
fi
if [ -f "$AIRFLOW_HOME/kling_storyboard.log" ]; then
    grep -o "Kling film: .*" "$AIRFLOW_HOME/kling_storyboard.log" | tail -n 1 | sed "s/ \[airflow[.].*//"
fi
echo "Watch the takes in Airflow's UI: make ui (then open http://127.0.0.1:${KLING_UI_PORT:-8080}/plugin/kling)"

"""DAGs the film tests run with ``dag.test()``: storyboards chained by last frames, and stitches of stored takes."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_kling.operators.stitch import KlingStitchOperator
from airflow_provider_kling.storyboard import kling_storyboard

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 2.0}
SHOT_ARGS = {"poll_interval": 0.05, "deferrable": True, "hook_params": FAST}
QUICK = "[sim:queue=0.2][sim:run=0.2]"
PARAMS = {"shots_folder": "s3://films/test", "film": ""}
FOLDER = "{{ params.shots_folder }}"
FILM = "{{ params.film }}"
START = {"start_image": "s3://brand/key-visual.png", "image_conn_id": "aws_test", "storage_conn_id": "aws_test"}
THREE = [f"The key visual comes alive {QUICK}", f"The camera circles it {QUICK}", f"Dusk falls over it {QUICK}"]

with DAG("kling_film", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # Three shots from a key visual in the bucket, the whole film reserved from the budget first.
    kling_storyboard(
        "film", THREE, film=FILM, shots_folder=FOLDER, budget="films", shot_args=SHOT_ARGS, title="Key visual", **START
    )

with DAG("kling_film_polling", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # The same chain, each shot waiting on its worker (poke mode), not deferred.
    kling_storyboard(
        "film", THREE[:2], film=FILM, shots_folder=FOLDER, shot_args={**SHOT_ARGS, "deferrable": False}, **START
    )

with DAG("kling_film_sound", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # From a prompt: a sounding shot (Kling 2.6), a silent one (2.1), a sounding one again (2.6).
    kling_storyboard(
        "film",
        [
            f"A lighthouse at dawn {QUICK}",
            {"prompt": f"Gulls wheel past it {QUICK}", "model": "kling/kling-2-1/pro/image-to-video"},
            f"The beam sweeps the sea {QUICK}",
        ],
        film=FILM,
        shots_folder=FOLDER,
        storage_conn_id="aws_test",
        text_model="kling/kling-2-6/pro/text-to-video",
        image_model="kling/kling-2-6/pro/image-to-video",
        shot_args=SHOT_ARGS,
    )

with DAG("kling_film_fails", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # The second shot fails: no third shot is paid, and the film's unpaid reservation goes back.
    kling_storyboard(
        "film",
        [THREE[0], f"This shot fails [sim:fail] {QUICK}", THREE[2]],
        film=FILM,
        shots_folder=FOLDER,
        budget="films",
        shot_args=SHOT_ARGS,
        **START,
    )

with DAG("kling_film_taskflow", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS):
    # TaskFlow: each shot hands the one before's result on as its image; the film crossfades.
    WAIT = {"poll_interval": 0.05, "hook_params": FAST, "storage_conn_id": "aws_test", "overwrite": True}

    @task.kling(
        model="kling/kling-2-1/pro/image-to-video",
        image_conn_id="aws_test",
        **WAIT,
        destination="{{ params.shots_folder }}/opening-{request_id}.mp4",
    )
    def opening() -> dict:
        return {"prompt": f"The key visual comes alive {QUICK}", "image": "s3://brand/key-visual.png", "duration": 5}

    @task.kling(
        model="kling/kling-2-1/pro/image-to-video",
        **WAIT,
        destination="{{ params.shots_folder }}/closing-{request_id}.mp4",
    )
    def closing(before: dict) -> dict:
        return {"prompt": f"It fades into the night {QUICK}", "image": before, "duration": 5}

    @task.kling_stitch(destination=FILM, crossfade=0.5)
    def film(*takes: dict) -> list:
        return list(takes)

    first = opening()
    film(first, closing(first))

with DAG(
    "kling_stitch_files",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"takes": [], "film": ""},
    render_template_as_native_obj=True,
):
    # Takes already stored, by URI; a retry after a crash writes the same film.
    KlingStitchOperator(
        task_id="stitch",
        takes="{{ params.takes }}",
        destination="{{ params.film }}",
        outlets=[Asset(uri="file:///kling-test-films")],
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

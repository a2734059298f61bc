"""
Images from the user's own object storage, end to end: an S3 API on loopback (moto's server), the
image signed by Airflow's S3 filesystem at the paid submit, fetched over HTTP by the simulator as
RunComfy's servers fetch it, and the signed URL nowhere a user or an attacker could read it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("moto", reason="moto's S3 server is a test tool of the dev group")
pytest.importorskip("airflow.providers.amazon", reason="Airflow's S3 filesystem comes with the Amazon provider")

from airflow_provider_kling.testing.media import sample_image
from tests.conftest import AIRFLOW, lineage_env, states, xcoms

DAGS = Path(__file__).parent / "dag_files"
IMAGE = "s3://brand/key-visual.png"


def _signed_urls(sim) -> list[str]:
    return [
        str(value) for request in sim.requests.values() for value in request.input.values() if "X-Amz-" in str(value)
    ]


@pytest.mark.parametrize("layout", ["polling", "deferrable", "ends_in_triggerer"])
def test_an_image_in_a_bucket_is_signed_fetched_and_animated_in_each_layout(run_dag, sim, bucket, tmp_path, layout):
    destination = tmp_path / "{request_id}.mp4"
    dag_run = run_dag(
        f"kling_image_{layout}", folder=DAGS, file="kling_image_dags.py", run_conf={"destination": str(destination)}
    )
    assert states(dag_run) == {"animate": "success"}
    (request,) = sim.requests.values()
    sent = request.input["image_url"]
    assert sent.startswith(bucket.endpoint + "/brand/key-visual.png?")
    assert "X-Amz-Signature=" in sent
    assert sim.image_fetches == ["ok"]  # the simulator fetched it over HTTP when the request ran
    stored = tmp_path / f"{request.request_id}.mp4"
    assert stored.read_bytes()[4:8] == b"ftyp"
    # What the task keeps names the object, never the signed URL.
    assert sent not in repr(xcoms(dag_run))


@pytest.mark.integration
def test_the_signed_url_is_in_no_log_xcom_rendered_field_trigger_or_lineage_event(sim, bucket, tmp_path, airflow_db):
    events_file = tmp_path / "openlineage.jsonl"
    env = lineage_env(events_file, sim, DAGS, AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")
    conf = json.dumps({"destination": str(tmp_path / "video.mp4")})
    done = subprocess.run(
        [AIRFLOW, "dags", "test", "kling_image_deferrable", "--conf", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (signed,) = _signed_urls(sim)
    signature = dict(part.split("=", 1) for part in urlsplit(signed).query.split("&"))["X-Amz-Signature"]
    from airflow.utils.session import create_session

    with create_session() as session:
        from airflow.models.trigger import Trigger

        triggers = json.dumps([row.kwargs for row in session.query(Trigger).all()], default=str)
    events = events_file.read_text()
    seen = "\n".join([done.stdout, done.stderr, events, triggers])
    assert "key-visual.png" in done.stdout + done.stderr  # the logs name the image by its URI...
    assert signature not in seen  # ...and never by its signed URL
    assert signed.split("?")[0] + "?" not in seen
    complete = next(json.loads(line) for line in events.splitlines() if '"COMPLETE"' in line and "animate" in line)
    assert [(i["namespace"], i["name"]) for i in complete["inputs"]] == [("s3://brand", "key-visual.png")]


def test_the_trigger_carries_the_images_uri_not_its_signed_url(run_dag, sim, bucket, tmp_path, mocker):
    from airflow_provider_kling.triggers.kling import KlingRequestTrigger

    made = mocker.spy(KlingRequestTrigger, "__init__")
    dag_run = run_dag(
        "kling_image_deferrable",
        folder=DAGS,
        file="kling_image_dags.py",
        run_conf={"destination": str(tmp_path / "v.mp4")},
    )
    assert states(dag_run) == {"animate": "success"}
    triggers = [call.args[0] for call in made.call_args_list]  # what the task deferred with, as Airflow stores it
    kwargs = json.dumps([trigger.serialize() for trigger in triggers], default=str)
    assert "s3://brand/key-visual.png" in kwargs
    (signed,) = _signed_urls(sim)
    assert urlsplit(signed).query not in kwargs


def test_a_signed_url_that_expires_in_the_queue_fails_the_request_naming_the_image(
    run_dag, sim, bucket, tmp_path, monkeypatch, capfd
):
    from airflow_provider_kling import images

    monkeypatch.setattr(images, "signed_url_seconds", lambda queue_timeout: 1)
    conf = {"destination": str(tmp_path / "v.mp4"), "prompt": "a slow queue [sim:queue=2.5][sim:run=0.2]"}
    dag_run = run_dag("kling_image_polling", folder=DAGS, file="kling_image_dags.py", run_conf=conf)
    assert states(dag_run) == {"animate": "failed"}
    assert sim.image_fetches == ["image_url: HTTP 403 (Request has expired)"]
    out = capfd.readouterr().out
    assert "Could not fetch the input: image_url: HTTP 403 (Request has expired)" in out
    (signed,) = _signed_urls(sim)
    assert urlsplit(signed).query not in out
    assert not (tmp_path / "v.mp4").exists()


@pytest.fixture
def memory_store():
    """``memory://``, attached to Airflow's object storage as a team attaches a store of its own: it cannot sign."""
    import fsspec
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach

    attach("memory", fs=fsspec.filesystem("memory"))
    ObjectStoragePath("memory://brand/key-visual.png").write_bytes(sample_image())


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("s3://brand/not-there.png", "s3://brand/not-there.png does not exist"),
        ("memory://brand/key-visual.png", "MemoryFileSystem of memory://brand/key-visual.png cannot sign URLs"),
        ("/srv/images/key-visual.png", "is a file on this machine, which RunComfy's servers cannot fetch"),
        ("http://cdn.example.com/key-visual.png", "RunComfy fetches inputs over https only"),
    ],
)
def test_an_image_runcomfy_could_not_fetch_is_refused_before_anything_is_sent(
    run_dag, sim, bucket, memory_store, tmp_path, capfd, image, says
):
    store_conn = "" if image.startswith("memory:") else "aws_test"  # the attached store needs no connection
    conf = {"destination": str(tmp_path / "v.mp4"), "image": image, "image_conn_id": store_conn}
    dag_run = run_dag("kling_image_deferrable", folder=DAGS, file="kling_image_dags.py", run_conf=conf)
    assert states(dag_run) == {"animate": "failed"}
    assert sim.calls["submit"] == 0
    assert says in capfd.readouterr().out


def test_a_taskflow_function_hands_over_its_frames_in_what_it_returns(run_dag, sim, bucket):
    dag_run = run_dag("kling_image_taskflow", folder=DAGS, file="kling_image_dags.py")
    assert states(dag_run) == {"bridge": "success"}
    (request,) = sim.requests.values()
    assert request.model == "kling/kling-video-o1/image-to-video"
    for field in ("start_image_url", "end_image_url"):
        assert "X-Amz-Signature=" in request.input[field]
    assert sim.image_fetches == ["ok", "ok"]
    result = xcoms(dag_run)[("bridge", "return_value")]
    assert result["request_id"] == request.request_id


def test_the_image_example_animates_the_key_visual_from_the_bucket_into_storage(
    run_dag, sim, s3, tmp_path, monkeypatch
):
    from tests.conftest import REPO

    monkeypatch.setenv("AIRFLOW_CONN_KLING_IMAGES", s3.connection_json())
    monkeypatch.setenv("KLING_VIDEO_DIR", str(tmp_path))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.05")
    dag_run = run_dag("kling_image_to_video", folder=REPO / "dags", file="kling_image_to_video.py")
    assert states(dag_run) == {"animate": "success", "report": "success"}
    (request,) = sim.requests.values()
    assert (tmp_path / f"{request.request_id}.mp4").exists()
    line = xcoms(dag_run)[("report", "return_value")]
    assert line.startswith(f"Kling image to video: {IMAGE} -> {(tmp_path / request.request_id).as_uri()}.mp4")


def test_a_retry_resumes_the_request_its_image_was_signed_for_without_checking_or_signing_again(
    run_dag, sim, bucket, mocker
):
    from airflow_provider_kling import images
    from airflow_provider_kling.testing import Fault, Scenario
    from tests.conftest import FAST_HOOK

    signed = mocker.spy(images, "signed_body")
    checked = mocker.spy(images, "check_images")
    sim.script(Scenario(queue_seconds=0.3, run_seconds=0.3))
    sim.inject("status", *[Fault("status", status_code=503)] * FAST_HOOK["max_attempts"] * 6)  # past the deadline
    dag_run = run_dag("kling_image_retry_deadline", folder=DAGS, file="kling_image_dags.py")
    assert states(dag_run) == {"animate": "success"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number >= 2
    assert sim.calls["submit"] == 1  # the fingerprint is the object's URI: a new signature is not a new input
    assert (signed.call_count, checked.call_count) == (1, 1)

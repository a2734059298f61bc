"""
A stored video is a checked video, and nothing is paid for that cannot land: in every path that
stores (the operator on a worker, resumed on a worker after deferring, ending in the triggerer,
``@task.kling``, the copy operator, the ``kling`` command), under ``dag.test()`` against the
simulator, which serves real MP4s of the asked shape, sign-in pages, audio-only and undecodable files.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_kling.cli import main
from airflow_provider_kling.exceptions import KlingConnectionError, KlingNotAVideoError, KlingVideoExpiredError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Fault, Scenario
from airflow_provider_kling.testing.media import SIGN_IN_PAGE
from tests.conftest import CHECKED_5S_16_9, FAST_HOOK, TOKEN, states, xcoms

LAYOUTS = ["polling", "deferrable", "ends_in_triggerer"]
#: What came instead of a video, and the words the refusal uses for it.
NOT_VIDEOS = {
    "html_page": "text/html, an HTML page",
    "html_as_mp4": "served an HTML page, not a video",
    "audio_only": "no video stream",
    "undecodable": "does not decode",
}


def _logged(capfd, caplog) -> str:
    return capfd.readouterr().out + caplog.text


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- nothing that is not a video lands -------------------------------------------------------------


@pytest.mark.parametrize("media", list(NOT_VIDEOS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_what_is_not_a_video_never_lands_and_no_retry_pays_again(run_dag, sim, tmp_path, capfd, caplog, layout, media):
    sim.script(Scenario(media=media))  # every fetch of this request's video gets it
    destination = tmp_path / "out" / "teaser.mp4"
    dag_run = run_dag(f"kling_checked_warn_{layout}", run_conf={"destination": str(destination)})
    assert states(dag_run) == {"generate": "failed"}
    logged = _logged(capfd, caplog)
    assert "KlingNotAVideoError" in logged
    assert NOT_VIDEOS[media] in logged
    assert _files(tmp_path) == []  # nothing at or beside the destination, not even its folder
    assert sim.calls["submit"] == 1  # the retry resumed the request: a failed download is never paid again
    assert sim.calls["video"] >= 2  # ...and fetched the video again
    assert TOKEN not in logged


@pytest.mark.parametrize(("layout", "fetches"), [("polling", 1), ("ends_in_triggerer", 2)])
def test_a_retry_fetches_a_refused_video_again_and_stores_it(run_dag, sim, tmp_path, capfd, caplog, layout, fetches):
    page = Fault("status", 200, body=SIGN_IN_PAGE.decode(), content_type="text/html")
    sim.inject("video", *[page] * fetches)  # the first try's fetches (in the triggerer, then on a worker) get a page
    destination = tmp_path / "teaser.mp4"
    dag_run = run_dag(f"kling_checked_warn_{layout}", run_conf={"destination": str(destination)})
    assert states(dag_run) == {"generate": "success"}
    assert destination.read_bytes() == sim.video
    assert _files(tmp_path) == ["teaser.jpg", "teaser.last.png", "teaser.mp4"]
    assert sim.calls["submit"] == 1
    assert "The video URL served text/html, an HTML page" in _logged(capfd, caplog)


def test_taskflow_refuses_a_sign_in_page(run_dag, sim, tmp_path, capfd, caplog):
    sim.script(Scenario(media="html_page"))
    dag_run = run_dag("kling_checked_warn_taskflow", run_conf={"destination": str(tmp_path / "out" / "t.mp4")})
    assert states(dag_run) == {"generate": "failed"}
    assert "The video URL served text/html, an HTML page, not a video" in _logged(capfd, caplog)
    assert _files(tmp_path) == []
    assert sim.calls["submit"] == 1


def test_the_copy_operator_refuses_a_sign_in_page(run_dag, sim, tmp_path, capfd, caplog):
    sim.script(Scenario(media="html_page"))
    dag_run = run_dag("kling_copy_to_storage", run_conf={"destination": str(tmp_path / "out" / "v.mp4")})
    assert states(dag_run) == {"generate": "success", "copy": "failed"}
    assert "The video URL served text/html, an HTML page, not a video" in _logged(capfd, caplog)
    assert _files(tmp_path) == []


# --- check before paying what can be known before paying ---------------------------------------------

#: A destination that cannot land, the run's conf that makes it, and the words of the refusal.
CANNOT_LAND = {
    "exists": ("teaser.mp4", {}, "already exists; pass overwrite=True"),
    "a file in its path": ("blocker/teaser.mp4", {}, "cannot make the folder"),
    "no such connection": ("teaser.mp4", {"storage_conn_id": "no_such_store"}, "no Airflow connection 'no_such_store'"),
}


@pytest.mark.parametrize("problem", list(CANNOT_LAND))
@pytest.mark.parametrize(
    "dag_id", [*(f"kling_checked_warn_{layout}" for layout in LAYOUTS), "kling_checked_warn_taskflow"]
)
def test_a_video_that_could_not_land_is_never_paid_for(run_dag, sim, tmp_path, capfd, caplog, dag_id, problem):
    path, conf, words = CANNOT_LAND[problem]
    (tmp_path / "teaser.mp4").write_bytes(b"yesterday's take")
    (tmp_path / "blocker").write_bytes(b"a file where a folder should be")
    before = _files(tmp_path)
    dag_run = run_dag(dag_id, run_conf={"destination": str(tmp_path / path), **conf})
    assert states(dag_run) == {"generate": "failed"}
    assert words in _logged(capfd, caplog)
    assert sim.calls["submit"] == 0  # refused before the paid submit
    assert _files(tmp_path) == before
    assert (tmp_path / "teaser.mp4").read_bytes() == b"yesterday's take"


def test_a_destination_naming_the_request_is_checked_for_its_folder_only(run_dag, sim, tmp_path, capfd, caplog):
    (tmp_path / "blocker").write_bytes(b"a file")
    dag_run = run_dag(
        "kling_checked_warn_polling", run_conf={"destination": str(tmp_path / "blocker" / "{request_id}.mp4")}
    )
    assert states(dag_run) == {"generate": "failed"}
    assert f"cannot make the folder {tmp_path / 'blocker'}: {tmp_path / 'blocker'} is a file" in _logged(capfd, caplog)
    assert sim.calls["submit"] == 0


# --- the facts travel with the video -----------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_facts_and_poster_of_the_asked_shape(run_dag, sim, tmp_path, layout):
    destination = tmp_path / "vertical.mp4"
    dag_run = run_dag(
        f"kling_checked_warn_{layout}",
        run_conf={"destination": str(destination), "aspect_ratio": "9:16", "duration": 10},
    )
    assert states(dag_run) == {"generate": "success"}
    stored = xcoms(dag_run)[("generate", "result")]["stored"]
    assert (stored["width"], stored["height"], stored["aspect_ratio"]) == (180, 320, "9:16")
    assert stored["duration_s"] == pytest.approx(10, abs=0.1)
    assert stored["has_audio"] is False  # Kling 1.6 makes silent videos (2.6 has sound: tests/test_family.py)
    assert stored["mismatch"] == []
    assert stored["poster"] == destination.with_suffix(".jpg").as_uri()
    assert destination.with_suffix(".jpg").read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_video_of_another_shape_lands_and_says_so(run_dag, sim, tmp_path, capfd, caplog, mocker, layout):
    stats = mocker.patch("airflow_provider_kling.spend.stats")
    destination = tmp_path / "vertical.mp4"
    dag_run = run_dag(
        f"kling_checked_warn_{layout}",
        run_conf={"destination": str(destination), "aspect_ratio": "9:16", "prompt": "a lighthouse [sim:shape=16:9]"},
    )
    assert states(dag_run) == {"generate": "success"}
    stored = xcoms(dag_run)[("generate", "result")]["stored"]
    assert stored["mismatch"] == ["aspect_ratio: asked 9:16, came 320x180 (16:9)"]
    assert destination.exists()
    assert "is not the shape asked for: aspect_ratio: asked 9:16, came 320x180 (16:9)" in _logged(capfd, caplog)
    counted = [call.args[0] for call in stats.return_value.incr.call_args_list]
    assert counted.count("kling.shape_mismatch") == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strict_refuses_another_shape_and_never_retries(run_dag, sim, tmp_path, capfd, caplog, layout):
    destination = tmp_path / "out" / "teaser.mp4"
    dag_run = run_dag(
        f"kling_checked_strict_{layout}",
        run_conf={"destination": str(destination), "prompt": "a kite [sim:seconds=3]"},
    )
    assert states(dag_run) == {"generate": "failed"}
    logged = _logged(capfd, caplog)
    assert "KlingVideoShapeError" in logged
    assert "duration: asked 5 s, came 3.0" in logged
    assert [ti.try_number for ti in dag_run.get_task_instances()] == [1]  # retries=1, yet one try: never retried
    assert _files(tmp_path) == []
    assert sim.calls["submit"] == 1


# --- failures that say what happened ----------------------------------------------------------------


def test_a_download_cut_short_names_the_bytes_received_and_announced(finished, sim, tmp_path):
    hook, _, url = finished
    sim.inject("video", Fault("truncate"))
    with pytest.raises(KlingConnectionError, match=rf"cut short: {len(sim.video) // 2} of {len(sim.video)} announced"):
        hook.download_video(url, tmp_path / "out" / "v.mp4")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_an_expired_url_says_so_and_how_to_fetch_a_fresh_one(finished, sim, tmp_path, status):
    from airflow_provider_kling.hooks.download import VideoRules

    hook, rid, url = finished
    sim.inject("video", Fault("status", status, body="<Error><Code>AccessDenied</Code></Error>"))
    with pytest.raises(KlingVideoExpiredError, match=rf"HTTP {status}: it has most likely expired") as raised:
        hook.download_video(url, tmp_path / "v.mp4", rules=VideoRules(request_id=rid))
    assert f"`kling result {rid}`" in str(raised.value)
    assert _files(tmp_path) == []


def test_html_labelled_as_video_is_refused_by_its_first_bytes(finished, sim, tmp_path):
    hook, _, url = finished
    sim.inject("video", Fault("status", 200, body=SIGN_IN_PAGE.decode(), content_type="video/mp4"))
    with pytest.raises(KlingNotAVideoError) as raised:
        hook.download_video(url, tmp_path / "v.mp4")
    assert raised.value.came == "an HTML page"
    assert "Sign in" in str(raised.value)  # an excerpt of what came
    assert _files(tmp_path) == []


# --- the command line ---------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the test's own set-up printed (Airflow 2 logs to stdout) is not the command's
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kling_download_prints_the_facts_and_refuses_a_page(env_token, capsys, tmp_path):
    env_token.script(
        Scenario(queue_seconds=0, run_seconds=0), Scenario(queue_seconds=0, run_seconds=0, media="html_page")
    )
    with KlingHook(**FAST_HOOK) as hook:
        good, page = (hook.submit({"prompt": "a red kite"}).request_id for _ in range(2))
    code, out, err = _run(capsys, "--json", "download", good, str(tmp_path / "kite.mp4"))
    assert code == 0, err
    printed = json.loads(out)
    assert {key: printed[key] for key in CHECKED_5S_16_9} == CHECKED_5S_16_9
    assert printed["poster"] == (tmp_path / "kite.jpg").as_uri()
    code, out, err = _run(capsys, "download", page, str(tmp_path / "page" / "x.mp4"))
    assert code == 1
    assert err.count("\n") == 1
    assert "served text/html, an HTML page, not a video" in err
    assert not (tmp_path / "page").exists()


def test_kling_result_facts_checks_the_video_and_keeps_nothing(env_token, capsys):
    env_token.script(Scenario(queue_seconds=0, run_seconds=0))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a red kite", "duration": 10, "aspect_ratio": "1:1"}).request_id
    code, out, err = _run(capsys, "--json", "result", rid, "--facts")
    assert code == 0, err
    facts = json.loads(out)["facts"]
    assert (facts["width"], facts["height"], facts["aspect_ratio"]) == (240, 240, "1:1")
    assert facts["duration_s"] == pytest.approx(10, abs=0.1)


def test_kling_submit_download_checks_the_destination_before_paying(env_token, capsys, tmp_path):
    existing = tmp_path / "kite.mp4"
    existing.write_bytes(b"an earlier take")
    code, _, err = _run(
        capsys, "submit", "--prompt", "a kite", "--wait", "--download", str(existing), "--poll-interval", "0.05"
    )
    assert code == 1
    assert "already exists; pass overwrite=True" in err
    assert env_token.calls["submit"] == 0
    code, out, err = _run(
        capsys, "--json", "submit", "--prompt", "a kite", "--aspect-ratio", "9:16", "--wait",
        "--download", str(tmp_path / "new" / "kite.mp4"), "--poll-interval", "0.05",
    )  # fmt: skip
    assert code == 0, err
    stored = json.loads(out)["stored"]
    assert (stored["aspect_ratio"], stored["mismatch"]) == ("9:16", [])
    assert (tmp_path / "new" / "kite.jpg").exists()
    assert env_token.calls["submit"] == 1


def test_kling_without_any_credentials_says_what_to_set_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kling.cli", "status", "some-request"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kling status: no credentials: set RUNCOMFY_API_TOKEN")
    assert "airflow connections add kling_default" in last


def test_a_destination_the_os_refuses_is_one_line_not_a_traceback(env_token, capsys, tmp_path):
    env_token.script(Scenario(queue_seconds=0, run_seconds=0))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a red kite"}).request_id
    code, _, err = _run(capsys, "download", rid, "unknownstore://bucket/kite.mp4")
    assert code == 1
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "unknownstore://bucket/kite.mp4" in err  # the line is about the destination...
    assert "unknownstore" in err.split("unknownstore://bucket/kite.mp4", 1)[1]  # ...and says what of it is unknown

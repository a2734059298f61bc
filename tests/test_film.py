"""
Films longer than one shot, end to end: storyboards run with ``dag.test()`` against the simulator
over HTTP, their shots stored in an S3 API on loopback and chained by their last frames (signed
for the simulator, which starts each image-to-video take from its image), stitched into one
checked film; the whole film reserved from a budget before its first shot is paid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="moto's S3 server is a test tool of the dev group")
pytest.importorskip("airflow.providers.amazon", reason="Airflow's S3 filesystem comes with the Amazon provider")

from airflow_provider_kling.budgets import Budget
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.ledger import BudgetLedger
from tests.conftest import FAST_HOOK, states, xcoms
from tests.film_checks import film_facts, film_facts_of_bytes, loudness, psnr, rgb

DAGS = Path(__file__).parent / "dag_files"
FILE = "kling_film_dags.py"


@pytest.fixture
def films_budget(sim, tmp_path, monkeypatch):
    """``kling_default`` with the budget ``films`` (6 videos a day), its ledger in SQLite."""

    def with_cap(videos: int = 6) -> BudgetLedger:
        monkeypatch.setenv(
            "AIRFLOW_CONN_KLING_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")})
        )
        extra = {"budgets": {"films": {"videos": videos, "period": "day"}}, "budget_store": "kling_ledger"}
        monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra=extra))
        return BudgetLedger.from_connection("kling_ledger")

    return with_cap


def _read(s3, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    bucket = bucket.rpartition("@")[2]  # an ObjectStoragePath's URI names its connection
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_three_shots_chain_by_their_last_frames_into_one_checked_film(run_dag, sim, bucket, films_budget, tmp_path):
    ledger = films_budget(videos=6)
    film = tmp_path / "film.mp4"
    dag_run = run_dag("kling_film", folder=DAGS, file=FILE, run_conf={"film": str(film)})
    assert states(dag_run) == {
        "film.reserve": "success",
        "film.shot_1": "success",
        "film.shot_2": "success",
        "film.shot_3": "success",
        "film.stitch": "success",
        "film.release": "success",
    }
    values = xcoms(dag_run)
    shots = [values[(f"film.shot_{n}", "result")] for n in (1, 2, 3)]
    # Each shot started where the one before ended: its image was the last frame, signed and fetched.
    assert sim.image_fetches == ["ok", "ok", "ok"]
    for before, after in itertools.pairwise(shots):
        last = _read(bucket, before["stored"]["last_frame"])
        assert last.startswith(b"\x89PNG")
        first, width, height = rgb(_read(bucket, after["stored"]["uri"]))
        assert (width, height) == (320, 180)
        assert psnr(first, rgb(last)[0]) >= 40
    # The film: the shots' packets, as long as they are together, and checked like any stored take.
    result = values[("film.stitch", "result")]
    assert result["method"] == "remux"
    assert result["request_ids"] == [shot["request_id"] for shot in shots]
    assert result["cost"] == pytest.approx(sum(float(shot["cost"]) for shot in shots))
    stored = result["stored"]
    assert stored["uri"] == film.as_uri()
    assert stored["sha256"] == hashlib.sha256(film.read_bytes()).hexdigest()
    assert stored["mismatch"] == []
    assert Path(stored["poster"].removeprefix("file://")).read_bytes()[:3] == b"\xff\xd8\xff"
    assert Path(stored["last_frame"].removeprefix("file://")).read_bytes()[:4] == b"\x89PNG"
    facts = film_facts(str(film))
    shot_facts = [film_facts_of_bytes(_read(bucket, shot["stored"]["uri"])) for shot in shots]
    assert facts["frames"] == sum(shot["frames"] for shot in shot_facts)
    assert facts["video_s"] == pytest.approx(sum(shot["video_s"] for shot in shot_facts), abs=1 / 24)
    assert stored["duration_s"] == pytest.approx(15, abs=1 / 24 + 0.02)
    # The film's last frame is the last shot's.
    film_last = rgb(stored["last_frame"].removeprefix("file://"))[0]
    assert film_last == rgb(_read(bucket, shots[2]["stored"]["last_frame"]))[0]
    # The whole film was reserved first, then each shot spent its part: 3 spent, nothing left held.
    usage = ledger.usage(Budget("films", videos=6))
    assert (usage.videos, usage.reserved_videos, usage.video_seconds) == (3, 0, 15.0)
    assert sim.calls["submit"] == 3
    _listed_in_the_ui(dag_run, result)


def _listed_in_the_ui(dag_run, result: dict) -> None:
    """The Kling page lists the three shots and the film, each with its video and poster (Airflow 3.1+)."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

    if not AIRFLOW_V_3_1_PLUS:
        return  # no UI plugin before 3.1
    from airflow.utils.session import create_session

    from airflow_provider_kling.ui.takes import TakeFilter, list_takes

    with create_session() as session:
        takes = list_takes(session, {"kling_film"}, TakeFilter(dag_id="kling_film"))["takes"]
    listed = {take["task_id"]: take for take in takes if take["run_id"] == dag_run.run_id}
    assert sorted(listed) == ["film.shot_1", "film.shot_2", "film.shot_3", "film.stitch"]
    film = listed["film.stitch"]
    assert film["model"] == "film of 3 shots (remux)"
    assert film["prompt"] == "Key visual"
    assert film["cost"] == result["cost"]  # what its shots cost together
    assert {"video", "poster"} <= set(film["links"])
    assert all({"video", "poster"} <= set(listed[f"film.shot_{n}"]["links"]) for n in (1, 2, 3))


def test_a_chain_of_shots_that_wait_on_their_worker_continues_as_well(run_dag, sim, bucket, tmp_path):
    film = tmp_path / "film.mp4"
    dag_run = run_dag("kling_film_polling", folder=DAGS, file=FILE, run_conf={"film": str(film)})
    assert states(dag_run) == {"film.shot_1": "success", "film.shot_2": "success", "film.stitch": "success"}
    values = xcoms(dag_run)
    first, second = (values[(f"film.shot_{n}", "result")] for n in (1, 2))
    start, _, _ = rgb(_read(bucket, second["stored"]["uri"]))
    assert psnr(start, rgb(_read(bucket, first["stored"]["last_frame"]))[0]) >= 40
    assert values[("film.stitch", "result")]["stored"]["duration_s"] == pytest.approx(10, abs=0.06)


def test_a_silent_shot_between_sounding_ones_gets_silence_and_the_sound_stays_in_step(run_dag, sim, bucket, tmp_path):
    film = tmp_path / "film.mp4"
    dag_run = run_dag("kling_film_sound", folder=DAGS, file=FILE, run_conf={"film": str(film)})
    assert states(dag_run) == {f"film.shot_{n}": "success" for n in (1, 2, 3)} | {"film.stitch": "success"}
    shots = [xcoms(dag_run)[(f"film.shot_{n}", "result")]["stored"] for n in (1, 2, 3)]
    assert [shot["has_audio"] for shot in shots] == [True, False, True]  # Kling 2.6, 2.1, 2.6
    result = xcoms(dag_run)[("film.stitch", "result")]
    assert result["method"] == "remux"  # the pictures agree; the silence is the only sound encoded
    facts = film_facts(str(film))
    assert facts["video_s"] == pytest.approx(15, abs=1 / 24)
    assert facts["audio_s"] == pytest.approx(facts["video_s"], abs=1 / 24)  # as long as the picture
    assert facts["audio_decoded_s"] == pytest.approx(facts["video_s"], abs=1 / 24)  # and no gap in it
    assert (loudness(str(film), 0.5, 4.5) or 0) > 0.01  # the first shot's tone
    assert loudness(str(film), 5.1, 9.9) == pytest.approx(0, abs=1e-4)  # the silent shot: silence
    assert (loudness(str(film), 10.5, 14.5) or 0) > 0.01  # the third shot's tone, in step after the silence


def test_a_failed_second_shot_pays_for_no_third_and_leaves_nothing_queued_or_reserved(
    run_dag, sim, bucket, films_budget, tmp_path
):
    ledger = films_budget(videos=6)
    dag_run = run_dag("kling_film_fails", folder=DAGS, file=FILE, run_conf={"film": str(tmp_path / "film.mp4")})
    assert states(dag_run) == {
        "film.reserve": "success",
        "film.shot_1": "success",
        "film.shot_2": "failed",
        "film.shot_3": "upstream_failed",
        "film.stitch": "upstream_failed",
        "film.release": "success",  # the teardown runs however the film ended
    }
    assert str(dag_run.state) == "failed"  # the teardown's success does not hide the failed film
    assert sim.calls["submit"] == 2  # no third shot was paid
    with KlingHook(**FAST_HOOK) as hook:  # every request it paid for has finished: none is left queued
        assert all(hook.get_status(rid).status.is_finished for rid in sim.requests)
    usage = ledger.usage(Budget("films", videos=6))
    assert (usage.videos, usage.reserved_videos) == (2, 0)  # the third shot's reservation went back
    assert not (tmp_path / "film.mp4").exists()


def test_a_film_over_its_budget_pays_for_nothing(run_dag, sim, bucket, films_budget, tmp_path, capfd):
    ledger = films_budget(videos=2)  # three shots do not fit
    dag_run = run_dag("kling_film", folder=DAGS, file=FILE, run_conf={"film": str(tmp_path / "film.mp4")})
    found = states(dag_run)
    assert found["film.reserve"] == "failed"
    assert {found[f"film.shot_{n}"] for n in (1, 2, 3)} == {"upstream_failed"}
    assert sim.calls["submit"] == 0
    usage = ledger.usage(Budget("films", videos=2))
    assert (usage.videos, usage.reserved_videos) == (0, 0)
    assert "refuses the film before any shot is paid: 3 shots of 15 s in all" in capfd.readouterr().out


def test_taskflow_hands_each_result_on_and_the_film_crossfades(run_dag, sim, bucket, tmp_path):
    film = tmp_path / "film.mp4"
    dag_run = run_dag("kling_film_taskflow", folder=DAGS, file=FILE, run_conf={"film": str(film)})
    assert states(dag_run) == {"opening": "success", "closing": "success", "film": "success"}
    values = xcoms(dag_run)
    opening, closing = values[("opening", "return_value")], values[("closing", "return_value")]
    start, _, _ = rgb(_read(bucket, closing["stored"]["uri"]))
    assert psnr(start, rgb(_read(bucket, opening["stored"]["last_frame"]))[0]) >= 40
    result = values[("film", "return_value")]  # @task.kling_stitch returns the film's result
    assert result["method"] == "re-encode"
    assert result["why"] == "a crossfade of 0.5 s blends the shots' frames"
    assert result["request_ids"] == [opening["request_id"], closing["request_id"]]
    assert result["stored"]["duration_s"] == pytest.approx(9.5, abs=0.06)  # each join fades over 0.5 s
    assert film_facts(str(film))["frames"] == 228  # 24 fps x 9.5 s


def test_the_example_storyboard_makes_a_film_from_the_key_visual(run_dag, sim, s3, tmp_path, monkeypatch, capfd):
    from tests.conftest import REPO

    monkeypatch.setenv("AIRFLOW_CONN_KLING_IMAGES", s3.connection_json())
    monkeypatch.setenv("KLING_VIDEO_DIR", str(tmp_path))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.05")
    dag_run = run_dag("kling_storyboard", folder=REPO / "dags", file="kling_storyboard.py")
    assert states(dag_run) == {
        "film.shot_1": "success",
        "film.shot_2": "success",
        "film.shot_3": "success",
        "film.stitch": "success",
        "report": "success",
    }
    (film,) = tmp_path.glob("film-*.mp4")
    assert sim.image_fetches == ["ok", "ok", "ok"]  # the key visual, then each shot's last frame
    line = xcoms(dag_run)[("report", "return_value")]
    assert line.startswith(f"Kling film: 3 shots (remux) -> {film.as_uri()}: 15 s, 320x180, 24 fps, h264, no sound")

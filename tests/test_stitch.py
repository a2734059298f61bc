"""
Stitching stored takes with ``KlingStitchOperator`` in a real Airflow (``dag.test()``): remux keeps
every packet, other shapes re-encode and still play, a retry writes the same film, and bad takes
are refused naming the shot. And the last frame every stored video carries is the last one shown.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from airflow_provider_kling.exceptions import KlingInputError
from airflow_provider_kling.media import inspect_video_frames
from airflow_provider_kling.testing.media import make_video
from tests.conftest import states, xcoms

DAGS = Path(__file__).parent / "dag_files"
FILE = "kling_film_dags.py"


def _packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(video=0) if packet.size]


def _frames(path: Path) -> tuple[int, tuple[int, int]]:
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height)


@pytest.fixture
def takes(tmp_path):
    """Three stored takes of one model (5, 10 and 5 s), and one of another shape (9:16)."""
    made = {}
    for name, seconds, ratio in (("a", 5.0, "16:9"), ("b", 10.0, "16:9"), ("c", 5.0, "16:9"), ("tall", 5.0, "9:16")):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(make_video(seconds, ratio, audio=name != "b"))
        made[name] = path
    return made


def _stitch(run_dag, takes: list[Path], film: Path):
    conf = {"takes": [str(path) for path in takes], "film": str(film)}
    return run_dag("kling_stitch_files", folder=DAGS, file=FILE, run_conf=conf)


def test_takes_that_agree_are_remuxed_and_every_packet_is_kept(run_dag, takes, tmp_path):
    film = tmp_path / "out" / "film.mp4"
    dag_run = _stitch(run_dag, [takes["a"], takes["b"], takes["c"]], film)
    assert states(dag_run) == {"stitch": "success"}
    result = xcoms(dag_run)[("stitch", "result")]
    assert result["method"] == "remux"
    packets = [hashlib.sha256(p).digest() for p in _packets(film)]
    shots = [hashlib.sha256(p).digest() for shot in ("a", "b", "c") for p in _packets(takes[shot])]
    assert packets == shots  # every packet's bytes, in order
    assert result["stored"]["duration_s"] == pytest.approx(20, abs=0.06)
    assert result["stored"]["has_audio"] is True  # the silent 10-s shot in the middle got silence
    assert result["shots"] == [path.as_uri() for path in (takes["a"], takes["b"], takes["c"])]
    assert result["cost"] is None  # URIs say nothing of what they cost
    assert sorted(p.name for p in film.parent.iterdir()) == ["film.jpg", "film.last.png", "film.mp4"]
    # The film is an event of the task's asset, carrying what landed: downstream DAGs learn of it.
    from airflow.utils.session import create_session

    from tests.transfers.test_kling_to_storage import _asset_events

    with create_session() as session:
        (event,) = _asset_events(session, "file:///kling-test-films", dag_run.run_id)
        assert event.extra["uri"] == film.as_uri()
        assert event.extra["sha256"] == result["stored"]["sha256"]
        assert event.extra["duration_s"] == result["stored"]["duration_s"]


def test_the_films_lineage_has_each_shot_as_an_input_and_the_film_as_its_output(tmp_path):
    pytest.importorskip("airflow.providers.openlineage", reason="lineage needs the OpenLineage provider")
    from airflow_provider_kling.lineage import VIDEO_FACET_NAME, film_lineage

    stored = {"uri": "s3://brand/films/launch.mp4", "sha256": "ab" * 32, "duration_s": 15.0, "last_frame": "x"}
    shots = ["s3://brand/films/shot_1.mp4", "s3://brand/films/shot_2.mp4", "s3://brand/films/shot_3.mp4"]
    lineage = film_lineage(stored, shots)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("s3://brand", f"films/shot_{n}.mp4") for n in (1, 2, 3)]
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("s3://brand", "films/launch.mp4")
    facet = output.facets[VIDEO_FACET_NAME]
    assert (facet.sha256, facet.durationSeconds, facet.lastFrame) == ("ab" * 32, 15.0, "x")
    assert film_lineage(None, shots).outputs == []  # nothing before the film landed


def test_a_shot_of_another_size_is_re_encoded_saying_why_and_the_film_plays(run_dag, takes, tmp_path, capfd):
    film = tmp_path / "film.mp4"
    dag_run = _stitch(run_dag, [takes["a"], takes["tall"]], film)
    assert states(dag_run) == {"stitch": "success"}
    result = xcoms(dag_run)[("stitch", "result")]
    assert result["method"] == "re-encode"
    assert result["why"] == "the shots' streams disagree: shot 2: size 180x320, not 320x180"
    assert "Stitched 2 shots by re-encode: the shots' streams disagree: shot 2: size 180x320" in capfd.readouterr().out
    assert _frames(film) == (240, (320, 180))  # every frame decodes, at the first shot's size
    assert result["stored"]["duration_s"] == pytest.approx(10, abs=0.06)


def test_a_retry_after_a_crash_past_the_landing_keeps_the_same_film(run_dag, takes, tmp_path, mocker):
    from airflow_provider_kling.operators.stitch import KlingStitchOperator

    clean = tmp_path / "clean.mp4"
    _stitch(run_dag, [takes["a"], takes["c"]], clean)
    film = tmp_path / "film.mp4"
    returned = KlingStitchOperator._returned
    calls = []

    def crash_once(self, result):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the worker was lost after the film landed")
        return returned(self, result)

    mocker.patch.object(KlingStitchOperator, "_returned", autospec=True, side_effect=crash_once)
    dag_run = _stitch(run_dag, [takes["a"], takes["c"]], film)
    assert states(dag_run) == {"stitch": "success"}  # the retry found its own film there, not another's
    assert len(calls) == 2
    assert film.read_bytes() == clean.read_bytes()  # the same bytes as a stitch that never crashed


def test_a_crash_before_the_film_lands_leaves_nothing_then_the_retry_lands_it_whole(run_dag, takes, tmp_path, mocker):
    from airflow_provider_kling.hooks import download

    film = tmp_path / "film.mp4"
    inspect = download._inspect
    calls = []

    def crash_once(part, frames):
        calls.append(part)
        if len(calls) == 1:
            raise RuntimeError("the worker was lost while the film was being checked")
        return inspect(part, frames)

    mocker.patch.object(download, "_inspect", side_effect=crash_once)
    dag_run = _stitch(run_dag, [takes["a"], takes["c"]], film)
    assert states(dag_run) == {"stitch": "success"}
    assert len(calls) == 2
    assert not calls[0].exists()  # the first try's part file was removed, never moved into place
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("film", ".film"))) == [
        "film.jpg",
        "film.last.png",
        "film.mp4",
    ]
    assert _frames(film)[0] == 240


def test_another_film_at_the_destination_is_refused_unless_overwrite(run_dag, takes, tmp_path, capfd):
    film = tmp_path / "film.mp4"
    film.write_bytes(make_video(5.0))
    dag_run = _stitch(run_dag, [takes["a"], takes["c"]], film)
    assert states(dag_run) == {"stitch": "failed"}
    assert f"destination: {film} already exists and is another film; pass overwrite=True" in capfd.readouterr().out
    assert film.read_bytes() == make_video(5.0)


@pytest.mark.parametrize(
    ("takes", "message"),
    [
        (
            [{"request_id": "r-1", "video_url": "https://x/v.mp4"}],
            "takes: shot 1 (Kling request r-1) has no stored video",
        ),
        ("s3://b/one.mp4", "takes: must be a list of takes"),
        ([3], "takes: shot 1 is a int; give a take's result, its stored, or a video's URI"),
    ],
)
def test_takes_that_are_not_stored_videos_are_refused_naming_the_shot(takes, message):
    from airflow_provider_kling.film import shots_of

    with pytest.raises(KlingInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shots_of(takes)


def test_one_shot_is_no_film(takes, tmp_path):
    from airflow_provider_kling.shots import ShotFile
    from airflow_provider_kling.stitch import stitch

    with pytest.raises(KlingInputError, match="takes: a film needs two shots or more, got 1"):
        stitch([ShotFile("shot 1", lambda: str(takes["a"]))], str(tmp_path / "film.mp4"))


def test_a_storyboard_names_the_shot_it_cannot_make_when_the_dag_is_parsed():
    from airflow_provider_kling.storyboard import kling_storyboard

    with pytest.raises(KlingInputError, match=r"shots\[2\]: duration: must be 5 or 10 \(seconds\), got 7"):
        kling_storyboard("f", ["one", {"prompt": "two", "duration": 7}], film="x.mp4", shots_folder="s3://b/f")
    with pytest.raises(KlingInputError, match="a storyboard needs two shots or more, got 1"):
        kling_storyboard("f", ["one"], film="x.mp4", shots_folder="s3://b/f")


def test_a_last_frame_on_this_machine_is_refused_as_an_image_before_anything_is_sent():
    from airflow_provider_kling.images import image_source

    stored = {"uri": "file:///videos/a.mp4", "last_frame": "file:///videos/a.last.png"}
    with pytest.raises(KlingInputError, match=r"image: 'file:///videos/a\.last\.png' is a file on this machine"):
        image_source("image", {"request_id": "r-1", "stored": stored})
    with pytest.raises(KlingInputError, match="image: the take of Kling request r-1 given has no stored last frame"):
        image_source("image", {"request_id": "r-1", "video_url": "https://x/v.mp4"})


def test_the_last_frame_is_the_last_shown_not_the_last_keyframe(tmp_path):
    import av

    from airflow_provider_kling.testing.media import _frame

    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w", format="mp4") as out:  # a keyframe every 10 frames, 45 frames
        stream = out.add_stream("libx264", rate=24, options={"g": "10", "keyint_min": "10", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for index in range(45):
            out.mux(stream.encode(_frame(320, 180, index)))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        frames = [frame.reformat(format="rgb24") for frame in container.decode(video=0)]
        keyframes = [index for index, frame in enumerate(frames) if frame.key_frame]
    assert keyframes[-1] == 40
    last = inspect_video_frames(str(path)).last_frame
    assert last is not None
    with av.open(io.BytesIO(last)) as image:
        shown = bytes(next(image.decode(video=0)).reformat(format="rgb24").planes[0])
    assert shown == bytes(frames[44].planes[0])
    assert shown != bytes(frames[40].planes[0])


def test_a_re_encoded_film_keeps_each_shots_sound(run_dag, tmp_path):
    from tests.film_checks import loudness

    takes = []
    for name, ratio in (("wide", "16:9"), ("tall", "9:16")):
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(make_video(5.0, ratio, audio=True))
        takes.append(path)
    film = tmp_path / "film.mp4"
    dag_run = _stitch(run_dag, takes, film)
    assert states(dag_run) == {"stitch": "success"}
    assert xcoms(dag_run)[("stitch", "result")]["method"] == "re-encode"
    assert (loudness(str(film), 0.5, 4.5) or 0) > 0.01  # the first shot's tone
    assert (loudness(str(film), 5.5, 9.5) or 0) > 0.01  # and the second's, re-encoded in step


def test_a_crossfade_blends_picture_and_sound_over_the_join(tmp_path):
    """Two sounding shots crossfaded over 1 s: 9 s of film, sound all along it, the join's picture a blend."""
    from airflow_provider_kling.shots import ShotFile
    from airflow_provider_kling.stitch import stitch
    from tests.film_checks import film_facts, loudness

    shots = []
    for name, ratio in (("wide", "16:9"), ("tall", "9:16")):  # unlike pictures, so a blend shows
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(make_video(5.0, ratio, audio=True))
        shots.append(ShotFile(name, lambda path=path: str(path)))
    film = tmp_path / "film.mp4"
    plan = stitch(shots, str(film), crossfade=1.0)
    assert plan.method == "re-encode"
    facts = film_facts(str(film))
    assert facts["frames"] == 216  # 24 fps x (5 + 5 - 1) s
    assert facts["audio_decoded_s"] == pytest.approx(9.0, abs=0.05)
    for start in (0.5, 4.2, 8.0):  # before, in and after the fade: never a silent gap
        assert (loudness(str(film), start, start + 0.5) or 0) > 0.01
    import av

    def left_edge(frame) -> float:  # the tall shot is pillarboxed: black at the edges of the film's frame
        plane = frame.planes[0]
        rows = bytes(plane)
        edge = [rows[y * plane.line_size + x] for y in range(frame.height) for x in range(0, 20 * 3)]
        return sum(edge) / len(edge)

    with av.open(str(film)) as container:
        frames = [frame.reformat(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(tmp_path / "wide.mp4")) as container:
        wide = [frame.reformat(format="rgb24") for frame in container.decode(video=0)]
    # The fade is film frames 96 to 119: the wide shot's last 24 under the tall shot's first 24,
    # the tall one (pillarboxed: black at the film's edges) weighing (k + 1) / 25 at frame 96 + k.
    assert left_edge(frames[90]) == pytest.approx(left_edge(wide[90]), abs=8)  # before: the wide shot
    assert left_edge(frames[130]) < 5  # after: the tall shot's black bar
    for k in (6, 12, 18):
        expected = (1 - (k + 1) / 25) * left_edge(wide[96 + k])
        assert left_edge(frames[96 + k]) == pytest.approx(expected, abs=12), k


def test_a_storyboard_in_a_group_of_its_own_reserves_under_its_shots_real_task_ids():
    """A shot claims its part of the film by its task id: inside another group, the ids carry both prefixes."""
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG, TaskGroup

    from airflow_provider_kling.storyboard import kling_storyboard

    with DAG("storyboard_nested", schedule=None, start_date=datetime(2026, 1, 1)) as dag, TaskGroup("campaign"):
        kling_storyboard("film", ["one", "two"], film="x.mp4", shots_folder="s3://b/f", budget="films")
    reserve = dag.get_task("campaign.film.reserve")
    assert reserve.shots == [("campaign.film.shot_1", 5.0), ("campaign.film.shot_2", 5.0)]
    assert dag.get_task("campaign.film.shot_2").budget_reserved_by == "campaign.film.reserve"

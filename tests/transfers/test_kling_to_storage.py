from __future__ import annotations

import hashlib
import tracemalloc

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from airflow_provider_kling.exceptions import KlingConnectionError, KlingError, KlingInputError
from airflow_provider_kling.links.kling import KlingVideoLink
from airflow_provider_kling.testing import Fault, Scenario
from airflow_provider_kling.testing.simulator import synthetic_video_chunks
from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator
from tests.conftest import CHECKED_5S_16_9, states, xcoms


def _run_copy(run_dag, destination) -> object:
    return run_dag("kling_copy_to_storage", run_conf={"destination": str(destination)})


def test_copy_lands_whole_reports_its_digest_and_emits_the_asset(run_dag, sim, tmp_path):
    from airflow.utils.session import create_session

    dest = tmp_path / "out" / "video.mp4"
    dag_run = _run_copy(run_dag, f"file://{dest}")
    assert states(dag_run) == {"generate": "success", "copy": "success"}
    values = xcoms(dag_run)
    assert dest.read_bytes() == sim.video
    assert values[("copy", "return_value")] == f"file://{dest}"
    assert values[("copy", "size_bytes")] == len(sim.video)
    assert values[("copy", "sha256")] == hashlib.sha256(sim.video).hexdigest()
    assert values[("copy", "content_type")] == "video/mp4"
    assert values[("copy", "stored")] == {
        "uri": f"file://{dest}",
        "size_bytes": len(sim.video),
        "sha256": hashlib.sha256(sim.video).hexdigest(),
        "content_type": "video/mp4",
        **CHECKED_5S_16_9,
        "poster": f"file://{dest.with_suffix('.jpg')}",
        "last_frame": f"file://{dest.with_name('video.last.png')}",
        "request_id": values[("generate", "return_value")],
    }
    names = sorted(p.name for p in dest.parent.iterdir())
    assert names == ["video.jpg", "video.last.png", "video.mp4"]  # no part file left behind
    with create_session() as session:
        events = _asset_events(session, "file:///kling-test-videos", dag_run.run_id)
        assert len(events) == 1
        assert events[0].extra["uri"] == f"file://{dest}"  # downstream DAGs learn where the video is
        assert events[0].extra["size_bytes"] == len(sim.video)
        assert events[0].extra["duration_s"] == CHECKED_5S_16_9["duration_s"]  # and what the video is
        assert events[0].extra["aspect_ratio"] == "16:9"
        assert events[0].extra["has_audio"] is False


def _asset_events(session, uri: str, run_id: str) -> list:
    try:
        from airflow.models.asset import AssetEvent as Event
        from airflow.models.asset import AssetModel as Model

        asset_id = Event.asset_id
    except ImportError:  # Airflow 2 calls assets datasets
        from airflow.models.dataset import DatasetEvent as Event
        from airflow.models.dataset import DatasetModel as Model

        asset_id = Event.dataset_id
    query = session.query(Event).join(Model, asset_id == Model.id)
    return query.filter(Model.uri == uri, Event.source_run_id == run_id).all()


def test_the_extra_link_opens_the_video(run_dag, sim, tmp_path):
    dag_run = _run_copy(run_dag, tmp_path / "v.mp4")
    values = xcoms(dag_run)
    video_url = values[("generate", "result")]["video_url"]
    assert video_url.startswith(sim.url)
    if AIRFLOW_V_3_0_PLUS:  # the task runner stores the link for the UI when the task ends
        assert values[("generate", "_link_KlingVideoLink")] == video_url
    else:  # Airflow 2's webserver asks the link when the page is shown
        ti_key = dag_run.get_task_instance("generate").key
        assert KlingVideoLink().get_link(None, ti_key=ti_key) == video_url


def test_an_existing_destination_is_refused_and_kept(run_dag, sim, tmp_path, capfd):
    dest = tmp_path / "v.mp4"
    dest.write_bytes(b"an earlier video")
    dag_run = _run_copy(run_dag, dest)
    assert states(dag_run)["copy"] == "failed"
    assert dest.read_bytes() == b"an earlier video"
    assert "already exists; pass overwrite=True" in capfd.readouterr().out
    assert sim.calls["video"] == 0


@pytest.mark.parametrize("video_host", ["other", "redirect"])
def test_a_video_on_another_host_is_copied_without_the_token(run_dag, sim, tmp_path, video_host):
    sim.script(Scenario(video_host=video_host))
    dest = tmp_path / "v.mp4"
    dag_run = _run_copy(run_dag, dest)
    assert states(dag_run) == {"generate": "success", "copy": "success"}
    assert dest.read_bytes() == sim.video
    assert [auth for _, auth in sim.media_requests] == [None]  # it reached the other host, with no token


def test_a_gzip_encoded_video_lands_as_the_original_bytes(run_dag, sim, tmp_path):
    sim.inject("video", Fault("gzip"))
    dest = tmp_path / "v.mp4"
    dag_run = _run_copy(run_dag, dest)
    assert states(dag_run) == {"generate": "success", "copy": "success"}
    assert dest.read_bytes() == sim.video
    values = xcoms(dag_run)
    assert values[("copy", "size_bytes")] == len(sim.video)  # the file that landed, not the bytes on the wire
    assert values[("copy", "sha256")] == hashlib.sha256(sim.video).hexdigest()


def test_a_connection_dropped_mid_stream_leaves_no_file(finished, sim, tmp_path):
    hook, _, url = finished
    sim.inject("video", Fault("truncate"))
    with pytest.raises(KlingConnectionError, match=r"cut short|download failed"):
        hook.download_video(url, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_video_over_the_cap_is_refused_before_writing(finished, tmp_path):
    hook, _, url = finished
    with pytest.raises(KlingError, match="over the 1000-byte cap"):
        hook.download_video(url, tmp_path / "v.mp4", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_large_video_streams_in_flat_memory(finished, sim, tmp_path):
    hook, _, url = finished
    size = 200 * 1024 * 1024
    sim.video_size = size
    expected = hashlib.sha256()
    for chunk in synthetic_video_chunks(size):
        expected.update(chunk)
    try:
        tracemalloc.start()
        saved = hook.download_video(url, tmp_path / "big.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sim.video_size = None
    assert saved.size_bytes == size
    assert saved.sha256 == expected.hexdigest()
    assert peak < 30 * 1024 * 1024  # Python allocations while moving 200 MB (the simulator's included)


def test_operator_refuses_non_http_sources_and_ambiguous_input(sim, tmp_path):
    copy = KlingVideoToStorageOperator(task_id="c", video_url="file:///etc/passwd", destination=str(tmp_path / "x"))
    with pytest.raises(KlingInputError, match="http"):
        copy.execute(context={"ti": None})  # type: ignore[arg-type]
    both = KlingVideoToStorageOperator(task_id="c", request_id="r", video_url="https://x/y.mp4", destination="x")
    with pytest.raises(KlingInputError, match="exactly one of request_id or video_url"):
        both.execute(context={})  # type: ignore[arg-type]
    assert sim.calls["result"] == sim.calls["video"] == 0


def test_publishing_a_stored_copy_lands_whole_and_refuses_to_overwrite(tmp_path):
    from airflow_provider_kling.hooks.download import copy_video

    stored = tmp_path / "takes" / "a.mp4"
    stored.parent.mkdir()
    stored.write_bytes(b"".join(synthetic_video_chunks(1_200_000)))  # a real MP4 of more than one chunk
    published = copy_video(stored.as_uri(), tmp_path / "published" / "a.mp4")
    target = tmp_path / "published" / "a.mp4"
    assert target.read_bytes() == stored.read_bytes()
    assert published.uri == target.as_uri()
    assert published.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    with pytest.raises(KlingInputError, match="already exists; pass overwrite=True"):
        copy_video(stored, target)


def test_a_publish_cut_short_leaves_nothing_in_the_published_folder(tmp_path, mocker):
    from airflow_provider_kling.hooks.download import copy_video

    stored = tmp_path / "a.mp4"
    stored.write_bytes(b"".join(synthetic_video_chunks(3_000_000)))
    reads = 0
    real_open = type(stored).open

    def failing_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "r" in mode and path == stored:
            read = handle.read

            def read_then_fail(size=-1):
                nonlocal reads
                reads += 1
                if reads == 2:
                    raise OSError("the storage went away")
                return read(size)

            handle.read = read_then_fail
        return handle

    mocker.patch.object(type(stored), "open", failing_open)  # a disk error is what no server can show
    with pytest.raises(OSError, match="the storage went away"):
        copy_video(stored, tmp_path / "published" / "a.mp4")
    assert not (tmp_path / "published").exists()  # nothing left, not even the folder the copy made

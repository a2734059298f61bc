from __future__ import annotations

import pytest

from airflow_provider_kling.exceptions import KlingError, KlingInputError, KlingRequestCancelled
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.testing import Scenario
from tests.conftest import TOKEN, states, xcoms


@pytest.mark.parametrize("dag_id", ["kling_operator_deferrable", "kling_operator_polling"])
def test_operator_waits_and_pushes_the_result(run_dag, sim, dag_id):
    dag_run = run_dag(dag_id)
    assert states(dag_run) == {"generate": "success"}
    values = xcoms(dag_run)
    rid = values[("generate", "return_value")]
    assert rid in sim.requests
    assert values[("generate", "request_id")] == rid
    result = values[("generate", "result")]
    assert result["request_id"] == rid
    assert result["status"] == "succeeded"
    assert result["video_url"].endswith(f"/media/{rid}/video.mp4")
    assert sim.calls["submit"] == 1


def test_deferrable_operator_hands_waiting_to_the_trigger(run_dag, sim, capfd, caplog):
    sim.script(Scenario(queue_seconds=0.3, run_seconds=0.3))
    dag_run = run_dag("kling_operator_deferrable")
    out = capfd.readouterr().out + caplog.text
    assert "[DAG TEST] running trigger in line" in out
    assert xcoms(dag_run)[("generate", "result")]["cost"] == 0.5
    assert TOKEN not in out
    assert sim.calls["status"] == 1  # the task's own: the trigger goes on from it, not repeating it
    assert "is in_queue at queue position 3: waiting in the triggerer" in out


def test_submit_only_returns_the_request_id_without_waiting(run_dag, sim):
    sim.script(Scenario(queue_seconds=30))
    dag_run = run_dag("kling_operator_submit_only")
    values = xcoms(dag_run)
    assert states(dag_run) == {"generate": "success"}
    assert values[("generate", "return_value")] in sim.requests
    assert ("generate", "result") not in values
    assert sim.calls["status"] == 0


def test_templated_bad_input_fails_before_any_request(run_dag, sim, capfd):
    dag_run = run_dag("kling_operator_deferrable", run_conf={"duration": 7})
    assert states(dag_run) == {"generate": "failed"}
    assert sim.calls["submit"] == 0
    assert "duration: not an allowed duration (got '7'); allowed: 5 or 10" in capfd.readouterr().out


@pytest.mark.parametrize("dag_id", ["kling_operator_deferrable", "kling_operator_polling"])
def test_failed_generation_fails_the_task_with_the_reason(run_dag, sim, capfd, dag_id):
    sim.script(Scenario(outcome="failed", error="the prompt violates the content policy"))
    dag_run = run_dag(dag_id)
    assert states(dag_run) == {"generate": "failed"}
    assert "the prompt violates the content policy" in capfd.readouterr().out
    assert sim.calls["submit"] == 1


def test_cancelled_request_never_turns_green(run_dag, sim, capfd):
    sim.script(Scenario(outcome="cancelled"))
    dag_run = run_dag("kling_operator_deferrable")
    assert states(dag_run) == {"generate": "failed"}
    assert "was cancelled" in capfd.readouterr().out


def _operator(**kwargs) -> KlingTextToVideoOperator:
    return KlingTextToVideoOperator(task_id="t", prompt="x", **kwargs)


def test_execute_complete_rejects_unknown_events():
    with pytest.raises(KlingError, match="Unexpected event"):
        _operator().execute_complete(context={}, event={"status": "maybe"})
    with pytest.raises(KlingError, match="Unexpected event"):
        _operator().execute_complete(context={}, event=None)


def test_execute_complete_raises_the_typed_error_of_an_event():
    from airflow_provider_kling.triggers.kling import error_event

    event = error_event("r1", KlingRequestCancelled("r1 was cancelled", request_id="r1"))
    assert event["outcome"] == "KlingRequestCancelled"  # the event's one discriminator
    with pytest.raises(KlingRequestCancelled) as caught:
        _operator().execute_complete(context={}, event=event)
    assert caught.value.request_id == "r1"


def test_no_connection_lookup_at_construction(mocker):
    lookup = mocker.patch("airflow_provider_kling.hooks.kling.KlingHook.get_connection")
    operator = _operator(kling_conn_id="does_not_exist")
    assert lookup.call_count == 0
    assert operator.deferrable is False


def test_other_models_take_their_input_as_given():
    op = _operator(model="kling/kling-1-6/pro/image-to-video", input={"image_url": "https://x/y.png"})
    assert op.build_input() == {"prompt": "x", "image_url": "https://x/y.png"}
    with pytest.raises(KlingInputError, match="input: must be a mapping"):
        _operator(input="duration=5").build_input()  # type: ignore[arg-type]


def test_templated_fields_cover_every_input():
    assert set(KlingTextToVideoOperator.template_fields) >= {
        "prompt",
        "duration",
        "aspect_ratio",
        "negative_prompt",
        "cfg_scale",
        "model",
        "input",
    }


def test_another_model_runs_with_its_own_input_as_given(run_dag, sim):
    image = "https://cdn.example.com/cat.png"
    dag_run = run_dag("kling_other_model", run_conf={"image_url": image})
    assert states(dag_run) == {"generate": "success"}
    (request,) = sim.requests.values()
    assert request.model == "kling/kling-1-6/pro/image-to-video"
    assert request.input == {"prompt": "a paper boat on a rainy street", "image_url": image, "duration": 5}


def test_another_models_local_image_is_refused_before_any_request(run_dag, sim, capfd):
    dag_run = run_dag("kling_other_model", run_conf={"image_url": "/home/me/cat.png"})
    assert states(dag_run) == {"generate": "failed"}
    assert "image_url: '/home/me/cat.png' is a file on this machine" in capfd.readouterr().out
    assert sim.calls["submit"] == 0

"""``@task.kling``: TaskFlow functions that return a prompt or an input, run in a real DAG (deferred)."""

from __future__ import annotations

import pytest

from tests.conftest import states, xcoms


def test_taskflow_generations_map_wait_deferred_and_pass_their_result_on(run_dag, sim):
    dag_run = run_dag("kling_taskflow")
    assert set(states(dag_run).values()) == {"success"}
    assert sim.calls["submit"] == 3  # two mapped, one single: one paid submit each
    prompts = sorted(request.input["prompt"] for request in sim.requests.values())
    assert prompts[0] == "A lighthouse at dusk, waves below"
    assert "a fountain pen" in prompts[1]
    ratios = {request.input["prompt"]: request.input["aspect_ratio"] for request in sim.requests.values()}
    assert ratios["A lighthouse at dusk, waves below"] == "9:16"  # the returned input, validated and sent
    published = xcoms(dag_run)[("publish", "return_value")]
    assert sorted(published) == sorted(f"{sim.url}/media/{rid}/video.mp4" for rid in sim.requests)


def test_the_decorator_is_registered_with_airflow():
    from airflow.providers.common.compat.sdk import task

    from airflow_provider_kling import get_provider_info
    from airflow_provider_kling.decorators.kling import kling_task

    # Airflow finds it through the provider info, as it finds the official providers' decorators.
    from airflow_provider_kling.decorators.stitch import kling_stitch_task

    assert get_provider_info()["task-decorators"] == [
        {"name": "kling", "class-name": "airflow_provider_kling.decorators.kling.kling_task"},
        {"name": "kling_stitch", "class-name": "airflow_provider_kling.decorators.stitch.kling_stitch_task"},
    ]
    assert task.kling is kling_task
    assert task.kling_stitch is kling_stitch_task


def test_a_function_that_returns_neither_a_prompt_nor_an_input_fails_before_any_request(sim):
    from airflow_provider_kling.decorators.kling import _KlingDecoratedOperator
    from airflow_provider_kling.exceptions import KlingInputError

    task = _KlingDecoratedOperator(task_id="t", python_callable=lambda: 42)
    with pytest.raises(KlingInputError, match=r"must return a prompt \(str\) or an input \(dict\), got int"):
        task.execute({})  # type: ignore[arg-type]
    assert sim.calls["submit"] == 0

"""The "Kling video" link: it opens the video, and looking it up writes no error into a healthy task's log."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TEST_DAGS, states, xcoms

ERROR_LINE = re.compile(r"\[error\s*\]|\bERROR\b")


@pytest.mark.parametrize(
    "dag_id",
    ["kling_operator_deferrable", "kling_operator_submit_only", "kling_sensor_deferrable", "kling_sensor_poke"],
)
def test_a_healthy_tasks_log_has_no_error_line(run_dag, sim, capfd, caplog, dag_id):
    dag_run = run_dag(dag_id)
    assert set(states(dag_run).values()) == {"success"}
    logged = capfd.readouterr().out + caplog.text
    assert [line for line in logged.splitlines() if ERROR_LINE.search(line)] == []


def test_the_link_opens_the_video_of_a_finished_wait(run_dag, sim):
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    from airflow_provider_kling.links.kling import KlingVideoLink

    dag_run = run_dag("kling_sensor_deferrable")
    values = xcoms(dag_run)
    video_url = values[("wait", "return_value")]["video_url"]
    assert video_url.startswith(sim.url)
    if AIRFLOW_V_3_0_PLUS:  # Airflow 3 keeps each link as an XCom when the task ends
        assert values[("wait", KlingVideoLink().xcom_key)] == video_url
        assert values[("generate", KlingVideoLink().xcom_key)] == ""  # submitted only: no video to open
    else:  # Airflow 2's webserver asks the link when it draws the page: ask it the same way
        from airflow_provider_kling.testing import load_dags

        dag = load_dags(TEST_DAGS / "kling_test_dags.py")["kling_sensor_deferrable"]
        for task_id, expected in (("wait", video_url), ("generate", "")):
            ti_key = dag_run.get_task_instance(task_id).key
            assert KlingVideoLink().get_link(dag.get_task(task_id), ti_key=ti_key) == expected

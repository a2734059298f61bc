"""Test a Kling DAG offline: the ``kling_simulator`` fixture comes with airflow-provider-kling."""

from __future__ import annotations

from airflow_provider_kling.testing import Fault, Scenario


def test_the_dag_generates_exactly_one_video(kling_simulator, dagbag):
    dag_run = dagbag["my_kling_dag"].test()
    assert dag_run.state == "success"
    assert kling_simulator.calls["submit"] == 1


def test_a_failed_generation_fails_the_run(kling_simulator, dagbag):
    kling_simulator.script(Scenario(outcome="failed", error="the prompt violates the content policy"))
    dag_run = dagbag["my_kling_dag"].test()
    assert dag_run.state == "failed"
    assert kling_simulator.calls["submit"] == 1


def test_a_flaky_status_call_is_retried(kling_simulator, dagbag):
    kling_simulator.inject("status", Fault("status", status_code=503))
    dag_run = dagbag["my_kling_dag"].test()
    assert dag_run.state == "success"
    assert kling_simulator.calls["submit"] == 1

"""The API token never surfaces: not in logs (debug included), XCom, rendered fields, trigger kwargs or errors."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_kling.exceptions import KlingAuthenticationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import TOKEN, xcoms

WRONG_TOKEN = "sk-wrong-token-that-must-not-leak-4242424242"


def _rendered_fields(dag_run) -> str:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        return json.dumps([row.rendered_fields for row in rows], default=str)


def _everything_a_user_can_see(dag_run, capfd, caplog) -> str:
    out, err = capfd.readouterr()
    return "\n".join([out, err, caplog.text, repr(xcoms(dag_run)), _rendered_fields(dag_run)])


@pytest.mark.parametrize("dag_id", ["kling_sensor_deferrable", "kling_operator_polling"])
def test_token_is_nowhere_in_a_run_with_retries_at_debug_level(run_dag, sim, capfd, caplog, dag_id):
    caplog.set_level(logging.DEBUG)
    sim.script(Scenario(queue_seconds=0.2))
    sim.inject("status", Fault("status", status_code=503), Fault("drop"))
    dag_run = run_dag(dag_id)
    seen = _everything_a_user_can_see(dag_run, capfd, caplog)
    assert "retrying" in seen  # the retries were logged, and the scan covered those lines
    assert _rendered_fields(dag_run) != "[]"
    assert TOKEN not in seen


def test_a_rejected_token_is_not_echoed_anywhere(run_dag, sim, capfd, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(WRONG_TOKEN))
    dag_run = run_dag("kling_operator_polling")
    seen = _everything_a_user_can_see(dag_run, capfd, caplog)
    assert "400004" in seen or "401" in seen  # the task failed with the server's answer...
    assert WRONG_TOKEN not in seen  # ...and without the token
    assert sim.calls["submit"] == 1


def test_error_text_and_hook_repr_hold_no_token(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(WRONG_TOKEN))
    with KlingHook(retry_delay=0.01) as hook:
        with pytest.raises(KlingAuthenticationError) as caught:
            hook.get_status("anything")
        assert WRONG_TOKEN not in repr(hook) + repr(vars(hook))
    for text in (str(caught.value), repr(caught.value), json.dumps(caught.value.to_event())):
        assert WRONG_TOKEN not in text

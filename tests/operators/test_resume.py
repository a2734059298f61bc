"""A retried task resumes the request its earlier try submitted instead of paying for another."""

from __future__ import annotations

import pytest

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.resume import input_fingerprint
from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import FAST_HOOK, states, xcoms

STATUS_DOWN = [Fault("status", status_code=503)] * FAST_HOOK["max_attempts"]
#: A poll that fails for good (not transient): the try ends after its submit.
POLL_FAILS = Fault("status", status_code=404)


def _tries(dag_run) -> int:
    (ti,) = dag_run.get_task_instances()
    return ti.try_number


def test_deferred_task_retried_after_its_deadline_resumes_the_running_request(run_dag, sim):
    sim.script(Scenario(queue_seconds=0, run_seconds=1.0))
    dag_run = run_dag("kling_operator_retry_deferrable")
    assert states(dag_run) == {"generate": "success"}
    assert _tries(dag_run) >= 2
    assert sim.calls["submit"] == 1
    rid = xcoms(dag_run)[("generate", "return_value")]
    assert list(sim.requests) == [rid]


def test_a_poll_that_fails_after_its_retries_does_not_end_the_try(run_dag, sim, capfd, caplog):
    sim.script(Scenario(queue_seconds=0.3))
    sim.inject("status", *STATUS_DOWN)  # one poll fails after all of the hook's attempts
    dag_run = run_dag("kling_operator_retry_polling")
    assert states(dag_run) == {"generate": "success"}
    assert _tries(dag_run) == 1  # the wait rode the outage out: no worker run lost to it
    assert sim.calls["submit"] == 1
    out = capfd.readouterr().out + caplog.text
    assert "the wait goes on, polling again every 30 s at most" in out
    assert "answered again after 1 failed polls" in out


@pytest.mark.parametrize("dag_id", ["kling_operator_retry_polling_deadline", "kling_operator_retry_deferrable"])
def test_polls_failing_past_the_deadline_end_the_try_and_the_retry_resumes(run_dag, sim, dag_id):
    sim.script(Scenario(queue_seconds=0.3, run_seconds=0.3))
    sim.inject("status", *STATUS_DOWN * 6)  # polls fail until the 0.3-0.5 s deadline has passed
    dag_run = run_dag(dag_id)
    assert states(dag_run) == {"generate": "success"}
    assert _tries(dag_run) >= 2
    assert sim.calls["submit"] == 1
    assert sim.calls["cancel"] == 0  # kept for the retry, which resumed it


def test_a_failed_generation_is_submitted_anew_on_retry(run_dag, sim):
    sim.script(Scenario(outcome="failed"), Scenario())
    dag_run = run_dag("kling_operator_retry_polling")
    assert states(dag_run) == {"generate": "success"}
    assert sim.calls["submit"] == 2
    rid = xcoms(dag_run)[("generate", "return_value")]
    assert sim.requests[rid].scenario.outcome == "succeeded"


def test_without_a_task_state_store_a_variable_carries_the_request(run_dag, sim):
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    sim.script(Scenario(queue_seconds=0.3))
    sim.inject("status", POLL_FAILS)
    dag_run = run_dag("kling_operator_retry_without_state_store")
    assert states(dag_run) == {"generate": "success"}
    assert _tries(dag_run) == 2
    assert sim.calls["submit"] == 1
    with create_session() as session:  # dropped once the task succeeded
        this_dag = "kling_request:kling_operator_retry_without_state_store:%"
        assert session.query(Variable).filter(Variable.key.like(this_dag)).count() == 0


def test_resume_can_be_switched_off(run_dag, sim):
    sim.script(Scenario(queue_seconds=0.3))
    sim.inject("status", POLL_FAILS)
    dag_run = run_dag("kling_operator_retry_no_resume")
    assert states(dag_run) == {"generate": "success"}
    assert sim.calls["submit"] == 2


@pytest.fixture
def operator(sim) -> KlingTextToVideoOperator:
    return KlingTextToVideoOperator(task_id="t", prompt="x", hook_params=FAST_HOOK)


def _resumable(operator: KlingTextToVideoOperator, recorded: dict, fingerprint: str) -> str | None:
    from airflow_provider_kling.resume import SubmitOnce

    submission = SubmitOnce(
        operator.hook,
        None,
        operator.model,
        "fail",
        log=operator.log,
        operator=operator,
        spend=operator.spend,
        holder="t",
    )
    return submission._resumable(recorded, fingerprint)


def test_a_request_for_another_input_is_not_resumed(operator, sim):
    body = operator.build_input()
    recorded = {"request_id": "sim-000001-x", "fingerprint": input_fingerprint(operator.model, {**body, "prompt": "y"})}
    assert _resumable(operator, recorded, input_fingerprint(operator.model, body)) is None
    assert sim.calls["status"] == 0


def test_the_request_of_an_input_that_changed_is_cancelled_while_queued(operator, sim, caplog, capfd):
    with KlingHook(**FAST_HOOK) as hook:
        old = hook.submit({"prompt": "y"}).request_id
    fingerprint = input_fingerprint(operator.model, operator.build_input())
    assert _resumable(operator, {"request_id": old, "fingerprint": "another input"}, fingerprint) is None
    assert sim.requests[old].cancelled_at is not None  # nobody waits for it any more: not billed
    assert f"Cancelled Kling request {old}" in caplog.text + capfd.readouterr().out


def test_a_handed_off_request_of_another_input_is_left_alone(operator, sim):
    with KlingHook(**FAST_HOOK) as hook:
        old = hook.submit({"prompt": "y"}).request_id
    recorded = {"request_id": old, "fingerprint": "another input", "delivered": True}
    assert _resumable(operator, recorded, input_fingerprint(operator.model, operator.build_input())) is None
    assert sim.calls["cancel"] == 0  # a downstream task may be waiting for it


def test_an_expired_request_is_not_resumed(operator, sim):
    fingerprint = input_fingerprint(operator.model, operator.build_input())
    recorded = {"request_id": "sim-expired", "fingerprint": fingerprint}
    assert _resumable(operator, recorded, fingerprint) is None
    assert sim.calls["status"] == 1


class _MemoryRecord:
    """The record as a killed worker left it: the task state store cannot be killed mid-submit in dag.test()."""

    def __init__(self, value=None) -> None:
        self.value = value
        self.saved: list[dict] = []

    def load(self):
        return self.value

    def save(self, record) -> None:
        self.value = record
        self.saved.append(record)

    def forget(self) -> None:
        self.value = None


class _TaskInstance:
    def xcom_push(self, key: str, value: object) -> None:
        pass


def _operator(record: _MemoryRecord, **kwargs) -> KlingTextToVideoOperator:
    class Recorded(KlingTextToVideoOperator):
        def _request_record(self, context):
            return record

    return Recorded(task_id="t", prompt="a paper boat", hook_params=FAST_HOOK, **kwargs)


def _interrupted_mark() -> dict:
    body = {"prompt": "a paper boat", "duration": 5, "aspect_ratio": "16:9", "negative_prompt": "", "cfg_scale": 0.5}
    return {"fingerprint": input_fingerprint("kling/kling-1-6/pro/text-to-video", body), "submitting_since": 1.8e9}


def test_a_retry_after_a_submit_cut_off_in_flight_does_not_pay_again(sim):
    from airflow_provider_kling.exceptions import KlingSubmitOutcomeUnknownError

    record = _MemoryRecord(_interrupted_mark())
    with pytest.raises(KlingSubmitOutcomeUnknownError, match=r"stopped .* while its submit .* was in flight"):
        _operator(record).execute({"ti": _TaskInstance()})
    assert sim.calls["submit"] == 0
    assert record.value == _interrupted_mark()  # still marked: clearing the task does not pay blindly either


def test_a_retry_after_a_submit_cut_off_pays_again_when_told_to(sim, caplog, capfd):
    record = _MemoryRecord(_interrupted_mark())
    rid = _operator(record, if_submit_interrupted="submit").execute({"ti": _TaskInstance()})
    assert sim.calls["submit"] == 1
    assert record.saved[-1]["request_id"] == rid
    assert "it may have created a request that is billed; submitting anew" in caplog.text + capfd.readouterr().out


def test_the_mark_is_made_before_the_submit_and_dropped_when_nothing_was_created(sim):
    from airflow_provider_kling.exceptions import KlingAuthenticationError

    record = _MemoryRecord()
    sim.inject("submit", Fault("status", status_code=401, body='{"error_code": 400004, "error_message": "bad token"}'))
    with pytest.raises(KlingAuthenticationError):
        _operator(record).execute({"ti": _TaskInstance()})
    assert record.value is None  # a refused submit created nothing: no mark is left to block the next try
    rid = _operator(record).execute({"ti": _TaskInstance()})
    fingerprint = _interrupted_mark()["fingerprint"]
    marked, recorded, handed_off = record.saved[-3:]
    assert marked["fingerprint"] == fingerprint
    assert "submitting_since" in marked  # saved before the paid call
    assert marked["paid"] == 1  # counted before the money goes: a kill mid-submit may have paid
    assert recorded == {"request_id": rid, "fingerprint": fingerprint, "paid": 1}  # saved the moment it answered
    assert handed_off == {**recorded, "delivered": True}  # kept once the task succeeds: its request goes on

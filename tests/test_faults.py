"""
Every fault of the simulator's switchboard, met inside a real DAG run: the run either succeeds
with exactly one paid request, or fails with a typed, clear message and nothing paid twice.
"""

from __future__ import annotations

import pytest

from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import states

DEFERRED, POLLING, RETRIED = "kling_operator_deferrable", "kling_operator_polling", "kling_operator_retry_polling"
HTML_502 = "<html><h1>502 Bad Gateway</h1></html>"
PROXY = Fault.proxy_error()


def case(
    name: str,
    faults: dict,
    scenario: Scenario | None,
    dag_id: str,
    state: str,
    message: str | None = None,
    paid: int = 1,
):
    return pytest.param(faults, scenario, dag_id, state, message, paid, id=name)


FAULTS = [
    case("429 with Retry-After on submit", {"submit": [Fault("status", 429, headers={"Retry-After": "0"})]}, None,
         DEFERRED, "success"),
    case("5xx on status", {"status": [Fault("status", 503), Fault("status", 502)]}, None, DEFERRED, "success"),
    case("dropped connection on status", {"status": [Fault("drop")]}, None, DEFERRED, "success"),
    case("status slower than the read timeout", {"status": [Fault("delay", seconds=1.5)]}, None, POLLING, "success"),
    case("200 carrying an error_code", {"status": [Fault("error_code")]}, None, DEFERRED, "success"),
    case("malformed result", {"result": [Fault("malformed", body=HTML_502)]}, None, DEFERRED, "failed",
         "<html><h1>502 Bad Gateway"),
    case("expired request", {}, Scenario(expire=True, queue_seconds=0, run_seconds=0.1), DEFERRED, "failed", "404001"),
    case("server-side cancel", {}, Scenario(outcome="cancelled"), DEFERRED, "failed", "was cancelled"),
    case("failed generation", {}, Scenario(outcome="failed", error="face detection failed"), DEFERRED, "failed",
         "face detection failed"),
    # With retries configured: the task still fails at once, since a retry could pay twice.
    case("submit creates the request, then answers 500", {"submit": [Fault("status", 500, after_create=True)]}, None,
         RETRIED, "failed", "may have created a request that will be billed"),
    # A proxy's HTML error page: retried on polls; on the submit, the outcome is unknown, so not repeated.
    case("proxy 502 page on status, deferred", {"status": [PROXY]}, None, DEFERRED, "success"),
    case("proxy 502 page on result, in the triggerer", {"result": [PROXY, PROXY]}, None, DEFERRED, "success"),
    case("proxy 502 page on status, polling", {"status": [PROXY]}, None, POLLING, "success"),
    case("proxy 502 page on submit", {"submit": [PROXY]}, None, RETRIED, "failed", "502 Bad Gateway", paid=0),
    # An answer cut short (announced length not sent) is a dropped connection: retried on polls.
    case("status cut short", {"status": [Fault("truncate")]}, None, DEFERRED, "success"),
    case("result cut short, in the triggerer", {"result": [Fault("truncate")]}, None, DEFERRED, "success"),
    case("result cut short, polling", {"result": [Fault("truncate")]}, None, POLLING, "success"),
    case("submit answer cut short after creating", {"submit": [Fault("truncate")]}, None, RETRIED, "failed",
         "may have created a request that will be billed"),
    case("HTML with 200 on status", {"status": [Fault("malformed", body=HTML_502, content_type="text/html")]}, None,
         POLLING, "failed", "not JSON"),
    # A poll that never answers: the read timeout ends it, and the next attempt goes through.
    case("status never answers, polling", {"status": [Fault("hang")]}, None, POLLING, "success"),
    case("status never answers, deferred", {"status": [Fault("hang")]}, None, DEFERRED, "success"),
    case("result never answers, in the triggerer", {"result": [Fault("hang")]}, None, DEFERRED, "success"),
]  # fmt: skip


@pytest.mark.parametrize(("faults", "scenario", "dag_id", "state", "message", "paid"), FAULTS)
def test_fault_ends_in_success_or_a_clear_failure_with_one_paid_request(
    run_dag, sim, capfd, caplog, faults, scenario, dag_id, state, message, paid
):
    if scenario:
        sim.script(scenario)
    for call, queued in faults.items():
        sim.inject(call, *queued)
    dag_run = run_dag(dag_id)
    assert states(dag_run) == {"generate": state}
    assert len(sim.requests) == paid  # one paid request at most, whatever happened
    if message:
        assert message in capfd.readouterr().out + caplog.text

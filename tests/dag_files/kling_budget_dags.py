"""DAGs the budget tests run with ``dag.test()``: mapped generations against a cap, retries against a task's cap."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
WAIT = {"wait_for_completion": True, "poll_interval": 0.05, "hook_params": FAST}

with DAG("kling_budget_mapped", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator.partial(task_id="generate", budget="team", duration=5, **WAIT).expand(
        prompt=[f"a paper boat, take {n} [sim:queue=0][sim:run=0.2]" for n in range(5)]
    )

with DAG("kling_budget_retries", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    KlingTextToVideoOperator(
        task_id="generate",
        prompt="a model that keeps failing [sim:fail][sim:queue=0][sim:run=0]",
        max_paid_submits=2,
        retries=4,
        retry_delay=timedelta(seconds=0),
        **WAIT,
    )

with DAG("kling_metrics", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # Four takes against a budget of three: whichever comes last is refused before it is sent.
    KlingTextToVideoOperator.partial(task_id="generate", budget="team", duration=5, deferrable=True, **WAIT).expand(
        prompt=[f"take {n} [sim:queue=0.3][sim:run=0.4]" for n in range(4)]
    )
    # Fails on the server.
    KlingTextToVideoOperator(task_id="fails", prompt="a take that fails [sim:fail][sim:queue=0][sim:run=0.2]", **WAIT)
    # Stays queued past its queue limit: cancelled, free.
    KlingTextToVideoOperator(task_id="queued_too_long", prompt="a slow take [sim:queue=600]", queue_timeout=0.5, **WAIT)
    # Still running at its deadline: billed without a video.
    KlingTextToVideoOperator(
        task_id="running_too_long", prompt="a long take [sim:queue=0][sim:run=600]", timeout=0.5, **WAIT
    )

with DAG("kling_budget_store_down", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # Its budget's ledger does not answer: the task fails before anything is sent, naming the store.
    KlingTextToVideoOperator(task_id="generate", prompt="a kite", budget="team", deferrable=True, **WAIT)

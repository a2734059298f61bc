"""
``kling_review_retried`` (Airflow 3.1+): a review whose first try writes its form and then fails
(its notifier raises, as a Slack outage would), and whose retry reviews another take: the take is
``req-<try number>``, as if the generation upstream had run again. Airflow 3.1 to 3.3 keep the
first try's form for the retry, as they do for a cleared task (both get a new try of the same
task instance).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS


def notifier_down_on_first_try(context: Any) -> None:
    if context["ti"].try_number == 1:
        raise RuntimeError("the notifier is down (simulated)")


if AIRFLOW_V_3_1_PLUS:
    from airflow.providers.standard.operators.empty import EmptyOperator

    from airflow_provider_kling.operators.review import KlingReviewOperator

    with DAG("kling_review_retried", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        KlingReviewOperator(
            task_id="review",
            prompt="A kite over a hill, take {{ ti.try_number }}",
            result={
                "request_id": "req-{{ ti.try_number }}",
                "video_url": "https://videos.example.com/req-{{ ti.try_number }}.mp4",
            },
            approve_task_id="approved",
            reject_task_id="rejected",
            notifiers=[notifier_down_on_first_try],
            retries=1,
            retry_delay=timedelta(seconds=0),
        ) >> [EmptyOperator(task_id="approved"), EmptyOperator(task_id="rejected")]

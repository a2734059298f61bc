"""
A person approves each video in the Airflow UI before it is published (Airflow 3.1+).

take 1: generate -> copy -> review --Approve--> publish -> notify
                                  --Revise---> take 2: generate (revised prompt) -> copy -> review ...
                                  --Reject---> record the rejection (the reason is the comment)

Each take generates with ``@task.kling`` (waiting in the triggerer), copies the video to
``KLING_VIDEO_DESTINATION`` (or ``KLING_VIDEO_DIR``) under ``takes/``, and waits for a person in
Airflow's **Required actions** (``KlingReviewOperator``). The form shows the prompt, a link to the
video (to the stored copy when ``KLING_VIDEO_FOLDER_URL`` says where browsers reach the folder,
else RunComfy's URL), the stored copy's location, its duration and cost.

- **Approve** copies the take to ``published/``, emits the ``file:///kling-published`` asset and
  sends a notice.
- **Revise** makes the next take from the revised prompt, at most ``KLING_REVIEW_MAX_TAKES`` takes
  (default 3; the last offers no Revise).
- **Reject** ends the run cleanly with the reason recorded; so does no answer within
  ``KLING_REVIEW_TIMEOUT_SECONDS`` (default a day).

Every decision, with its reviewer and comment, is the return value (XCom) of its ``review`` task
and stays in the task's Required actions tab.

Airflow has no loops in a DAG, so the takes are unrolled: ``take_2`` runs only when ``take_1``'s
reviewer asked for a revision, and is skipped otherwise.

On Airflow before 3.1 (no human-in-the-loop operators) the file still imports: the DAG has one
task that fails with that explanation.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowOptionalProviderFeatureException,
    Asset,
    Param,
    TaskGroup,
    XComArg,
    task,
)

from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

try:
    from airflow_provider_kling.operators.review import REJECT, KlingReviewOperator
except AirflowOptionalProviderFeatureException as missing:
    REVIEW_UNAVAILABLE: str | None = str(missing)
else:
    REVIEW_UNAVAILABLE = None

MAX_TAKES = int(os.environ.get("KLING_REVIEW_MAX_TAKES", "3"))
#: How long a take waits for a person; then it is rejected (not published), and the record says so.
REVIEW_TIMEOUT = timedelta(seconds=float(os.environ.get("KLING_REVIEW_TIMEOUT_SECONDS", str(24 * 3600))))
POLL_SECONDS = float(os.environ.get("KLING_POLL_INTERVAL", "5"))
VIDEO_FOLDER = os.environ.get("KLING_VIDEO_DESTINATION") or (
    Path(os.environ.get("KLING_VIDEO_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "kling-videos")
    .absolute()
    .as_uri()
)
STORAGE_CONN_ID = os.environ.get("KLING_STORAGE_CONN_ID")
#: Where people's browsers reach the video folder (a CDN or a bucket's web address), if anywhere:
#: then the reviewer's link opens the stored copy; else it opens RunComfy's own URL of the take.
VIDEO_FOLDER_URL = os.environ.get("KLING_VIDEO_FOLDER_URL", "").rstrip("/")
log = logging.getLogger(__name__)
KLING_PUBLISHED = Asset(uri="file:///kling-published")


def prompt_of(take: int) -> str:
    """The prompt of a take, as a template: the DAG's for the first, the reviewer's revision after."""
    if take == 1:
        return "{{ params.prompt }}"
    return f"{{{{ ti.xcom_pull(task_ids='take_{take - 1}.review')['next_prompt'] }}}}"


def decisions(context: Any, outcome: str) -> list[dict[str, Any]]:
    """The review decisions of this run that chose ``outcome`` (``approve`` or ``reject``)."""
    reviews = [f"take_{take}.review" for take in range(1, MAX_TAKES + 1)]
    pulled = context["ti"].xcom_pull(task_ids=reviews)
    return [d for d in pulled or [] if isinstance(d, dict) and d.get("decision") == outcome]


# [START howto_kling_review_and_publish]
with DAG(
    dag_id="kling_review_and_publish",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["kling", "example", "review"],
    doc_md=__doc__,
    params={
        "prompt": Param(
            "A desert road at twilight, bathed in rich amber and violet hues as a lone motorcycle speeds past.",
            type="string",
            minLength=1,
            maxLength=2500,
        ),
        "duration": Param(5, enum=[5, 10]),
    },
):
    if REVIEW_UNAVAILABLE is not None:

        @task
        def review_needs_airflow_3_1() -> None:
            """Review happens in Airflow's human-in-the-loop UI, which Airflow 3.1 introduced."""
            raise AirflowOptionalProviderFeatureException(f"kling_review_and_publish: {REVIEW_UNAVAILABLE}")

        review_needs_airflow_3_1()

    else:

        @task.kling(  # type: ignore[attr-defined]
            task_id="generate",
            duration="{{ params.duration }}",
            include_cost=True,
            poll_interval=POLL_SECONDS,
        )
        def generate(prompt: str) -> str:
            """The take's prompt: the DAG's, or the reviewer's revision of the take before."""
            return prompt

        @task(task_id="approved")
        def approved() -> None:
            """Reached only when this take is approved."""

        @task(task_id="rejected")
        def rejected() -> None:
            """Reached only when this take is rejected."""

        takes = []
        for number in range(1, MAX_TAKES + 1):
            with TaskGroup(group_id=f"take_{number}") as take:
                result = generate(prompt=prompt_of(number))
                request_id = f"{{{{ ti.xcom_pull(task_ids='take_{number}.generate')['request_id'] }}}}"
                copy = KlingVideoToStorageOperator(
                    task_id="copy",
                    request_id=request_id,
                    destination=f"{VIDEO_FOLDER}/takes/{request_id}.mp4",
                    storage_conn_id=STORAGE_CONN_ID,
                )
                review = KlingReviewOperator(
                    task_id="review",
                    prompt=prompt_of(number),
                    result=result,
                    stored_uri=copy.output,
                    stored=XComArg(copy, key="stored"),  # the video's facts, shown beside the link
                    video_link=f"{VIDEO_FOLDER_URL}/takes/{request_id}.mp4" if VIDEO_FOLDER_URL else None,
                    duration="{{ params.duration }}",
                    take=number,
                    max_takes=MAX_TAKES,
                    approve_task_id=f"take_{number}.approved",
                    reject_task_id=f"take_{number}.rejected",
                    revise_task_id=f"take_{number + 1}" if number < MAX_TAKES else None,
                    response_timeout=REVIEW_TIMEOUT,
                    defaults=REJECT,  # no answer in time: the take is not published
                )
                result >> copy >> review
                review >> [approved(), rejected()]
            if takes:
                takes[-1][1] >> take  # a review branches into the next take, or skips it
            takes.append((take, review))

        @task(trigger_rule="none_failed_min_one_success", outlets=[KLING_PUBLISHED])
        def publish(**context: Any) -> dict[str, Any]:
            """Copy the approved take to ``published/`` (whole or not at all) and emit the asset."""
            from airflow_provider_kling.hooks.download import copy_video

            decision = decisions(context, "approve")[0]
            published = copy_video(
                decision["stored_uri"],
                VIDEO_FOLDER + f"/published/{decision['request_id']}.mp4",
                source_conn_id=STORAGE_CONN_ID,
                storage_conn_id=STORAGE_CONN_ID,
                overwrite=True,
            )
            record = {
                **decision,
                "published_uri": published.uri,
                "size_bytes": published.size_bytes,
                "sha256": published.sha256,
                "poster": published.poster,  # the published copy is checked too, with its poster
                **published.facts.to_dict(),
            }
            context["outlet_events"][KLING_PUBLISHED].extra.update(
                {k: record[k] for k in ("published_uri", "request_id", "take", "reviewer", "sha256")}
            )
            return record

        @task
        def notify(record: dict[str, Any], **context: Any) -> str:
            """Say what was published, and who approved it (Slack, email, or the task log)."""
            from airflow_provider_kling.notifications.kling import video_notifier

            message = (
                f"Kling video published: take {record['take']} approved by {record['reviewer']} "
                f"prompt={record['prompt']!r} uri={record['published_uri']}"
            )
            video_notifier(message, to=os.environ.get("KLING_NOTIFY_EMAIL", "")).notify(context)  # type: ignore[arg-type]
            return message

        @task(trigger_rule="none_failed_min_one_success")
        def record_rejection(**context: Any) -> dict[str, Any]:
            """The run ends here, cleanly: the rejected take, who rejected it and why."""
            decision = decisions(context, "reject")[0]
            reason = decision["comment"] or "no reason given"
            log.info("Take %s rejected by %s: %s", decision["take"], decision["reviewer"], reason)
            return {**decision, "reason": reason}

        published = publish()
        notify(published)
        rejection = record_rejection()
        # Each take's approved or rejected task is the way in; skipped ones do not block the others.
        for take, _ in takes:
            take.children[f"{take.group_id}.approved"] >> published  # type: ignore[operator]
            take.children[f"{take.group_id}.rejected"] >> rejection  # type: ignore[operator]
# [END howto_kling_review_and_publish]

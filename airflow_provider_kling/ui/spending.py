"""
What the takes of the DAGs a user may read spent, per day and DAG: the Kling page's chart. Read from
the tasks' results in XCom (the ledger's budgets are :func:`airflow_provider_kling.spend.budget_report`).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from airflow_provider_kling.spend import as_number
from airflow_provider_kling.take import SUBMIT_XCOM, TAKE_XCOM
from airflow_provider_kling.ui.takes import RESULT_KEYS, value_of, xcom_model

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from sqlalchemy.orm import Session


def spend_per_day(
    session: Session, readable: Collection[str], *, days: int = 30, now: float | None = None
) -> dict[str, Any]:
    """
    What the readable DAGs' takes spent per day (UTC) and per DAG over the last ``days``: videos
    that succeeded, seconds of video, and cost where RunComfy reported it.
    """
    now = time.time() if now is None else now
    start_day = datetime.fromtimestamp(now - (days - 1) * 86400, timezone.utc).date()
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=timezone.utc)
    xcom = xcom_model()
    query = (
        select(xcom)
        .where(xcom.key.in_((*RESULT_KEYS, TAKE_XCOM, SUBMIT_XCOM)), xcom.dag_id.in_(sorted(readable)))
        .where(xcom.timestamp >= start)
        .order_by(xcom.timestamp)
    )
    seen: set[str] = set()
    asked: dict[str, Any] = {}  # request id -> the duration its take asked for
    results = []
    for row in session.execute(query).scalars():
        value = value_of(row)
        if not isinstance(value, dict) or not value.get("request_id"):
            continue
        if row.key in (TAKE_XCOM, SUBMIT_XCOM):
            asked[str(value["request_id"])] = value.get("duration")
        elif value.get("status") == "succeeded":
            results.append((row, value))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row, value in results:
        if value["request_id"] in seen:  # the operator's ``result`` and its return value are one video
            continue
        seen.add(value["request_id"])
        day = row.timestamp.astimezone(timezone.utc).date().isoformat()
        empty = {"day": day, "dag_id": row.dag_id, "videos": 0, "video_seconds": 0.0}
        total = rows.setdefault((day, row.dag_id), empty)
        total["videos"] += 1
        total["video_seconds"] += _seconds(value, asked.get(str(value["request_id"])))
        cost = as_number(value.get("cost"))
        if cost is not None:
            total["cost"] = round(total.get("cost", 0.0) + cost, 6)
    return {"since": start.date().isoformat(), "days": days, "rows": sorted(rows.values(), key=_day_then_dag)}


def _day_then_dag(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row["day"]), str(row["dag_id"])


def _seconds(result: Mapping[str, Any], asked: Any) -> float:
    """The seconds of a video: as FFmpeg measured the stored copy, else as its take asked."""
    stored = result.get("stored") if isinstance(result.get("stored"), dict) else {}
    measured = as_number((stored or {}).get("duration_s"))
    return measured if measured is not None else as_number(asked) or 0.0

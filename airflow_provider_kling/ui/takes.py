"""
The takes, as the metadata database holds them: read by the UI plugin's routes.

A take is one task instance: the Kling task that waits for a request (the operator with
``wait_for_completion``, ``@task.kling``, the sensor). It pushed ``kling_take`` when its request was
submitted (:mod:`airflow_provider_kling.take`); its ``result`` (or return value) says what came
and where it was stored, and ``kling_error`` what ended it badly. Nothing here takes a path or a
URI from a request: every location is read from XCom.

Every function takes the DAG ids the user may read and returns nothing outside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import and_, select, tuple_

from airflow_provider_kling.take import ERROR_XCOM, SUBMIT_XCOM, TAKE_XCOM
from airflow_provider_kling.ui import TAKE_ROUTE, URL_PREFIX
from airflow_provider_kling.untrusted import is_video_url

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from sqlalchemy.orm import Session

#: Where a take's outcome may be: the operator's ``result``, the sensor's and ``@task.kling``'s return value.
RESULT_KEYS = ("result", "return_value")
#: Every XCom a take's view reads.
DETAIL_KEYS = (TAKE_XCOM, SUBMIT_XCOM, *RESULT_KEYS, "stored", ERROR_XCOM)
#: Task states of a take whose request is still being waited for.
IN_FLIGHT_STATES = ("scheduled", "queued", "running", "deferred", "up_for_reschedule", "up_for_retry", "restarting")


@dataclass(frozen=True)
class TakeKey:
    """The task instance of a take."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def api(self, what: str = "") -> str:
        """The plugin's address of this take (its JSON, ``/video``, ``/poster``)."""
        path = "/".join(quote(part, safe="") for part in (self.dag_id, self.run_id, self.task_id))
        return f"{URL_PREFIX}/api/takes/{path}/{self.map_index}{'/' + what if what else ''}"

    def ui(self) -> str:
        """The take's tab on its task instance, in Airflow's UI."""
        path = "/".join(quote(part, safe="") for part in (self.dag_id, "runs", self.run_id, "tasks", self.task_id))
        mapped = f"/mapped/{self.map_index}" if self.map_index >= 0 else ""
        return f"/dags/{path}{mapped}/plugin/{TAKE_ROUTE}"


def xcom_model() -> Any:
    from airflow.models.xcom import XComModel

    return XComModel


def _ti() -> Any:
    from airflow.models.taskinstance import TaskInstance

    return TaskInstance


def value_of(row: Any) -> Any:
    return xcom_model().deserialize_value(row)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass(frozen=True)
class TakeFilter:
    """What the Kling page asks for: a DAG, a task state, a window of submit times (Unix seconds)."""

    dag_id: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None


def _joined(readable: Collection[str]) -> Any:
    """Every ``kling_take`` of a readable DAG, beside its task instance."""
    xcom, ti = xcom_model(), _ti()
    on = and_(
        ti.dag_id == xcom.dag_id,
        ti.run_id == xcom.run_id,
        ti.task_id == xcom.task_id,
        ti.map_index == xcom.map_index,
    )
    return (
        select(xcom, ti.state, ti.start_date, ti.end_date, ti.hostname, ti.try_number)
        .join(ti, on)
        .where(xcom.key == TAKE_XCOM, xcom.dag_id.in_(sorted(readable)))
    )


def list_takes(
    session: Session, readable: Collection[str], where: TakeFilter, *, offset: int = 0, limit: int = 48
) -> dict[str, Any]:
    """One page of takes, newest first, and whether more follow."""
    xcom, ti = xcom_model(), _ti()
    query = _joined(readable)
    if where.dag_id:
        query = query.where(xcom.dag_id == where.dag_id)
    if where.state == "in_flight":
        query = query.where(ti.state.in_(IN_FLIGHT_STATES))
    elif where.state:
        query = query.where(ti.state == where.state)
    if where.since is not None:
        query = query.where(xcom.timestamp >= datetime.fromtimestamp(where.since, timezone.utc))
    if where.until is not None:
        query = query.where(xcom.timestamp < datetime.fromtimestamp(where.until, timezone.utc))
    query = query.order_by(xcom.timestamp.desc(), xcom.dag_id, xcom.run_id, xcom.task_id, xcom.map_index)
    rows = session.execute(query.offset(offset).limit(limit + 1)).all()
    takes = _views(session, rows[:limit])
    return {"takes": takes, "offset": offset, "next_offset": offset + limit if len(rows) > limit else None}


def in_flight(session: Session, readable: Collection[str], *, limit: int = 200) -> list[dict[str, Any]]:
    """The takes still waited for, oldest first."""
    xcom, ti = xcom_model(), _ti()
    query = _joined(readable).where(ti.state.in_(IN_FLIGHT_STATES)).order_by(xcom.timestamp)
    return _views(session, session.execute(query.limit(limit)).all())


def one_take(session: Session, key: TakeKey) -> dict[str, Any] | None:
    """The view of one task instance's take, or ``None`` when it has no Kling XCom at all."""
    ti = _ti()
    found = session.execute(
        select(ti.state, ti.start_date, ti.end_date, ti.hostname, ti.try_number).where(
            ti.dag_id == key.dag_id, ti.run_id == key.run_id, ti.task_id == key.task_id, ti.map_index == key.map_index
        )
    ).first()
    if found is None:
        return None
    xcoms = xcoms_of(session, [key]).get(key, {})
    if not any(k in xcoms for k in (TAKE_XCOM, SUBMIT_XCOM, ERROR_XCOM, "stored")) and not _result(xcoms):
        return None
    ti_row = dict(found._mapping)
    if stored_of(xcoms) is None:  # a copy task of the run may have stored it (generate, then copy)
        stored, hostname = stored_for(session, key, xcoms)
        if stored is not None:
            xcoms, ti_row["hostname"] = {**xcoms, "stored": stored}, hostname
    return _view(key, ti_row, xcoms, _submits(session, [(key, xcoms)]), detail=True)


def stored_for(
    session: Session, key: TakeKey, xcoms: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """
    Where a take's video is stored, and the machine that stored it: its own task's copy, else the
    copy another task of its run made of the same request (``KlingVideoToStorageOperator``).

    :param xcoms: the take's XComs, when the caller read them already.
    """
    if xcoms is None:
        xcoms = xcoms_of(session, [key]).get(key, {})
    stored = stored_of(xcoms)
    if stored is not None:
        return stored, hostname_of(session, key)
    take = xcoms.get(TAKE_XCOM) or xcoms.get(SUBMIT_XCOM) or _result(xcoms)
    rid = take.get("request_id") if isinstance(take, dict) else None
    if not rid:
        return None, None
    xcom = xcom_model()
    copies = select(xcom).where(xcom.dag_id == key.dag_id, xcom.run_id == key.run_id, xcom.key == "stored")
    for row in session.execute(copies).scalars():
        value = value_of(row)
        if isinstance(value, dict) and value.get("request_id") == rid and value.get("uri"):
            return value, hostname_of(session, TakeKey(row.dag_id, row.run_id, row.task_id, row.map_index))
    return None, None


def take_of_request(session: Session, dag_id: str, run_id: str, request_id: str) -> TakeKey | None:
    """
    The task instance of a run that shows ``request_id`` best: one that stored its video (a copy's
    task, or a generation that stored it), else the one that waited for it.
    """
    xcom = xcom_model()
    rows = session.execute(
        select(xcom).where(xcom.dag_id == dag_id, xcom.run_id == run_id, xcom.key.in_(DETAIL_KEYS))
    ).scalars()
    stored, waited = None, None
    for row in rows:
        value = value_of(row)
        if not isinstance(value, dict):
            continue
        key = TakeKey(row.dag_id, row.run_id, row.task_id, row.map_index)
        if row.key == "stored" and value.get("request_id", request_id) == request_id and stored is None:
            stored = key  # a copy's: its request is in its result below, or the run has one request
        if value.get("request_id") == request_id:
            if row.key in RESULT_KEYS and value.get("stored"):
                stored = key
            elif row.key in (TAKE_XCOM, *RESULT_KEYS) and waited is None:
                waited = key
    return stored or waited


def _views(session: Session, rows: Iterable[Any]) -> list[dict[str, Any]]:
    rows = list(rows)
    keys = [TakeKey(r[0].dag_id, r[0].run_id, r[0].task_id, r[0].map_index) for r in rows]
    xcoms = xcoms_of(session, keys)
    submits = _submits(session, [(key, xcoms.get(key, {})) for key in keys])
    return [_view(key, dict(row._mapping), xcoms.get(key, {}), submits) for key, row in zip(keys, rows, strict=True)]


def xcoms_of(session: Session, keys: list[TakeKey]) -> dict[TakeKey, dict[str, Any]]:
    """The XComs a view reads, for many task instances in one query."""
    if not keys:
        return {}
    xcom = xcom_model()
    wanted = set(keys)
    query = select(xcom).where(
        tuple_(xcom.dag_id, xcom.run_id).in_(sorted({(k.dag_id, k.run_id) for k in keys})),
        xcom.task_id.in_(sorted({k.task_id for k in keys})),
        xcom.key.in_(DETAIL_KEYS),
    )
    found: dict[TakeKey, dict[str, Any]] = {}
    for row in session.execute(query).scalars():
        key = TakeKey(row.dag_id, row.run_id, row.task_id, row.map_index)
        if key in wanted:
            found.setdefault(key, {})[row.key] = value_of(row)
    return found


def hostname_of(session: Session, key: TakeKey) -> str | None:
    """The machine that last ran the take's task (where a local file it stored lies)."""
    ti = _ti()
    return session.execute(
        select(ti.hostname).where(
            ti.dag_id == key.dag_id, ti.run_id == key.run_id, ti.task_id == key.task_id, ti.map_index == key.map_index
        )
    ).scalar()


def dags_with_takes(session: Session, readable: Collection[str]) -> list[str]:
    """The readable DAGs that made takes."""
    xcom = xcom_model()
    query = select(xcom.dag_id).where(xcom.key == TAKE_XCOM, xcom.dag_id.in_(sorted(readable))).distinct()
    return sorted(session.execute(query).scalars())


def _submits(session: Session, takes: list[tuple[TakeKey, dict[str, Any]]]) -> dict[tuple[str, str, str], Any]:
    """What a sensor's take was asked to make: the ``kling_submit`` of its run with the same request id."""
    runs = {(key.dag_id, key.run_id) for key, xcoms in takes if not (xcoms.get(TAKE_XCOM) or {}).get("prompt")}
    if not runs:
        return {}
    xcom = xcom_model()
    query = select(xcom).where(tuple_(xcom.dag_id, xcom.run_id).in_(sorted(runs)), xcom.key == SUBMIT_XCOM)
    found = {}
    for row in session.execute(query).scalars():
        value = value_of(row)
        if isinstance(value, dict) and value.get("request_id"):
            found[(row.dag_id, row.run_id, str(value["request_id"]))] = value
    return found


def _result(xcoms: Mapping[str, Any]) -> dict[str, Any]:
    """A take's result: a request's, or a film's (which names its shots' ``request_ids``)."""
    for key in RESULT_KEYS:
        value = xcoms.get(key)
        if isinstance(value, dict) and (value.get("request_id") or value.get("request_ids")):
            return value
    return {}


def stored_of(xcoms: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where the take's video was stored: its result's ``stored``, or a copy task's ``stored`` XCom."""
    stored = _result(xcoms).get("stored") or xcoms.get("stored")
    return stored if isinstance(stored, dict) and stored.get("uri") else None


def _view(
    key: TakeKey, ti: Mapping[str, Any], xcoms: Mapping[str, Any], submits: Mapping[Any, Any], *, detail: bool = False
) -> dict[str, Any]:
    """The JSON the browser gets: only what the page shows, never a store's credentials."""
    take = dict(xcoms.get(TAKE_XCOM) or xcoms.get(SUBMIT_XCOM) or {})
    result = _result(xcoms)
    rid = take.get("request_id") or result.get("request_id")
    asked = submits.get((key.dag_id, key.run_id, str(rid))) or {}
    take = {**asked, **take}
    started, ended = _epoch(ti.get("start_date")), _epoch(ti.get("end_date"))
    state = ti.get("state")
    state = getattr(state, "value", state)
    view: dict[str, Any] = {
        "dag_id": key.dag_id,
        "run_id": key.run_id,
        "task_id": key.task_id,
        "map_index": key.map_index,
        "state": state,
        "try_number": ti.get("try_number"),
        "started_at": started,
        "ended_at": ended,
        "elapsed_s": round((ended or time.time()) - started, 1) if started else None,
        "request_id": rid,
        "links": {"take": key.api(), "ui": key.ui()},
    }
    for name in ("model", "prompt", "negative_prompt", "duration", "aspect_ratio", "images", "submitted_at"):
        if take.get(name) is not None:
            view[name] = take[name]
    if result:
        view["cost"] = result.get("cost")
        view["timings"] = result.get("timings") or {}
        view["finished_at"] = result.get("finished_at")
        if is_video_url(result.get("video_url")):
            view["runcomfy_url"] = result["video_url"]
    error = xcoms.get(ERROR_XCOM)
    if isinstance(error, dict) and state not in ("success", *IN_FLIGHT_STATES):
        view["error"] = {"type": str(error.get("type")), "message": str(error.get("message"))}
    stored = stored_of(xcoms)
    if stored is not None:
        view["stored"] = _stored_view(stored)
        view["links"]["video"] = key.api("video")
        if stored.get("poster"):
            view["links"]["poster"] = key.api("poster")
        if detail:
            from airflow_provider_kling.ui.served import unreachable

            why = unreachable(stored, hostname=ti.get("hostname"))
            if why:
                view["stored"]["unreachable"] = why
                view["links"].pop("video", None)
                view["links"].pop("poster", None)
    return view


#: What a take's view says of its stored video (its facts), and nothing of how the store is reached.
STORED_FIELDS = (
    "uri",
    "size_bytes",
    "sha256",
    "duration_s",
    "width",
    "height",
    "aspect_ratio",
    "frame_rate",
    "video_codec",
    "has_audio",
    "audio_codec",
    "mismatch",
)


def _stored_view(stored: Mapping[str, Any]) -> dict[str, Any]:
    return {name: stored[name] for name in STORED_FIELDS if name in stored}

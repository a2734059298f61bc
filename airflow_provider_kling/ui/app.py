"""
The UI plugin's routes, mounted on Airflow's API server at ``/kling`` (Airflow 3.1+).

Every route asks Airflow's own security dependencies for the signed-in user (the UI's session
cookie, or a bearer token): an anonymous call gets 401 or 403, never content. A route about one
take names its task instance and asks the auth manager whether the user may read that DAG's task
instances; a list returns only the DAGs the auth manager says the user may read. No route takes a
path or a URI: where a video lies is read from XCom, and the store is read through its own
connection on the server, so its credentials never reach the browser.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails, DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from airflow_provider_kling.constants import DEFAULT_CONN_ID
from airflow_provider_kling.ui import served
from airflow_provider_kling.ui.takes import TakeFilter, TakeKey

#: The pages and their assets, by the only names a request can ask for.
ASSETS = {
    "takes.html": "text/html; charset=utf-8",
    "take.html": "text/html; charset=utf-8",
    "kling.js": "text/javascript; charset=utf-8",
    "kling.css": "text/css; charset=utf-8",
}
#: The pages load only this origin's scripts, styles, images and media: a string a user wrote is never code.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
CAN_READ_TAKE = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))

app = FastAPI(
    title="Kling takes",
    description="The takes of Kling tasks: their videos, posters, facts and spend.",
    docs_url=None,  # no page of this app is served without a signed-in user, not even its docs
    redoc_url=None,
    openapi_url=None,
)


def readable_dags(user: GetUserDep) -> set[str]:
    """The DAG ids the user may read, as the auth manager (FAB, Keycloak, simple...) says."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


ReadableDags = Annotated[set[str], Depends(readable_dags)]


def _asset(name: str) -> Response:
    body = resources.files("airflow_provider_kling.ui").joinpath("static").joinpath(name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=PAGE_HEADERS)


def _session() -> Any:
    from airflow.utils.session import create_session

    return create_session()


# --- pages ------------------------------------------------------------------------------------


@app.get("/ui/takes", include_in_schema=False)
def takes_page(user: GetUserDep) -> Response:
    """The Kling page: recent takes, spend, generations in flight."""
    return _asset("takes.html")


@app.get("/ui/take", include_in_schema=False, dependencies=[CAN_READ_TAKE])
def take_page(dag_id: str) -> Response:
    """The take of one task instance (its tab in the UI): the page reads the task from its query."""
    return _asset("take.html")


@app.get("/ui/request", include_in_schema=False, dependencies=[CAN_READ_TAKE])
def request_page(dag_id: str, run_id: str, request_id: str) -> Response:
    """The take of a request in a run, opened in Airflow's UI (the review form links here)."""
    with _session() as session:
        from airflow_provider_kling.ui.takes import take_of_request

        key = take_of_request(session, dag_id, run_id, request_id)
    if key is None:
        raise HTTPException(404, "No take of this request in this run")
    return RedirectResponse(key.ui(), status_code=302)


@app.get("/static/{name}", include_in_schema=False)
def asset(name: str, user: GetUserDep) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, "Not found")
    return _asset(name)


# --- data -------------------------------------------------------------------------------------


@app.get("/api/takes")
def list_takes(
    readable: ReadableDags,
    dag_id: str | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 48,
) -> dict[str, Any]:
    """A page of takes of the DAGs the user may read, newest first; ``next_offset`` for the next."""
    from airflow_provider_kling.ui import takes

    with _session() as session:
        return takes.list_takes(session, readable, TakeFilter(dag_id, state, since, until), offset=offset, limit=limit)


@app.get("/api/in-flight")
def in_flight(readable: ReadableDags) -> dict[str, Any]:
    """The takes still waited for, in the DAGs the user may read."""
    from airflow_provider_kling.ui import takes

    with _session() as session:
        return {"takes": takes.in_flight(session, readable)}


@app.get("/api/dags")
def dags_with_takes(readable: ReadableDags) -> dict[str, Any]:
    """The DAGs the user may read that made takes, for the page's filter."""
    from airflow_provider_kling.ui import takes

    with _session() as session:
        return {"dag_ids": takes.dags_with_takes(session, readable)}


@app.get("/api/spend")
def spend(
    user: GetUserDep,
    readable: ReadableDags,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    conn_id: str = DEFAULT_CONN_ID,
) -> dict[str, Any]:
    """
    Spend per day and DAG (readable DAGs only) and, for a user who may read the ``kling``
    connection, its budgets against their caps, from the ledger (``kling budget``'s figures).
    """
    from airflow_provider_kling.ui.spending import spend_per_day

    with _session() as session:
        answer = spend_per_day(session, readable, days=days)
    answer["budgets"] = _budgets(user, conn_id)
    return answer


def _budgets(user: Any, conn_id: str) -> dict[str, Any]:
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_connection(
        method="GET", user=user, details=ConnectionDetails(conn_id=conn_id)
    ):
        return {"shown": False, "why": f"You may not read the connection {conn_id}, which holds the budgets"}
    from airflow_provider_kling.exceptions import KlingError
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.spend import budget_report

    try:
        report = budget_report(KlingHook(kling_conn_id=conn_id).budget_config)
    except KlingError as err:
        return {"shown": False, "why": str(err)}
    except Exception as err:  # noqa: BLE001 - the page shows the rest; the reason names the connection
        return {"shown": False, "why": f"The budgets of {conn_id} could not be read: {type(err).__name__}"}
    return {"shown": True, "conn_id": conn_id, **report}


def _key(dag_id: str, run_id: str, task_id: str, map_index: int) -> TakeKey:
    return TakeKey(dag_id, run_id, task_id, map_index)


@app.get("/api/takes/{dag_id}/{run_id}/{task_id}/{map_index}", dependencies=[CAN_READ_TAKE])
def one_take(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
    """The take of one task instance: its state, what was asked, the video's facts, cost, timings, error."""
    from airflow_provider_kling.ui import takes

    with _session() as session:
        view = takes.one_take(session, _key(dag_id, run_id, task_id, map_index))
    if view is None:
        raise HTTPException(404, "This task instance has no Kling take")
    return view


def _stored(key: TakeKey) -> tuple[dict[str, Any], str | None]:
    from airflow_provider_kling.ui import takes

    with _session() as session:
        stored, hostname = takes.stored_for(session, key)
    if stored is None:
        raise HTTPException(404, "This take has no stored video")
    return stored, hostname


@app.get("/api/takes/{dag_id}/{run_id}/{task_id}/{map_index}/video", dependencies=[CAN_READ_TAKE])
def video(dag_id: str, run_id: str, task_id: str, map_index: int, request: Request) -> Response:
    """The stored video, through its store's connection, in the byte ranges the browser asks for."""
    stored, hostname = _stored(_key(dag_id, run_id, task_id, map_index))
    return _serve(stored, str(stored["uri"]), request, "video/mp4", hostname)


@app.get("/api/takes/{dag_id}/{run_id}/{task_id}/{map_index}/poster", dependencies=[CAN_READ_TAKE])
def poster(dag_id: str, run_id: str, task_id: str, map_index: int, request: Request) -> Response:
    """The stored video's poster frame (a JPEG beside it)."""
    stored, hostname = _stored(_key(dag_id, run_id, task_id, map_index))
    if not stored.get("poster"):
        raise HTTPException(404, "This take has no poster")
    return _serve(stored, str(stored["poster"]), request, "image/jpeg", hostname)


@app.get("/api/requests/{dag_id}/{run_id}/{request_id}/poster", dependencies=[CAN_READ_TAKE])
def poster_of_request(dag_id: str, run_id: str, request_id: str, request: Request) -> Response:
    """The poster of a request's take in a run (the review form shows it)."""
    from airflow_provider_kling.ui.takes import take_of_request

    with _session() as session:
        key = take_of_request(session, dag_id, run_id, request_id)
    if key is None:
        raise HTTPException(404, "No take of this request in this run")
    return poster(key.dag_id, key.run_id, key.task_id, key.map_index, request)


def _serve(stored: dict[str, Any], uri: str, request: Request, media_type: str, hostname: str | None) -> Response:
    why = served.unreachable({**stored, "uri": uri}, hostname=hostname)
    if why:
        return JSONResponse({"detail": why}, status_code=404)
    path = served.location(uri, stored.get("conn_id"))
    try:
        size = served.size_of(path)
    except FileNotFoundError:
        return JSONResponse({"detail": f"Nothing is stored at {uri} any more"}, status_code=404)
    try:
        part = served.byte_range(request.headers.get("range"), size)
    except served.RangeNotSatisfiable as err:
        return Response(status_code=416, headers={"Content-Range": str(err)})
    whole = part is None
    part = part or served.ByteRange(0, size - 1, size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(part.length),
        "Cache-Control": "private, max-age=300",
        "X-Content-Type-Options": "nosniff",
    }
    if not whole:
        headers["Content-Range"] = part.content_range()
    return StreamingResponse(
        served.read_range(path, part), status_code=200 if whole else 206, media_type=media_type, headers=headers
    )

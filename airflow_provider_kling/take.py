"""
What a Kling task leaves in XCom about its take, for the UI plugin (and anyone who reads XCom).

A generating task pushes ``kling_take`` the moment its request is submitted (or resumed): the
request id, the model, the prompt and the shape asked for, and its images by URI (never a signed
URL). A task that submits and does not wait pushes the same record as ``kling_submit``,
and the sensor that waits pushes ``kling_take`` with the request id it waits for: each take is one
task instance, the one that waits. A wait that ends in an error pushes
``kling_error``: the error's type and its message, which never hold the token. The video itself is
in the task's ``result`` (or return value) as before, with ``stored`` when it landed.

This module is read when a task runs; it imports nothing heavy.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The XCom key of a task's take: what was asked, as soon as it was submitted (by a task that waits).
TAKE_XCOM = "kling_take"
#: The same record, from a task that submits and hands the wait to another (a sensor's take).
SUBMIT_XCOM = "kling_submit"
#: The XCom key of the error that ended a task's wait.
ERROR_XCOM = "kling_error"
#: The input fields a take shows (the rest of a body stays in the request).
SHOWN_FIELDS = ("prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale")


def take_record(model: str, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """
    The ``kling_take`` (or ``kling_submit``) of a generating task.

    :param model: the model path.
    :param request_id: the request it submitted or resumed.
    :param body: the validated body, before its images are signed.
    """
    from airflow_provider_kling.family import body_images

    record: dict[str, Any] = {"request_id": request_id, "model": model, "submitted_at": time.time()}
    record.update({name: body[name] for name in SHOWN_FIELDS if body.get(name) not in (None, "")})
    images = {image.argument: image.uri for image in body_images(model, body)}
    if images:
        record["images"] = images
    return record


def error_record(err: BaseException) -> dict[str, Any]:
    """
    The ``kling_error`` of a wait that ended in ``err``: its type, its message (which never holds
    the token) and the HTTP status it came with. The excerpt of the server's answer that the
    error's text adds stays in the task's log: what a server sent is not kept in XCom.
    """
    message = getattr(err, "message", None)
    record: dict[str, Any] = {
        "type": type(err).__name__,
        "message": (message if isinstance(message, str) else str(err))[:2000],
        "at": time.time(),
    }
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        record["status_code"] = status
    return record


def push_take(ti: Any, model: str, request_id: str, body: Mapping[str, Any], *, waits: bool) -> None:
    """Push the take of a generating task: ``kling_take`` when it waits for the video, else ``kling_submit``."""
    ti.xcom_push(key=TAKE_XCOM if waits else SUBMIT_XCOM, value=take_record(model, request_id, body))

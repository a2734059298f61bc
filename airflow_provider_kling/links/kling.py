"""The "Kling video" button on the operator's and the sensor's task in the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_kling.untrusted import is_video_url

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XComs that may hold the result, for an operator that does not say which it pushes (a
#: serialized one, as Airflow 2's webserver holds): the operator's ``result``, the sensor's return value.
RESULT_KEYS = ("result", "return_value")


class KlingVideoLink(BaseOperatorLink):
    """
    Opens the generated video: the ``video_url`` of the task's :class:`~airflow_provider_kling.models.KlingResult`.

    It offers only an ``http(s)`` URL (never a ``javascript:``, ``data:`` or ``file:`` one), and
    it reads only the XCom its task pushes the result to (``result_xcom_keys``), and only once the
    task succeeded: Airflow 3 computes links at the end of every run (a deferral too), and each
    lookup of a missing XCom writes an error line into a healthy task's log.
    """

    name = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        state = getattr(ti_key, "state", None)  # a running task instance has one; a bare key has not
        if state is not None and getattr(state, "value", state) != "success":
            return ""
        for key in getattr(operator, "result_xcom_keys", RESULT_KEYS):
            url = video_url_of(XCom.get_value(ti_key=ti_key, key=key))
            if url:
                return url
        return ""


def video_url_of(value: Any) -> str:
    """The ``video_url`` of a result read back from XCom when it is an ``http(s)`` URL, else ``""``."""
    url = value.get("video_url") if isinstance(value, dict) else None
    return url if isinstance(url, str) and is_video_url(url) else ""

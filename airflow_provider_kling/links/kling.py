"""The "Kling video" button on the operator's and the sensor's task in the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XComs that may hold the result summary: the operator's ``result``, the sensor's return value.
RESULT_KEYS = ("result", "return_value")


class KlingVideoLink(BaseOperatorLink):
    """Opens the generated video (the ``video_url`` of the task's result) from the task's XCom."""

    name = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        for key in RESULT_KEYS:
            value = XCom.get_value(ti_key=ti_key, key=key)
            if isinstance(value, dict) and isinstance(value.get("video_url"), str):
                return str(value["video_url"])
        return ""

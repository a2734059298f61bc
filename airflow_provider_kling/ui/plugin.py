"""
The Kling UI plugin, which the package registers with Airflow (its ``airflow.plugins`` entry point,
and ``plugins`` in its provider info) and which adds something on Airflow 3.1+ only.

It adds, through Airflow's plugin interface, a FastAPI app on the API server (``/kling``) and two
external views that Airflow's UI shows in a frame of its own pages: the **Kling** page in the
navigation, and the **Kling take** tab of every task instance.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_kling.ui import PAGE_ROUTE, TAKE_ROUTE, URL_PREFIX

#: The tab's address: Airflow's UI fills in the task instance (an unmapped one leaves ``{MAP_INDEX}``).
TAKE_HREF = f"{URL_PREFIX}/ui/take?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}"


class KlingUIPlugin(AirflowPlugin):
    """
    Takes in the UI: the Kling page, the take tab, and the API server routes behind them. On
    Airflow before 3.1 (no plugin UI, no FastAPI API server) it adds nothing.

    Every Airflow process loads its plugins when it starts (a task's too): the routes, and FastAPI
    with them, are imported only when the API server asks for them (``fastapi_apps``).
    """

    name = "kling"
    if AIRFLOW_V_3_1_PLUS:
        external_views = [
            {
                "name": "Kling",
                "href": f"{URL_PREFIX}/ui/takes",
                "destination": "nav",
                "url_route": PAGE_ROUTE,
                "category": "browse",
            },
            {
                "name": "Kling take",
                "href": TAKE_HREF,
                "destination": "task_instance",
                "url_route": TAKE_ROUTE,
            },
        ]

        @property
        def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
            from airflow_provider_kling.ui.app import app

            return [{"app": app, "url_prefix": URL_PREFIX, "name": "Kling takes"}]

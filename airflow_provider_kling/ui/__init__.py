"""
Takes in Airflow's UI (Airflow 3.1+): a tab on each Kling task instance that plays its stored take,
a Kling page with the takes, the spend and the generations in flight, for the users who may read
each take's DAG. :mod:`.plugin` registers it; :mod:`.app` is its API server routes.
"""

from __future__ import annotations

#: Where the plugin's FastAPI app is mounted on the API server.
URL_PREFIX = "/kling"
#: The URL route of the take's tab on a task instance, and of the Kling page.
TAKE_ROUTE = "kling-take"
PAGE_ROUTE = "kling"

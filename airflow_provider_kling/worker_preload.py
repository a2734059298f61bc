"""
Load the provider's run modules once per Celery worker, not once per task.

Each Airflow task runs in a process the worker forks for it; what the worker loaded before it forks
is there already. Airflow's Celery worker preloads its own operators that way; this config adds the
modules a paying Kling run imports (:data:`~airflow_provider_kling.worker_run.RUN_MODULES`: the
HTTP client, the models, the trigger...), which otherwise cost every such run their import time
(``kling.worker_run.imports``)::

    [celery]
    celery_config_options = airflow_provider_kling.worker_preload.CELERY_CONFIG

It is Airflow's default Celery configuration with Celery's ``imports`` added: nothing else changes.
Needs the Celery provider (it is read by the Celery executor and its workers only).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import (  # type: ignore[import-not-found,unused-ignore]
    DEFAULT_CELERY_CONFIG,
)

from airflow_provider_kling.worker_run import RUN_MODULES

#: Airflow's default Celery configuration, and the provider's run modules among Celery's ``imports``.
CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *RUN_MODULES),
}

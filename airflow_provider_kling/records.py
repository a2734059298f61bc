"""
Where a task keeps the request it submitted, across its tries (see :mod:`airflow_provider_kling.resume`
for what a later try does with it): Airflow's task state store on Airflow 3.3+
(``context["task_state_store"]``, under ``kling_request``, the role of ``external_id_key`` in
Airflow's ``ResumableJobMixin``), else an Airflow Variable named
``kling_request:<dag_id>:<run_id>:<task_id>:<map_index>``. Both are scoped to one map index: a
mapped task never sees another's request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

STATE_KEY = "kling_request"

log = logging.getLogger(__name__)


class RequestRecord(Protocol):
    """Where a task keeps ``{"request_id", "fingerprint"}`` of the request it submitted (or
    ``{"fingerprint", "submitting_since"}`` while the submit is in flight)."""

    #: Whether a finished task keeps its record (marked ``finished``) rather than dropping it.
    keeps_finished: bool

    def load(self) -> dict[str, Any] | None: ...

    def save(self, record: dict[str, Any]) -> None: ...

    def forget(self) -> None: ...


class TaskStateRecord:
    """
    The record in Airflow's task state store (Airflow 3.3+), scoped to the task instance; its rows
    belong to the DAG run and expire with the store's retention, so a finished task keeps its record.
    """

    keeps_finished = True

    def __init__(self, store: Any) -> None:
        self._store = store

    def load(self) -> dict[str, Any] | None:
        value = self._store.get(STATE_KEY)
        return value if isinstance(value, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        self._store.set(STATE_KEY, record)

    def forget(self) -> None:
        self._store.delete(STATE_KEY)


class VariableRecord:
    """
    The record in an Airflow Variable, for Airflow versions without a task state store. A finished
    task drops it (one Variable per generation would otherwise remain): there, a retry after Airflow's
    own bookkeeping failed past a delivered video pays again, as before the task state store.
    """

    keeps_finished = False

    def __init__(self, ti: Any) -> None:
        map_index = getattr(ti, "map_index", -1)
        self.key = f"{STATE_KEY}:{ti.dag_id}:{ti.run_id}:{ti.task_id}:{-1 if map_index is None else map_index}"

    def load(self) -> dict[str, Any] | None:
        from airflow.providers.common.compat.sdk import Variable

        value = Variable.get(self.key, None, deserialize_json=True)  # default: positional on Airflow 2 and 3
        return value if isinstance(value, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        from airflow.providers.common.compat.sdk import Variable

        Variable.set(
            self.key,
            record,
            description="Kling request submitted by this task instance; lets a retry resume it. Removed on success.",
            serialize_json=True,
        )

    def forget(self) -> None:
        from airflow.providers.common.compat.sdk import Variable

        Variable.delete(self.key)


def request_record(context: Context) -> RequestRecord:
    """The task state store when this Airflow has one, else an Airflow Variable."""
    store = context.get("task_state_store")
    if store is not None:
        return TaskStateRecord(store)
    log.info("No task state store in this Airflow: the submitted Kling request is remembered in a Variable")
    return VariableRecord(context["ti"])


def drop_ends_in_triggerer(record: RequestRecord) -> None:
    """A worker resumed the try: the mark that the triggerer delivers its video goes."""
    recorded = record.load()
    if recorded and recorded.pop("ends_in_triggerer", None):
        record.save(recorded)

"""
Remember the request a task submitted, so that a later try of the same task resumes it instead of
paying for a new one.

Airflow clears a task's XComs before each try, so the request id is kept elsewhere, the moment the
submit answers: in the task state store on Airflow 3.3+ (``context["task_state_store"]``, under
``kling_request``, the convention of Airflow's ``ResumableJobMixin``), and in an Airflow Variable
named ``kling_request:<dag_id>:<run_id>:<task_id>:<map_index>`` where there is no task state store.
The record is dropped when the task succeeds, so clearing a successful task generates anew.

Just before the paid submit, the record says that a submit is in flight (``submitting_since``). A
try that finds that mark without a request id knows an earlier try was stopped (a worker killed)
while its submit was in flight: a request may exist and be billed, and the API offers no way to
find it, so the task does not pay again blindly (``if_submit_interrupted``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

STATE_KEY = "kling_request"

log = logging.getLogger(__name__)


def input_fingerprint(model: str, body: dict[str, Any]) -> str:
    """A short digest of what was asked for: a request is resumed only for the same model and input."""
    canonical = json.dumps({"model": model, "input": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class RequestRecord(Protocol):
    """Where a task keeps ``{"request_id", "fingerprint"}`` of the request it submitted (or
    ``{"fingerprint", "submitting_since"}`` while the submit is in flight)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, record: dict[str, Any]) -> None: ...

    def forget(self) -> None: ...


class TaskStateRecord:
    """The record in Airflow's task state store (Airflow 3.3+), scoped to the task instance."""

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
    """The record in an Airflow Variable, for Airflow versions without a task state store."""

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

"""
The wait value: everything about one wait for one request, as plain data.

:class:`RequestWait` is the whole state of a wait: the request, the plan (poll settings and
limits), what the last poll saw, and the options. It is immutable; each poll makes the next one. It
serializes to plain JSON (:meth:`RequestWait.to_dict`), so the operator, the sensor, the trigger
and the ``kling`` command hold the same thing, and a deferred task hands it to the trigger as one
argument. :class:`EndInTriggerer` says how a trigger ends a task whose video is ready.

The layers above it: the loops that follow a wait (:mod:`airflow_provider_kling.follow`), the exit
rule (:mod:`airflow_provider_kling.exit_rule`), the trigger, and a task's waiting part
(:mod:`airflow_provider_kling.task_wait`). This module imports none of them, and nothing of the
provider's above the hooks; it is read when a task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
)
from airflow_provider_kling.states import RequestStatus
from airflow_provider_kling.wait_plan import (
    PollSettings,
    Seen,
    WaitLimits,
    WaitPlan,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_kling.hooks.kling import KlingAsyncHook, KlingHook
    from airflow_provider_kling.models import ResultResponse, StatusResponse
    from airflow_provider_kling.store import VideoStore

#: A logger: the standard library's, or Airflow's structured one (a task's or a trigger's ``log``).
Logger = Any


@dataclass(frozen=True)
class EndInTriggerer:
    """
    How the trigger ends a task whose video is ready, without a worker run (``finish_in_triggerer``).

    :param store: where the video goes first (the operator's ``destination``); ``None``: not stored.
    :param returns: the return value to push: ``"request_id"`` (the operator), ``"result"``
        (``@task.kling``), or ``None`` (``do_xcom_push=False``).
    :param tags: the task's metric tags (``model``, ``dag_id``, ``task_id``).
    """

    store: VideoStore | None = None
    returns: Literal["request_id", "result"] | None = "request_id"
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": None if self.store is None else self.store.to_dict(),
            "returns": self.returns,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndInTriggerer:
        from airflow_provider_kling.store import VideoStore

        store = data.get("store")
        returns = data.get("returns")
        return cls(
            store=VideoStore.from_dict(store) if store else None,
            returns=returns if returns in ("request_id", "result") else None,
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        )


@dataclass(frozen=True)
class RequestWait:
    """
    Everything about one wait for one request, as plain data.

    :param request_id: the RunComfy request waited for.
    :param plan: how to poll and when to give up.
    :param seen: what the last poll saw; ``None`` before the first.
    :param kling_conn_id: the ``kling`` connection; only its id, never the token.
    :param include_cost: ask the result call for the request's ``cost``.
    :param cancel_on_kill: whether a user's stop cancels a queued request.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    :param running_since: when a poll first saw the request running (Unix seconds), for the
        ``kling.queued`` and ``kling.rendering`` timers.
    :param carry: plain data the task gets back with the trigger's event (what lineage says of the
        generation): it travels in the wait, since ``dag.test()`` drops a deferral's own kwargs.
    :param end_task: set when the trigger ends the task itself once the video is ready
        (``finish_in_triggerer``): no worker runs again for a success.
    """

    request_id: str
    plan: WaitPlan = field(default_factory=WaitPlan)
    seen: Seen | None = None
    kling_conn_id: str = DEFAULT_CONN_ID
    include_cost: bool = False
    cancel_on_kill: bool = True
    hook_params: Mapping[str, Any] = field(default_factory=dict)
    running_since: float | None = None
    carry: Mapping[str, Any] = field(default_factory=dict)
    end_task: EndInTriggerer | None = None

    def saw(self, seen: Seen) -> RequestWait:
        running = seen.state is RequestStatus.IN_PROGRESS and self.running_since is None
        return replace(self, seen=seen, running_since=seen.at if running else self.running_since)

    def timings(self, created_at: str | None, now: float | None = None) -> dict[str, float]:
        """Seconds queued and rendering, as this wait saw them (to a poll interval), where known."""
        found: dict[str, float] = {}
        if self.running_since is None:
            return found
        found["rendering_seconds"] = max((time.time() if now is None else now) - self.running_since, 0.0)
        created = unix_time(created_at)
        if created is not None:
            found["queued_seconds"] = max(self.running_since - created, 0.0)
        return found

    @property
    def last_state(self) -> RequestStatus | None:
        return self.seen.state if self.seen is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what a trigger serializes."""
        seen = self.seen
        return {
            "request_id": self.request_id,
            "poll_interval": self.plan.settings.interval,
            "max_poll_interval": self.plan.settings.max_interval,
            "deadline": self.plan.limits.deadline,
            "queue_deadline": self.plan.limits.queue_deadline,
            "seen": None if seen is None else {**seen._asdict(), "state": seen.state.value},
            "kling_conn_id": self.kling_conn_id,
            "include_cost": self.include_cost,
            "cancel_on_kill": self.cancel_on_kill,
            "hook_params": dict(self.hook_params),
            "running_since": self.running_since,
            "carry": dict(self.carry),
            "end_task": None if self.end_task is None else self.end_task.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestWait:
        """
        Read :meth:`to_dict`'s output, or the keyword arguments a trigger of release 0.x serialized
        (``last_status``, ``last_queue_position``, ``last_polled_at``): a task deferred before an
        upgrade is resumed by the new code.
        """
        defaults = PollSettings()
        seen = data.get("seen")
        if seen is None and data.get("last_status") is not None:  # the earlier trigger's flat form
            seen = {"state": data["last_status"], "queue_position": data.get("last_queue_position"),
                    "at": data.get("last_polled_at")}  # fmt: skip
        return cls(
            request_id=str(data["request_id"]),
            plan=WaitPlan(
                PollSettings(
                    float(data.get("poll_interval", defaults.interval)),
                    float(data.get("max_poll_interval", defaults.max_interval)),
                ),
                WaitLimits(data.get("deadline"), data.get("queue_deadline")),
            ),
            seen=_waiting_seen(seen),
            kling_conn_id=str(data.get("kling_conn_id") or DEFAULT_CONN_ID),
            include_cost=bool(data.get("include_cost", False)),
            cancel_on_kill=bool(data.get("cancel_on_kill", True)),
            hook_params=dict(data.get("hook_params") or {}),
            running_since=data.get("running_since"),
            carry=dict(data.get("carry") or {}),
            end_task=EndInTriggerer.from_dict(data["end_task"]) if data.get("end_task") else None,
        )

    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def async_hook(self) -> KlingAsyncHook:
        from airflow_provider_kling.hooks.kling import KlingAsyncHook

        return KlingAsyncHook(self.kling_conn_id, **self.hook_params)


def _waiting_seen(data: Mapping[str, Any] | None) -> Seen | None:
    """A serialized poll, if it saw the request still waiting (a finished one is polled again)."""
    if not data or data.get("state") not in (RequestStatus.IN_QUEUE.value, RequestStatus.IN_PROGRESS.value):
        return None
    return Seen(RequestStatus(data["state"]), data.get("queue_position"), float(data.get("at") or 0.0))


def unix_time(iso: str | None) -> float | None:
    """An ISO 8601 time as RunComfy writes it (``Z``, or no zone: UTC) in Unix seconds; ``None`` if unreadable."""
    if not iso:
        return None
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def observed(answer: StatusResponse | ResultResponse, at: float) -> tuple[Seen, ResultResponse | None]:
    """What a status or result answer, asked for at ``at``, says: the state, and the final result if any."""
    from airflow_provider_kling.models import StatusResponse

    if isinstance(answer, StatusResponse):
        return Seen(answer.status, answer.queue_position, at), None
    return Seen(answer.status.request_status, None, at), answer if answer.status.is_terminal else None

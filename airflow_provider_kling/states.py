"""
The states RunComfy reports, as plain enums: light enough for the modules a DAG file imports.

The status call and the result call use two different sets; ``completed`` means finished, not
succeeded.
"""

from __future__ import annotations

from enum import Enum


class RequestStatus(str, Enum):
    """``status`` of the status call. ``completed`` means finished, not succeeded."""

    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """Whether the request will not change any more (its result is final)."""
        return self in (RequestStatus.COMPLETED, RequestStatus.CANCELLED)


class ResultStatus(str, Enum):
    """``status`` of the result call: another set than the status call's."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ResultStatus.SUCCEEDED, ResultStatus.FAILED, ResultStatus.CANCELLED)

    @property
    def request_status(self) -> RequestStatus:
        """The same state in the status call's set (``succeeded`` and ``failed`` are ``completed``)."""
        if self in (ResultStatus.SUCCEEDED, ResultStatus.FAILED):
            return RequestStatus.COMPLETED
        return RequestStatus(self.value)


class CancelOutcome(str, Enum):
    """``outcome`` of the cancel call: only a queued request can be cancelled."""

    CANCELLED = "cancelled"
    NOT_CANCELLABLE = "not_cancellable"

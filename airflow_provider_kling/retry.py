"""
Which failures are worth another attempt, and how long to wait: one policy for both hooks.

Status, result and cancel are idempotent and retried on connection faults, timeouts, 429 and 5xx.
The paid submit is retried only where the server certainly created nothing (see
:func:`is_safe_to_resubmit`): the API has no idempotency key, so any other retry may pay twice.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from tenacity import retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from airflow_provider_kling.constants import MAX_RETRY_AFTER, MAX_RETRY_DELAY
from airflow_provider_kling.exceptions import KlingAPIError, KlingConnectionError, KlingRateLimitError

if TYPE_CHECKING:
    from tenacity import RetryCallState


def is_transient(exc: BaseException) -> bool:
    """A failure that repeating an idempotent call may cure."""
    if isinstance(exc, KlingConnectionError):
        return True
    return isinstance(exc, KlingAPIError) and exc.is_retryable


def is_safe_to_resubmit(exc: BaseException) -> bool:
    """A submit failure after which RunComfy certainly created no request."""
    if isinstance(exc, KlingConnectionError):
        return not exc.request_sent
    return isinstance(exc, KlingRateLimitError)


class RetryPolicy:
    """
    Exponential backoff with jitter, honouring ``Retry-After`` up to a cap.

    :param max_attempts: attempts in all, the first included (1 disables retries).
    :param initial_delay: seconds before the first retry; doubled each time up to ``max_delay``.
    :param max_delay: the longest wait between attempts.
    """

    def __init__(self, max_attempts: int, initial_delay: float, max_delay: float = MAX_RETRY_DELAY) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay

    @cached_property
    def _backoff(self) -> Any:
        # Built on the first retry only: a triggerer holds thousands of policies that never retry.
        return wait_exponential(multiplier=self.initial_delay, max=self.max_delay) + wait_random(0, self.initial_delay)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, KlingAPIError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER)
        return float(self._backoff(state))

    def tenacity_kwargs(self, *, submit: bool = False) -> dict[str, Any]:
        """Arguments for tenacity's ``Retrying``/``AsyncRetrying`` under this policy."""
        return {
            "retry": retry_if_exception(is_safe_to_resubmit if submit else is_transient),
            "stop": stop_after_attempt(self.max_attempts),
            "wait": self.wait,
            "reraise": True,
        }

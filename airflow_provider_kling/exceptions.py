"""
Everything the provider raises, rooted at :class:`KlingError`.

Talking to RunComfy failed (:class:`KlingAPIError` and its subclasses, :class:`KlingConnectionError`,
:class:`KlingHTTPTimeoutError`), or a generation ended without a video
(:class:`KlingGenerationError`: :class:`KlingRequestFailed`, :class:`KlingRequestCancelled`,
:class:`KlingWaitTimeout`): callers branch on these types, never on message text.

Every error carries its details as plain data (``fields``), so it crosses a trigger event or a
pickle and comes back as the same type with the same details. Messages and details pass through
:func:`~airflow_provider_kling.untrusted.redact` here, once for every error: no API token is ever
part of an error's text. This module imports nothing else of the provider's but that leaf module:
which answer becomes which error is decided where answers are read
(:mod:`airflow_provider_kling.hooks.responses`).

The errors are Airflow's exceptions (``KlingError`` is an ``AirflowException``; the ones never worth
a retry are ``AirflowFailException``), except in the ``kling`` command run with a token from the
environment, which imports no Airflow at all (:func:`airflow_provider_kling.standalone`): there
they are plain exceptions with the same names, fields and messages.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import airflow_provider_kling
from airflow_provider_kling.untrusted import redact, redact_data

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
elif airflow_provider_kling.STANDALONE and "airflow" not in sys.modules:

    class AirflowException(Exception):
        """Stands in for Airflow's base exception where Airflow is not loaded (the ``kling`` command)."""

    class AirflowFailException(AirflowException):
        """Stands in for Airflow's "do not retry" exception where Airflow is not loaded."""

else:
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

#: Characters of a server answer quoted in an error message.
BODY_EXCERPT_CHARS = 300


def excerpt(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Return ``text`` on one line without any token in it, cut to ``limit`` characters."""
    flat = redact(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class KlingError(AirflowException):
    """Base class of every error raised by airflow-provider-kling."""

    def __init__(self, message: str, **fields: Any) -> None:
        self.message = redact(message)
        self.fields = redact_data(fields)
        super().__init__(self._describe())

    def _describe(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def to_event(self) -> dict[str, Any]:
        """The error as JSON-able data for a trigger event: its type is the event's ``outcome``."""
        return {"outcome": type(self).__name__, "message": self.message, "fields": self.fields}

    @staticmethod
    def from_event(data: dict[str, Any]) -> KlingError:
        """Rebuild an error sent by :meth:`to_event`; an unknown type comes back as :class:`KlingError`."""
        name = str(data.get("outcome", data.get("error_type")))  # error_type: events of the earlier release
        # Events written before a rename name the old class: read them as the new one.
        cls = getattr(sys.modules[__name__], _RENAMED.get(name, name), None)
        if not (isinstance(cls, type) and issubclass(cls, KlingError)):
            cls = KlingError
        raw_fields = data.get("fields")
        fields: dict[str, Any] = raw_fields if isinstance(raw_fields, dict) else {}
        try:
            return cls(str(data.get("message", "")), **fields)
        except TypeError:
            return KlingError(str(data.get("message", "")))


def _rebuild(cls: type[KlingError], message: str, fields: dict[str, Any]) -> KlingError:
    return cls(message, **fields)


class KlingInputError(KlingError, AirflowFailException, ValueError):
    """The generation input is invalid; raised before any request is sent, and never retried."""


class KlingConnectionError(KlingError):
    """
    RunComfy could not be reached, or the connection dropped before an answer arrived.

    :param request_sent: whether the request may have reached the server. ``False`` only when
        the connection was never established, so a paid submit certainly created nothing.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        self.request_sent = request_sent
        super().__init__(message, request_sent=request_sent)


class KlingHTTPTimeoutError(KlingConnectionError):
    """One HTTP call got no connection or no answer within its timeout (``connect_timeout``, ``read_timeout``)."""


class KlingSubmitOutcomeUnknownError(KlingError, AirflowFailException):
    """
    The paid submit was sent but its outcome is unknown: a request may exist and be billed.

    Never retried automatically, since a second POST could pay for a second video.
    """


class KlingAPIError(KlingError):
    """
    RunComfy answered with an error, or with something that is not a valid answer.

    :param message: what went wrong, in words.
    :param status_code: the HTTP status of the answer.
    :param error_code: RunComfy's ``error_code``, when the body carries one.
    :param request_id: the generation request concerned, when known.
    :param body: the raw answer; only a short excerpt is kept.
    :param retry_after: seconds the server asked to wait before trying again.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: int | None = None,
        request_id: str | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        # Shadows AirflowException.status_code (an API-server concern) with the HTTP status seen.
        self.status_code = status_code  # type: ignore[assignment]
        self.error_code = error_code
        self.request_id = request_id
        self.body_excerpt = excerpt(body)
        self.retry_after = retry_after
        super().__init__(
            message,
            status_code=status_code,
            error_code=error_code,
            request_id=request_id,
            body=self.body_excerpt,
            retry_after=retry_after,
        )

    def _describe(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.error_code is not None:
            parts.append(f"error_code {self.error_code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        if self.body_excerpt:
            parts.append(f"body: {self.body_excerpt}")
        return " | ".join(parts)

    @classmethod
    def default_message(cls) -> str:
        return (cls.__doc__ or "RunComfy answered with an error.").strip().splitlines()[0]

    @property
    def is_retryable(self) -> bool:
        """Whether repeating the same call may succeed (rate limits, server faults)."""
        return False


class KlingAuthenticationError(KlingAPIError):
    """The API token is missing, wrong or expired, or the account is inactive (400004, HTTP 401)."""


class KlingPermissionError(KlingAPIError):
    """The request belongs to another RunComfy account (403001, HTTP 403)."""


class KlingNotFoundError(KlingAPIError):
    """The request id is unknown or expired (404001, HTTP 404)."""


class KlingInvalidModelError(KlingAPIError):
    """RunComfy does not know this model path (400001)."""


class KlingInsufficientBalanceError(KlingAPIError):
    """The RunComfy account has no balance left (400002, HTTP 402)."""


class KlingBadRequestError(KlingAPIError):
    """RunComfy rejected the request as invalid (HTTP 400 or 422)."""


class KlingRateLimitError(KlingAPIError):
    """RunComfy is rate-limiting this account (HTTP 429)."""

    @property
    def is_retryable(self) -> bool:
        return True


class KlingServerError(KlingAPIError):
    """RunComfy had an internal error (HTTP 5xx, or an error_code in a 200 answer)."""

    @property
    def is_retryable(self) -> bool:
        return True


class KlingMalformedResponseError(KlingAPIError):
    """RunComfy's answer could not be read (not JSON, missing fields, unknown values)."""


class KlingUnusableVideoError(KlingMalformedResponseError, AirflowFailException):
    """
    A request succeeded, but its result names no usable video: the URL is missing or is not an
    ``http(s)`` URL (``javascript:``, ``data:``, ``file:``...). The message names the scheme. Never
    retried: asking again returns the same result.
    """


class KlingVideoExpiredError(KlingAPIError):
    """
    The host of a finished request's video refused it (HTTP 403, 404 or 410): its URL has most likely
    expired. A retry of the task, or ``kling result REQUEST_ID``, fetches a fresh URL; nothing is paid again.
    """


class KlingNotAVideoError(KlingError):
    """
    What the video URL served is not a playable video: a web page, JSON, an image, a file FFmpeg
    cannot open, no video stream, a first frame that does not decode. Nothing was stored. A failed
    download, not a failed generation: a retry fetches the video again and never pays again.

    :param came: what came instead, in words (``an HTML page``, ``text/html``, ``no video stream``).
    """

    def __init__(self, message: str, *, came: str, **fields: Any) -> None:
        self.came = came
        super().__init__(message, came=came, **fields)


class KlingVideoShapeError(KlingError, AirflowFailException):
    """
    The video is not the shape that was asked for (``verify="strict"``): its aspect ratio or
    duration is off by more than the stated tolerance. It was not stored. Never retried: the
    request is finished and billed, and a retry would only fetch the same video.

    :param request_id: the generation request.
    :param mismatch: how the video differs, in words.
    """

    def __init__(self, message: str, *, request_id: str, mismatch: list[str]) -> None:
        self.request_id = request_id
        self.mismatch = list(mismatch)
        super().__init__(message, request_id=request_id, mismatch=self.mismatch)


class KlingStaleReviewError(KlingError, AirflowFailException):
    """
    A review's form would show another take than the one it decides on: Airflow 3.1 to 3.3 keep
    the form of a human-in-the-loop task's first try when the task is cleared or retried. Raised
    before anybody is asked, and never retried (a retry keeps the same form).
    """


class KlingBudgetExceededError(KlingError, AirflowFailException):
    """
    A budget (or the task's own cap on paid submits) refuses a generation; raised before anything is
    sent, and never retried: a retry would be refused the same way until the period turns.

    :param budget: the budget's name (``max_paid_submits`` for the task's own cap).
    :param period: the period it counts (``2026-12-01``, ``2026-12``, ``forever``).
    :param cap: its caps; ``spent`` and ``reserved``: what the period used, settled and in flight.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        period: str = "",
        cap: Any = None,
        spent: Any = None,
        reserved: Any = None,
    ) -> None:
        self.budget = budget
        super().__init__(message, budget=budget, period=period, cap=cap, spent=spent, reserved=reserved)


class KlingBudgetStoreError(KlingError):
    """
    The budget ledger's database could not be opened or did not answer in time; raised before the paid
    submit, so nothing was sent, and retried as any outage is.

    :param store: the id of the ledger's Airflow connection (``budget_store``).
    """

    def __init__(self, message: str, *, store: str) -> None:
        self.store = store
        super().__init__(message, store=store)


class KlingGenerationError(KlingError):
    """
    A generation request ended without a video, or was given up on: an outcome, not a transport fault.

    :param request_id: the generation request.
    :param result: the result body RunComfy returned, when there is one.
    """

    def __init__(self, message: str, *, request_id: str, result: dict[str, Any] | None = None) -> None:
        self.request_id = request_id
        super().__init__(message, request_id=request_id, result=result)
        self.result: dict[str, Any] | None = self.fields["result"]  # redacted, as every field is


class KlingRequestFailed(KlingGenerationError):
    """Kling finished the request but the generation failed."""


class KlingRequestCancelled(KlingGenerationError):
    """The request was cancelled before it produced a video."""


class KlingWaitTimeout(KlingGenerationError):
    """
    Waiting for the request stopped at a limit (``timeout``, ``queue_timeout``) before it finished.

    :param cancel_outcome: what the cancel at the limit answered (``cancelled``: free;
        ``not_cancellable``: it runs and is billed), ``None`` when the cancel failed.
    """

    def __init__(
        self, message: str, *, request_id: str, result: dict[str, Any] | None = None, cancel_outcome: str | None = None
    ) -> None:
        self.request_id = request_id
        self.cancel_outcome = cancel_outcome
        KlingError.__init__(self, message, request_id=request_id, result=result, cancel_outcome=cancel_outcome)
        self.result = self.fields["result"]


#: Names of the previous release, kept one release for code that imports them.
_RENAMED = {
    "KlingTimeoutError": "KlingHTTPTimeoutError",
    "KlingRequestTimeout": "KlingWaitTimeout",
    "KlingRequestError": "KlingGenerationError",
}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        warnings.warn(
            f"{name} is deprecated and will be removed in the next release: use {_RENAMED[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

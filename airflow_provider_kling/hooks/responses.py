"""
Reading RunComfy's answers: a typed body, or the most specific :class:`KlingAPIError`.

The mapping from an answer to an error lives here, where answers are read, so that the
exceptions module depends on nothing else of ours.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthenticationError,
    KlingBadRequestError,
    KlingError,
    KlingInsufficientBalanceError,
    KlingInvalidModelError,
    KlingMalformedResponseError,
    KlingNotFoundError,
    KlingPermissionError,
    KlingRateLimitError,
    KlingServerError,
    KlingSubmitOutcomeUnknownError,
)
from airflow_provider_kling.models import ResponseBody
from airflow_provider_kling.retry import is_safe_to_resubmit

if TYPE_CHECKING:
    from collections.abc import Mapping

ResponseT = TypeVar("ResponseT", bound=ResponseBody)

#: RunComfy's documented ``error_code`` values.
ERROR_CODE_CLASSES: dict[int, type[KlingAPIError]] = {
    400001: KlingInvalidModelError,
    400002: KlingInsufficientBalanceError,
    400004: KlingAuthenticationError,
    403001: KlingPermissionError,
    404001: KlingNotFoundError,
}

#: HTTP statuses, for answers without an ``error_code``.
STATUS_CLASSES: dict[int, type[KlingAPIError]] = {
    400: KlingBadRequestError,
    401: KlingAuthenticationError,
    402: KlingInsufficientBalanceError,
    403: KlingPermissionError,
    404: KlingNotFoundError,
    422: KlingBadRequestError,
    429: KlingRateLimitError,
}


def read_answer(
    model_cls: type[ResponseT], status_code: int, text: str, *, retry_after: float | None, request_id: str | None
) -> ResponseT:
    """Turn an HTTP answer into a typed body, or the most specific :class:`KlingAPIError`."""
    if not 200 <= status_code < 300 or _has_error_code(text):
        raise error_for_answer(status_code, text, request_id=request_id, retry_after=retry_after)
    return model_cls.from_http(status_code, text, request_id=request_id)  # type: ignore[no-any-return]


def error_for_answer(
    status_code: int, body: str, *, request_id: str | None = None, retry_after: float | None = None
) -> KlingAPIError:
    """The most specific error for an answer RunComfy sent instead of a success."""
    error = ErrorBody.parse(body)
    error_code = error.error_code if error else None
    error_cls = ERROR_CODE_CLASSES.get(error_code or 0) or _status_class(status_code)
    message = (error.error_message if error else None) or error_cls.default_message()
    return error_cls(
        message,
        status_code=status_code,
        error_code=error_code,
        request_id=request_id,
        body=body,
        retry_after=retry_after,
    )


def _status_class(status_code: int) -> type[KlingAPIError]:
    if status_code >= 500 or 200 <= status_code < 300:
        # A 200 carrying an error_code is a server-side failure the docs say to retry.
        return KlingServerError
    return STATUS_CLASSES.get(status_code, KlingAPIError)


def _has_error_code(text: str) -> bool:
    # Some RunComfy endpoints answer 200 with an error body; only a cheap substring test first.
    if "error_code" not in text:
        return False
    error = ErrorBody.parse(text)
    return error is not None and error.error_code is not None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` in seconds; ``None`` when absent or an HTTP date (our own backoff applies)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def submit_failure(exc: KlingError, model: str) -> KlingError:
    """
    The error to raise for a failed submit.

    Failures after which RunComfy certainly created nothing (a definite 4xx, 429, a connection
    never made) are raised as they are. Anything else may have created a billed request.
    """
    definite = (
        isinstance(exc, KlingAPIError) and not isinstance(exc, KlingMalformedResponseError) and not exc.is_retryable
    )
    if definite or is_safe_to_resubmit(exc):
        return exc
    return KlingSubmitOutcomeUnknownError(
        f"The submit to {model} may have created a request that will be billed, but its outcome is "
        f"unknown ({exc}). It was not repeated automatically, so that you do not pay twice: check "
        "your RunComfy request history before running this task again."
    )


class ErrorBody(BaseModel):
    """RunComfy's error body."""

    model_config = ConfigDict(extra="allow")

    error_code: int | None = None
    error_message: str | None = None
    detail: Any = None

    @classmethod
    def parse(cls, text: str) -> ErrorBody | None:
        """Read an error body; ``None`` when the text is not a JSON object with ``error_code`` or ``error_message``."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not ({"error_code", "error_message"} & data.keys()):
            return None
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None

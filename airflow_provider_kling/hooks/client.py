"""
:class:`KlingClient`: RunComfy's Model API from a worker, with no Airflow in it.

It is the body of :class:`~airflow_provider_kling.hooks.kling.KlingHook`, which adds the Airflow
connection, and what the ``kling`` command uses when its token comes from the environment, so that
``kling status`` answers without loading Airflow. One ``requests`` session per client; connect and
read timeouts on every call; status, result and cancel retried on transient faults through one
:class:`~airflow_provider_kling.retry.RetryPolicy`; the paid submit never repeated blindly.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from tenacity import Retrying

from airflow_provider_kling.constants import (
    CONNECT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    KLING_TEXT_TO_VIDEO_MODEL,
    MAX_ATTEMPTS,
    MAX_VIDEO_BYTES,
    READ_TIMEOUT,
)
from airflow_provider_kling.exceptions import KlingError
from airflow_provider_kling.hooks.download import DownloadedVideo, VideoRules, download_video
from airflow_provider_kling.hooks.responses import read_answer, submit_failure
from airflow_provider_kling.hooks.target import USER_AGENT, ApiTarget, model_path, request_path
from airflow_provider_kling.hooks.transport import Timeouts, send
from airflow_provider_kling.models import (
    CancelResponse,
    ResponseBody,
    ResultResponse,
    StatusResponse,
    SubmitResponse,
    validate_input,
)
from airflow_provider_kling.retry import RetryPolicy

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    from airflow.providers.common.compat.sdk import ObjectStoragePath
    from pydantic import BaseModel
    from tenacity import RetryCallState

    ResponseT = TypeVar("ResponseT", bound=ResponseBody)


class CallSettings:
    """
    How every call is made: timeouts and the retry policy, the same for the sync and the async side.

    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for an answer once a request is sent.
    :param max_attempts: attempts in all for a call that is safe to repeat.
    :param retry_delay: seconds before the first retry, doubled each time (with jitter).
    """

    log: Any  # the standard library's logger, or Airflow's on a hook

    def configure(
        self,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = INITIAL_RETRY_DELAY,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timeouts = Timeouts(connect_timeout, read_timeout)
        self.retry_policy = RetryPolicy(max_attempts=max_attempts, initial_delay=retry_delay)

    @staticmethod
    def _submission(model: str, input: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """The ``_call`` arguments of a submit: its input validated (once: a body already validated
        for ``model`` is sent as it is), and never repeated blindly."""
        return {"json_body": validate_input(model, input), "submit": True}

    def _log_retry(self, what: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            self.log.warning("%s failed (%s); attempt %d, retrying in %.1fs", what, exc, state.attempt_number, delay)

        return before_sleep


class KlingClient(CallSettings):
    """
    Synchronous client of RunComfy's Model API.

    :param target: where the API is and the token.
    :param log: where retries and waits are logged (the hook uses its own log).
    :param sleep: how the client waits, between retries and between polls (``time.sleep``; tests
        pass their own to see the waits without waiting).
    :param settings: ``connect_timeout``, ``read_timeout``, ``max_attempts``, ``retry_delay``
        (:class:`CallSettings`).
    """

    def __init__(
        self,
        target: ApiTarget,
        *,
        log: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **settings: Any,
    ) -> None:
        self._target = target
        self.log = log or logging.getLogger(__name__)
        self.sleep = sleep
        self.configure(**settings)

    @property
    def target(self) -> ApiTarget:
        return self._target

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["User-Agent"] = f"{USER_AGENT} requests/{requests.__version__}"
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        model_cls: type[ResponseT],
        method: str,
        path: str,
        *,
        request_id: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        submit: bool = False,
    ) -> ResponseT:
        for attempt in Retrying(
            **self.retry_policy.tenacity_kwargs(submit=submit),
            before_sleep=self._log_retry(f"{method} {path}"),
            sleep=self.sleep,
        ):
            with attempt:
                answer = send(
                    self.session, self.target, method, path, self.timeouts, json_body=json_body, params=params
                )
                self.log.debug("%s %s -> %d", method, path, answer.status_code)
                return read_answer(
                    model_cls, answer.status_code, answer.text, retry_after=answer.retry_after, request_id=request_id
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def submit(self, input: Mapping[str, Any] | BaseModel, model: str = KLING_TEXT_TO_VIDEO_MODEL) -> SubmitResponse:
        """
        Submit a paid generation request; validated first, never retried blindly.

        :raises KlingInputError: invalid input; nothing was sent.
        :raises KlingSubmitOutcomeUnknownError: a request may exist and be billed.
        """
        submission = self._submission(model, input)
        try:
            return self._call(SubmitResponse, "POST", model_path(model), **submission)
        except KlingError as exc:
            raise submit_failure(exc, model) from exc

    def get_status(self, request_id: str) -> StatusResponse:
        """Current state of a request: ``in_queue`` (with position), ``in_progress``, ``completed`` or ``cancelled``."""
        return self._call(StatusResponse, "GET", request_path(request_id, "status"), request_id=request_id)

    def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """Outcome and output of a request (its current state while unfinished)."""
        params = {"include_cost": "true"} if include_cost else None
        return self._call(
            ResultResponse, "GET", request_path(request_id, "result"), request_id=request_id, params=params
        )

    def cancel(self, request_id: str) -> CancelResponse:
        """Cancel a queued request; a running one answers ``not_cancellable`` and is still billed."""
        return self._call(CancelResponse, "POST", request_path(request_id, "cancel"), request_id=request_id)

    def download_video(
        self,
        url: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        *,
        max_bytes: int = MAX_VIDEO_BYTES,
        overwrite: bool = True,
        storage_conn_id: str | None = None,
        rules: VideoRules | None = None,
    ) -> DownloadedVideo:
        """
        Stream a video to storage, where it appears whole and checked, or not at all
        (:func:`~airflow_provider_kling.hooks.download.download_video`): a web page, an image or a
        file FFmpeg cannot play is refused, and the video's facts and poster come back with it.

        The destination is a local path, or any URI Airflow's ``ObjectStoragePath`` understands
        (``file://``, ``s3://``, ``gs://``...; ``storage_conn_id`` names its connection). The API
        token is not sent to the media host.

        :raises KlingInputError: the URL is not http(s), or the destination exists and
            ``overwrite`` is false.
        :raises KlingNotAVideoError: what came is not a playable video; nothing was stored.
        :raises KlingError: the download failed, was cut short, or is larger than ``max_bytes``.
        """
        return download_video(
            self.session,
            url,
            destination,
            self.timeouts,
            max_bytes=max_bytes,
            overwrite=overwrite,
            storage_conn_id=storage_conn_id,
            rules=rules or VideoRules(),
        )

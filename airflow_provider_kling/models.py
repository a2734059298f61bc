"""
Typed bodies of RunComfy's Model API, and the input of Kling 1.6 Pro text-to-video.

Responses tolerate fields RunComfy may add (``extra="allow"``); the input forbids unknown fields,
so a typo fails the task before anything is paid for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from airflow_provider_kling.constants import KLING_TEXT_TO_VIDEO_MODEL, PROMPT_MAX_CHARS
from airflow_provider_kling.exceptions import (
    KlingInputError,
    KlingMalformedResponseError,
    KlingRequestCancelled,
    KlingRequestFailed,
    KlingUnusableVideoError,
)
from airflow_provider_kling.family import FAMILY
from airflow_provider_kling.states import CancelOutcome as CancelOutcome
from airflow_provider_kling.states import RequestStatus as RequestStatus
from airflow_provider_kling.states import ResultStatus as ResultStatus
from airflow_provider_kling.untrusted import video_url_problem

if TYPE_CHECKING:
    from typing_extensions import NotRequired

DURATIONS = (5, 10)
ASPECT_RATIOS = ("16:9", "9:16", "1:1")


# --- input -----------------------------------------------------------------------------------


class KlingTextToVideoInput(BaseModel):
    """Input of ``kling/kling-1-6/pro/text-to-video``, with RunComfy's rules and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    """What the video shows; 1 to 2,500 characters."""
    duration: int = 5
    """Seconds of video: 5 or 10. Billing is per generated second."""
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    """Width to height of the video."""
    negative_prompt: str = Field(default="", max_length=PROMPT_MAX_CHARS)
    """What the video should avoid; at most 2,500 characters."""
    cfg_scale: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    """Prompt strength from 0 to 1: higher follows the prompt more, with less variety."""

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank", "is blank")
        return value

    @field_validator("duration", "cfg_scale", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1; for a paid generation that is a typo, not a value.
        if isinstance(value, bool):
            raise PydanticCustomError("bool_type", "is a boolean, not a number")
        return value

    @field_validator("duration")
    @classmethod
    def _duration_allowed(cls, value: int) -> int:
        if value not in DURATIONS:
            raise PydanticCustomError("duration", "not an allowed duration")
        return value


#: What each input field allows, quoted in every validation error about it.
INPUT_RULES = {
    "prompt": f"a non-blank string of at most {PROMPT_MAX_CHARS} characters",
    "duration": "5 or 10 (seconds)",
    "aspect_ratio": "one of " + ", ".join(ASPECT_RATIOS),
    "negative_prompt": f"a string of at most {PROMPT_MAX_CHARS} characters",
    "cfg_scale": "a number from 0 to 1",
}

#: Input models of the RunComfy models whose input this provider knows; others pass through.
INPUT_MODELS: dict[str, type[BaseModel]] = {KLING_TEXT_TO_VIDEO_MODEL: KlingTextToVideoInput}


class ValidBody(dict[str, Any]):
    """A body :func:`validate_input` returned for :attr:`model`: submitted as it is, not validated again."""

    def __init__(self, model: str, body: Mapping[str, Any]) -> None:
        super().__init__(body)
        self.model = model


def validate_input(model: str, data: Mapping[str, Any] | BaseModel) -> ValidBody:
    """
    Check a generation input and return the JSON body to submit.

    Inputs of known models are validated strictly; any other model's input must be a JSON object
    and is passed through unchanged. A body this function already returned for ``model`` is
    returned as it is: the input is validated once, however many layers hand it on.

    :raises KlingInputError: naming each bad field and what it allows.
    """
    if isinstance(data, ValidBody) and data.model == model:
        return data
    return ValidBody(model, _validated(model, data))


def _validated(model: str, data: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if not isinstance(model, str) or not model.strip("/ "):
        raise KlingInputError(f"model: must be a RunComfy model path such as {KLING_TEXT_TO_VIDEO_MODEL!r}")
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise KlingInputError(f"input for {model}: must be a mapping of field to value, got {type(data).__name__}")
    input_model = INPUT_MODELS.get(model)
    if input_model is None:
        family_model = FAMILY.get(model)
        images = set(family_model.image_fields.values()) if family_model else set()
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise KlingInputError(f"input for {model}: must be JSON-serializable ({err})") from None
        problems = family_model.problems(data) if family_model else []
        problems += [
            problem
            for field, value in data.items()
            if field not in images
            for problem in _media_url_problems(str(field), value)
        ]
        if problems:
            raise KlingInputError("\n".join([f"Invalid input for {model}:", *problems]))
        return dict(data)
    try:
        return input_model.model_validate(data).model_dump()
    except ValidationError as err:
        raise KlingInputError(_describe_input_errors(model, input_model, err)) from None


def input_body(model: str, fields: Mapping[str, Any], extra: Any = None) -> ValidBody:
    """
    The validated body to submit, as the operator and the ``kling`` command build it: the Kling
    1.6 text-to-video ``fields`` (for another model only its ``prompt``), with ``extra`` merged
    over them.

    :raises KlingInputError: ``extra`` is not a mapping, or a field is not allowed.
    """
    if model == KLING_TEXT_TO_VIDEO_MODEL:
        data = dict(fields)
    else:
        data = {} if fields.get("prompt") is None else {"prompt": fields["prompt"]}
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise KlingInputError(f"input: must be a mapping of field to value, got {type(extra).__name__}")
        data.update(extra)
    return validate_input(model, data)


#: Input fields that RunComfy fetches from a URL (images, videos, audio, masks...).
MEDIA_FIELDS = frozenset({"image", "images", "video", "videos", "audio", "mask", "image_tail", "tail_image"})
MEDIA_URL_RULE = (
    "a publicly reachable HTTPS URL (no login or cookies); RunComfy recommends images up to 50 MB "
    "and videos up to 100 MB"
)


def _media_url_problems(field: str, value: Any) -> list[str]:
    """What is wrong with a media field of a passed-through input (fields named ``*_url`` or ``image``...)."""
    if not (field in MEDIA_FIELDS or field.endswith(("_url", "_urls"))):
        return []
    values = value if isinstance(value, list) else [value]
    problems = []
    for item in values:
        parts = urlsplit(item) if isinstance(item, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname:
            shown = repr(item) if not isinstance(item, str) or len(item) <= 60 else repr(item[:60] + "...")
            problems.append(f"- {field}: not an HTTPS URL (got {shown}); allowed: {MEDIA_URL_RULE}")
    return problems


def _describe_input_errors(model: str, input_model: type[BaseModel], err: ValidationError) -> str:
    lines = [f"Invalid input for {model}:"]
    for error in err.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "input"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(input_model.model_fields)
            lines.append(f"- {field}: unknown field for this model; allowed fields: {allowed}")
            continue
        got = error.get("input")
        shown = repr(got) if not isinstance(got, str) or len(got) <= 60 else f"a string of {len(got)} characters"
        rule = INPUT_RULES.get(field)
        hint = f"; allowed: {rule}" if rule else ""
        lines.append(f"- {field}: {error['msg']} (got {shown}){hint}")
    return "\n".join(lines)


# --- responses -------------------------------------------------------------------------------


class KlingResult(TypedDict):
    """
    The result of a succeeded request as tasks pass it on: the sensor's return value, the
    operator's XCom ``result``, the success event of the trigger. JSON-able.
    """

    request_id: str
    status: str
    """``succeeded``."""
    video_url: str
    """The video to copy; RunComfy does not say how long it stays valid."""
    output: dict[str, Any]
    """Every media URL of the output (``video``, ``videos``, ``image``...)."""
    created_at: str | None
    finished_at: str | None
    cost: NotRequired[Any]
    """What the request cost, when asked for (``include_cost``)."""
    timings: NotRequired[dict[str, float]]
    """``queued_seconds`` and ``rendering_seconds`` as the wait saw them (to a poll interval), where known."""
    stored: NotRequired[dict[str, Any]]
    """Where the task stored the video (its ``destination``): ``uri``, ``size_bytes``, ``sha256``, ``content_type``."""


class ResponseBody(BaseModel):
    """Base of every RunComfy answer: unknown fields are kept, the raw answer too."""

    model_config = ConfigDict(extra="allow", frozen=True)

    _http_status: int = PrivateAttr(default=200)
    _raw: str = PrivateAttr(default="")

    @classmethod
    def from_http(cls, status_code: int, text: str, *, request_id: str | None = None) -> Any:
        """
        Parse a successful answer.

        :raises KlingMalformedResponseError: when the answer is not JSON or not of this shape.
        """
        try:
            body = cls.model_validate_json(text)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            reason = "not JSON" if first["type"] == "json_invalid" else f"{where}: {first['msg']}"
            raise KlingMalformedResponseError(
                f"Unreadable {cls.__name__} from RunComfy ({reason})",
                status_code=status_code,
                request_id=request_id,
                body=text,
            ) from None
        body._http_status = status_code
        body._raw = text
        return body

    @property
    def raw(self) -> str:
        """The answer exactly as RunComfy sent it, for debugging."""
        return self._raw


class SubmitResponse(ResponseBody):
    """Answer of the submit call."""

    request_id: str = Field(min_length=1)
    """RunComfy's id of the new generation request; keep it to resume, poll or cancel."""
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


class StatusResponse(ResponseBody):
    """Answer of the status call."""

    request_id: str | None = None
    status: RequestStatus
    """``in_queue``, ``in_progress``, ``completed`` (finished, not necessarily succeeded) or ``cancelled``."""
    queue_position: int | None = None
    """Place in RunComfy's queue, present only while ``in_queue``."""
    status_url: str | None = None
    result_url: str | None = None


class Output(BaseModel):
    """The ``output`` of a succeeded request: media URLs."""

    model_config = ConfigDict(extra="allow", frozen=True)

    image: str | None = None
    video: str | None = None
    images: list[str] | None = None
    videos: list[str] | None = None

    @property
    def video_url(self) -> str | None:
        """``video``, else the first of ``videos``."""
        return self.video or next(iter(self.videos or []), None)


class ResultResponse(ResponseBody):
    """Answer of the result call; before the request finishes it carries the current state."""

    request_id: str | None = None
    status: ResultStatus
    """``succeeded``, ``failed``, ``cancelled``, or ``in_queue``/``in_progress`` while unfinished."""
    output: Output | None = None
    """Media URLs, present only on ``succeeded``."""
    created_at: str | None = None
    finished_at: str | None = None
    error: Any = None
    """The server's reason for a failure, when it gives one."""
    cost: Any = None
    """What the request cost, when asked for with ``include_cost=true``."""

    @property
    def error_message(self) -> str:
        """The server's reason for a failure as one line, or a generic text."""
        error = self.error
        if isinstance(error, dict):
            for key in ("error_message", "message", "detail", "error"):
                if error.get(key):
                    return str(error[key])
        if error:
            return str(error)
        return "no reason given by RunComfy"

    def require_video(self, request_id: str) -> KlingResult:
        """
        Return the JSON-able summary of a succeeded request, or raise for any other outcome.

        :raises KlingRequestFailed: the generation failed (with the server's reason).
        :raises KlingRequestCancelled: the request was cancelled.
        :raises KlingUnusableVideoError: it succeeded but names no video, or one that is not an
            ``http(s)`` URL (the message names the scheme).
        :raises KlingMalformedResponseError: it is unfinished.
        """
        rid = self.request_id or request_id
        if self.status is ResultStatus.FAILED:
            raise KlingRequestFailed(
                f"Kling request {rid} failed: {self.error_message}", request_id=rid, result=self.as_dict()
            )
        if self.status is ResultStatus.CANCELLED:
            raise KlingRequestCancelled(
                f"Kling request {rid} was cancelled before it produced a video",
                request_id=rid,
                result=self.as_dict(),
            )
        if self.status is not ResultStatus.SUCCEEDED:
            raise KlingMalformedResponseError(
                f"Result of finished request {rid} is still {self.status.value}",
                status_code=self._http_status,
                request_id=rid,
                body=self._raw,
            )
        video_url = self.output.video_url if self.output else None
        problem = video_url_problem(video_url)
        if problem is not None or video_url is None:
            raise KlingUnusableVideoError(
                f"Kling request {rid} succeeded but names no usable video: {problem}",
                status_code=self._http_status,
                request_id=rid,
                body=self._raw,
            )
        summary: KlingResult = {
            "request_id": rid,
            "status": self.status.value,
            "video_url": video_url,
            "output": self.output.model_dump(exclude_none=True) if self.output else {},
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }
        if self.cost is not None:
            summary["cost"] = self.cost
        return summary

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class CancelResponse(ResponseBody):
    """Answer of the cancel call."""

    request_id: str | None = None
    status: str | None = None
    outcome: CancelOutcome
    """``cancelled``, or ``not_cancellable`` when the request already runs (and will be billed)."""

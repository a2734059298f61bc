from __future__ import annotations

import json

import pytest

from airflow_provider_kling.exceptions import (
    KlingInputError,
    KlingMalformedResponseError,
    KlingRequestCancelled,
    KlingRequestFailed,
)
from airflow_provider_kling.models import (
    KLING_TEXT_TO_VIDEO_MODEL,
    RequestStatus,
    ResultResponse,
    ResultStatus,
    StatusResponse,
    SubmitResponse,
    validate_input,
)

VALID = {"prompt": "a red kite over the sea"}


def test_defaults_fill_the_documented_values():
    assert validate_input(KLING_TEXT_TO_VIDEO_MODEL, VALID) == {
        "prompt": "a red kite over the sea",
        "duration": 5,
        "aspect_ratio": "16:9",
        "negative_prompt": "",
        "cfg_scale": 0.5,
    }


def test_templated_strings_are_read_as_numbers():
    body = validate_input(KLING_TEXT_TO_VIDEO_MODEL, {**VALID, "duration": "10", "cfg_scale": "0.8"})
    assert (body["duration"], body["cfg_scale"]) == (10, 0.8)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("duration", 7, "5 or 10"),
        ("duration", "ten", "5 or 10"),
        ("duration", True, "5 or 10"),
        ("duration", 5.5, "5 or 10"),
        ("aspect_ratio", "4:3", "16:9, 9:16, 1:1"),
        ("cfg_scale", 1.5, "from 0 to 1"),
        ("cfg_scale", -0.1, "from 0 to 1"),
        ("cfg_scale", float("nan"), "from 0 to 1"),
        ("cfg_scale", "strong", "from 0 to 1"),
        ("prompt", "", "non-blank string of at most 2500"),
        ("prompt", "   ", "non-blank string of at most 2500"),
        ("prompt", "x" * 2501, "non-blank string of at most 2500"),
        ("prompt", 42, "non-blank string"),
        ("negative_prompt", "x" * 2501, "at most 2500"),
        ("negative_prompt", ["blur"], "at most 2500"),
    ],
)
def test_each_rule_names_the_field_and_what_it_allows(field, value, allowed):
    with pytest.raises(KlingInputError) as caught:
        validate_input(KLING_TEXT_TO_VIDEO_MODEL, {**VALID, field: value})
    message = str(caught.value)
    assert f"- {field}:" in message
    assert allowed in message


def test_missing_prompt_is_named():
    with pytest.raises(KlingInputError, match=r"- prompt: Field required"):
        validate_input(KLING_TEXT_TO_VIDEO_MODEL, {"duration": 5})


def test_unknown_field_lists_the_allowed_ones():
    with pytest.raises(KlingInputError) as caught:
        validate_input(KLING_TEXT_TO_VIDEO_MODEL, {**VALID, "seed": 3})
    assert "- seed: unknown field" in str(caught.value)
    assert "prompt, duration, aspect_ratio, negative_prompt, cfg_scale" in str(caught.value)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(KlingInputError) as caught:
        validate_input(KLING_TEXT_TO_VIDEO_MODEL, {"prompt": "", "duration": 3, "aspect_ratio": "2:1"})
    assert [line.split(":")[0] for line in str(caught.value).splitlines()[1:]] == [
        "- prompt",
        "- duration",
        "- aspect_ratio",
    ]


def test_a_long_prompt_is_not_echoed_whole():
    with pytest.raises(KlingInputError) as caught:
        validate_input(KLING_TEXT_TO_VIDEO_MODEL, {"prompt": "y" * 3000})
    assert "a string of 3000 characters" in str(caught.value)
    assert "y" * 100 not in str(caught.value)


def test_other_models_pass_through_but_must_be_json():
    body = {"image_url": "https://example.invalid/a.png", "anything": [1, 2]}
    assert validate_input(UNREGISTERED, body) == body
    with pytest.raises(KlingInputError, match="JSON-serializable"):
        validate_input("kling/kling-1-6/pro/image-to-video", {"when": object()})


def test_input_error_is_not_retried_by_airflow():
    from airflow.providers.common.compat.sdk import AirflowFailException

    assert issubclass(KlingInputError, AirflowFailException)


def test_responses_tolerate_unknown_fields_and_keep_the_raw_body():
    text = json.dumps({"request_id": "r1", "status": "in_queue", "queue_position": 4, "eta": 12})
    status = StatusResponse.from_http(200, text)
    assert status.status is RequestStatus.IN_QUEUE
    assert status.queue_position == 4
    assert status.raw == text
    assert not status.status.is_finished


@pytest.mark.parametrize(
    ("model", "text", "reason"),
    [
        (SubmitResponse, "<html>502 Bad Gateway</html>", "not JSON"),
        (SubmitResponse, '{"status_url": "x"}', "request_id: Field required"),
        (StatusResponse, '{"request_id": "r1", "status": "paused"}', "status: Input should be"),
    ],
)
def test_unreadable_answers_raise_a_typed_error_with_an_excerpt(model, text, reason):
    with pytest.raises(KlingMalformedResponseError) as caught:
        model.from_http(200, text, request_id="r1")
    assert caught.value.status_code == 200
    assert reason in str(caught.value)
    assert text[:10] in caught.value.body_excerpt


def _result(**body):
    return ResultResponse.from_http(200, json.dumps({"request_id": "r1", **body}))


def test_video_url_comes_from_video_else_the_first_of_videos():
    assert _result(status="succeeded", output={"video": "https://v/1.mp4"}).require_video("r1")["video_url"] == (
        "https://v/1.mp4"
    )
    summary = _result(status="succeeded", output={"videos": ["https://v/2.mp4", "https://v/3.mp4"]}).require_video("r1")
    assert summary["video_url"] == "https://v/2.mp4"
    assert summary["status"] == "succeeded"
    json.dumps(summary)


def test_failed_result_raises_with_the_servers_reason():
    with pytest.raises(KlingRequestFailed, match="content policy"):
        _result(status="failed", error={"error_message": "content policy"}).require_video("r1")


def test_cancelled_result_raises_cancelled():
    with pytest.raises(KlingRequestCancelled, match="cancelled"):
        _result(status="cancelled").require_video("r1")


def test_succeeded_without_a_video_is_a_malformed_answer():
    with pytest.raises(KlingMalformedResponseError, match="names no usable video: there is no video URL"):
        _result(status="succeeded", output={"image": "https://i/1.png"}).require_video("r1")


def test_result_status_set_differs_from_the_status_calls():
    assert {s.value for s in ResultStatus} - {s.value for s in RequestStatus} == {"succeeded", "failed"}


UNREGISTERED = "kling/kling-1-6/standard/image-to-video"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_url", "http://example.com/cat.png"),
        ("image_url", "file:///etc/passwd"),
        ("image", "data:image/png;base64,AAAA"),
        ("images", ["https://example.com/a.png", "ftp://example.com/b.png"]),
        ("tail_image_url", 42),
    ],
)
def test_media_inputs_of_other_models_must_be_https_urls(field, value):
    with pytest.raises(KlingInputError) as caught:  # a model not in the registry: its fields pass through
        validate_input(UNREGISTERED, {"prompt": "p", field: value})
    message = str(caught.value)
    assert f"- {field}: not an HTTPS URL" in message
    assert "images up to 50 MB" in message


def test_https_media_inputs_of_other_models_pass_unchanged():
    body = {"prompt": "p", "image_url": "https://cdn.example.com/cat.png", "images": ["https://x.example/a.png"]}
    assert validate_input(UNREGISTERED, body) == body

"""
The Kling family: each registered model's documented rules checked before anything is sent, its
image given three ways, its sound reported, and the registry shown by ``kling models`` and the docs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_kling.cli import main
from airflow_provider_kling.family import FAMILY, KlingModel, models_markdown
from airflow_provider_kling.testing import Scenario

DOCS = Path(__file__).parent.parent / "docs"
HTTPS_IMAGE = "https://cdn.example.com/key-visual.png"  # not on this machine: the simulator takes it as reachable


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the test's own set-up printed (Airflow 2 logs to stdout) is not the command's
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _complete(model: KlingModel) -> list[str]:
    """The flags of a request carrying every field ``model`` requires."""
    flags = ["--model", model.path, "--prompt", "a key visual comes alive [sim:queue=0][sim:run=0]"]
    for argument in model.image_fields:
        flags += [f"--{argument.replace('_', '-')}", HTTPS_IMAGE]
    return flags


def _without(flags: list[str], flag: str) -> list[str]:
    at = flags.index(flag)
    return flags[:at] + flags[at + 2 :]


@pytest.mark.parametrize("model", FAMILY.values(), ids=list(FAMILY))
def test_each_model_with_its_required_fields_is_accepted_by_the_simulator_as_by_runcomfy(env_token, capsys, model):
    code, _, err = _run(capsys, "submit", *_complete(model))
    assert code == 0, err
    (request,) = env_token.requests.values()
    assert request.model == model.path
    for argument, field in model.image_fields.items():
        assert request.input[field] == HTTPS_IMAGE, argument


@pytest.mark.parametrize("model", FAMILY.values(), ids=list(FAMILY))
def test_a_missing_required_field_is_named_with_the_page_and_nothing_is_sent(env_token, capsys, model):
    field = model.required[-1]
    arguments = {value: key for key, value in model.image_fields.items()}
    flag = "--" + arguments.get(field, field).replace("_", "-")
    code, _, err = _run(capsys, "submit", *_without(_complete(model), flag))
    assert code == 1
    assert f"{field}: " in err
    if model.path != "kling/kling-1-6/pro/text-to-video":  # its typed model says what a prompt allows
        assert model.page in err
    assert env_token.calls["submit"] == 0


@pytest.mark.parametrize("model", FAMILY.values(), ids=list(FAMILY))
def test_a_bad_value_is_named_and_nothing_is_sent(env_token, capsys, model):
    code, _, err = _run(capsys, "submit", *_complete(model), "--input", json.dumps({"prompt": 42}))
    assert code == 1
    assert "prompt: " in err
    images = [path for path, m in FAMILY.items() if m.image_field]
    if model.image_field:  # and an image RunComfy could not fetch
        code, _, err = _run(capsys, "submit", *_complete(model), "--image", "/srv/images/key-visual.png")
        assert code == 1
        assert "is a file on this machine" in err
    else:
        code, _, err = _run(capsys, "submit", *_complete(model), "--image", HTTPS_IMAGE)
        assert code == 1
        assert f"image: {model.path} is not an image-to-video model; those that are: {', '.join(images)}" in err
    assert env_token.calls["submit"] == 0


def test_an_end_frame_goes_to_the_model_that_takes_one_and_is_refused_by_one_that_does_not(env_token, capsys):
    code, _, err = _run(capsys, "submit", *_complete(FAMILY["kling/kling-video-o1/image-to-video"]))
    assert code == 0, err
    (request,) = env_token.requests.values()
    assert request.input["end_image_url"] == HTTPS_IMAGE
    code, _, err = _run(
        capsys, "submit", *_complete(FAMILY["kling/kling-2-1/pro/image-to-video"]), "--end-image", HTTPS_IMAGE
    )
    assert code == 1
    assert "end_image: kling/kling-2-1/pro/image-to-video takes no last frame" in err
    assert env_token.calls["submit"] == 1


@pytest.mark.parametrize(
    ("model", "sound"),
    [("kling/kling-2-6/pro/text-to-video", True), ("kling/kling-2-1/pro/image-to-video", False)],
)
def test_whether_the_video_has_sound_is_reported_with_its_facts(env_token, capsys, tmp_path, model, sound):
    env_token.script(Scenario(queue_seconds=0, run_seconds=0))
    flags = _complete(FAMILY[model])
    code, out, err = _run(capsys, "--json", "submit", *flags, "--wait", "--download", str(tmp_path / "v.mp4"))
    assert code == 0, err
    stored = json.loads(out)["stored"]
    assert stored["has_audio"] is sound
    assert stored["audio_codec"] == ("aac" if sound else None)


def test_kling_models_lists_the_registry_with_each_page(capsys):
    code, out, _ = _run(capsys, "--json", "models")
    assert code == 0
    listed = {entry["model"]: entry for entry in json.loads(out)["models"]}
    assert set(listed) == set(FAMILY)
    o1 = listed["kling/kling-video-o1/image-to-video"]
    assert o1["inputs"] == {"image": "start_image_url", "end_image": "end_image_url"}
    assert o1["page"] == FAMILY["kling/kling-video-o1/image-to-video"].page
    code, out, _ = _run(capsys, "models")
    assert "kling/kling-2-6/pro/image-to-video" in out


def test_the_models_page_of_the_docs_is_the_registry():
    """docs/models.md is written from the registry (``python -m airflow_provider_kling.family``)."""
    page = (DOCS / "models.md").read_text()
    assert models_markdown() in page


IMAGE_MODELS = [model for model in FAMILY.values() if model.image_field]


@pytest.mark.parametrize("way", ["https URL", "object-store URI", "ObjectStoragePath"])
@pytest.mark.parametrize("model", IMAGE_MODELS, ids=[model.path for model in IMAGE_MODELS])
def test_an_image_given_each_way_lands_in_the_models_own_field_unsigned(sim, monkeypatch, model, way):
    """What the task keeps (and fingerprints): the URL as given, or the object's URI with its connection."""
    from airflow_provider_kling.operators.image_to_video import KlingImageToVideoOperator

    # A connection of its own: Airflow caches a store per connection id for the whole process.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_REGISTRY", json.dumps({"conn_type": "aws"}))
    if way == "https URL":
        image, kept = HTTPS_IMAGE, HTTPS_IMAGE
    else:
        pytest.importorskip("airflow.providers.amazon", reason="s3:// is Airflow's through the Amazon provider")
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        given = ObjectStoragePath("s3://brand/key-visual.png", conn_id="aws_registry")
        image, kept = (given, str(given)) if way == "ObjectStoragePath" else ("s3://brand/key-visual.png", str(given))
    task = KlingImageToVideoOperator(
        task_id="animate",
        model=model.path,
        prompt="a key visual comes alive",
        image=image,
        end_image=image if model.end_image_field else None,
        image_conn_id="aws_registry",
    )
    body = task.build_input()
    assert {field: body[field] for field in model.image_fields.values()} == dict.fromkeys(
        model.image_fields.values(), kept
    )
    assert sim.calls["submit"] == 0

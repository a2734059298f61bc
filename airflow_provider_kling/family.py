"""
The Kling family on RunComfy: per model path, its kind, the fields its page documents, the names of
its image fields and whether its videos carry sound. One place, read by the operators, ``@task.kling``,
the ``kling`` command and the docs' Models page.

Each entry is written from RunComfy's page of the model (``/models/<path>/api``, cited in
:attr:`KlingModel.page`), and encodes only what that page shows: its schema's ``required`` list
where it could be read (:attr:`KlingModel.read` is ``"required"``), else the fields its example
request sends (``"example"``). Fields a page documents beyond those, and every field of a model not
listed here, pass through as given (``input=``), as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_kling.constants import KLING_TEXT_TO_VIDEO_MODEL

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_kling.images import ImageInput

Kind = Literal["text-to-video", "image-to-video"]

_SITE = "https://www.runcomfy.com"


@dataclass(frozen=True)
class KlingModel:
    """
    One model of the family, as its RunComfy page documents it.

    :param path: the model path the API takes (``kling/kling-2-1/pro/image-to-video``).
    :param kind: ``text-to-video`` or ``image-to-video``.
    :param title: what RunComfy calls it.
    :param page: the page it was read from.
    :param read: ``required`` when the page's schema listed the required fields, ``example`` when
        only its example request could be read (the fields it sends are then taken as required).
    :param required: the fields a request must carry.
    :param image_field: where ``image=`` goes (the first frame); ``None`` for text to video.
    :param end_image_field: where ``end_image=`` goes (the last frame), for models that take one.
    :param audio: whether the page says its videos carry sound; ``None`` when it does not say.
    """

    path: str
    kind: Kind
    title: str
    page: str
    read: Literal["required", "example"]
    required: tuple[str, ...]
    image_field: str | None = None
    end_image_field: str | None = None
    audio: bool | None = False

    @property
    def image_fields(self) -> dict[str, str]:
        """The operator's image arguments (``image``, ``end_image``) to this model's field names."""
        fields = {"image": self.image_field, "end_image": self.end_image_field}
        return {argument: field for argument, field in fields.items() if field}

    def problems(self, data: Mapping[str, Any]) -> list[str]:
        """What of the page's rules ``data`` breaks, one line each; nothing is read or sent."""
        from airflow_provider_kling.exceptions import KlingInputError
        from airflow_provider_kling.images import image_source

        problems = []
        arguments = {field: argument for argument, field in self.image_fields.items()}
        for field in self.required:
            if data.get(field) in (None, ""):
                given = f" (pass {arguments[field]}=)" if field in arguments else ""
                problems.append(f"- {field}: required by {self.path}{given}; its page: {self.page}")
        prompt = data.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            problems.append(f"- prompt: must be a non-blank string, got {prompt!r:.60}")
        for field, argument in arguments.items():
            if data.get(field) in (None, ""):
                continue
            try:
                image_source(field, data[field])
            except KlingInputError as err:
                problems.append(f"- {err.message} (the {argument}= of {self.path})")
        return problems


FAMILY: dict[str, KlingModel] = {
    model.path: model
    for model in (
        KlingModel(
            KLING_TEXT_TO_VIDEO_MODEL,
            "text-to-video",
            "Kling 1.6 Pro text to video",
            f"{_SITE}/playground/kling/kling-1-6-pro/text-to-video/api",
            "required",
            ("prompt",),
        ),
        KlingModel(
            "kling/kling-1-6/pro/image-to-video",
            "image-to-video",
            "Kling 1.6 Pro image to video",
            f"{_SITE}/models/kling/kling-1-6-pro/api",
            "example",
            ("image_url",),
            image_field="image_url",
        ),
        KlingModel(
            "kling/kling-2-1/pro/image-to-video",
            "image-to-video",
            "Kling 2.1 Pro image to video",
            f"{_SITE}/models/kling/kling-2-1-pro/image-to-video/api",
            "required",
            ("prompt", "image_url"),
            image_field="image_url",
        ),
        KlingModel(
            "kling/kling-2-1/master/image-to-video",
            "image-to-video",
            "Kling 2.1 Master image to video",
            f"{_SITE}/ko/models/kling/kling-2-1-master/api",
            "example",
            ("prompt", "image_url"),
            image_field="image_url",
        ),
        KlingModel(
            "kling/kling-2-6/pro/text-to-video",
            "text-to-video",
            "Kling 2.6 Pro text to video (synchronized audio, 1080p)",
            f"{_SITE}/models/kling/kling-2-6/pro/text-to-video/api",
            "example",
            ("prompt",),
            audio=True,
        ),
        KlingModel(
            "kling/kling-2-6/pro/image-to-video",
            "image-to-video",
            "Kling 2.6 Pro image to video (synchronized sound)",
            f"{_SITE}/playground/kling/kling-2-6/pro/image-to-video/api",
            "example",
            ("prompt", "image_url"),
            image_field="image_url",
            audio=True,
        ),
        KlingModel(
            "kling/kling-video-o1/image-to-video",
            "image-to-video",
            "Kling O1 start and end frame to video",
            f"{_SITE}/models/kling/kling-video-o1/image-to-video/api",
            "required",
            ("prompt", "start_image_url", "end_image_url"),
            image_field="start_image_url",
            end_image_field="end_image_url",
        ),
        KlingModel(
            "kling/kling-video-o3/pro/image-to-video",
            "image-to-video",
            "Kling O3 Pro image to video",
            f"{_SITE}/models/kling/kling-video-o3/pro/image-to-video/api",
            "required",
            ("image", "prompt"),
            image_field="image",
            audio=None,
        ),
        KlingModel(
            "kling/kling-3.0/standard/text-to-video",
            "text-to-video",
            "Kling 3.0 Standard text to video (multi-shot prompts)",
            f"{_SITE}/pt/models/kling/kling-3.0/standard/text-to-video/api",
            "example",
            ("prompt",),
            audio=None,
        ),
        KlingModel(
            "kling/kling-3.0/pro/text-to-video",
            "text-to-video",
            "Kling 3.0 Pro text to video (multi-shot prompts)",
            f"{_SITE}/models/kling/kling-3.0/pro/text-to-video/api",
            "example",
            ("prompt",),
            audio=None,
        ),
        KlingModel(
            "kling/kling-3.0/standard/image-to-video",
            "image-to-video",
            "Kling 3.0 Standard image to video",
            f"{_SITE}/es/models/kling/kling-3.0/standard/image-to-video/api",
            "example",
            ("prompt", "start_image_url"),
            image_field="start_image_url",
            audio=None,
        ),
        KlingModel(
            "kling/kling-3.0/pro/image-to-video",
            "image-to-video",
            "Kling 3.0 Pro image to video",
            f"{_SITE}/models/kling/kling-3.0/pro/image-to-video/api",
            "example",
            ("prompt", "start_image_url"),
            image_field="start_image_url",
            audio=None,
        ),
    )
}

#: The model ``KlingImageToVideoOperator`` uses unless told otherwise.
DEFAULT_IMAGE_TO_VIDEO_MODEL = "kling/kling-2-1/pro/image-to-video"


def image_to_video_models() -> list[str]:
    return [path for path, model in FAMILY.items() if model.kind == "image-to-video"]


def image_inputs(model: str, given: Mapping[str, Any], conn_id: str | None = None) -> dict[str, str]:
    """
    The fields of ``model`` that the image arguments ``given`` (``image``, ``end_image``; ``None`` for
    not given) go to, each an ``https`` URL or the object's URI (not yet signed), as the operator,
    ``@task.kling`` and ``kling submit --image`` map them.

    :raises KlingInputError: ``model`` takes no images, or not this one; an image RunComfy could not fetch.
    """
    from airflow_provider_kling.exceptions import KlingInputError
    from airflow_provider_kling.images import image_source

    wanted = {argument: value for argument, value in given.items() if value not in (None, "")}
    registered = FAMILY.get(model)
    if not wanted:
        return {}
    if registered is None or registered.kind != "image-to-video":
        argument = next(iter(wanted))
        raise KlingInputError(
            f"{argument}: {model} is not an image-to-video model; those that are: {', '.join(image_to_video_models())}"
        )
    fields = {}
    for argument, value in wanted.items():
        field = registered.image_fields.get(argument)
        if field is None:
            takes = [path for path, other in FAMILY.items() if other.end_image_field]
            raise KlingInputError(f"{argument}: {model} takes no last frame; models that do: {', '.join(takes)}")
        fields[field] = image_source(argument, value, conn_id)
    return fields


def body_images(model: str, body: Mapping[str, Any]) -> list[ImageInput]:
    """The images a body for ``model`` carries, in the model's own fields (none for a model not registered)."""
    from airflow_provider_kling.images import images_of

    registered = FAMILY.get(model)
    return images_of(registered.image_fields, body) if registered else []


def describe(model: KlingModel) -> dict[str, Any]:
    """One registry entry as ``kling models`` prints it."""
    return {
        "model": model.path,
        "kind": model.kind,
        "title": model.title,
        "required": list(model.required),
        "inputs": model.image_fields,
        "audio": model.audio,
        "page": model.page,
        "read": model.read,
    }


def models_markdown() -> str:
    """The table of the docs' Models page, written from the registry."""
    sound = {True: "yes", False: "not documented", None: "not documented"}
    rows = [
        "| Model | Kind | Required (as the page lists them) | `image=` / `end_image=` go to | Sound | Page |",
        "|---|---|---|---|---|---|",
    ]
    for model in FAMILY.values():
        images = " / ".join(f"`{field}`" for field in model.image_fields.values()) or "-"
        required = ", ".join(f"`{field}`" for field in model.required)
        read = "" if model.read == "required" else " (its example)"
        rows.append(
            f"| `{model.path}` | {model.kind} | {required}{read} | {images} | {sound[model.audio]} | "
            f"[page]({model.page}) |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # the table of docs/models.md
    print(models_markdown(), end="")  # noqa: T201

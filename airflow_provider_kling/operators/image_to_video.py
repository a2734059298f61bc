"""Kling image to video: animate an image from a URL or from your own object storage, signed for RunComfy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_kling.family import DEFAULT_IMAGE_TO_VIDEO_MODEL, FAMILY, image_to_video_models
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.images import ImageInput
    from airflow_provider_kling.models import ValidBody


class KlingImageToVideoOperator(KlingTextToVideoOperator):
    """
    Generate a video from an image with one of RunComfy's Kling image-to-video models.

    Everything :class:`KlingTextToVideoOperator` does holds (resume, every exit cancels, budgets,
    metrics, lineage, ``destination``, ``finish_in_triggerer``, the video link), with the image as
    the generation's input dataset. ``image`` and ``end_image`` go to the model's own fields
    (``image_url``, ``start_image_url``/``end_image_url``, ``image``...), and the model's required
    fields are checked before anything is sent (see :mod:`airflow_provider_kling.family`).

    An image in object storage is checked before paying (it exists, its store can sign) and signed
    into a short-lived URL at the paid submit; the task keeps only its URI. The URL lives for the
    task's ``queue_timeout`` plus 30 minutes; a task that signs an image and sets no
    ``queue_timeout`` gets one of 6 hours, so a request still queued when the URL would expire is
    cancelled (free), not left to fail on it.

    :param image: the first frame: an ``https`` URL, an ``ObjectStoragePath``, or an object-store
        URI (``s3://bucket/key``...). A local path is refused. Templated.
    :param end_image: the last frame, for models that take one (``kling/kling-video-o1/image-to-video``). Templated.
    :param image_conn_id: the Airflow connection of the store, for an image given as a URI (an
        ``ObjectStoragePath`` carries its own). Templated.
    :param model: one of the registered image-to-video models (``kling models`` lists them).
    :param prompt: what happens in the video; required by most models (their pages say which).
    :param input: the model's other fields, as its page names them (``duration``, ``negative_prompt``...).

    The other arguments are :class:`KlingTextToVideoOperator`'s; ``duration``, ``aspect_ratio``,
    ``negative_prompt`` and ``cfg_scale`` there belong to Kling 1.6 text to video: give another
    model's fields in ``input``.
    """

    template_fields: Sequence[str] = (*KlingTextToVideoOperator.template_fields, "image", "end_image", "image_conn_id")

    def __init__(
        self,
        *,
        image: Any,
        end_image: Any = None,
        image_conn_id: str | None = None,
        model: str = DEFAULT_IMAGE_TO_VIDEO_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.image = image
        self.end_image = end_image
        self.image_conn_id = image_conn_id

    #: Whether a model of another kind falls back to text to video (``@task.kling``), or is refused.
    _text_too: ClassVar[bool] = False

    def build_input(self) -> ValidBody:
        """The validated body: the images as the model names them (URIs, not yet signed), the prompt, ``input``."""
        from airflow_provider_kling.exceptions import KlingInputError
        from airflow_provider_kling.family import image_inputs
        from airflow_provider_kling.models import validate_input

        given = {"image": self.image, "end_image": self.end_image}
        registered = FAMILY.get(self.model)
        if registered is None or registered.kind != "image-to-video":
            if self._text_too and all(value in (None, "") for value in given.values()):
                return super().build_input()
            raise KlingInputError(
                f"model: {self.model!r} is not a registered image-to-video model; allowed: "
                f"{', '.join(image_to_video_models())}"
            )
        fields: dict[str, Any] = {} if self.prompt is None else {"prompt": self.prompt}
        fields.update(image_inputs(self.model, given, self.image_conn_id or None))
        if self.input is not None:
            if not isinstance(self.input, dict):
                raise KlingInputError(f"input: must be a mapping of field to value, got {type(self.input).__name__}")
            fields.update(self.input)
        return validate_input(self.model, fields)

    def execute(self, context: Context) -> str:
        from airflow_provider_kling.images import DEFAULT_QUEUE_S

        if self.queue_timeout is None and any(image.signed for image in self._images(self.build_input())):
            self.log.info("Images are signed from object storage: the request may queue %d s at most", DEFAULT_QUEUE_S)
            self.queue_timeout = DEFAULT_QUEUE_S
        return super().execute(context)

    def _images(self, body: ValidBody) -> list[ImageInput]:
        from airflow_provider_kling.family import body_images

        return body_images(self.model, body)

    def _submit_or_resume(self, context: Context, body: ValidBody) -> str:
        """As the text operator, and before paying the images are checked; at the submit they are signed."""
        from airflow_provider_kling.images import check_images, signed_body, signed_url_seconds
        from airflow_provider_kling.models import ValidBody

        images, store = self._images(body), self.video_store
        seconds = signed_url_seconds(self.queue_timeout)

        def before_paying() -> None:
            check_images(images)
            if store is not None:
                store.check()

        return self._submission(context).submit_or_resume(
            body,
            before_paying=before_paying,
            on_the_wire=lambda kept: ValidBody(self.model, signed_body(kept, images, seconds)),
        )

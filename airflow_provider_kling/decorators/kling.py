"""
``@task.kling``: a TaskFlow function that returns a prompt (or a whole input) becomes a generation.

    @task.kling(duration=5, aspect_ratio="9:16")
    def teaser(product: str) -> str:
        return f"A slow pan across {product} on a marble table, soft morning light"

    teaser.expand(product=["a watch", "a pen"])

The task validates the input, submits it (once: a retry resumes the same request), waits in the
triggerer, and returns the :class:`~airflow_provider_kling.models.KlingResult` (``request_id``,
``video_url``...). It takes every argument of :class:`KlingTextToVideoOperator`; it waits deferred
unless told otherwise.

With an image-to-video ``model``, the function hands over its image in what it returns, under the
operator's own keys, whatever the model calls the field::

    @task.kling(model="kling/kling-2-1/pro/image-to-video", image_conn_id="aws_default")
    def animate(product: str) -> dict:
        return {"prompt": f"{product} turns slowly", "image": f"s3://brand/{product}.png"}

The image is part of the returned value, not of the decorator, because it is what a run computes:
the file an upstream task wrote, the last frame of the previous clip. It is signed as
:class:`~airflow_provider_kling.operators.image_to_video.KlingImageToVideoOperator` signs it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_kling.constants import KLING_TEXT_TO_VIDEO_MODEL
from airflow_provider_kling.operators.image_to_video import KlingImageToVideoOperator
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, TaskDecorator

    from airflow_provider_kling.models import KlingResult


class _KlingDecoratedOperator(DecoratedOperator, KlingImageToVideoOperator):
    """
    Calls the function, then generates what it returned: a prompt (``str``), or an input
    (``dict``) merged over the decorator's own ``input``, its ``image`` and ``end_image`` going to
    the image-to-video model's own fields.

    :param python_callable: the function that returns the prompt or the input.
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *KlingImageToVideoOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **KlingTextToVideoOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.kling"
    _returns = "result"
    _text_too = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        model: str = KLING_TEXT_TO_VIDEO_MODEL,
        image: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            wait_for_completion=wait_for_completion,
            deferrable=deferrable,
            model=model,
            image=image,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        from airflow_provider_kling.exceptions import KlingInputError

        context_merge(context, self.op_kwargs)
        returned = self.python_callable(*self.op_args, **determine_kwargs(self.python_callable, self.op_args, context))
        if isinstance(returned, str):
            self.prompt = returned
        elif isinstance(returned, Mapping):
            given = dict(returned)
            self.image = given.pop("image", self.image)
            self.end_image = given.pop("end_image", self.end_image)
            self.input = {**(self.input or {}), **given}
        else:
            raise KlingInputError(
                f"@task.kling {self.task_id}: the function must return a prompt (str) or an input (dict), "
                f"got {type(returned).__name__}"
            )
        return KlingImageToVideoOperator.execute(self, context)

    def _finish(self, context: Context, result: KlingResult, *, counted: bool = False) -> Any:
        super()._finish(context, result, counted=counted)
        return result  # TaskFlow passes the result on, not only its request id


def kling_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """
    ``@task.kling(...)``: turn a function that returns a prompt or an input into a Kling generation.

    Takes the arguments of :class:`~airflow_provider_kling.operators.kling.KlingTextToVideoOperator`
    (``duration``, ``aspect_ratio``, ``model``, ``timeout``, ``pool``...); waits deferred by default.

    :param python_callable: the decorated function.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_KlingDecoratedOperator,
        **kwargs,
    )

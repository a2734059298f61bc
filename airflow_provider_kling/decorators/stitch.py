"""
``@task.kling_stitch``: a TaskFlow function that returns the takes of a film (in order) becomes a
stitch: the film, checked, in your storage.

    @task.kling_stitch(destination="s3://brand/films/{{ ds }}/launch.mp4", storage_conn_id="brand_s3")
    def film(opening: dict, middle: dict, closing: dict) -> list:
        return [opening, middle, closing]

    film(opening, middle, closing)  # each the result of a @task.kling

It takes every argument of :class:`~airflow_provider_kling.operators.stitch.KlingStitchOperator`
but ``takes``, and returns the film's result (``stored``, ``request_ids``, ``cost``, ``method``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_kling.operators.stitch import KlingStitchOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context, TaskDecorator


class _KlingStitchDecoratedOperator(DecoratedOperator, KlingStitchOperator):
    """
    Calls the function, then stitches the takes it returned.

    :param python_callable: the function that returns the takes, in order.
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *KlingStitchOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}
    custom_operator_name = "@task.kling_stitch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, takes=None, **kwargs)

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        self.takes = self.python_callable(
            *self.op_args, **determine_kwargs(self.python_callable, self.op_args, context)
        )
        return KlingStitchOperator.execute(self, context)

    def _returned(self, result: dict[str, Any]) -> Any:
        return result  # TaskFlow passes the film's result on, not only its URI


def kling_stitch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """
    ``@task.kling_stitch(...)``: turn a function that returns a film's takes into the film.

    Takes the arguments of :class:`~airflow_provider_kling.operators.stitch.KlingStitchOperator`
    (``destination``, ``storage_conn_id``, ``crossfade``...).

    :param python_callable: the decorated function.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_KlingStitchDecoratedOperator,
        **kwargs,
    )

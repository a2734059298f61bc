"""
A storyboard: a film longer than one shot, in a few lines of DAG code.

    from airflow_provider_kling.storyboard import kling_storyboard

    film = kling_storyboard(
        "launch_film",
        shots=["The bottle on a rock, dawn", "The camera circles it", "Waves wash over it"],
        start_image="s3://brand/key-visual.png",
        image_conn_id="brand_s3",
        shots_folder="s3://brand/films/{{ ds }}",
        film="s3://brand/films/{{ ds }}/launch.mp4",
        storage_conn_id="brand_s3",
        budget="marketing",
    )

It makes a task group that reads in Airflow's grid: ``reserve`` (a setup task: the whole film
reserved from the budget, or refused before any shot is paid), ``shot_1`` ... ``shot_N`` (each
starting from the last frame of the one before, an image-to-video generation signed from your
storage), ``stitch`` (the film, checked), and ``release`` (a teardown: what the shots reserved and
never paid for goes back to the budget, however the film ended). A shot that fails ends the
storyboard: no later shot is paid, and its own request is cancelled if still queued (every exit
of a Kling task does that). Every shot and the film appear in the UI plugin like any take.

Only the operators are imported here: this module is read when a DAG file is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_kling.constants import DEFAULT_CONN_ID, KLING_TEXT_TO_VIDEO_MODEL
from airflow_provider_kling.exceptions import KlingInputError
from airflow_provider_kling.family import DEFAULT_IMAGE_TO_VIDEO_MODEL
from airflow_provider_kling.operators.film_budget import KlingFilmBudgetOperator
from airflow_provider_kling.operators.image_to_video import KlingImageToVideoOperator
from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.operators.stitch import KlingStitchOperator

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: The seconds a shot asks for when it does not say (Kling renders 5 or 10).
SHOT_SECONDS = 5


def kling_storyboard(
    group_id: str,
    shots: Sequence[str | Mapping[str, Any]],
    *,
    film: str,
    shots_folder: str,
    storage_conn_id: str | None = None,
    start_image: Any = None,
    image_conn_id: str | None = None,
    text_model: str = KLING_TEXT_TO_VIDEO_MODEL,
    image_model: str = DEFAULT_IMAGE_TO_VIDEO_MODEL,
    aspect_ratio: str = "16:9",
    crossfade: float = 0.0,
    budget: str | None = None,
    kling_conn_id: str = DEFAULT_CONN_ID,
    film_outlets: Sequence[Any] = (),
    overwrite: bool = False,
    title: str | None = None,
    shot_args: Mapping[str, Any] | None = None,
) -> Any:
    """
    The task group of a film: its shots chained by their last frames, then stitched.

    :param group_id: the task group's id (the grid shows its tasks under it).
    :param shots: the shots, in order: each a prompt, or ``{"prompt": ..., "duration": 10,
        "input": {...}, "model": ...}`` (``input``: the model's other fields; ``model``: this
        shot's own, instead of ``text_model`` or ``image_model``).
    :param film: where the film goes (a local path or an ``ObjectStoragePath`` URI). Templated.
    :param shots_folder: where each shot is stored (``<folder>/shot_<n>-<request id>.mp4``, its
        poster and last frame beside it): object storage RunComfy can be signed a URL of, since
        each shot's last frame is the next one's image. Templated.
    :param storage_conn_id: the connection of the shots' and the film's object store.
    :param start_image: the first shot's image (an object-store URI, an ``ObjectStoragePath`` or
        an ``https`` URL); without it the first shot is text to video.
    :param image_conn_id: the connection to read ``start_image`` with.
    :param text_model: the first shot's model, when it starts from a prompt.
    :param image_model: the model of every shot that starts from an image.
    :param aspect_ratio: the film's shape, for a first shot made from text (``16:9``, ``9:16``, ``1:1``).
    :param crossfade: seconds each shot fades into the next (the film is then re-encoded).
    :param budget: the budget the whole film is reserved from before its first shot is paid.
    :param kling_conn_id: the ``kling`` connection.
    :param film_outlets: the film's assets (``[Asset("s3://brand/films")]``): the film is their event.
    :param overwrite: replace another film at ``film``.
    :param title: what the film is called on the UI's Kling page (default: its first shot's prompt).
    :param shot_args: more arguments for every shot's operator (``poll_interval``, ``timeout``,
        ``deferrable``, ``finish_in_triggerer``, ``pool``, ``retries``...).
    :raises KlingInputError: no shots, or a shot that is not a prompt or a mapping with one.
    """
    from airflow.providers.common.compat.sdk import TaskGroup

    planned = [_shot(number, shot) for number, shot in enumerate(shots, 1)]
    if len(planned) < 2:
        raise KlingInputError(f"shots: a storyboard needs two shots or more, got {len(planned)}")
    common: dict[str, Any] = {
        "wait_for_completion": True,
        "kling_conn_id": kling_conn_id,
        "storage_conn_id": storage_conn_id,
        "budget": budget,
        "overwrite": True,  # a trigger run twice (a triggerer failover) stores the same bytes again
        **(shot_args or {}),
    }
    with TaskGroup(group_id=group_id) as group:
        reserve = None
        if budget is not None:
            reserve = KlingFilmBudgetOperator(
                task_id="reserve",
                budget=budget,
                shots=[],  # the shots' task ids, once they are made (a group's id prefixes them, a parent's too)
                kling_conn_id=kling_conn_id,
            )
            common["budget_reserved_by"] = reserve.task_id
        made: list[Any] = []
        for number, planned_shot in enumerate(planned, 1):
            prompt, seconds, extra = planned_shot.prompt, planned_shot.seconds, planned_shot.input
            destination = f"{shots_folder.rstrip('/')}/shot_{number}-{{request_id}}.mp4"
            task_id = f"shot_{number}"
            if number == 1 and start_image is None:
                model = planned_shot.model or text_model
                if model == KLING_TEXT_TO_VIDEO_MODEL:
                    fields: dict[str, Any] = {"duration": seconds, "aspect_ratio": aspect_ratio, "input": extra or None}
                else:
                    fields = {"input": {"duration": seconds, "aspect_ratio": aspect_ratio, **extra}}
                shot = KlingTextToVideoOperator(
                    task_id=task_id, prompt=prompt, model=model, destination=destination, **fields, **common
                )
            else:
                image = start_image if number == 1 else made[-1].output["result"]  # where the shot before ended
                shot = KlingImageToVideoOperator(
                    task_id=task_id,
                    prompt=prompt,
                    model=planned_shot.model or image_model,
                    image=image,
                    image_conn_id=image_conn_id if number == 1 else None,
                    input={"duration": seconds, **extra},
                    destination=destination,
                    **common,
                )
            if made:
                made[-1] >> shot
            made.append(shot)
        if reserve is not None:
            reserve.shots = [(shot.task_id, float(planned[n].seconds)) for n, shot in enumerate(made)]
        stitch = KlingStitchOperator(
            task_id="stitch",
            takes=[shot.output["result"] for shot in made],
            destination=film,
            storage_conn_id=storage_conn_id,
            crossfade=crossfade,
            overwrite=overwrite,
            title=title if title is not None else planned[0].prompt,
            outlets=list(film_outlets),
        )
        if reserve is not None:
            release = KlingFilmBudgetOperator(
                task_id="release",
                budget=str(budget),
                shots=[],
                action="release",
                reserved_by=reserve.task_id,
                kling_conn_id=kling_conn_id,
            )
            reserve >> made[0]
            stitch >> release.as_teardown(setups=reserve)
    return group


class PlannedShot(NamedTuple):
    """One shot of a storyboard, as its task is made."""

    prompt: str
    seconds: int
    input: dict[str, Any]
    model: str | None = None


def _shot(number: int, shot: Any) -> PlannedShot:
    """A shot as its prompt, seconds, the model's other fields, and its own model if it names one."""
    model = None
    if isinstance(shot, str):
        prompt, seconds, extra = shot, SHOT_SECONDS, {}
    elif hasattr(shot, "keys") and hasattr(shot, "get"):
        unknown = set(shot) - {"prompt", "duration", "input", "model"}
        if unknown:
            raise KlingInputError(
                f"shots[{number}]: unknown keys {sorted(unknown)}; allowed: prompt, duration, input, model"
            )
        prompt, seconds, extra = shot.get("prompt"), shot.get("duration", SHOT_SECONDS), dict(shot.get("input") or {})
        model = shot.get("model")
    else:
        raise KlingInputError(f"shots[{number}]: must be a prompt or a mapping with one, got {type(shot).__name__}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise KlingInputError(f"shots[{number}]: prompt: must be a non-blank string")
    if isinstance(seconds, bool) or seconds not in (5, 10):
        raise KlingInputError(f"shots[{number}]: duration: must be 5 or 10 (seconds), got {seconds!r}")
    return PlannedShot(prompt, int(seconds), extra, model)

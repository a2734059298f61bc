"""
What each ``kling`` command does, once :mod:`airflow_provider_kling.cli` has read its arguments and
made its client: submit (and wait, and download), status, result, cancel, download, budget; how a
wait is shown on a terminal; and what Ctrl-C does to a request the command submitted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse

    from airflow_provider_kling.budgets import BudgetConfig
    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.models import ResultResponse
    from airflow_provider_kling.spend import Spend
    from airflow_provider_kling.store import VideoStore
    from airflow_provider_kling.wait import RequestWait

TOKEN_ENV = "RUNCOMFY_API_TOKEN"
BASE_URL_ENV = "RUNCOMFY_BASE_URL"
#: The exit code of a command stopped by Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """Ctrl-C while a request was submitted or waited for; ``last`` is the wait as last seen."""

    def __init__(self, request_id: str | None, *, submitted_here: bool, last: RequestWait | None = None) -> None:
        super().__init__(request_id)
        self.request_id = request_id
        self.submitted_here = submitted_here
        self.last = last


class ProgressDisplay:
    """
    Shows a request's state while ``kling`` waits: one rewritten line on a terminal, else one
    line per change of state (so logs and CI output stay readable).
    """

    def __init__(self, stream: TextIO, request_id: str) -> None:
        self.stream = stream
        self.request_id = request_id
        self.started = time.monotonic()
        self.interactive = stream.isatty()
        self._last = ""
        #: The wait as last seen: what Ctrl-C's exit rule goes by.
        self.wait: RequestWait | None = None

    def __call__(self, wait: RequestWait) -> None:
        self.wait = wait
        seen = wait.seen
        if seen is None:
            return
        state = seen.state.value
        if seen.queue_position is not None and not seen.state.is_finished:
            state += f", queue position {seen.queue_position}"
        line = f"{self.request_id}: {state}"
        elapsed = f" ({time.monotonic() - self.started:.0f} s)"
        if self.interactive:
            self.stream.write(f"\r\033[K{line}{elapsed}")
            if seen.state.is_finished:
                self.stream.write("\n")
        elif line != self._last:
            self.stream.write(f"{line}{elapsed}\n")
        self.stream.flush()
        self._last = line


def _submit(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_kling.exceptions import KlingError, KlingInputError, KlingSubmitOutcomeUnknownError
    from airflow_provider_kling.family import body_images, image_inputs
    from airflow_provider_kling.images import check_images, signed_body, signed_url_seconds
    from airflow_provider_kling.models import ValidBody, input_body

    flags = {
        "prompt": args.prompt,
        "duration": args.duration,
        "aspect_ratio": args.aspect_ratio,
        "negative_prompt": args.negative_prompt,
        "cfg_scale": args.cfg_scale,
    }
    extra = None
    if args.input_json:
        try:
            extra = json.loads(args.input_json)
        except ValueError as err:
            raise KlingInputError(f"--input: must be a JSON object ({err})") from None
    images = image_inputs(args.model, {"image": args.image, "end_image": args.end_image}, args.image_conn_id)
    if images:
        extra = {**images, **(extra if isinstance(extra, dict) else {})}
    # Flags left out take the model's defaults; --input goes over them, as the operator's input does.
    data = input_body(args.model, {key: value for key, value in flags.items() if value is not None}, extra)
    store = _store_of(args, data)
    signed = body_images(args.model, data)
    check_images(signed)  # before paying: an image RunComfy could not fetch is not paid for
    if store is not None:
        store.check()  # before paying: a video that could not land is not paid for
    spend = _spend(hook, args.budget, args.model)
    seconds = float(data.get("duration") or 0)
    reservation = spend.reserve(seconds, holder="kling submit") if spend is not None else None
    try:
        sent = ValidBody(args.model, signed_body(data, signed, signed_url_seconds(None))) if signed else data
        submitted = hook.submit(sent, model=args.model)
    except KeyboardInterrupt:
        raise Interrupted(None, submitted_here=True) from None
    except KlingSubmitOutcomeUnknownError:
        raise  # the reservation stays: a request may exist and be billed
    except KlingError:
        if spend is not None:
            spend.not_sent(reservation)
        raise
    rid = submitted.request_id
    if spend is not None:
        spend.submitted(reservation, rid, seconds)
    print(f"Submitted {args.model}: request {rid} (billed once it runs)", file=sys.stderr)
    if not args.wait:
        return {"request_id": rid, "status": "in_queue"}
    result = _finished(hook, rid, args, submitted_here=True, include_cost=spend is not None)
    if spend is not None:
        answer = result.as_dict()
        spend.ended(rid, "succeeded" if answer.get("status") == "succeeded" else "failed", answer)
    checked = _checked(result, rid)
    if store is not None and checked.get("status") == "succeeded":
        checked["stored"] = store.save(hook, result.require_video(rid), log=_log)
    return checked


_log = logging.getLogger("airflow_provider_kling.cli")


def _store_of(args: argparse.Namespace, data: Any) -> VideoStore | None:
    """Where ``submit --wait --download`` puts the video, and the shape it must have."""
    from airflow_provider_kling.exceptions import KlingInputError
    from airflow_provider_kling.media import ExpectedShape
    from airflow_provider_kling.store import VideoStore

    if not args.download:
        return None
    if not args.wait:
        raise KlingInputError("--download: needs --wait (the video is saved once it is ready)")
    return VideoStore(args.download, overwrite=args.overwrite, expect=ExpectedShape.of_input(data))


def _spend(hook: KlingClient, budget: str | None, model: str) -> Spend | None:
    """What ``--budget`` spends from; budgets live on an Airflow connection (``--conn-id``)."""
    if budget is None:
        return None
    from airflow_provider_kling.spend import Spend

    _budgets_of(hook, "--budget")
    return Spend(hook, budget, tags={"model": model})


def _budgets_of(hook: KlingClient, what: str) -> BudgetConfig:
    """The budgets of the hook's connection; the environment's token has no connection, so none."""
    from airflow_provider_kling.exceptions import KlingInputError

    config = getattr(hook, "budget_config", None)
    if config is None:
        raise KlingInputError(f"{what}: budgets live on an Airflow connection: pass --conn-id (not {TOKEN_ENV})")
    return config  # type: ignore[no-any-return]


def _budget(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_kling.spend import budget_report

    return budget_report(_budgets_of(hook, "budget"))


def _status(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    return hook.get_status(args.request_id).model_dump(mode="json", exclude_none=True)


def _result(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    if args.wait:
        result = _finished(hook, args.request_id, args, include_cost=args.cost)
    else:
        result = hook.get_result(args.request_id, include_cost=args.cost)
    answer = _checked(result, args.request_id)
    if args.facts and answer.get("status") == "succeeded":
        import tempfile

        from airflow_provider_kling.hooks.download import VideoRules

        with tempfile.TemporaryDirectory(prefix="kling-facts-") as folder:
            saved = hook.download_video(
                result.require_video(args.request_id)["video_url"],
                f"{folder}/video.mp4",
                rules=VideoRules(poster=False, request_id=args.request_id),
            )
        answer["facts"] = {**saved.facts.to_dict(), "size_bytes": saved.size_bytes, "sha256": saved.sha256}
    return answer


def _checked(result: ResultResponse, request_id: str) -> dict[str, Any]:
    """The result to print; a success whose video is not an http(s) URL is an error, as in a task."""
    from airflow_provider_kling.states import ResultStatus

    if result.status is ResultStatus.SUCCEEDED:
        result.require_video(request_id)
    return result.as_dict()


def _cancel(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    answer = hook.cancel(args.request_id)
    return {"request_id": args.request_id, "outcome": answer.outcome.value}


def _download(hook: KlingClient, args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_kling.hooks.download import VideoRules

    result = _finished(hook, args.request_id, args) if args.wait else hook.get_result(args.request_id)
    video_url = result.require_video(args.request_id)["video_url"]
    rules = VideoRules(request_id=args.request_id)
    saved = hook.download_video(video_url, args.destination, overwrite=args.overwrite, rules=rules)
    return {"request_id": args.request_id, "status": result.status.value, "path": saved.path, **saved.stored()}


def _finished(
    hook: KlingClient,
    request_id: str,
    args: argparse.Namespace,
    *,
    include_cost: bool = False,
    submitted_here: bool = False,
) -> ResultResponse:
    display = ProgressDisplay(sys.stderr, request_id)
    try:
        from airflow_provider_kling.follow import wait_for

        return wait_for(
            hook,
            request_id,
            poll_interval=args.poll_interval,
            timeout=args.timeout,
            include_cost=include_cost,
            on_progress=display,
        )
    except KeyboardInterrupt:
        raise Interrupted(request_id, submitted_here=submitted_here, last=display.wait) from None


def after_interrupt(hook: KlingClient, stop: Interrupted) -> int:
    """
    Ctrl-C: the exit rule for the request this command submitted (cancelled while it is still
    queued, as RunComfy's own CLI does); one it only watched goes on. Either way, say what becomes
    of it and how to check.
    """
    from airflow_provider_kling.exit_rule import WaitEnd, end_wait
    from airflow_provider_kling.states import CancelOutcome
    from airflow_provider_kling.wait import RequestWait
    from airflow_provider_kling.wait_plan import Exit, ExitAction

    rid = stop.request_id
    print(file=sys.stderr)
    if rid is None:
        print(
            "Interrupted during the submit: a request may have been created and billed; check your RunComfy "
            "request history before submitting again.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    check = f"Check on it with `kling status {rid}`; fetch the video with `kling download {rid} FILE`."
    if not stop.submitted_here:
        print(
            f"Stopped waiting for Kling request {rid}; it goes on. `kling cancel {rid}` cancels it while it is queued.",
            file=sys.stderr,
        )
        print(check, file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        ended = end_wait(hook, stop.last or RequestWait(rid), Exit.KILLED, log=None)
    except KeyboardInterrupt:
        ended = WaitEnd(ExitAction.CANCEL, error="interrupted again")
    outcome = CancelOutcome.NOT_CANCELLABLE if ended.action is ExitAction.SAY_BILLED else ended.outcome
    if outcome is None:
        print(
            f"Interrupted: could not cancel Kling request {rid} ({ended.error}); it may still run and be billed.",
            file=sys.stderr,
        )
        print(f"`kling cancel {rid}` tries again. {check}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome is CancelOutcome.CANCELLED:
        print(
            f"Interrupted: cancelled Kling request {rid} while it was still queued; it will not be billed.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(
        f"Interrupted: Kling request {rid} is already running (not_cancellable): it goes on and will be billed.",
        file=sys.stderr,
    )
    print(check, file=sys.stderr)
    return EXIT_INTERRUPTED


COMMANDS = {
    "submit": _submit,
    "status": _status,
    "result": _result,
    "cancel": _cancel,
    "download": _download,
    "budget": _budget,
}

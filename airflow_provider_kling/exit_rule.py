"""
The exit rule: every cancel the provider decides on goes through :func:`end_wait` and
:func:`end_wait_async` (the plan's give-up, a task's failed exit, ``execution_timeout``, a user's
stop, the trigger's ``on_kill``, Ctrl-C in ``kling``). Apart from the explicit ``kling cancel``,
nothing else calls the hook's ``cancel``. :func:`exit_of` says how an exception ended a wait,
:func:`ending_of` how the request ended, for the ledger and the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from airflow_provider_kling.states import CancelOutcome
from airflow_provider_kling.wait_plan import (
    Exit,
    ExitAction,
    on_exit,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.client import KlingClient
    from airflow_provider_kling.hooks.kling import KlingAsyncHook
    from airflow_provider_kling.spend import Ending
    from airflow_provider_kling.wait import Logger


if TYPE_CHECKING:
    from airflow_provider_kling.wait import RequestWait


class WaitEnd(NamedTuple):
    """What the exit rule did: its decision, the cancel's answer (``None``: no cancel, or it failed), why it failed."""

    action: ExitAction
    outcome: CancelOutcome | None = None
    error: str | None = None


def end_wait(
    hook: KlingClient,
    wait: RequestWait,
    exit: Exit,
    *,
    log: Logger | None,
    next_try_resumes: bool = False,
    why: str = "",
) -> WaitEnd:
    """
    The exit rule: do to the request what :func:`~airflow_provider_kling.wait_plan.on_exit`
    decides for a wait that ended by ``exit``, and say so in ``log``.

    A cancel that fails is logged, never raised: the wait's own outcome is what the task reports.
    """
    from airflow_provider_kling.exceptions import KlingError

    action = _decide(wait, exit, next_try_resumes, why, log)
    if action is not ExitAction.CANCEL:
        return WaitEnd(action)
    try:
        answer = hook.cancel(wait.request_id)
    except KlingError as err:
        return _cancel_failed(log, wait.request_id, err)
    return WaitEnd(action, _cancelled(log, wait.request_id, answer.outcome))


async def end_wait_async(
    hook: KlingAsyncHook,
    wait: RequestWait,
    exit: Exit,
    *,
    log: Logger | None,
    next_try_resumes: bool = False,
    why: str = "",
) -> WaitEnd:
    """:func:`end_wait` in an event loop (the trigger's give-up and ``on_kill``)."""
    from airflow_provider_kling.exceptions import KlingError

    action = _decide(wait, exit, next_try_resumes, why, log)
    if action is not ExitAction.CANCEL:
        return WaitEnd(action)
    try:
        answer = await hook.cancel(wait.request_id)
    except KlingError as err:
        return _cancel_failed(log, wait.request_id, err)
    return WaitEnd(action, _cancelled(log, wait.request_id, answer.outcome))


def _decide(wait: RequestWait, exit: Exit, next_try_resumes: bool, why: str, log: Logger | None) -> ExitAction:
    rid = wait.request_id
    action = on_exit(
        exit, last_state=wait.last_state, next_try_resumes=next_try_resumes, cancel_on_kill=wait.cancel_on_kill
    )
    if log is None or exit is Exit.LIMIT:  # the give-up's own message says what became of it
        return action
    reason = f" ({why})" if why else ""
    if action is ExitAction.CANCEL:
        log.warning(
            "The wait for Kling request %s ended without a video%s: cancelling it, since nobody will wait for it "
            "any more",
            rid,
            reason,
        )
    elif action is ExitAction.SAY_BILLED:
        log.warning(
            "The wait for Kling request %s ended without a video%s; it is already running and cannot be "
            "cancelled: it will still be billed. `kling download %s FILE` fetches the video once it is done",
            rid,
            reason,
            rid,
        )
    elif action is ExitAction.KEEP:
        log.info("Kling request %s is left to run: the next try of this task resumes it instead of paying again", rid)
    return action


def _cancelled(log: Logger | None, request_id: str, outcome: CancelOutcome) -> CancelOutcome:
    if log is None:
        return outcome
    if outcome is CancelOutcome.CANCELLED:
        log.info("Cancelled Kling request %s: it was still queued, so it will not be billed", request_id)
    else:
        log.warning("Kling request %s is already running and cannot be cancelled: it will still be billed", request_id)
    return outcome


def _cancel_failed(log: Logger | None, request_id: str, err: Exception) -> WaitEnd:
    if log is not None:
        log.warning("Could not cancel Kling request %s: %s", request_id, err)
    return WaitEnd(ExitAction.CANCEL, error=str(err))


def exit_of(err: BaseException) -> Exit | None:
    """
    How a wait ended, for an exception that ends it; ``None`` for one that does not end it (a
    deferral, a reschedule), that a user's stop explains (``on_kill`` acts), or that the exit
    rule already dealt with (a limit of the plan).
    """
    from airflow.providers.common.compat.sdk import (
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )

    from airflow_provider_kling.exceptions import KlingGenerationError, KlingUnusableVideoError, KlingWaitTimeout

    if isinstance(err, (TaskDeferred, KlingWaitTimeout, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    if isinstance(err, (*_airflow_3_only("AirflowRescheduleException", "AirflowTaskTerminated"), _reschedule())):
        return None  # AirflowTaskTerminated: a SIGTERM, for which Airflow calls on_kill
    if isinstance(err, (KlingGenerationError, KlingUnusableVideoError)):
        return Exit.FINISHED  # failed or cancelled on the server, or a success without a usable video
    if isinstance(err, (AirflowSensorTimeout, AirflowTaskTimeout, AirflowSkipException)):
        return Exit.TIMEOUT
    if isinstance(err, _airflow_3_only("TaskDeferralTimeout")):
        return Exit.TIMEOUT  # Airflow 2 reports a deferral timeout as a TaskDeferralError: an error here
    return Exit.ERROR


def _airflow_3_only(*names: str) -> tuple[type[BaseException], ...]:
    try:
        import airflow.sdk.exceptions as sdk_exceptions
    except ImportError:  # Airflow 2
        return ()
    return tuple(getattr(sdk_exceptions, name) for name in names if hasattr(sdk_exceptions, name))


def _reschedule() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import AirflowRescheduleException
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowRescheduleException
    return AirflowRescheduleException


def retry_follows(context: Context, err: BaseException) -> bool:
    """Whether Airflow will run this task again after ``err``."""
    from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

    if isinstance(err, (AirflowFailException, AirflowSensorTimeout)):
        return False
    ti = context.get("ti")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    return isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries


def ending_of(err: BaseException | None, ended: WaitEnd | None) -> Ending | None:
    """How a request ended, for the ledger and the metrics, from the error that ended its wait and the
    exit rule's action; ``None`` when it did not end (kept for the next try, or the cancel failed)."""
    from airflow_provider_kling.exceptions import (
        KlingRequestCancelled,
        KlingRequestFailed,
        KlingUnusableVideoError,
        KlingWaitTimeout,
    )

    if isinstance(err, KlingRequestFailed):
        return "failed"
    if isinstance(err, KlingRequestCancelled):
        return "cancelled"
    if isinstance(err, KlingUnusableVideoError):
        return "billed_without_video"  # it succeeded, and was paid for
    outcome = err.cancel_outcome if isinstance(err, KlingWaitTimeout) else None
    if ended is not None:
        outcome = ended.outcome.value if ended.outcome is not None else None
        if ended.action is ExitAction.SAY_BILLED:
            outcome = CancelOutcome.NOT_CANCELLABLE.value
    if outcome == CancelOutcome.CANCELLED.value:
        return "cancelled"
    if outcome == CancelOutcome.NOT_CANCELLABLE.value:
        return "billed_without_video"
    return None

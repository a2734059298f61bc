"""
Submit once: remember the request a task submitted, so that a later try of the same task (a retry,
or a clear) resumes it instead of paying for a new one.

Airflow clears a task's XComs before each try, so the request id is kept, the moment the submit
answers, in the task's record (:mod:`airflow_provider_kling.records`: the task state store, or a
Variable before Airflow 3.3), scoped to one map index.

The rule, on every try after the first (retried or cleared, whatever Airflow keeps of the store):

- the request is **queued or running**: resume it; the log says so and how to get a fresh take;
- it **succeeded** and no earlier try delivered it: use it (a retry after the video was ready);
- it **succeeded and an earlier try of this clearing delivered it**, then failed in what Airflow
  does after the operator returns (pushing the return value, reporting success: a database
  failover there): use it, and its stored video; paying again would buy the same video twice;
- it **finished** otherwise (failed, cancelled, expired, or succeeded and delivered before the task
  was cleared), or it was for another input: submit anew.

A task that waited for its video marks the record ``finished`` with its clearing (the task
instance's ``max_tries``, which Airflow raises on every clear and keeps across retries, as its own
``first_try_number`` reads it) and what it stored; where no retry can follow (no retries left) it
drops the record instead, and so does one whose record is a Variable (Airflow before 3.3: one
Variable per generation would otherwise remain). A task that only submits keeps it, marked
``delivered``, since its request goes on; a task that ends in the triggerer keeps it, marked
``ends_in_triggerer`` until a worker resumes the try (:meth:`SubmitOnce.ends_in_triggerer`).

Just before the paid submit, the record says that a submit is in flight (``submitting_since``). A
try that finds that mark without a request id knows an earlier try was stopped (a worker killed)
while its submit was in flight: a request may exist and be billed, and the API offers no way to
find it, so the task does not pay again blindly (``if_submit_interrupted``). Airflow's mixin
documents this gap as a known limitation; the mark closes it.

Each decision is counted as Airflow's mixin counts it (``resumable_job.fresh_submit``,
``reconnect_attempt``, ``reconnect_success``, ``already_succeeded``, ``terminal_resubmit``, tagged
with the operator), through Airflow's ``Stats``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import ValidBody
    from airflow_provider_kling.records import RequestRecord
    from airflow_provider_kling.spend import Spend

log = logging.getLogger(__name__)


def input_fingerprint(model: str, body: dict[str, Any]) -> str:
    """A short digest of what was asked for: a request is resumed only for the same model and input."""
    canonical = json.dumps({"model": model, "input": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class SubmitOnce:
    """
    The paid submit of one task try: resume an earlier try's request when the rule above says so,
    else submit and record the request the moment the submit answers.

    :param record: where the task keeps its request; ``None`` when the task does not resume.
    :param if_submit_interrupted: ``"fail"`` or ``"submit"``, when an earlier submit was cut off.
    :param spend: the task's budget and metrics (:class:`~airflow_provider_kling.spend.Spend`).
    :param holder: who reserves from the budget (the task instance), as the ledger names it.
    :param max_paid_submits: the most paid submits across all of the task's tries (kept in the
        record, so it needs ``resume``); ``None`` for no cap.
    :param clearing: which clearing of the task instance this try belongs to (its ``max_tries``);
        ``None`` when unknown (a finished task then drops its record, and a retry after a failure
        in Airflow's own bookkeeping pays again).
    :param retry_may_follow: whether Airflow may retry this try (it has retries left).
    """

    def __init__(
        self,
        hook: KlingHook,
        record: RequestRecord | None,
        model: str,
        if_submit_interrupted: Literal["fail", "submit"],
        *,
        log: Any,
        operator: BaseOperator,
        spend: Spend,
        holder: str,
        max_paid_submits: int | None = None,
        clearing: int | None = None,
        retry_may_follow: bool = True,
    ) -> None:
        self.hook = hook
        self.record = record
        self.model = model
        self.if_submit_interrupted = if_submit_interrupted
        self.log = log
        self.tags = {"operator": type(operator).__name__}
        self.spend = spend
        self.max_paid_submits = max_paid_submits
        self.holder = holder
        self.clearing = clearing
        self.retry_may_follow = retry_may_follow
        #: The record as last read or written here: the end of a try (count, store, finish) reads it once.
        self._last: dict[str, Any] | None = None

    @classmethod
    def of_task(cls, task: Any, context: Context, record: RequestRecord | None) -> SubmitOnce:
        """The paid submit of a generating task's try (its record ``None`` when it does not resume)."""
        ti = context.get("ti")
        holder = "/".join(str(getattr(ti, key, "")) for key in ("dag_id", "run_id", "task_id", "map_index"))
        clearing, try_number = getattr(ti, "max_tries", None), getattr(ti, "try_number", None)
        last_try = isinstance(clearing, int) and isinstance(try_number, int) and try_number > clearing
        return cls(
            task.hook,
            record,
            task.model,
            task.if_submit_interrupted,
            log=task.log,
            operator=task,
            spend=task.spend,
            holder=holder,
            max_paid_submits=task.max_paid_submits,
            clearing=clearing if isinstance(clearing, int) else None,
            retry_may_follow=not last_try,
        )

    @classmethod
    def of_this_try(cls, task: Any, context: Context, record: Callable[[], RequestRecord | None]) -> SubmitOnce:
        """:meth:`of_task`, one per try: its record read once, then known as it wrote it (each read is an API call)."""
        ti = context.get("ti")
        this_try = tuple(getattr(ti, key, None) for key in ("dag_id", "run_id", "task_id", "map_index", "try_number"))
        known: tuple[tuple[Any, ...], SubmitOnce] | None = task.__dict__.get("_submit_once")
        if known is None or known[0] != this_try:
            known = (this_try, cls.of_task(task, context, record()))
            task.__dict__["_submit_once"] = known
        return known[1]

    def submit_or_resume(
        self,
        body: ValidBody,
        *,
        before_paying: Callable[[], None] | None = None,
        on_the_wire: Callable[[ValidBody], ValidBody] | None = None,
    ) -> str:
        """
        The request of this task: an earlier try's, resumed, or a new one, paid for.

        :param before_paying: what must hold before a new request is paid for (the destination of
            its video can be written, say); raises to refuse. A resumed request does not run it:
            what it checks passed before that request was paid for.
        :param on_the_wire: the body as it is sent, made at the last moment (images from object
            storage signed); ``body`` is what the task keeps and fingerprints.
        """
        from airflow_provider_kling.budgets import check_paid_cap
        from airflow_provider_kling.exceptions import KlingSubmitOutcomeUnknownError
        from airflow_provider_kling.spend import as_number
        from airflow_provider_kling.worker_run import phase

        fingerprint = input_fingerprint(self.model, body)
        record = self.record
        with phase("record"):
            recorded = self._recorded() if record is not None else {}
        with phase("checks"):
            resumed = self._resumable(recorded, fingerprint) if record is not None else None
        if resumed is not None:
            self.spend.resumed()
            return resumed
        with phase("checks"):
            if before_paying is not None:
                before_paying()
            paid = int(recorded.get("paid") or 0)
            check_paid_cap(self.spend, paid, self.max_paid_submits)
            seconds = as_number(body.get("duration")) or 0.0  # Kling's duration; 0 when the model does not say
            reservation = self.spend.reserve(seconds, self.holder)  # the budget's atomic check, before any money
        if record is not None:  # a worker killed from here to the save below leaves this mark
            with phase("record"):
                self._keep({"fingerprint": fingerprint, "submitting_since": time.time(), "paid": paid + 1})
        try:
            with phase("checks"):
                sent = body if on_the_wire is None else on_the_wire(body)
            with phase("submit"):
                request_id = self.hook.submit(sent, model=self.model).request_id
        except KlingSubmitOutcomeUnknownError:
            raise  # the mark and the reservation stay: a request may exist and be billed
        except BaseException:
            if record is not None:  # RunComfy certainly created nothing
                self._keep({"paid": paid}) if paid else self._forget()
            self.spend.not_sent(reservation)
            raise
        with phase("record"):
            if record is not None:
                self._keep({"request_id": request_id, "fingerprint": fingerprint, "paid": paid + 1})
            self.spend.submitted(reservation, request_id, seconds)
        self.log.info("Submitted Kling request %s to %s", request_id, self.model)
        return request_id

    def handed_off(self, request_id: str) -> None:
        """The task succeeded without waiting: keep the record (its request goes on), marked delivered."""
        if self.record is not None:
            self._quietly(lambda _: self._keep({**self._recorded(), "delivered": True}))

    def ends_in_triggerer(self) -> None:
        """
        The task defers with ``finish_in_triggerer``: a success ends it there, where the record cannot
        be dropped. The mark stands for "delivered" unless a worker resumes this try
        (:meth:`resumed_on_worker`), so that clearing a task the triggerer ended generates anew.
        It is written last before deferring, once a poll saw the request still waiting: only a
        worker killed in the instant between this write and the deferral, with a request that then
        finishes before the retry, leaves a mark for a video nobody delivered (the retry then pays
        for a new one). A user who stops the task while deferred leaves it too: clearing that task
        generates anew.
        """
        if self.record is not None:
            from airflow_provider_kling.worker_run import phase

            with phase("record"):
                self._quietly(lambda _: self._keep({**self._recorded(), "ends_in_triggerer": True}))

    def resumed_on_worker(self) -> None:
        """This try resumed on a worker after deferring: it, not the triggerer, delivers the video."""
        if self.record is not None:
            from airflow_provider_kling.records import drop_ends_in_triggerer

            self._quietly(drop_ends_in_triggerer)
            self._last = None  # written beside this object: read anew when next asked

    def first_to_count(self, request_id: str) -> bool:
        """
        Whether this try is the first to count the request's end in the metrics and the ledger: a
        try that fails after counting (its XCom push, say) leaves a mark, so that its retry, which
        resumes the same request, does not count it twice.
        """
        if self.record is None:
            return True
        try:
            recorded = self._recorded()
            if recorded.get("counted") == request_id:
                return False
            self._keep({**recorded, "counted": request_id})
        except Exception as err:  # noqa: BLE001 - counting twice is better than failing a task that has its video
            self.log.warning("Could not mark Kling request %s as counted: %s", request_id, err)
        return True

    def finished(self, stored: dict[str, Any] | None = None) -> None:
        """
        The task has its video: mark the record ``finished`` in this clearing, with what it stored,
        so that a retry (Airflow's bookkeeping failed after this) uses it, and a clear generates
        anew. Where no retry can follow, the record is dropped.
        """
        if self.record is None:
            return
        if self.clearing is None or not self.retry_may_follow or not getattr(self.record, "keeps_finished", False):
            self._quietly(lambda _: self._forget())
            return
        mark = {"clearing": self.clearing, "stored": stored}
        self._quietly(lambda _: self._keep({**self._recorded(), "finished": mark}))

    def delivered_stored(self, request_id: str) -> dict[str, Any] | None:
        """What an earlier try of this clearing stored of ``request_id`` before it failed, if it did."""
        if self.record is None:
            return None
        try:
            recorded = self._recorded()
        except Exception:  # noqa: BLE001 - without it the video is stored again
            return None
        mark = recorded.get("finished")
        if (
            recorded.get("request_id") != request_id
            or not isinstance(mark, dict)
            or mark.get("clearing") != self.clearing
        ):
            return None
        stored = mark.get("stored")
        return stored if isinstance(stored, dict) else None

    def _recorded(self) -> dict[str, Any]:
        """The record, read once by this object (then as it last wrote it)."""
        assert self.record is not None
        if self._last is None:
            self._last = self.record.load() or {}
        return dict(self._last)

    def _keep(self, recorded: dict[str, Any]) -> None:
        assert self.record is not None
        self.record.save(recorded)
        self._last = dict(recorded)

    def _forget(self) -> None:
        assert self.record is not None
        self.record.forget()
        self._last = {}

    def _quietly(self, change: Any) -> None:
        try:
            change(self.record)
        except Exception as err:  # noqa: BLE001 - the task's work is done; a stale record costs a status call
            self.log.warning("Could not update the record of the submitted Kling request: %s", err)

    def _resumable(self, recorded: dict[str, Any], fingerprint: str) -> str | None:
        """The request an earlier try submitted, if the rule says to resume or use it."""
        from airflow_provider_kling.exceptions import KlingNotFoundError
        from airflow_provider_kling.states import ResultStatus

        request_id = str(recorded.get("request_id") or "")
        if not request_id:
            self._check_no_submit_was_interrupted(recorded, fingerprint)
            self._count("fresh_submit")
            return None
        self._count("reconnect_attempt")
        if recorded.get("fingerprint") != fingerprint:
            self.log.warning("An earlier try submitted Kling request %s for another input; submitting anew", request_id)
            if not recorded.get("delivered"):  # one this task waited for: nobody else will
                from airflow_provider_kling.exit_rule import end_wait, ending_of
                from airflow_provider_kling.wait import RequestWait
                from airflow_provider_kling.wait_plan import Exit

                ended = end_wait(
                    self.hook, RequestWait(request_id), Exit.ABANDONED, log=self.log, why="the input changed"
                )
                ending = ending_of(None, ended)
                if ending is not None:
                    self.spend.ended(request_id, ending)
            self._count("terminal_resubmit")
            return None
        try:
            status = self.hook.get_status(request_id)
        except KlingNotFoundError:
            self.log.warning("Kling request %s of an earlier try has expired; submitting anew", request_id)
            self._count("terminal_resubmit")
            return None
        if not status.status.is_finished:
            self.log.info(
                "Resuming Kling request %s (%s) submitted by an earlier try of this task: not submitting (nor "
                "paying) again. For a fresh take instead, cancel it first (`kling cancel %s`, free while it is "
                "queued) or run the task with resume=False",
                request_id,
                status.status.value,
                request_id,
            )
            self._count("reconnect_success")
            return request_id
        result = self.hook.get_result(request_id)
        # A mark left by a try that deferred to end in the triggerer, and never resumed on a worker:
        # the triggerer delivered its video (a stop while deferred cancels or says it is billed).
        delivered = recorded.get("delivered") or recorded.get("ends_in_triggerer")
        finished = recorded.get("finished")
        if isinstance(finished, dict):
            if result.status is ResultStatus.SUCCEEDED and finished.get("clearing") == self.clearing:
                self.log.warning(
                    "An earlier try of this task delivered Kling request %s, then failed after the operator "
                    "returned (in Airflow's own bookkeeping): using it again, not paying for another",
                    request_id,
                )
                self._count("already_succeeded")
                return request_id
            delivered = True  # delivered before the task was cleared: a clear asks for a fresh take
        if result.status is ResultStatus.SUCCEEDED and not delivered:
            self.log.info("Kling request %s of an earlier try already succeeded: using it", request_id)
            self._count("already_succeeded")
            return request_id
        how = "succeeded and was delivered by an earlier run" if delivered else result.status.value
        self.log.warning("Kling request %s of an earlier try %s; submitting anew", request_id, how)
        self._count("terminal_resubmit")
        return None

    def _check_no_submit_was_interrupted(self, recorded: dict[str, Any], fingerprint: str) -> None:
        from airflow_provider_kling.exceptions import KlingSubmitOutcomeUnknownError

        since = recorded.get("submitting_since")
        if since is None or recorded.get("fingerprint") != fingerprint:
            return
        when = datetime.fromtimestamp(float(since), tz=timezone.utc).isoformat(timespec="seconds")
        if self.if_submit_interrupted == "submit":
            self.log.warning(
                "An earlier try was stopped while its submit was in flight (since %s): it may have created a "
                "request that is billed; submitting anew, as if_submit_interrupted='submit' asks",
                when,
            )
            return
        raise KlingSubmitOutcomeUnknownError(
            f"An earlier try of this task was stopped (its worker died) while its submit to {self.model} was in "
            f"flight, since {when}: a request may exist and be billed, and RunComfy offers no way to find it. "
            "Not submitting again, so that you do not pay twice: check your RunComfy request history, then run "
            "the task again with if_submit_interrupted='submit' (or resume=False) to generate anew."
        )

    def _count(self, decision: str) -> None:
        """``resumable_job.<decision>``, as Airflow's ``ResumableJobMixin`` counts it."""
        try:
            from airflow.providers.common.compat.sdk import Stats
        except ImportError:  # pragma: no cover - a common-compat without Stats
            return
        Stats.incr(f"resumable_job.{decision}", tags=self.tags)

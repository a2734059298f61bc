"""
A person reviews a generated take in the Airflow UI (Required actions) before it goes out.

``KlingReviewOperator`` is one of Airflow's human-in-the-loop operators (Airflow 3.1+, the standard
provider's ``HITLBranchOperator``): it puts the prompt, a link to the video, where the copy is
stored, its duration and cost in front of a person, who picks **Approve**, **Revise** (with a
revised prompt for the next take) or **Reject** (with a reason). The task then follows the branch
of the choice and returns the decision, so the run's record says who decided what, and why.

On Airflow before 3.1 importing this module raises ``AirflowOptionalProviderFeatureException``,
which says so; ``dags/kling_review_and_publish.py`` shows how a DAG file stays importable there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import XCOM_RETURN_KEY, AirflowOptionalProviderFeatureException, Param

from airflow_provider_kling.constants import PROMPT_MAX_CHARS
from airflow_provider_kling.untrusted import markdown_block, markdown_code, markdown_link, markdown_text

try:
    from airflow.providers.standard.operators.hitl import HITLBranchOperator
except (ImportError, AirflowOptionalProviderFeatureException) as missing:
    raise AirflowOptionalProviderFeatureException(
        "KlingReviewOperator needs Airflow 3.1+ and its standard provider (human-in-the-loop operators); "
        f"this Airflow has none ({missing})"
    ) from missing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

#: What a reviewer can choose, as the Required actions page shows it.
APPROVE = "Approve"
REVISE = "Revise"
REJECT = "Reject"


def review_form() -> dict[str, Param]:
    """The reviewer's form: a revised prompt (for Revise) and a comment (the reason)."""
    return {
        "revised_prompt": Param(
            None,
            type=["null", "string"],  # optional: the form does not insist
            maxLength=PROMPT_MAX_CHARS,
            title="Revised prompt",
            description="For Revise: the prompt of the next take. Blank: the same prompt again.",
            source="task",  # HITL forms show only a task's own params
        ),
        "comment": Param(
            None,
            type=["null", "string"],
            title="Comment",
            description="Why you decided so; recorded with the decision (the reason of a rejection).",
            source="task",
        ),
    }


class KlingReviewOperator(HITLBranchOperator):
    """
    Wait for a person to approve, revise or reject a generated take, then branch on the choice.

    The task waits in Airflow's Required actions (no worker slot, no triggerer on Airflow 3.3+).
    Its form shows the prompt, a link to the video, the stored copy, the duration and the cost,
    and asks for a **Revised prompt** (used by Revise; blank means the same prompt again) and a
    **Comment** (the reason, recorded with the decision). The task returns the decision:
    ``{"decision": "approve" | "revise" | "reject", "take", "prompt", "next_prompt", "comment",
    "reviewer", "responded_at", "request_id", "video_url", "stored_uri"}``.

    Revise is offered only when ``revise_task_id`` is given: leave it out on the last take.

    :param prompt: the prompt this take was generated from. Templated.
    :param result: the take's result (a :class:`~airflow_provider_kling.models.KlingResult`, as
        ``@task.kling`` or the sensor returns it; an XComArg works). Templated.
    :param approve_task_id: the task (or task group) that runs when the take is approved.
    :param reject_task_id: the task (or task group) that runs when it is rejected.
    :param revise_task_id: the task (or task group) that makes the next take; ``None``: no Revise.
    :param stored_uri: where the copy of the video is stored (shown; the link is ``video_url``
        unless ``video_link`` is given). Templated.
    :param video_link: the link the reviewer opens; default: the result's ``video_url``. Templated.
    :param stored: what the store said of the video (the ``stored`` XCom of
        :class:`~airflow_provider_kling.transfers.kling_to_storage.KlingVideoToStorageOperator`, or
        the result's ``stored`` when the generating task stored it, the default): its facts
        (duration, resolution, frame rate, codec, audio) and any mismatch with what was asked are
        shown beside the link. Templated.
    :param duration: the length in seconds, shown to the reviewer. Templated.
    :param take: which take this is (1, 2...), shown and recorded.
    :param max_takes: how many takes the DAG allows, shown to the reviewer.
    :param subject: the headline; default: ``Review take <take> of <max_takes>``. Templated.
    :param kwargs: every other argument of ``HITLOperator`` (``response_timeout``, ``defaults``,
        ``assigned_users``, ``notifiers``...).
    """

    template_fields: Sequence[str] = (
        *HITLBranchOperator.template_fields,
        "prompt",
        "result",
        "stored_uri",
        "video_link",
        "stored",
        "duration",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"result": "json", "body": "md"}
    ui_color = "#fff3d6"

    def __init__(
        self,
        *,
        prompt: str,
        result: Any,
        approve_task_id: str,
        reject_task_id: str,
        revise_task_id: str | None = None,
        stored_uri: str | None = None,
        video_link: str | None = None,
        stored: Any = None,
        duration: int | str | None = None,
        take: int = 1,
        max_takes: int = 1,
        subject: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = [APPROVE, REVISE, REJECT] if revise_task_id else [APPROVE, REJECT]
        mapping = {APPROVE: approve_task_id, REJECT: reject_task_id}
        if revise_task_id:
            mapping[REVISE] = revise_task_id
        # Airflow hands every operator the DAG's params too; the HITL form keeps only the task's own.
        given = kwargs.pop("params", None) or {}
        get = given.get_param if hasattr(given, "get_param") else given.__getitem__
        params = {**review_form(), **{key: get(key) for key in given}}
        super().__init__(
            subject=subject or f"Review take {take} of {max_takes}",
            options=options,
            options_mapping=mapping,
            params=params,
            **kwargs,
        )
        self.prompt = prompt
        self.result = result
        self.stored_uri = stored_uri
        self.video_link = video_link
        self.stored = stored
        self.duration = duration
        self.take = take
        self.max_takes = max_takes

    @property
    def take_result(self) -> dict[str, Any]:
        """The rendered result of the take, or nothing when none was given."""
        return self.result if isinstance(self.result, dict) else {}

    def execute(self, context: Context) -> Any:
        if not self.body:
            self.body = self.describe_take(take_page=self.take_page(context))
        self.refuse_a_stale_form(context)
        try:
            page = self.generate_link_to_ui(task_instance=context["task_instance"])
        except ValueError:  # no [api] base_url: Airflow cannot say its own address
            page = "Required actions in the Airflow UI"
        self.log.info("Take %s waits for a person: %s", self.take, page)
        return super().execute(context)

    def refuse_a_stale_form(self, context: Context) -> None:
        """
        Write this take's form, and refuse when Airflow keeps an earlier one instead.

        Airflow 3.1 to 3.3 keep the form (subject, body, params) of a review task's first try when
        the task is cleared or retried: a take generated again would be approved from the text and
        link of the one before. The form is written here as ``HITLOperator.execute`` writes it,
        and what Airflow answers is what the reviewer would see.

        :raises KlingStaleReviewError: the stored form shows another take; nobody was asked.
        """
        from airflow.sdk.api.datamodels._generated import HITLUser
        from airflow.sdk.execution_time.comms import CreateHITLDetailPayload
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        from airflow_provider_kling.exceptions import KlingStaleReviewError

        stored = SUPERVISOR_COMMS.send(
            CreateHITLDetailPayload(
                ti_id=context["task_instance"].id,
                options=self.options,
                subject=self.subject,
                body=self.body,
                defaults=self.defaults,
                params=self.serialized_params,
                multiple=self.multiple,
                assigned_users=[HITLUser(id=user["id"], name=user["name"]) for user in self.assigned_users or []],
            )
        )
        shown = getattr(stored, "body", self.body)
        if shown == self.body:
            return
        raise KlingStaleReviewError(
            f"The review form of take {self.take} still shows an earlier take: Airflow 3.1 to 3.3 keep the "
            "form of a review task's first try when it is cleared (fixed in Airflow 3.4), and this take "
            f"(request {self.take_result.get('request_id') or 'unknown'}) is not the one that form shows. "
            "Nobody was asked to decide on it. Trigger a new run of the DAG to review this take."
        )

    def take_page(self, context: Context) -> tuple[str, str] | None:
        """
        Where the Kling UI plugin shows this take on the API server (``[api] base_url``): the page
        of the take and its poster, or ``None`` when the result names no request or the base URL
        is unknown. Both are the plugin's routes, which only a user who may read the DAG can open.
        """
        from urllib.parse import quote, urlencode

        from airflow.configuration import conf

        rid, ti = self.take_result.get("request_id"), context["ti"]
        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        if not rid or not base.startswith(("http://", "https://")):
            return None
        query = urlencode({"dag_id": ti.dag_id, "run_id": ti.run_id, "request_id": rid})
        poster = "/".join(quote(str(part), safe="") for part in (ti.dag_id, ti.run_id, rid))
        return f"{base}/kling/ui/request?{query}", f"{base}/kling/api/requests/{poster}/poster"

    def describe_take(self, take_page: tuple[str, str] | None = None) -> str:
        """
        The Markdown the reviewer reads: the take's poster and a link to watch it (in the Kling
        take page, when ``take_page`` gives it), prompt, storage, duration, cost, and the choices.

        Every value in it comes from data or from RunComfy, so each shows literally: the prompt as a
        code block, the rest escaped; a link is offered only to an ``http(s)`` URL.
        """
        result = self.take_result
        stored = self.stored_video(result)
        lines = []
        if take_page is not None and stored:  # the stored copy, on its take page
            page, poster = take_page
            lines += [
                f"[![poster of take {self.take}](<{poster}>)](<{page}>)",
                "",
                f"**Stored take:** {markdown_link(f'play take {self.take} in Airflow', page)}",
                "",
            ]
        link = markdown_link(f"watch take {self.take}", self.video_link or result.get("video_url"))
        lines.append(f"**Video:** {link}" if link else "**Video:** no http(s) link to the video in the result")
        lines += ["", "**Prompt:**", "", markdown_block(self.prompt)]
        if self.stored_uri:
            lines += ["", f"**Stored copy:** {markdown_code(self.stored_uri)}"]
        if stored and stored.get("video_codec"):
            from airflow_provider_kling.store import describe_facts

            lines += ["", f"**The video:** {markdown_text(describe_facts(stored))}"]
            for mismatch in stored.get("mismatch") or []:
                lines += ["", f"**Not as asked:** {markdown_text(mismatch)}"]
        facts = [f"take {self.take} of {self.max_takes}"]
        if self.duration not in (None, ""):
            facts.append(f"{markdown_text(self.duration)} s")
        if result.get("cost") is not None:
            facts.append(f"cost {markdown_text(result['cost'])}")
        if result.get("request_id"):
            facts.append(f"request {markdown_code(result['request_id'])}")
        lines += ["", " · ".join(facts), ""]
        choices = [f"**{APPROVE}** publishes this take."]
        if REVISE in self.options:
            choices.append(f"**{REVISE}** makes take {self.take + 1} from the revised prompt (blank: the same prompt).")
        choices.append(f"**{REJECT}** ends here; say why in the comment.")
        return "\n".join([*lines, " ".join(choices)])

    def stored_video(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """What the store said of the take's video (``stored``, or the result's), if anything."""
        stored = self.stored if isinstance(self.stored, dict) else result.get("stored")
        return stored if isinstance(stored, dict) else None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        decision = None
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            decision = self.decision(event)
            self.log.info(
                "Take %s: %s by %s%s",
                self.take,
                decision["decision"],
                decision["reviewer"] or "nobody (timeout)",
                f" ({decision['comment']})" if decision["comment"] else "",
            )
            # Pushed now: on Airflow 3 branching ends the method by raising (the skip), so a
            # returned value would never reach XCom.
            context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=decision)
        super().execute_complete(context=context, event=event)  # records, errors, branches
        return decision

    def decision(self, event: dict[str, Any]) -> dict[str, Any]:
        """What was decided, by whom and why: the record the task leaves in XCom."""
        choice = event["chosen_options"][0]
        answers = event.get("params_input") or {}
        comment = str(answers.get("comment") or "").strip()
        revised = str(answers.get("revised_prompt") or "").strip()
        reviewer = event.get("responded_by_user") or {}
        result = self.take_result
        responded_at: Any = event.get("responded_at")
        return {
            "decision": choice.lower(),
            "take": self.take,
            "prompt": self.prompt,
            "next_prompt": (revised or self.prompt) if choice == REVISE else None,
            "comment": comment or ("no answer in time: the default was taken" if event.get("timedout") else ""),
            "reviewer": reviewer.get("name"),
            "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
            "request_id": result.get("request_id"),
            "video_url": result.get("video_url"),
            "stored_uri": self.stored_uri,
        }

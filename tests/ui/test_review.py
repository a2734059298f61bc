"""
``kling_review_and_publish`` end to end: generation on the simulator, the decision made by a
person in the Airflow UI (a real browser on a real api-server), then publish or not.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tests.conftest import TOKEN, states, wait_until, xcoms
from tests.ui.conftest import UI_TEST

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Page

    from tests.ui.conftest import ApiServer

pytestmark = UI_TEST

DAG_ID = "kling_review_and_publish"
FIRST_PROMPT = "A desert road at twilight, bathed in rich amber and violet hues as a lone motorcycle speeds past."
REVISED_PROMPT = "A desert road at dawn, a lone motorcycle, mist over the dunes"


def dag_run_of(review: dict[str, Any]) -> Any:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=DAG_ID, run_id=review["task_instance"]["dag_run_id"]).one()
        session.expunge(run)
        return run


def revised_prompt(page: Page) -> Any:
    return page.locator("#element_revised_prompt")  # Airflow's form names each field after its param


def comment(page: Page) -> Any:
    return page.locator("#element_comment")


def submitted_prompts(sim: Any) -> list[str]:
    return [request.input["prompt"] for request in sim.requests.values()]


def test_revise_then_approve_in_the_browser_publishes_the_second_take(
    api_server: ApiServer, start_dag, sim, page: Page, screenshots: Path, tmp_path: Path
):
    run = start_dag(DAG_ID)
    review = api_server.wait_for_review(run, "take_1.review")
    first = next(iter(sim.requests.values()))

    page.goto(api_server.page_of(review["task_instance"], "required_actions"))
    form = page.get_by_role("button", name="Revise")
    form.wait_for()
    text = page.inner_text("body")
    assert "Review take 1 of 3" in text
    assert "Prompt:" in text
    assert FIRST_PROMPT in text
    assert f"request {first.request_id}" in text
    assert "5 s" in text
    assert "cost" in text
    assert str(tmp_path / "videos" / "takes" / f"{first.request_id}.mp4") in text  # the stored copy
    assert "The video: 5 s, 320x180 (16:9), 24 fps, h264, no audio" in text  # as FFmpeg read it
    watch = page.get_by_role("link", name="watch take 1")
    assert watch.get_attribute("href") == f"{sim.url}/media/{first.request_id}/video.mp4"
    # The stored take, on the API server: its poster inline, and a link to its page in Airflow.
    take_page = page.get_by_role("link", name="play take 1 in Airflow")
    assert take_page.get_attribute("href").startswith(f"{api_server.url}/kling/ui/request?")
    poster = page.get_by_role("img", name="poster of take 1")
    assert poster.get_attribute("src").endswith(f"/{first.request_id}/poster")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=poster.element_handle())
    with page.expect_popup() if take_page.get_attribute("target") == "_blank" else nullcontext() as opened:
        take_page.click()
    tab = opened.value if opened is not None else page
    tab.wait_for_url(lambda url: "/plugin/kling-take" in url)
    assert f"/dags/{DAG_ID}/runs/" in tab.url
    page.goto(api_server.page_of(review["task_instance"], "required_actions"))
    page.get_by_role("button", name="Revise").wait_for()
    assert "Revised prompt" in text
    assert "Comment" in text
    assert revised_prompt(page).is_visible()
    assert comment(page).is_visible()
    assert [b.inner_text() for b in page.get_by_role("button", name=re.compile("^(Approve|Revise|Reject)$")).all()] == [
        "Approve",
        "Revise",
        "Reject",
    ]
    page.screenshot(path=str(screenshots / "review-take.png"), full_page=True)

    revised_prompt(page).fill(REVISED_PROMPT)
    comment(page).fill("too dark; show the dawn")
    page.get_by_role("button", name="Revise").click()
    page.get_by_text("Response received").wait_for()

    second_review = api_server.wait_for_review(run, "take_2.review")
    assert submitted_prompts(sim) == [FIRST_PROMPT, REVISED_PROMPT]  # the new take used the new prompt

    page.goto(api_server.page_of(second_review["task_instance"], "required_actions"))
    page.get_by_role("button", name="Approve").wait_for()
    assert "Review take 2 of 3" in page.inner_text("body")
    assert REVISED_PROMPT in page.inner_text("body")
    comment(page).fill("ship it")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("Response received").wait_for()
    page.screenshot(path=str(screenshots / "review-answered.png"), full_page=True)

    output = run.finish()
    assert TOKEN not in output
    assert TOKEN not in page.content()
    dag_run = dag_run_of(review)
    assert str(dag_run.state) == "success"
    task_states = states(dag_run)
    assert task_states["take_1.approved"] == task_states["take_1.rejected"] == "skipped"
    assert task_states["take_2.approved"] == "success"
    assert task_states["take_2.rejected"] == "skipped"
    assert {task_states[t] for t in task_states if t.startswith("take_3.")} == {"skipped"}
    assert task_states["publish"] == task_states["notify"] == "success"
    assert task_states["record_rejection"] == "skipped"

    values = xcoms(dag_run)
    first_decision = values[("take_1.review", "return_value")]
    assert first_decision["decision"] == "revise"
    assert first_decision["next_prompt"] == REVISED_PROMPT
    assert first_decision["comment"] == "too dark; show the dawn"
    assert first_decision["reviewer"]  # who answered, as the auth manager names them
    record = values[("publish", "return_value")]
    second = list(sim.requests.values())[1]
    assert record["decision"] == "approve"
    assert record["take"] == 2
    assert record["comment"] == "ship it"
    published = tmp_path / "videos" / "published" / f"{second.request_id}.mp4"
    assert record["published_uri"] == published.as_uri()
    assert published.read_bytes() == sim.video
    assert not list(published.parent.glob(".*.part"))  # nothing half-written beside it
    assert "Kling video published: take 2 approved by" in values[("notify", "return_value")]
    assert sim.calls["submit"] == 2


def test_reject_ends_the_run_cleanly_with_the_reason(api_server: ApiServer, start_dag, sim, tmp_path: Path):
    run = start_dag(DAG_ID, KLING_VIDEO_FOLDER_URL="https://videos.example.com/kling/")
    review = api_server.wait_for_review(run, "take_1.review")
    assert review["options"] == ["Approve", "Revise", "Reject"]
    (request,) = sim.requests.values()
    # Where browsers reach the video folder is known: the reviewer opens the stored copy.
    assert f"[watch take 1](<https://videos.example.com/kling/takes/{request.request_id}.mp4>)" in review["body"]
    api_server.respond(review, "Reject", comment="off brand: the logo is missing", revised_prompt=None)

    output = run.finish()
    run_id = review["task_instance"]["dag_run_id"]
    page = f"{api_server.url}/dags/{DAG_ID}/runs/{run_id}/tasks/take_1.review/required_actions?map_index=-1"
    assert f"Take 1 waits for a person: {page}" in output  # the log says where to answer
    dag_run = dag_run_of(review)
    assert str(dag_run.state) == "success"  # a rejection is a decision, not a failure
    task_states = states(dag_run)
    assert task_states["record_rejection"] == "success"
    assert task_states["publish"] == task_states["notify"] == "skipped"
    assert {task_states[t] for t in task_states if t.startswith(("take_2.", "take_3."))} == {"skipped"}
    rejection = xcoms(dag_run)[("record_rejection", "return_value")]
    assert rejection["reason"] == "off brand: the logo is missing"
    assert rejection["take"] == 1
    assert rejection["decision"] == "reject"
    assert not (tmp_path / "videos" / "published").exists()
    assert sim.calls["submit"] == 1
    # The generating task's Kling take tab plays the copy its run stored (generate, then copy).
    base = f"{api_server.url}/kling/api/takes/{DAG_ID}/{quote(run_id, safe='')}"
    take = api_server.http.get(f"{base}/take_1.generate/-1", timeout=30).json()
    assert take["request_id"] == request.request_id
    assert take["stored"]["uri"].endswith(f"/takes/{request.request_id}.mp4")
    video = api_server.http.get(f"{base}/take_1.generate/-1/video", headers={"Range": "bytes=0-99"}, timeout=30)
    assert (video.status_code, len(video.content)) == (206, 100)


def test_the_last_take_offers_no_revision_and_a_blank_reason_is_said(
    api_server: ApiServer, start_dag, sim, tmp_path: Path
):
    run = start_dag(DAG_ID, KLING_REVIEW_MAX_TAKES="1")
    review = api_server.wait_for_review(run, "take_1.review")
    assert review["options"] == ["Approve", "Reject"]
    assert "Revise" not in review["body"]
    api_server.respond(review, "Reject")

    run.finish()
    rejection = xcoms(dag_run_of(review))[("record_rejection", "return_value")]
    assert rejection["reason"] == "no reason given"


def test_no_answer_in_time_rejects_the_take_and_says_so(api_server: ApiServer, start_dag, sim, tmp_path: Path):
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    run = start_dag(DAG_ID, KLING_REVIEW_TIMEOUT_SECONDS="1")
    review = api_server.wait_for_review(run, "take_1.review")
    sweep = SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts  # the scheduler's own sweep

    def swept() -> bool:
        sweep()
        this_run = review["task_instance"]["dag_run_id"]
        return all(d["task_instance"]["dag_run_id"] != this_run for d in api_server.pending_reviews(DAG_ID))

    wait_until("the scheduler's sweep to time the review out", swept, 60)
    run.finish()
    dag_run = dag_run_of(review)
    task_states = states(dag_run)
    assert task_states["record_rejection"] == "success"
    assert task_states["publish"] == "skipped"
    rejection = xcoms(dag_run)[("record_rejection", "return_value")]
    assert rejection["reason"] == "no answer in time: the default was taken"
    assert rejection["reviewer"] is None
    assert not (tmp_path / "videos" / "published").exists()


def test_a_prompt_that_holds_markup_is_text_in_the_review_form(
    api_server: ApiServer, start_dag, sim, page: Page, screenshots: Path
):
    prompt = '<img src=x onerror="window.__klingXss = 1; alert(1)"> a paper boat'
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    run = start_dag(DAG_ID, conf={"prompt": prompt})
    review = api_server.wait_for_review(run, "take_1.review")
    page.goto(api_server.page_of(review["task_instance"], "required_actions"))
    page.get_by_role("button", name="Reject").wait_for()
    page.get_by_role("img", name="poster of take 1").wait_for()  # the take's own poster is an image...
    assert prompt in page.inner_text("body")  # ...and the prompt's markup is text
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []
    assert page.evaluate("() => window.__klingXss") is None
    api_server.respond(review, "Reject", comment="markup", revised_prompt=None)
    run.finish()

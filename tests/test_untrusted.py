"""
Strings the provider did not write stay data: a video URL that is not http(s) is no video, text
from data shows literally in Markdown and HTML, and a token that a gateway echoes is never quoted.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS
from markdown_it import MarkdownIt

from airflow_provider_kling.cli import main
from airflow_provider_kling.exceptions import KlingAPIError, KlingError, KlingUnusableVideoError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links.kling import video_url_of
from airflow_provider_kling.testing import Fault, Scenario
from airflow_provider_kling.untrusted import (
    html_text,
    markdown_block,
    markdown_code,
    markdown_link,
    markdown_text,
    redact,
    video_url_problem,
)
from tests.conftest import FAST_HOOK, TOKEN, states, xcoms

NEEDS_HITL = pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="the review operator needs Airflow 3.1+")
HOSTILE_URLS = {
    "javascript": "javascript:alert(document.cookie)",
    "data": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "file": "file:///etc/passwd",
}
#: A prompt from a spreadsheet cell, as hostile as prompts get.
HOSTILE_PROMPT = (
    "A calm lake [watch take 1](https://evil.example/login) ![pixel](https://evil.example/p.png)\n"
    "<img src=x onerror=alert(1)> <b>bold</b> **strong** _em_ `code` &amp;\n"
    "```\n# not a heading\n```\n"
    "    indented\n"
    "- not a list https://evil.example/auto"
)


# --- the URL rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://cdn.example/v.mp4", None),
        ("http://127.0.0.1:8080/media/x/video.mp4", None),
        ("HTTPS://cdn.example/v.mp4", None),
        (HOSTILE_URLS["javascript"], "scheme is 'javascript'"),
        (HOSTILE_URLS["data"], "scheme is 'data'"),
        (HOSTILE_URLS["file"], "scheme is 'file'"),
        ("//cdn.example/v.mp4", "scheme is none"),
        ("https:///v.mp4", "names no host"),
        ("https://cdn.example/a b.mp4", "spaces or control characters"),
        (" javascript:alert(1)", "spaces or control characters"),
        ("", "no video URL"),
        (None, "no video URL"),
        (["https://cdn.example/v.mp4"], "no video URL"),
    ],
)
def test_only_an_http_url_with_a_host_is_a_video(url, problem):
    found = video_url_problem(url)
    assert found is None if problem is None else problem in (found or "")


# Each hostile URL in each mode a task can wait in (the exit DAGs' "error" row: no retries).
@pytest.mark.parametrize(
    ("mode", "scheme"),
    [
        ("poke", "javascript"),
        ("reschedule", "data"),
        ("deferrable", "file"),
        ("polling", "javascript"),
        ("deferred", "data"),
    ],
)
def test_a_result_whose_video_is_not_http_fails_the_wait_naming_the_scheme(run_dag, sim, capfd, caplog, mode, scheme):
    sim.script(Scenario(queue_seconds=0.2, run_seconds=0.2, video_url=HOSTILE_URLS[scheme]))
    dag_run = run_dag(f"exit_error_{mode}", file="kling_exit_dags.py")
    waiter = "generate" if mode in ("polling", "deferred") else "wait"
    assert states(dag_run)[waiter] == "failed"  # succeeded on the server, but no usable video: not green
    logged = capfd.readouterr().out + caplog.text
    assert "KlingUnusableVideoError" in logged
    assert f"scheme is '{scheme}'" in logged
    assert sim.calls["submit"] == 1
    assert sim.calls["cancel"] == 0  # finished: nothing to cancel
    assert HOSTILE_URLS[scheme] not in repr(xcoms(dag_run))


def test_the_button_and_the_hook_refuse_a_url_that_is_not_http(sim):
    assert video_url_of({"video_url": "https://cdn.example/v.mp4"}) == "https://cdn.example/v.mp4"
    for url in HOSTILE_URLS.values():
        assert video_url_of({"video_url": url}) == ""  # the "Kling video" button offers nothing
    sim.script(Scenario(queue_seconds=0, run_seconds=0, video_url=HOSTILE_URLS["file"]))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
        with pytest.raises(KlingUnusableVideoError, match="scheme is 'file'") as caught:
            hook.get_result(rid).require_video(rid)
    assert caught.value.status_code == 200
    assert "/etc/passwd" in caught.value.body_excerpt  # the excerpt shows what the server sent


@pytest.mark.parametrize("command", ["result", "download"])
def test_the_cli_refuses_a_video_that_is_not_http(env_token, capsys, tmp_path, command):
    env_token.script(Scenario(queue_seconds=0, run_seconds=0, video_url=HOSTILE_URLS["javascript"]))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
    argv = [command, rid] + ([str(tmp_path / "v.mp4")] if command == "download" else [])
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1
    assert "scheme is 'javascript'" in err
    assert "javascript:" not in out
    assert not list(tmp_path.iterdir())


# --- text stays text -------------------------------------------------------------------------


def _rendered(markdown: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def test_markdown_helpers_show_hostile_text_literally():
    html = _rendered(f"**Prompt:** {markdown_text(HOSTILE_PROMPT)}")
    assert "<a " not in html
    assert "<img" not in html
    assert "<b>" not in html
    assert "<strong>bold" not in html
    assert "<h1>" not in html
    assert "<li>" not in html
    assert "<em>" not in html
    assert "[watch take 1](https://evil.example/login)" in html  # the characters, as typed
    block = _rendered(markdown_block(HOSTILE_PROMPT))
    assert block.count("<pre>") == 1
    assert "<a " not in block
    assert "<img" not in block
    assert "# not a heading" in block
    assert "&lt;img src=x onerror=alert(1)&gt;" in block
    code = _rendered(markdown_code("a `tick` and ``two``"))
    assert "<code>a `tick` and ``two``</code>" in code
    link = _rendered(markdown_link("watch [take] 1", "https://cdn.example/a)b<c>.mp4") or "")
    assert link.count("<a ") == 1
    assert 'href="https://cdn.example/a)b%3Cc%3E.mp4"' in link
    assert markdown_link("watch", HOSTILE_URLS["javascript"]) is None


@NEEDS_HITL
def test_the_review_form_shows_a_hostile_prompt_literally_and_links_only_an_http_video():
    from airflow_provider_kling.operators.review import KlingReviewOperator

    def form(video_url: str) -> str:
        review = KlingReviewOperator(
            task_id="review",
            prompt=HOSTILE_PROMPT,
            result={"request_id": "req-1 <b>x</b>", "video_url": video_url, "cost": "0.5 [x](https://evil.example)"},
            stored_uri="file:///videos/`a`.mp4",
            approve_task_id="approved",
            reject_task_id="rejected",
        )
        return _rendered(review.describe_take())

    html = form("https://cdn.example/v.mp4")
    assert re.findall(r'<a href="([^"]*)"', html) == ["https://cdn.example/v.mp4"]  # our link, and only ours
    assert "<img" not in html
    assert "<b>" not in html
    assert "<h1>" not in html
    assert "[watch take 1](https://evil.example/login)" in html  # the reviewer reads what was typed
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for url in HOSTILE_URLS.values():
        assert "<a " not in form(url)


def test_an_email_notification_shows_the_prompt_as_text(monkeypatch):
    from airflow_provider_kling.notifications.kling import video_notifier

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({"conn_type": "smtp", "host": "127.0.0.1"}))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", "")
    notifier = video_notifier(f"ready: {HOSTILE_PROMPT}", to="team@example.com")
    html = notifier.html_content  # type: ignore[attr-defined]
    assert "<img" not in html
    assert "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html == html_text(f"ready: {HOSTILE_PROMPT}")


# --- the token is never quoted ---------------------------------------------------------------


def test_redact_removes_the_token_in_every_form_a_page_may_quote_it():
    secret = "sk-live-abcdef123456"
    from airflow_provider_kling.untrusted import register_secret

    register_secret(secret)
    page = (
        f"<li>Authorization: Bearer {secret}</li> {{'authorization': 'Bearer {secret}'}} "
        f"token={secret} url-encoded=sk-live-abcdef123456 authorization=Basic dXNlcjpwYXNz "
        "bearer other-credential-xyz"
    )
    cleaned = redact(page)
    assert secret not in cleaned
    assert "dXNlcjpwYXNz" not in cleaned
    assert "other-credential-xyz" not in cleaned
    assert cleaned.count("***") >= 4
    assert redact("no secrets here: bearing north") == "no secrets here: bearing north"


@pytest.mark.parametrize("call", ["submit", "status", "result", "cancel"])
def test_an_echoing_gateway_does_not_put_the_token_in_error_text(sim, call):
    sim.script(Scenario(queue_seconds=5))
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id if call != "submit" else "unused"
        sim.inject(call, Fault.echo_request())
        verbs = {
            "submit": lambda: hook.submit({"prompt": "a kite"}),
            "status": lambda: hook.get_status(rid),
            "result": lambda: hook.get_result(rid),
            "cancel": lambda: hook.cancel(rid),
        }
        with pytest.raises(KlingAPIError) as caught:
            verbs[call]()
    err = caught.value
    assert err.status_code == 400
    assert "Authorization: Bearer ***" in err.body_excerpt  # the page was quoted...
    for text in (str(err), repr(err), json.dumps(err.to_event()), repr(err.__reduce__())):
        assert TOKEN not in text  # ...without the token
    rebuilt = KlingError.from_event(err.to_event())
    assert TOKEN not in str(rebuilt)


@pytest.mark.parametrize("dag_id", ["kling_sensor_poke", "kling_sensor_deferrable", "kling_operator_polling"])
def test_an_echoing_gateway_leaks_no_token_into_a_failed_run(run_dag, sim, capfd, caplog, dag_id):
    caplog.set_level(logging.DEBUG)
    sim.script(Scenario(queue_seconds=0.3))
    sim.inject("status", Fault.echo_request())  # a 400: permanent, so the first poll's answer ends the wait
    dag_run = run_dag(dag_id)
    assert "failed" in states(dag_run).values()
    out, err = capfd.readouterr()
    seen = "\n".join([out, err, caplog.text, repr(xcoms(dag_run))])
    assert "Authorization: Bearer ***" in seen  # the failure quotes the page...
    assert TOKEN not in seen  # ...but not the token


@pytest.mark.parametrize("command", ["status", "result", "cancel"])
def test_the_cli_never_prints_an_echoed_token(env_token, capsys, command):
    with KlingHook(**FAST_HOOK) as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
    env_token.inject(command, Fault.echo_request())
    code = main([command, rid])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Bearer ***" in err
    assert TOKEN not in out + err


# --- a review shows the take it decides on -------------------------------------------------


@pytest.mark.timeout(120)  # without the check, the retry would wait for a person for ever
@NEEDS_HITL
def test_a_retried_review_refuses_rather_than_show_the_take_before(run_dag, capfd, caplog):
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session

    dag_run = run_dag("kling_review_retried", file="kling_review_dags.py")
    assert states(dag_run)["review"] == "failed"
    logged = capfd.readouterr().out + caplog.text
    assert "the notifier is down" in logged  # try 1 wrote its form (take req-1), then failed
    assert "KlingStaleReviewError" in logged  # try 2 refused...
    assert "(request req-2) is not the one that form shows" in logged  # ...naming its take
    assert "Trigger a new run of the DAG to review this take" in logged
    with create_session() as session:
        ti = next(t for t in dag_run.get_task_instances(session=session) if t.task_id == "review")
        form = session.get(HITLDetail, ti.id)
        # What the refusal protects from: Airflow kept try 1's form, take req-1, for try 2.
        assert form is not None
        assert "req-1" in (form.body or "")
        assert "req-2" not in (form.body or "")
        assert form.responded_at is None  # nobody decided on it

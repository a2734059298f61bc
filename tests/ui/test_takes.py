"""
Takes in Airflow's UI, for real: takes made by DAG runs on the simulator, Airflow's API server
with the provider installed under the FAB auth manager (alice may read every DAG, bob one), and
the OS's Chromium signed in through Airflow's own login page.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from tests.conftest import AIRFLOW, TEST_DAGS, wait_until, xcoms
from tests.ui.conftest import UI_TEST
from tests.ui.fab import start_fab_api_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Frame, Page

    from tests.ui.fab import FabApiServer

pytestmark = UI_TEST

ALLOWED, HIDDEN = "kling_ui_allowed", "kling_ui_hidden"
#: A prompt that would run script if any page put it into markup.
XSS = '<img src=x onerror="window.__klingXss = 1; alert(1)"> a paper boat'
DAG_FILE = TEST_DAGS / "kling_ui_dags.py"
BUDGETS = {"budgets": {"ui": {"videos": 50, "video_seconds": 1000, "period": "day"}}, "budget_store": "kling_ui_ledger"}


def _run(dags: dict[str, Any], dag_id: str, **conf: Any) -> dict[str, Any]:
    run = dags[dag_id].test(run_conf=conf or None)
    values = xcoms(run)
    return {"run_id": run.run_id, "state": str(run.state), "xcoms": values}


@pytest.fixture(scope="module")
def takes(airflow_db: Path, kling_simulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The module's takes, made once by ``dag.test()``: two stored in DAGs of their own, a failure, one elsewhere."""
    from airflow import settings

    from airflow_provider_kling.testing import Scenario, load_dags
    from airflow_provider_kling.testing.media import make_full_hd_video

    sim = kling_simulator_server
    folder = tmp_path_factory.mktemp("ui-takes")
    env = {
        "AIRFLOW_CONN_KLING_DEFAULT": sim.connection_json(extra=BUDGETS),
        "AIRFLOW_CONN_KLING_UI_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(folder / "ledger.db")}),
        "KLING_VIDEO_DIR": str(folder / "videos"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
        patch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(TEST_DAGS))
        dags = load_dags(DAG_FILE)
        sim.reset()
        made: dict[str, Any] = {"env": env, "videos": folder / "videos"}
        make_full_hd_video(10.0)  # made once, here: the simulator serves it from the same cache
        sim.script(Scenario(media="full_hd", served_seconds=10))  # a take of Kling's own size, to seek in
        made["allowed"] = _run(dags, ALLOWED, prompt=XSS)
        made["hidden"] = _run(dags, HIDDEN)
        sim.script(Scenario(outcome="failed", error="content policy: <b>refused</b>"))
        made["failing"] = _run(dags, "kling_ui_failing")
        made["elsewhere"] = _run(dags, "kling_ui_elsewhere")
        from airflow_provider_kling.hooks.kling import KlingHook
        from airflow_provider_kling.spend import budget_report

        made["ledger"] = budget_report(KlingHook().budget_config)["budgets"]["ui"]
        yield made
        sim.reset()


@pytest.fixture(scope="module")
def fab(takes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabApiServer]:
    log = tmp_path_factory.mktemp("fab-api-server") / "api-server.log"
    yield from start_fab_api_server({**os.environ, **takes["env"]}, log, ALLOWED)


def rid_of(take: dict[str, Any]) -> str:
    return str(take["xcoms"][("generate", "kling_take")]["request_id"])


def take_path(dag_id: str, run: dict[str, Any], what: str = "") -> str:
    path = f"/kling/api/takes/{dag_id}/{quote(run['run_id'], safe='')}/generate/-1"
    return f"{path}/{what}" if what else path


def tab_of(server: FabApiServer, dag_id: str, run: dict[str, Any]) -> str:
    return f"{server.url}/dags/{dag_id}/runs/{quote(run['run_id'], safe='')}/tasks/generate/plugin/kling-take"


# --- who may see what ---------------------------------------------------------------------------


def test_no_route_of_the_plugin_answers_content_without_a_signed_in_user(fab: FabApiServer, takes: dict[str, Any]):
    """Every route the plugin declares, enumerated from its app: a route added later cannot be forgotten."""
    from fastapi.routing import APIRoute

    from airflow_provider_kling.ui.app import app

    run = takes["allowed"]
    values = {
        "dag_id": ALLOWED,
        "run_id": quote(run["run_id"], safe=""),
        "task_id": "generate",
        "map_index": "-1",
        "request_id": rid_of(run),
        "name": "kling.js",
    }
    query = urlencode({"dag_id": ALLOWED, "run_id": run["run_id"], "task_id": "generate", "request_id": rid_of(run)})
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    assert len(routes) >= 12
    for route in routes:
        assert route.methods == {"GET"}, f"{route.path} takes {route.methods}: only reading routes are tested here"
        path = "/kling" + route.path.format(**values) + f"?{query}"
        for cookie in (None, "not-a-token"):
            http = fab.session(None)
            if cookie:
                http.cookies.set("_token", cookie, domain="127.0.0.1", path="/")
            answer = http.get(fab.url + path, timeout=60, allow_redirects=False)
            assert answer.status_code in (401, 403), f"{route.path} answered {answer.status_code} to no user"
            assert rid_of(run) not in answer.text
            assert "<!doctype" not in answer.text.lower()
            assert not answer.content.startswith(b"\xff\xd8")  # no JPEG
            assert b"ftyp" not in answer.content[:16]  # no MP4
        assert fab.get("alice", path).status_code in (200, 206, 302), f"{route.path}: alice gets nothing"


def test_a_user_who_may_read_one_dag_sees_only_its_takes_spend_and_media(fab: FabApiServer, takes: dict[str, Any]):
    alice = fab.get("alice", "/kling/api/takes").json()["takes"]
    bob = fab.get("bob", "/kling/api/takes").json()["takes"]
    assert {ALLOWED, HIDDEN, "kling_ui_failing"} <= {take["dag_id"] for take in alice}
    assert {take["dag_id"] for take in bob} == {ALLOWED}
    assert fab.get("bob", "/kling/api/dags").json() == {"dag_ids": [ALLOWED]}
    assert fab.get("bob", f"/kling/api/takes?dag_id={HIDDEN}").json()["takes"] == []

    spend_bob = fab.get("bob", "/kling/api/spend").json()
    assert {row["dag_id"] for row in spend_bob["rows"]} == {ALLOWED}
    assert spend_bob["budgets"]["shown"] is False  # the budgets are the connection's: bob may not read it
    assert "kling_default" in spend_bob["budgets"]["why"]
    spend_alice = fab.get("alice", "/kling/api/spend").json()
    assert {ALLOWED, HIDDEN} <= {row["dag_id"] for row in spend_alice["rows"]}
    assert spend_alice["budgets"]["shown"] is True

    hidden, allowed = takes["hidden"], takes["allowed"]
    for what in ("", "video", "poster"):
        assert fab.get("bob", take_path(HIDDEN, hidden, what)).status_code == 403, what
        assert fab.get("alice", take_path(HIDDEN, hidden, what)).status_code == 200, what
        assert fab.get("bob", take_path(ALLOWED, allowed, what)).status_code == 200, what
    poster = f"/kling/api/requests/{HIDDEN}/{quote(hidden['run_id'], safe='')}/{rid_of(hidden)}/poster"
    assert fab.get("bob", poster).status_code == 403
    assert fab.get("alice", poster).content[:3] == b"\xff\xd8\xff"  # a JPEG
    page = f"/kling/ui/take?{urlencode({'dag_id': HIDDEN, 'run_id': hidden['run_id'], 'task_id': 'generate'})}"
    assert fab.get("bob", page).status_code == 403
    assert fab.get("alice", page).status_code == 200


def test_no_route_takes_a_path_or_a_uri_from_the_request(fab: FabApiServer, takes: dict[str, Any]):
    """The video is where XCom says; a name that is not a take's finds nothing, whatever it looks like."""
    from fastapi.routing import APIRoute

    allowed = takes["allowed"]
    for task_id in ("..%2F..%2Fetc%2Fpasswd", "generate%2F..%2F..", "file%3A%2F%2F%2Fetc%2Fpasswd"):
        path = f"/kling/api/takes/{ALLOWED}/{quote(allowed['run_id'], safe='')}/{task_id}/-1/video"
        assert fab.get("alice", path).status_code == 404
    assert fab.get("alice", "/kling/static/..%2F..%2Fui%2Fapp.py").status_code == 404
    from airflow_provider_kling.ui.app import app

    for route in app.routes:
        if isinstance(route, APIRoute):
            names = {param.name for param in route.dependant.query_params}
            assert not names & {"uri", "path", "url", "file", "location"}, route.path


# --- the take -------------------------------------------------------------------------------------


def sign_in(page: Page, server: FabApiServer, user: str = "alice") -> None:
    """Through Airflow's own login page, as a person does."""
    from tests.ui.fab import PASSWORDS

    page.goto(f"{server.url}/auth/login/")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(PASSWORDS[user])
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


@contextmanager
def signed_in(browser: Browser, fab: FabApiServer, *, height: int) -> Iterator[tuple[Page, list[str]]]:
    """A fresh browser page signed in as alice, and the dialogs it opened (a script a page ran would open one)."""
    context = browser.new_context(viewport={"width": 1400, "height": height})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        sign_in(page, fab)
        yield page, dialogs
    finally:
        context.close()


def plugin_frame(page: Page, route: str, screenshots: Path) -> Frame:
    """The frame of the plugin's page ``route`` in Airflow's page; a screenshot of it if it never comes."""
    for _ in range(300):
        found = next((f for f in page.frames[1:] if urlsplit(f.url).path == f"/kling/ui/{route}"), None)
        if found is not None:
            return found
        page.wait_for_timeout(200)  # Playwright learns of new frames only while it runs its loop
    page.screenshot(path=str(screenshots / f"FAILED-frame-{route}.png"))
    raise AssertionError(f"No frame of {route} among {[f.url for f in page.frames]}")


def no_script_ran(page: Page, frame: Frame, dialogs: list[str]) -> None:
    assert dialogs == []
    assert frame.evaluate("() => window.__klingXss") is None
    assert page.evaluate("() => window.__klingXss") is None


def test_the_take_plays_on_its_task_instance_and_a_seek_is_a_range_answered_206(
    fab: FabApiServer, takes: dict[str, Any], browser: Browser, screenshots: Path
):
    videos: list[tuple[str | None, int]] = []

    def watch(answer: Any) -> None:
        if answer.url.endswith("/video"):
            videos.append((answer.request.headers.get("range"), answer.status))

    with signed_in(browser, fab, height=1100) as (page, dialogs):
        page.on("response", watch)
        page.goto(tab_of(fab, ALLOWED, takes["allowed"]))
        frame = plugin_frame(page, "take", screenshots)
        video = frame.locator("#take-video")
        video.wait_for()
        text = frame.locator("#facts").inner_text()
        assert XSS in text  # the prompt, as text
        assert rid_of(takes["allowed"]) in text
        assert "10 s, 1920x1080 (16:9), 24 fps, h264" in text  # the facts FFmpeg read of the stored copy
        assert "Cost\n1\n" in text  # what RunComfy reported for 10 s
        frame.wait_for_function("() => document.querySelector('#take-video').readyState >= 1", timeout=30_000)
        assert frame.evaluate("() => document.querySelector('#take-video').duration") == pytest.approx(10, abs=0.1)
        size = takes["allowed"]["xcoms"][("generate", "result")]["stored"]["size_bytes"]
        # A seek near the end, before playing: only the start was loaded, so the browser asks for a range there.
        frame.evaluate("() => { document.querySelector('#take-video').currentTime = 9.0; }")
        frame.wait_for_function(
            "() => { const v = document.querySelector('#take-video'); return !v.seeking && v.readyState >= 2; }",
            timeout=30_000,
        )
        late = [(asked, status) for asked, status in videos if asked and _start_of(asked) > size // 2]
        assert late, f"the seek asked for no range in the second half of the file: {videos}"
        assert all(status == 206 for _, status in late), late
        frame.evaluate(
            "() => { const v = document.querySelector('#take-video');"
            " v.currentTime = 0; v.muted = true; return v.play(); }"
        )
        frame.wait_for_function("() => document.querySelector('#take-video').currentTime > 0.5", timeout=30_000)
        page.screenshot(path=str(screenshots / "ui-take.png"))
        no_script_ran(page, frame, dialogs)


def _start_of(asked: str) -> int:
    """The first byte a ``Range: bytes=N-`` header asks for."""
    first = asked.removeprefix("bytes=").split("-")[0]
    return int(first) if first else 0


def test_a_failed_take_shows_its_typed_error_and_one_on_a_workers_disk_says_where_it_is(
    fab: FabApiServer, takes: dict[str, Any], browser: Browser, screenshots: Path
):
    failing = fab.get("alice", take_path("kling_ui_failing", takes["failing"])).json()
    assert failing["state"] == "failed"
    assert failing["error"]["type"] == "KlingRequestFailed"
    assert "content policy: <b>refused</b>" in failing["error"]["message"]

    elsewhere = takes["elsewhere"]
    stored = Path(elsewhere["xcoms"][("generate", "result")]["stored"]["uri"].removeprefix("file://"))
    stored.unlink()  # as if it were on a worker's disk, not the API server's
    _set_hostname("kling_ui_elsewhere", elsewhere["run_id"], "worker-7")
    view = fab.get("alice", take_path("kling_ui_elsewhere", elsewhere)).json()
    assert str(stored) in view["stored"]["unreachable"]
    assert "worker-7" in view["stored"]["unreachable"]
    assert "video" not in view["links"]
    assert view["runcomfy_url"].endswith("/video.mp4")
    answer = fab.get("alice", take_path("kling_ui_elsewhere", elsewhere, "video"))
    assert answer.status_code == 404
    assert "worker-7" in answer.json()["detail"]

    with signed_in(browser, fab, height=900) as (page, dialogs):
        page.goto(tab_of(fab, "kling_ui_failing", takes["failing"]))
        frame = plugin_frame(page, "take", screenshots)
        error = frame.locator("#take-error")
        error.wait_for()
        assert "KlingRequestFailed" in error.inner_text()
        assert "content policy: <b>refused</b>" in error.inner_text()  # the server's text, not markup
        page.screenshot(path=str(screenshots / "ui-take-failed.png"))
        page.goto(tab_of(fab, "kling_ui_elsewhere", elsewhere))
        frame = plugin_frame(page, "take", screenshots)
        frame.locator("#unreachable").wait_for()
        assert "worker-7" in frame.locator("#unreachable").inner_text()
        assert frame.locator("#runcomfy-link").get_attribute("href") == view["runcomfy_url"]
        no_script_ran(page, frame, dialogs)


def _set_hostname(dag_id: str, run_id: str, hostname: str) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).update({"hostname": hostname})


# --- the Kling page -------------------------------------------------------------------------------


def test_the_kling_page_shows_posters_spend_equal_to_the_ledger_and_prompts_as_text(
    fab: FabApiServer, takes: dict[str, Any], browser: Browser, screenshots: Path
):
    with signed_in(browser, fab, height=1300) as (page, dialogs):
        page.goto(f"{fab.url}/plugin/kling")
        frame = plugin_frame(page, "takes", screenshots)
        card = frame.locator(f".card[data-request='{rid_of(takes['allowed'])}']")
        try:
            card.wait_for()
        except BaseException:
            page.screenshot(path=str(screenshots / "FAILED-kling-page.png"), full_page=True)
            raise
        assert XSS in card.inner_text()
        poster = card.locator("img")
        poster.scroll_into_view_if_needed()
        frame.wait_for_function(
            "(rid) => { const i = document.querySelector(`.card[data-request='${rid}'] img`);"
            " return i && i.complete && i.naturalWidth > 0; }",
            arg=rid_of(takes["allowed"]),
            timeout=30_000,
        )
        assert card.get_attribute("href").endswith(
            f"/dags/{ALLOWED}/runs/{quote(takes['allowed']['run_id'], safe='')}/tasks/generate/plugin/kling-take"
        )
        ledger = takes["ledger"]["spent"]
        frame.locator("#budgets-table").wait_for()
        row = frame.locator("#budgets-table tr[data-budget='ui'] td[data-spent]")
        assert [float(row.nth(i).get_attribute("data-spent")) for i in range(2)] == [
            ledger["videos"],
            ledger["video_seconds"],
        ]
        # The chart's totals, for the DAGs that spent from the budget, equal the ledger's.
        totals = frame.locator("#spend-totals tbody tr")
        shown = {
            totals.nth(i).locator("td").nth(0).inner_text(): totals.nth(i).locator("td") for i in range(totals.count())
        }
        videos = sum(int(shown[dag].nth(1).inner_text()) for dag in (ALLOWED, HIDDEN))
        seconds = sum(float(shown[dag].nth(2).inner_text()) for dag in (ALLOWED, HIDDEN))
        assert (videos, seconds) == (ledger["videos"], ledger["video_seconds"])
        frame.locator("#in-flight").get_by_text("No generation in flight").wait_for()
        page.screenshot(path=str(screenshots / "ui-kling-page.png"), full_page=True)
        frame.locator("select[name=dag_id]").select_option(HIDDEN)
        frame.wait_for_function(
            f"() => [...document.querySelectorAll('.card')].every(c => c.innerText.includes('{HIDDEN}'))"
        )
        no_script_ran(page, frame, dialogs)


def test_a_take_in_flight_shows_its_state_and_how_long_for_those_who_may_read_it(
    fab: FabApiServer, takes: dict[str, Any], kling_simulator_server: Any, tmp_path: Path
):
    from airflow_provider_kling.testing import Scenario
    from airflow_provider_kling.ui.takes import IN_FLIGHT_STATES

    sim = kling_simulator_server
    sim.reset()
    sim.script(Scenario(queue_seconds=300, run_seconds=1))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / DAG_FILE.name).write_text(DAG_FILE.read_text())
    env = {**os.environ, **takes["env"], "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    with (tmp_path / "run.log").open("wb") as out:
        process = subprocess.Popen(
            [AIRFLOW, "dags", "test", "kling_ui_in_flight"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        def waiting() -> dict[str, Any] | None:
            found = fab.get("alice", "/kling/api/in-flight").json()["takes"]
            return next((t for t in found if t["dag_id"] == "kling_ui_in_flight" and t.get("request_id")), None)

        take = wait_until("the take to be in flight", waiting, 120)
        assert take["state"] in IN_FLIGHT_STATES  # dags test shows a deferred task as queued while its trigger runs
        assert take["prompt"] == "a paper boat on a rainy street"
        assert fab.get("bob", "/kling/api/in-flight").json()["takes"] == []  # not his DAG
        later = wait_until("time to pass", lambda: (t := waiting()) and t["elapsed_s"] > take["elapsed_s"] and t, 30)
        assert later["elapsed_s"] > take["elapsed_s"]
        filtered = fab.get("alice", "/kling/api/takes?state=in_flight").json()["takes"]
        assert [t["dag_id"] for t in filtered] == ["kling_ui_in_flight"]
    finally:
        os.killpg(process.pid, 9)
        process.wait()
        sim.reset()

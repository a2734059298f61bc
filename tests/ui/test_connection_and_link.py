"""What a user meets first, seen in a real browser: the ``kling`` connection form and its Test
button, and the "Kling video" link on a finished task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.constants import DEFAULT_BASE_URL
from tests.conftest import TOKEN, xcoms
from tests.ui.conftest import UI_TEST

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Page

    from tests.ui.conftest import ApiServer

pytestmark = UI_TEST


def airflow_version() -> tuple[int, ...]:
    from airflow import __version__

    return tuple(int(part) for part in __version__.split(".")[:3] if part.isdigit())


def open_add_connection(page: Page, api_server: ApiServer) -> Any:
    page.goto(f"{api_server.url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("kling")
    page.get_by_role("option", name="Kling (RunComfy)").click()
    dialog.locator("input[name=host]").wait_for()
    return dialog


def add_connection(api_server: ApiServer, conn_id: str, **fields: Any) -> None:
    api_server.http.delete(f"{api_server.url}/api/v2/connections/{conn_id}", timeout=30)
    answer = api_server.http.post(
        f"{api_server.url}/api/v2/connections",
        json={"connection_id": conn_id, "conn_type": "kling", **fields},
        timeout=30,
    )
    answer.raise_for_status()


def test_the_form_of_a_kling_connection(api_server: ApiServer, sim, page: Page, screenshots: Path):
    dialog = open_add_connection(page, api_server)
    text = dialog.inner_text()
    assert "API base URL" in text
    assert "API token" in text
    assert "Host" not in text
    assert "Password" not in text
    host = dialog.locator("input[name=host]")
    token = dialog.locator("input[name=password]")
    assert host.get_attribute("placeholder") == DEFAULT_BASE_URL  # blank means RunComfy itself
    assert token.get_attribute("placeholder") == "RunComfy API token"
    assert token.get_attribute("type") == "password"  # masked as it is typed
    for unused in ("login", "schema", "port"):
        assert dialog.locator(f"input[name={unused}]").count() == 0, f"{unused} should be hidden"
    page.screenshot(path=str(screenshots / "connection-form.png"))

    dialog.locator("input[name=connection_id]").fill("kling_from_the_form")
    host.fill(sim.url)
    token.fill(TOKEN)
    dialog.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has_text="kling_from_the_form")
    row.wait_for()
    assert sim.url in row.inner_text()
    stored = api_server.get("/connections/kling_from_the_form")
    assert stored["conn_type"] == "kling"
    assert stored["host"] == sim.url
    assert TOKEN not in str(stored)  # the API shows the token masked


def test_the_test_button_says_healthy_and_names_a_refused_token(
    api_server: ApiServer, sim, page: Page, screenshots: Path
):
    # Host and port apart: Airflow 3.3.2's Test button refuses a connection without a port (below).
    add_connection(api_server, "kling_healthy", host="http://127.0.0.1", port=sim.port, password=TOKEN)
    add_connection(api_server, "kling_refused", host="http://127.0.0.1", port=sim.port, password="not-the-token")
    page.goto(f"{api_server.url}/connections")

    page.get_by_role("row").filter(has_text="kling_healthy").get_by_role("button", name="Test Connection").click()
    healthy = page.get_by_text(f"Connected to http://127.0.0.1:{sim.port}; the token is accepted")
    healthy.wait_for()
    page.wait_for_timeout(800)  # the toast slides in: let the picture show it whole
    page.screenshot(path=str(screenshots / "connection-test-healthy.png"))

    page.goto(f"{api_server.url}/connections")
    page.get_by_role("row").filter(has_text="kling_refused").get_by_role("button", name="Test Connection").click()
    refused = page.get_by_text("The API token was refused")
    refused.wait_for()
    page.wait_for_timeout(800)
    assert "not-the-token" not in page.content()  # the message names the problem, not the secret
    page.screenshot(path=str(screenshots / "connection-test-refused.png"))


class PortZeroRefused(AssertionError):
    """Airflow's UI sent port 0 for a connection with no port, and its API refused the test with 400."""


@pytest.mark.xfail(
    airflow_version() <= (3, 3, 2),
    strict=True,
    raises=PortZeroRefused,
    reason="Airflow 3.3.2's UI sends port 0 for a connection with no port, and its API refuses the test "
    "(400 Bad Request); fixed upstream by apache/airflow#73298",
)
def test_the_test_button_on_a_connection_without_a_port(api_server: ApiServer, sim, page: Page):
    add_connection(api_server, "kling_no_port", host=sim.url, password=TOKEN)
    page.goto(f"{api_server.url}/connections")
    button = page.get_by_role("row").filter(has_text="kling_no_port").get_by_role("button", name="Test Connection")
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as tested:
        button.click()
    answer = tested.value
    sent = answer.request.post_data_json or {}
    if answer.status == 400 and sent.get("port") == 0:
        raise PortZeroRefused(f"the UI sent port 0 and the API answered 400: {answer.text()[:200]}")
    assert answer.status == 200, answer.text()[:300]
    page.get_by_text("the token is accepted").wait_for(timeout=10_000)


def test_the_kling_video_link_opens_the_video(api_server: ApiServer, start_dag, sim, page: Page, screenshots: Path):
    from airflow.models.dagrun import DagRun

    start_dag("kling_text_to_video").finish()
    (dag_run,) = DagRun.find(dag_id="kling_text_to_video")[-1:]
    video_url = xcoms(dag_run)[("generate", "result")]["video_url"]
    ti = {"dag_id": "kling_text_to_video", "dag_run_id": dag_run.run_id, "task_id": "generate"}

    page.goto(api_server.page_of(ti, "details"))
    link = page.get_by_role("link", name="Kling video")
    link.wait_for()
    assert link.get_attribute("href") == video_url
    page.screenshot(path=str(screenshots / "kling-video-link.png"))
    answers: list[tuple[str, int]] = []
    page.context.on("response", lambda response: answers.append((response.url, response.status)))
    with page.context.expect_page() as opened:
        link.click()  # opens in a new tab
    video = opened.value
    video.wait_for_load_state()
    assert video.url == video_url
    assert (video_url, 200) in answers  # the browser got the video from the simulator

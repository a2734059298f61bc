"""The ``kling`` command line, against the simulator over HTTP, with the token from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_kling.cli import ENV_CONN_ID, main
from airflow_provider_kling.testing import Scenario
from tests.conftest import TOKEN

FAST = ["--poll-interval", "0.05"]


@pytest.fixture
def env_token(sim, monkeypatch):
    """The token and base URL in the environment, as a user outside Airflow would set them."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", TOKEN)
    monkeypatch.setenv("RUNCOMFY_BASE_URL", sim.url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{ENV_CONN_ID.upper()}", "")  # restored (removed) after the test
    return sim


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_console_script_submits_waits_and_downloads(env_token, tmp_path):
    """The installed ``kling`` command, run as a user runs it: JSON on stdout, progress on stderr."""
    kling = str(Path(sys.executable).parent / "kling")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home")}
    submitted = subprocess.run(
        [kling, "--json", "submit", "--prompt", "a red kite over a hill", "--wait", *FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    assert result["status"] == "succeeded"
    assert "in_queue" in submitted.stderr  # the progress display named the states it saw
    dest = tmp_path / "kite.mp4"
    downloaded = subprocess.run(
        [kling, "--json", "download", result["request_id"], str(dest)], capture_output=True, text=True, env=env
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert json.loads(downloaded.stdout)["size_bytes"] == len(env_token.video)
    assert dest.read_bytes() == env_token.video
    assert TOKEN not in submitted.stdout + submitted.stderr + downloaded.stdout + downloaded.stderr
    assert env_token.calls["submit"] == 1


def test_status_result_and_cancel_of_a_queued_request(env_token, capsys):
    env_token.script(Scenario(queue_seconds=30, queue_position=4))
    code, out, _ = run(capsys, "submit", "--prompt", "a paper boat")
    assert code == 0
    request_id = out.split("request_id: ")[1].split()[0]

    code, out, _ = run(capsys, "--json", "status", request_id)
    assert (code, json.loads(out)["status"], json.loads(out)["queue_position"]) == (0, "in_queue", 4)

    code, out, _ = run(capsys, "--json", "cancel", request_id)
    assert (code, json.loads(out)["outcome"]) == (0, "cancelled")

    code, out, _ = run(capsys, "--json", "result", request_id)
    assert (code, json.loads(out)["status"]) == (1, "cancelled")  # not a video: the exit code says so


def test_a_failed_generation_exits_1_with_the_reason(env_token, capsys):
    env_token.script(Scenario(outcome="failed", error="content policy"))
    code, out, _ = run(capsys, "submit", "--prompt", "x", "--wait", *FAST)
    assert code == 1
    assert "status: failed" in out
    assert "content policy" in out


def test_bad_input_names_the_field_and_sends_nothing(env_token, capsys):
    code, _, err = run(capsys, "submit", "--prompt", "x", "--duration", "7")
    assert code == 1
    assert "duration" in err
    assert "5 or 10" in err
    assert env_token.calls["submit"] == 0


def test_an_unknown_request_is_a_clear_error(env_token, capsys):
    code, out, err = run(capsys, "status", "no-such-request")
    assert (code, out) == (1, "")
    assert "not found" in err
    assert "404" in err


def test_a_refused_token_is_reported_without_echoing_it(env_token, capsys, monkeypatch):
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "wrong-token-4d2a")
    code, out, err = run(capsys, "status", "anything")
    assert code == 1
    assert "401" in err
    assert "wrong-token-4d2a" not in out + err


def test_an_airflow_connection_is_used_without_the_environment_token(sim, capsys, monkeypatch):
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MY_KLING", sim.connection_json())
    code, out, _ = run(capsys, "--conn-id", "my_kling", "--json", "submit", "--prompt", "a kite", "--wait", *FAST)
    assert (code, json.loads(out)["status"]) == (0, "succeeded")
    assert sim.calls["submit"] == 1


def test_input_goes_over_the_flags_as_the_operators_input_does(env_token, capsys):
    code, out, _ = run(
        capsys, "--json", "submit", "--prompt", "a kite", "--duration", "5", "--input", '{"duration": 10}'
    )
    assert code == 0
    assert env_token.requests[json.loads(out)["request_id"]].input["duration"] == 10


def test_input_that_is_not_an_object_is_refused_before_any_request(env_token, capsys):
    code, _, err = run(capsys, "submit", "--prompt", "a kite", "--input", "[1, 2]")
    assert code == 1
    assert "input: must be a mapping" in err
    assert env_token.calls["submit"] == 0

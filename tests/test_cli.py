"""The ``kling`` command line, against the simulator over HTTP, with the token from the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_kling.cli import main
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Fault, Scenario
from tests.conftest import TOKEN

FAST = ["--poll-interval", "0.05"]


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


STATUS_WITHOUT_AIRFLOW = """
import sys
from airflow_provider_kling.cli import main
code = main(["status", sys.argv[1]])
loaded = sorted(name for name in sys.modules if name == "airflow" or name.startswith("airflow."))
print("AIRFLOW MODULES:", loaded, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("answer", ["found", "not found"])
def test_status_with_the_token_from_the_environment_loads_no_airflow(env_token, answer):
    """Airflow alone takes seconds to import: a status from a shell should not wait for it, even to fail."""
    rid = "no-such-request"
    if answer == "found":
        env_token.script(Scenario(queue_seconds=30))
        with KlingHook() as hook:
            rid = hook.submit({"prompt": "a paper boat"}).request_id
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    done = subprocess.run(
        [sys.executable, "-c", STATUS_WITHOUT_AIRFLOW, rid], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == (0 if answer == "found" else 1), done.stderr
    assert "AIRFLOW MODULES: []" in done.stderr
    assert ("status: in_queue" in done.stdout) is (answer == "found")
    assert ("not found" in done.stderr) is (answer == "not found")  # the typed error, without Airflow's base


def test_an_airflow_connection_is_used_without_the_environment_token(sim, capsys, monkeypatch):
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MY_KLING", sim.connection_json())
    # The default connection holds a token the simulator refuses: only my_kling's can succeed.
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(token="not-the-token"))
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


def _interrupt_while_waiting(sim, tmp_path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kling`` as a user does, and press Ctrl-C once it is waiting on a request."""
    kling = str(Path(sys.executable).parent / "kling")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [kling, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # As a shell starts it: Ctrl-C's default action, whatever this test process was left with
        # (a child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt).
        preexec_fn=_sigint_as_a_shell_leaves_it,
    )
    deadline = time.monotonic() + 60
    while not (sim.calls["status"] + sim.calls["result"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # the first poll has been answered: it is waiting
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"kling went on 60 s after Ctrl-C (SIGINT here: {signal.getsignal(signal.SIGINT)})\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _sigint_as_a_shell_leaves_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_waiting_cancels_the_queued_request_it_submitted(env_token, tmp_path):
    env_token.script(Scenario(queue_seconds=120))
    done = _interrupt_while_waiting(env_token, tmp_path, "submit", "--prompt", "a kite", "--wait", *FAST)
    (request,) = env_token.requests.values()
    assert done.returncode == 130
    assert request.cancelled_at is not None
    assert (
        f"cancelled Kling request {request.request_id} while it was still queued; it will not be billed" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_ctrl_c_on_a_running_request_says_it_is_billed_and_how_to_check(env_token, tmp_path):
    env_token.script(Scenario(queue_seconds=0, run_seconds=120))
    done = _interrupt_while_waiting(env_token, tmp_path, "submit", "--prompt", "a kite", "--wait", *FAST)
    (request,) = env_token.requests.values()
    rid = request.request_id
    assert done.returncode == 130
    assert request.cancelled_at is None
    assert f"Kling request {rid} is already running (not_cancellable): it goes on and will be billed" in done.stderr
    assert f"kling status {rid}" in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_watching_someone_elses_request_leaves_it_alone(env_token, tmp_path):
    env_token.script(Scenario(queue_seconds=120))
    with KlingHook() as hook:
        rid = hook.submit({"prompt": "a kite"}).request_id
    done = _interrupt_while_waiting(env_token, tmp_path, "result", rid, "--wait", *FAST)
    assert done.returncode == 130
    assert env_token.requests[rid].cancelled_at is None
    assert env_token.calls["cancel"] == 0
    assert f"`kling cancel {rid}` cancels it while it is queued" in done.stderr


def test_a_gzip_encoded_video_is_downloaded_as_the_original_bytes(env_token, capsys, tmp_path):
    env_token.script(Scenario(queue_seconds=0, run_seconds=0))
    code, out, _ = run(capsys, "--json", "submit", "--prompt", "a kite")
    env_token.inject("video", Fault("gzip"))
    dest = tmp_path / "kite.mp4"
    code, out, err = run(capsys, "--json", "download", json.loads(out)["request_id"], str(dest))
    assert code == 0, err
    assert dest.read_bytes() == env_token.video
    assert json.loads(out)["size_bytes"] == len(env_token.video)


def test_help_says_an_explicit_conn_id_wins_over_the_environment(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "ignored when" not in help_text
    assert "without it, RUNCOMFY_API_TOKEN (and RUNCOMFY_BASE_URL) when set, else kling_default" in help_text


def test_waiting_rides_out_an_api_outage(env_token, capsys, caplog):
    from airflow_provider_kling.constants import MAX_ATTEMPTS

    env_token.script(Scenario(queue_seconds=0.2, run_seconds=0.2))
    env_token.inject("status", *[Fault("status", status_code=503)] * MAX_ATTEMPTS)  # one poll, every attempt
    code, out, err = run(capsys, "submit", "--prompt", "a paper boat", "--wait", *FAST)
    assert code == 0, err
    assert "succeeded" in out
    assert "Could not poll Kling request" in caplog.text  # a warning on stderr, outside pytest
    assert env_token.calls["submit"] == 1

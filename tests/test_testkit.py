from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_the_documented_testkit_example_passes_with_the_installed_plugin():
    """A user's suite gets ``kling_simulator`` from the package's pytest11 entry point alone."""
    example = REPO / "docs" / "examples" / "testkit"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
        capture_output=True,
        text=True,
        cwd=example,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout


UNUSED_FAULT_TEST = """
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.testing import Fault


def test_a_fault_that_never_fires(kling_simulator):
    kling_simulator.inject("cancel", Fault("status", status_code=503))
    with KlingHook() as hook:
        hook.submit({"prompt": "a kite"})  # no cancel: the fault is never met
"""


def test_a_fault_no_call_met_fails_the_test_naming_it(tmp_path):
    """A test of a fault that never fired shows nothing about it: the kit's fixture fails it, saying which."""
    (tmp_path / "test_unused.py").write_text(UNUSED_FAULT_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=170,
    )
    assert run.returncode == 1, run.stdout[-3000:]
    assert re.search(r"1 passed(, \d+ warnings?)?, 1 error", run.stdout), run.stdout[-1000:]
    assert "Faults injected that no call met" in run.stdout
    assert "cancel: Fault(kind='status', status_code=503" in run.stdout

from __future__ import annotations

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

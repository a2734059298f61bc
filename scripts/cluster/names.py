"""``[core] hostname_callable`` for ``make cluster``: each component names itself, so the run can tell
which triggerer holds which trigger and which worker ran which task, on one machine."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("KLING_CLUSTER_NAME") or socket.getfqdn()

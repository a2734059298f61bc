"""Named defaults for talking to RunComfy, kept in one place so they are tuned, not scattered."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
DEFAULT_CONN_ID = "kling_default"
CONN_TYPE = "kling"
KLING_TEXT_TO_VIDEO_MODEL = "kling/kling-1-6/pro/text-to-video"
#: The longest prompt (and negative prompt) Kling 1.6 takes, in characters.
PROMPT_MAX_CHARS = 2500

#: The connection form: the fields a ``kling`` connection does not use, and what the others mean.
#: Newer Airflow 3 reads it from the provider info, older Airflow from the hook's method.
#: The extra stays: it holds the account's budgets (``budgets``, ``budget_store``).
CONNECTION_HIDDEN_FIELDS = ["schema", "login", "port"]
CONNECTION_RELABELING = {"host": "API base URL", "password": "API token"}
CONNECTION_PLACEHOLDERS = {
    "host": DEFAULT_BASE_URL,
    "password": "RunComfy API token",
    "extra": '{"budgets": {"team": {"videos": 100, "period": "day"}}, "budget_store": "kling_budget_db"}',
}

#: The cap on a downloaded or copied video: far above what Kling produces, low enough to stop a runaway.
MAX_VIDEO_BYTES = 500 * 1024 * 1024

#: Seconds to open a TCP connection, and to wait for an answer once the request is sent.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0

#: Retries of the idempotent calls (status, result, cancel): attempts in all, and backoff bounds.
MAX_ATTEMPTS = 5
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 30.0
#: A server's ``Retry-After`` is honoured up to this many seconds.
MAX_RETRY_AFTER = 60.0

#: RunComfy's own clients poll about every 5 s and allow long Kling tails (about an hour).
DEFAULT_POLL_INTERVAL = 5.0
#: Longest wait between polls while a request is far back in the queue (adaptive polling).
DEFAULT_MAX_POLL_INTERVAL = 30.0
DEFAULT_TIMEOUT = 3600.0


def default_deferrable() -> bool:
    """``[operators] default_deferrable``: whether a task of this provider waits in the triggerer unless told."""
    from airflow.providers.common.compat.sdk import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))

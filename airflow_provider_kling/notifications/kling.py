"""Tell people a video is ready: to the task log by default, Slack or email when configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from airflow.providers.common.compat.sdk import BaseNotifier

from airflow_provider_kling.untrusted import html_text, slack_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

log = logging.getLogger(__name__)
#: The longest text of one Slack section block.
SLACK_TEXT_MAX_CHARS = 3000


class KlingLogNotifier(BaseNotifier):
    """
    Write the (templated) message to the task log: the notifier that needs no connection.

    :param message: what to say. Templated.
    """

    template_fields: Sequence[str] = ("message",)

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def notify(self, context: Context) -> None:
        self.log.info("%s", self.message)


def connection_exists(conn_id: str) -> bool:
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - any lookup failure means "not configured"
        return False
    return True


def video_notifier(
    message: str, *, slack_conn_id: str = "slack_api_default", smtp_conn_id: str = "smtp_default", to: str = ""
) -> BaseNotifier:
    """
    The notifier for ``message``: Slack when its provider and connection exist, else email when an
    SMTP connection and a recipient exist, else :class:`KlingLogNotifier`. Call at task run time.

    ``message`` is plain text, and shows literally everywhere: it quotes prompts and values from
    RunComfy, so a link, a mention, HTML or emphasis in them never becomes markup (Slack gets it
    as a plain-text block with an escaped fallback, email as escaped HTML).
    """
    if connection_exists(slack_conn_id):
        try:
            from airflow.providers.slack.notifications.slack import (  # type: ignore[import-not-found,unused-ignore]
                SlackNotifier,
            )
        except ImportError:
            log.info("Connection %s exists but the Slack provider is not installed", slack_conn_id)
        else:
            plain = [{"type": "section", "text": {"type": "plain_text", "text": message[:SLACK_TEXT_MAX_CHARS]}}]
            return cast(
                "BaseNotifier", SlackNotifier(slack_conn_id=slack_conn_id, text=slack_text(message), blocks=plain)
            )
    if to and connection_exists(smtp_conn_id):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=to, subject="Kling video ready", html_content=html_text(message), smtp_conn_id=smtp_conn_id
        )
    return KlingLogNotifier(message)

"""Tell people a video is ready: to the task log by default, Slack or email when configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from airflow.providers.common.compat.sdk import BaseNotifier

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

log = logging.getLogger(__name__)


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
    """
    if connection_exists(slack_conn_id):
        try:
            from airflow.providers.slack.notifications.slack import (  # type: ignore[import-not-found,unused-ignore]
                SlackNotifier,
            )
        except ImportError:
            log.info("Connection %s exists but the Slack provider is not installed", slack_conn_id)
        else:
            return cast("BaseNotifier", SlackNotifier(slack_conn_id=slack_conn_id, text=message))
    if to and connection_exists(smtp_conn_id):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(to=to, subject="Kling video ready", html_content=message, smtp_conn_id=smtp_conn_id)
    return KlingLogNotifier(message)

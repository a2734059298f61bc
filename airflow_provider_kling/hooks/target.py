"""Where RunComfy is and how to authenticate: the ``kling`` connection read into an :class:`ApiTarget`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from airflow_provider_kling import __version__
from airflow_provider_kling.constants import DEFAULT_BASE_URL
from airflow_provider_kling.exceptions import KlingAuthenticationError, KlingInputError
from airflow_provider_kling.untrusted import register_secret

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

#: Who calls, for RunComfy's logs: the provider, then the HTTP library (``requests`` on a worker
#: and in the ``kling`` command, ``aiohttp`` in the triggerer), which the session adds.
USER_AGENT = f"airflow-provider-kling/{__version__}"


@dataclass(frozen=True)
class ApiTarget:
    """Where the API is and how to authenticate; the token is left out of ``repr``."""

    base_url: str
    token: str = field(repr=False)

    @cached_property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def api_target(conn: Connection, conn_id: str) -> ApiTarget:
    """
    Read a ``kling`` connection: ``host`` is the base URL (blank for RunComfy's), ``password`` the token.

    A host without a scheme gets ``https://`` (or the connection's ``schema`` if it is ``http``),
    and the connection's ``port`` when it has one, so the URI form ``kling://:TOKEN@HOST:PORT`` works.
    """
    token = (conn.password or "").strip()
    register_secret(token)  # from here on no error, excerpt or printed answer can quote it
    if not token:
        raise KlingAuthenticationError(
            f"Connection {conn_id!r} has no API token: put your RunComfy token in its password field"
        )
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        return ApiTarget(DEFAULT_BASE_URL, token)
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KlingInputError(f"Connection {conn_id!r}: host must be an http(s) URL, got {host!r}")
    if conn.port and parts.port is None:
        host = f"{parts.scheme}://{parts.netloc}:{conn.port}{parts.path}"
    return ApiTarget(host, token)


def request_path(request_id: str, action: str) -> str:
    """The path of a request's ``status``, ``result`` or ``cancel`` call."""
    if not isinstance(request_id, str) or not request_id.strip():
        raise KlingInputError(f"request_id: must be a non-empty string, got {request_id!r}")
    return f"/v1/requests/{quote(request_id, safe='')}/{action}"


def model_path(model: str) -> str:
    """The path a model's generations are submitted to."""
    return "/v1/models/" + quote(model.strip("/"), safe="/")

"""
Airflow's API server under the FAB auth manager, over the tests' database, with two users: alice
(Admin) and bob, whose role reads one DAG only. What a platform team runs, for the UI plugin's
per-DAG access; the auth manager's own checks decide, as they would for Keycloak or any other.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from tests.conftest import AIRFLOW, free_port
from tests.ui.conftest import running_api_server

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: The role of a user who may read one DAG: the DAG itself and what its pages read.
ONE_DAG_RESOURCES = ("Task Instances", "DAG Runs", "XComs", "Website")
PASSWORDS = {"alice": "alice-pw-kling", "bob": "bob-pw-kling"}


@dataclass
class FabApiServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        """A JWT for ``user`` from the auth manager's own ``/auth/token``: what the UI's sign-in sets as ``_token``."""
        if user not in self.tokens:
            answer = requests.post(
                f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
            )
            answer.raise_for_status()
            self.tokens[user] = answer.json()["access_token"]
        return self.tokens[user]

    def session(self, user: str | None) -> requests.Session:
        """A session as the UI's page has it: the ``_token`` cookie of ``user``, or none for anonymous."""
        http = requests.Session()
        if user is not None:
            http.cookies.set("_token", self.token(user), domain="127.0.0.1", path="/")
        return http

    def get(self, user: str | None, path: str, **kwargs: Any) -> requests.Response:
        return self.session(user).get(f"{self.url}{path}", timeout=60, allow_redirects=False, **kwargs)


def _airflow(env: Mapping[str, str], *args: str) -> None:
    done = subprocess.run([AIRFLOW, *args], env=dict(env), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def start_fab_api_server(env: Mapping[str, str], log: Path, allowed_dag: str) -> Iterator[FabApiServer]:
    """Set up FAB's tables, users and roles on the tests' database, start the server, stop it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **env,
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": "kling-ui-tests-jwt-secret-long-enough-for-hs512-0123456789abcdef",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
    }
    _airflow(env, "fab-db", "migrate")
    _airflow(env, "sync-perm", "--include-dags")
    _airflow(env, "users", "create", "-u", "alice", "-p", PASSWORDS["alice"], "-r", "Admin", "-e", "alice@example.com",
             "-f", "Alice", "-l", "Admin")  # fmt: skip
    _airflow(env, "roles", "create", "KlingOneDag")
    _airflow(env, "roles", "add-perms", "KlingOneDag", "-r", f"DAG:{allowed_dag}", *ONE_DAG_RESOURCES, "-a", "can_read")
    _airflow(env, "users", "create", "-u", "bob", "-p", PASSWORDS["bob"], "-r", "KlingOneDag", "-e", "bob@example.com",
             "-f", "Bob", "-l", "OneDag")  # fmt: skip
    with running_api_server(env, port, log) as process:
        yield FabApiServer(url, process, log)

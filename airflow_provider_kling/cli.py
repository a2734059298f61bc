"""
``kling``: the provider's calls from a shell, for the moments outside a DAG.

    kling submit --prompt "A red kite over a hill" --wait
    kling status REQUEST_ID
    kling result REQUEST_ID --json
    kling cancel REQUEST_ID
    kling download REQUEST_ID ./kite.mp4
    kling submit --prompt "A red kite over a hill" --wait --download ./kite.mp4

Credentials come from ``RUNCOMFY_API_TOKEN`` (and ``RUNCOMFY_BASE_URL``, for another endpoint)
when set, else from an Airflow connection (``--conn-id``, default ``kling_default``); an explicit
``--conn-id`` wins. With the token from the environment, the command does not load Airflow at all
(a status answers in a fraction of a second). The token is never printed. Ctrl-C while
``submit --wait`` waits cancels the request it submitted if it is still queued (free), or says that
it runs and will be billed.
Exit codes: 0 done, 1 a Kling error or an unsuccessful generation, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.commands import (
    BASE_URL_ENV,
    COMMANDS,
    EXIT_INTERRUPTED,
    TOKEN_ENV,
    Interrupted,
    after_interrupt,
)
from airflow_provider_kling.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    KLING_TEXT_TO_VIDEO_MODEL,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow_provider_kling.hooks.client import KlingClient


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kling", description="Kling video generation through RunComfy's Model API.")
    parser.add_argument(
        "--conn-id",
        help=(
            f"Airflow connection to use; without it, {TOKEN_ENV} (and {BASE_URL_ENV}) when set, else {DEFAULT_CONN_ID}"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a generation (billed) and print its request id")
    submit.add_argument("--prompt", help="what the video shows (Kling 1.6 text to video)")
    submit.add_argument("--duration", type=int, help="seconds of video: 5 or 10")
    submit.add_argument("--aspect-ratio", help="16:9, 9:16 or 1:1")
    submit.add_argument("--negative-prompt", help="what the video should not show")
    submit.add_argument("--cfg-scale", type=float, help="prompt adherence, 0 to 1")
    submit.add_argument("--model", default=KLING_TEXT_TO_VIDEO_MODEL, help="RunComfy model path")
    submit.add_argument("--input", dest="input_json", help="the whole input as a JSON object (for other models)")
    submit.add_argument(
        "--image", help="the first frame, for image-to-video models: an https URL or an object-store URI (s3://...)"
    )
    submit.add_argument("--end-image", help="the last frame, for models that take one (kling models says which)")
    submit.add_argument("--image-conn-id", help="the Airflow connection of the images' object store (signs them)")
    submit.add_argument("--budget", help="the budget of the connection to spend from (checked before paying)")
    submit.add_argument(
        "--download",
        metavar="DESTINATION",
        help="with --wait: save the video here (a path or a URI), checked before paying that it can land",
    )
    submit.add_argument("--overwrite", action="store_true", help="with --download: replace an existing file")
    _add_wait_options(
        submit, "wait for the generation to finish and print its result; Ctrl-C cancels it while it is queued"
    )

    for name, text in (("status", "print a request's state"), ("cancel", "cancel a queued request (free)")):
        commands.add_parser(name, help=text).add_argument("request_id")

    result = commands.add_parser("result", help="print a request's result (video URL, error)")
    result.add_argument("request_id")
    result.add_argument("--cost", action="store_true", help="include what the request cost")
    result.add_argument(
        "--facts",
        action="store_true",
        help="fetch the video, check it and print its facts (duration, resolution, codec, audio); nothing is kept",
    )
    _add_wait_options(result, "wait for the request to finish first")

    commands.add_parser("budget", help="show each budget of the connection: cap, spent, reserved, period")
    commands.add_parser("models", help="list the Kling models this provider knows, their inputs and their pages")

    download = commands.add_parser("download", help="save a finished request's video to a path or URI")
    download.add_argument("request_id")
    download.add_argument("destination", help="a local path, or a URI such as s3://bucket/key.mp4")
    download.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_wait_options(download, "wait for the request to finish first")
    return parser


def _add_wait_options(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--wait", action="store_true", help=text)
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait at most")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":  # the registry: no connection, no call
        _print_models(as_json=args.json)
        return 0
    if _token_from_environment(args.conn_id):
        import airflow_provider_kling

        airflow_provider_kling.standalone()  # before the provider's errors are imported: no Airflow here
    with _airflow_warnings_only():
        from airflow_provider_kling.exceptions import KlingError

        try:
            with _hook(args.conn_id) as hook:
                try:
                    answer = COMMANDS[args.command](hook, args)
                except Interrupted as stop:
                    return after_interrupt(hook, stop)
        except KlingError as err:
            print(f"kling {args.command}: {err}", file=sys.stderr)
            return 1
        except Exception as err:  # noqa: BLE001 - one line, never a traceback: what to set, or what failed
            problem, code = _problem(err, args.conn_id)
            print(f"kling {args.command}: {problem}", file=sys.stderr)
            return code
        except KeyboardInterrupt:
            print(f"kling {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    _print(answer, as_json=args.json)
    return 1 if answer.get("status") in ("failed", "cancelled") and args.command != "cancel" else 0


def _problem(err: Exception, conn_id: str | None) -> tuple[str, int]:
    """
    The one line (and exit code) for an error that is not the provider's: no credentials at all (2,
    a usage error), a destination the OS refuses, a URI whose store is not installed (1). Anything
    else is named by its type and message, still on one line.
    """
    from airflow_provider_kling.untrusted import redact

    if type(err).__name__ == "AirflowNotFoundException":  # Airflow's, so not importable without it
        conn = conn_id or DEFAULT_CONN_ID
        return (
            f"no credentials: set {TOKEN_ENV} (your RunComfy API token), or add the Airflow connection {conn!r} "
            f"(airflow connections add {conn} --conn-type kling --conn-password TOKEN)",
            2,
        )
    if isinstance(err, OSError):
        return f"{err.strerror or type(err).__name__}: {err.filename or err}", 1
    return redact(f"{type(err).__name__}: {err}"), 1


@contextmanager
def _airflow_warnings_only() -> Iterator[None]:
    """
    Keep stdout for the answer: Airflow's log lines (which Airflow 2 writes to stdout) go to
    stderr, and only its warnings and errors.
    """
    airflow_log = logging.getLogger("airflow")
    # Airflow 2 logs a traceback of its own when a connection is in no secrets backend (no database
    # yet, say): the command says in one line what to set instead.
    connections_log = logging.getLogger("airflow.models.connection")
    levels = airflow_log.level, connections_log.level
    airflow_log.setLevel(max(levels[0], logging.WARNING))
    connections_log.setLevel(logging.CRITICAL)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        airflow_log.setLevel(levels[0])
        connections_log.setLevel(levels[1])


def _token_from_environment(conn_id: str | None) -> bool:
    return bool(os.environ.get(TOKEN_ENV)) and conn_id is None


def _hook(conn_id: str | None) -> KlingClient:
    """A client on the environment's token (no Airflow), else the hook on an Airflow connection."""
    if _token_from_environment(conn_id):
        from types import SimpleNamespace

        from airflow_provider_kling.hooks.client import KlingClient
        from airflow_provider_kling.hooks.target import api_target

        env = os.environ
        conn: Any = SimpleNamespace(password=env[TOKEN_ENV], host=env.get(BASE_URL_ENV, ""), schema="", port=None)
        return KlingClient(api_target(conn, TOKEN_ENV), log=logging.getLogger("airflow_provider_kling.cli"))
    from airflow_provider_kling.hooks.kling import KlingHook

    return KlingHook(conn_id or DEFAULT_CONN_ID)


def _print(answer: dict[str, Any], *, as_json: bool) -> None:
    from airflow_provider_kling.untrusted import redact_data

    answer = redact_data(answer)  # an answer that quotes the token never prints it
    if as_json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return
    for key, value in answer.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"{key}: {shown}")


def _print_models(*, as_json: bool) -> None:
    from airflow_provider_kling.family import FAMILY, describe

    models = [describe(model) for model in FAMILY.values()]
    if as_json:
        print(json.dumps({"models": models}, indent=2))
        return
    for model in models:
        inputs = ", ".join(f"{argument}->{field}" for argument, field in model["inputs"].items()) or "prompt"
        sound = {True: "sound"}.get(model["audio"], "")
        print(f"{model['model']:<44} {model['kind']:<15} {inputs:<48} {sound}".rstrip())


if __name__ == "__main__":
    sys.exit(main())

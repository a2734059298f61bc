"""
An S3 API on loopback, for tests and the demo: moto's server (``moto[server]``, a test tool, not a
dependency of the provider) in a thread of this process, with the one check of real S3 that moto
leaves out: a presigned URL past its expiry is refused (``403 AccessDenied``, "Request has
expired"). Images put in it are signed by Airflow's own S3 filesystem (the Amazon provider, on
s3fs) through the connection :meth:`S3Server.connection_json` describes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

#: moto accepts any credentials; these name the test account.
ACCESS_KEY = "kling-test-key"
SECRET_KEY = "kling-test-secret"
REGION = "us-east-1"
EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


def _expired(query: str, now: float) -> bool:
    """Whether a presigned URL's query (SigV4 ``X-Amz-Date`` + ``X-Amz-Expires``, or SigV2 ``Expires``) has expired."""
    params = {key: values[0] for key, values in parse_qs(query).items()}
    if "X-Amz-Date" in params and "X-Amz-Expires" in params:
        signed = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        return now > signed.timestamp() + int(params["X-Amz-Expires"])
    if "Expires" in params and "Signature" in params:
        return now > int(params["Expires"])
    return False


def _refusing_expired(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _expired(environ.get("QUERY_STRING", ""), time.time()):
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [EXPIRED]
        return app(environ, start_response)

    return guarded


class S3Server:
    """S3 on ``127.0.0.1``, on a free port, until :meth:`stop`; a context manager."""

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        # Each request line quotes its URL, a signed URL included: not for any log.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = _refusing_expired(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def connection_json(self) -> str:
        """An Airflow ``aws`` connection to this server, signing with SigV4 (what real S3 requires)."""
        extra = {"endpoint_url": self.endpoint, "region_name": REGION, "config_kwargs": {"signature_version": "s3v4"}}
        return json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra})

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]  # comes with moto and the Amazon provider

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "image/png") -> str:
        """Store ``data`` at ``s3://bucket/key`` (the bucket made if new); the URI."""
        client = self.client()
        if bucket not in {found["Name"] for found in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return f"s3://{bucket}/{key}"


def main(argv: list[str] | None = None) -> None:
    """``python -m airflow_provider_kling.testing.s3 --url-file F --sample s3://b/k.png``: serve until stopped."""
    import argparse

    from airflow_provider_kling.testing.media import sample_image

    parser = argparse.ArgumentParser(description="An S3 API on 127.0.0.1 (moto's server), for tests and the demo.")
    parser.add_argument("--url-file", required=True, help="where to write the endpoint once it serves")
    parser.add_argument("--sample", action="append", default=[], help="an s3:// URI to put a sample PNG at")
    args = parser.parse_args(argv)
    with S3Server() as server:
        for uri in args.sample:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            server.put(bucket, key, sample_image())
        with open(args.url_file, "w") as found:
            found.write(server.endpoint)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()  # until SIGTERM (or Ctrl-C)


if __name__ == "__main__":
    main()

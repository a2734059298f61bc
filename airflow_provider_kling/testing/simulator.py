"""
A RunComfy Model API simulator: a real HTTP server (aiohttp) on loopback.

It answers the four documented calls with the documented bodies (both status sets,
``queue_position`` while queued, error bodies with ``error_code``/``error_message``, 202 on
cancel with ``outcome``), follows a timeline per request (queued, then running, then finished),
and serves a real MP4 behind each video URL, of the duration and aspect ratio the request asked
for (made with PyAV: :mod:`airflow_provider_kling.testing.media`).

Outcomes are scripted per request: :meth:`RunComfySimulator.script` sets the scenario of the next
submits, and a prompt containing ``[sim:fail]`` or ``[sim:cancel]`` picks one from any process, as
``[sim:queue=SECONDS]`` and ``[sim:run=SECONDS]`` set how long it stays queued and running, and
``[sim:shape=9:16]``, ``[sim:seconds=3]`` and ``[sim:media=html_page]`` what its video URL serves.
Faults (429, 5xx, a proxy's HTML error page, dropped connections, answers that are slow, never
come, are cut short or malformed, a gzip-encoded video...) are queued per call with
:meth:`RunComfySimulator.inject`. A scenario may put its video on another host, or behind a
redirect to one; what reached that host is recorded (:attr:`RunComfySimulator.media_requests`).
Control endpoints under ``/_sim/`` expose the same to other processes.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from airflow_provider_kling.testing.family_rules import RULES, fetch_images, missing
from airflow_provider_kling.testing.media import (
    SIGN_IN_PAGE,
    make_full_hd_video,
    make_video,
    make_video_from_image,
    padded_video,
    undecodable_video,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

TEXT_TO_VIDEO = "kling/kling-1-6/pro/text-to-video"
#: The family's models (with their documented rules: :mod:`.family_rules`), and two more paths it takes as they come.
KNOWN_MODELS = (*RULES, "kling/kling-1-6/standard/text-to-video", "kling/kling-2-1/pro/text-to-video")
CALLS = ("submit", "status", "result", "cancel", "video")
Outcome = Literal["succeeded", "failed", "cancelled"]
#: What a proxy in front of the API answers when the API is down: HTML, not JSON.
PROXY_ERROR_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center></body></html>"
)
#: How long a ``hang`` fault holds its answer back (the client gives up first).
HANG_SECONDS = 3600.0


def sample_video(seconds: float = 5.0, aspect_ratio: str = "16:9", *, audio: bool = False) -> bytes:
    """The MP4 served for a request of the default shape: 5 s, 16:9, H.264, silent as Kling 1.6 is."""
    return make_video(seconds, aspect_ratio, audio=audio)


def synthetic_video_chunks(size: int) -> Iterator[bytes]:
    """A real MP4 of ``size`` bytes, in chunks (the sample, padded; deterministic, so tests can hash it)."""
    return padded_video(size)


#: What a scenario's video URL serves: the video, a sign-in page (200, ``text/html``), the same page
#: labelled ``video/mp4`` (a misconfigured CDN), an MP4 with sound and no picture, or an MP4 whose
#: frames do not decode.
Media = Literal["video", "full_hd", "html_page", "html_as_mp4", "audio_only", "undecodable"]


@dataclass
class Scenario:
    """
    How one request behaves.

    :param outcome: ``succeeded``, ``failed`` (with ``error``), or ``cancelled`` server-side.
    :param queue_seconds: seconds spent ``in_queue``.
    :param run_seconds: seconds spent ``in_progress``.
    :param queue_position: position when submitted; it falls to 1 as the queue time passes.
    :param error: the failure reason reported for ``failed``.
    :param output: ``video`` (a single URL) or ``videos`` (a list) in the result's output.
    :param expire: the request is forgotten once finished: status and result answer 404001.
    :param video_host: where the video is served: ``api`` (the API's own host), ``other`` (another
        host name, as a CDN would serve it) or ``redirect`` (the API host answers with a redirect
        to the other host).
    :param video_url: the result names this as the video instead (``javascript:...``,
        ``file:///etc/passwd``...), to test what a client does with a URL that is not a video's.
    :param media: what the video URL serves (:data:`Media`).
    :param served_aspect_ratio: serve a video of this aspect ratio, whatever was asked for.
    :param served_seconds: serve a video this long, whatever was asked for.
    """

    outcome: Outcome = "succeeded"
    queue_seconds: float | None = None
    run_seconds: float | None = None
    queue_position: int = 3
    error: str = "Kling could not generate this video (simulated failure)"
    output: Literal["video", "videos"] = "video"
    expire: bool = False
    video_host: Literal["api", "other", "redirect"] = "api"
    video_url: str | None = None
    media: Media = "video"
    served_aspect_ratio: str | None = None
    served_seconds: float | None = None


@dataclass
class Fault:
    """
    A fault answered instead of (or after) the normal handling of one call.

    :param kind: ``status`` (answer ``status_code`` with ``body``), ``drop`` (close the connection
        without answering), ``delay`` (wait ``seconds``, then answer normally), ``hang`` (never
        answer: the client must give up), ``malformed`` (answer 200 with ``body`` as text),
        ``error_code`` (answer 200 with an ``error_code`` body), ``truncate`` (announce the full
        length of the normal answer, send half of it, close the connection), ``gzip`` (for
        ``video``: send it gzip-encoded whatever the client asked for), ``echo`` (answer
        ``status_code`` with an HTML page that quotes the request's line and headers, the
        ``Authorization`` header included, as some gateways' error pages do).
    :param after_create: for ``submit``: create the request first, then answer with the fault.
    :param content_type: the ``Content-Type`` of a ``status`` or ``malformed`` answer.
    """

    kind: Literal["status", "drop", "delay", "hang", "malformed", "error_code", "truncate", "gzip", "echo"]
    status_code: int = 500
    body: str = '{"error_message": "simulated server fault"}'
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after_create: bool = False
    content_type: str = "application/json"

    @classmethod
    def proxy_error(cls, status_code: int = 502, *, after_create: bool = False) -> Fault:
        """A proxy's HTML error page (``502 Bad Gateway`` by default) instead of the API's JSON."""
        return cls("status", status_code, body=PROXY_ERROR_PAGE, content_type="text/html", after_create=after_create)

    @classmethod
    def echo_request(cls, status_code: int = 400) -> Fault:
        """A gateway's error page that echoes the request back, its ``Authorization`` header included."""
        return cls("echo", status_code, content_type="text/html")


@dataclass
class SimulatedRequest:
    request_id: str
    model: str
    input: dict[str, Any]
    scenario: Scenario
    created: float
    created_at: str
    cancelled_at: float | None = None
    #: The images RunComfy's servers fetched for it, by field; its video starts from the first.
    images: dict[str, bytes] = field(default_factory=dict)
    #: The fetch of its images, which the video waits for.
    fetching: asyncio.Future[None] | None = None

    def phase(self, now: float, queue_seconds: float, run_seconds: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        age = now - self.created
        if age < queue_seconds:
            return "in_queue"
        if age < queue_seconds + run_seconds:
            return "in_progress"
        return "cancelled" if self.scenario.outcome == "cancelled" else "completed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"error_code": code, "error_message": message}, status=status)


class RunComfySimulator:
    """
    The simulator server, run in a background thread; use it as a context manager.

    :param token: the API token it accepts; ``None`` accepts any bearer token.
    :param queue_seconds: default seconds a request stays queued.
    :param run_seconds: default seconds a request runs.
    :param host: address to listen on (loopback only).
    :param port: port to listen on; 0 picks a free one.
    :param video: the bytes served as every video; by default, an MP4 of the shape each request
        asked for (:attr:`video` is the one of the default shape, 5 s at 16:9).
    :param video_size: serve a real MP4 of this many bytes instead, padded (streamed, never held in
        memory; its bytes are :func:`synthetic_video_chunks`), to test large transfers.
    """

    def __init__(
        self,
        *,
        token: str | None = "sim-token",
        queue_seconds: float = 1.0,
        run_seconds: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        video: bytes | None = None,
        video_size: int | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the simulator listens on loopback only")
        self.token = token
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.host = host
        self.port = port
        self._fixed_video = video is not None
        self.video = video if video is not None else sample_video()
        self.video_size = video_size
        self.requests: dict[str, SimulatedRequest] = {}
        self.calls: Counter[str] = Counter()
        #: Every answered call of each request, in order: ``(call, Unix time)``, the submit included.
        self.history: dict[str, list[tuple[str, float]]] = {}
        #: Each request for a video on the other host: its path and the ``Authorization`` header it carried.
        self.media_requests: list[tuple[str, str | None]] = []
        #: How each image input fetched from this machine went: ``ok``, or why it failed.
        self.image_fetches: list[str] = []
        #: While :meth:`outage` holds the API down: the calls that reached it anyway, each with
        #: when, its path and its User-Agent.
        self.dropping = False
        self.attempts_log: list[tuple[float, str, str]] = []
        #: While :meth:`rate_limit` holds: the calls answered 429.
        self.refused_while_limited = 0
        self._limited_until = 0.0
        self._retry_after: float | None = None
        self._fetches: set[asyncio.Future[None]] = set()
        #: Answered status calls, and result calls, per request id.
        self.polls: Counter[str] = Counter()
        self.result_polls: Counter[str] = Counter()
        self._scenarios: deque[Scenario] = deque()
        self._faults: dict[str, deque[Fault]] = {call: deque() for call in CALLS}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def media_url(self) -> str:
        """The same server under another host name: where a scenario's video may live (``video_host``)."""
        other = "localhost" if self.host != "localhost" else "127.0.0.1"
        return f"http://{other}:{self.port}"

    def connection_json(self, token: str | None = None, extra: dict[str, Any] | None = None) -> str:
        """The ``kling`` connection pointing here, as Airflow's JSON connection format (``extra``: budgets...)."""
        conn: dict[str, Any] = {"conn_type": "kling", "host": self.url, "password": token or self.token or "any"}
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)

    def script(self, *scenarios: Scenario) -> None:
        """Use these scenarios, in order, for the next submits (then the default one)."""
        with self._lock:
            self._scenarios.extend(scenarios)

    def inject(self, call: str, *faults: Fault) -> None:
        """Answer the next calls of ``call`` (``submit``, ``status``, ``result``, ``cancel``, ``video``) with faults."""
        if call not in CALLS:
            raise ValueError(f"call must be one of {CALLS}")
        with self._lock:
            self._faults[call].extend(faults)

    def unused_faults(self) -> list[str]:
        """The faults injected that no call has met yet, in words (``status: Fault(...)``)."""
        with self._lock:
            return [f"{call}: {fault}" for call, queue in self._faults.items() for fault in queue]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self.calls), "requests": len(self.requests)}

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self.polls.clear()
            self.result_polls.clear()
            self.media_requests.clear()
            self.image_fetches.clear()
            self.dropping = False
            self.attempts_log.clear()
            self.refused_while_limited, self._limited_until = 0, 0.0
            self.history.clear()
            self._scenarios.clear()
            for queue in self._faults.values():
                queue.clear()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> RunComfySimulator:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as err:  # noqa: BLE001 - reported to the starting thread
                errors.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=serve, name="runcomfy-simulator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=8192)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None
            self._thread = None

    def __enter__(self) -> RunComfySimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- HTTP ------------------------------------------------------------------------------

    def outage(self, down: bool) -> None:
        """
        Take the API down (``True``): every call to ``/v1/`` is accepted and its connection dropped,
        as a failing load balancer does, and counted in :attr:`attempts_while_down`; or bring it back.
        """
        self.dropping = down

    @property
    def attempts_while_down(self) -> int:
        """How many calls reached the API while :meth:`outage` held it down."""
        return len(self.attempts_log)

    def rate_limit(self, seconds: float, retry_after: float | None = 1.0) -> None:
        """For ``seconds`` from now, answer every call to ``/v1/`` with 429 (and ``Retry-After``), counting them."""
        self._limited_until, self._retry_after = time.time() + seconds, retry_after

    @web.middleware
    async def _when_down(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.dropping and request.path.startswith("/v1/"):
            with self._lock:
                self.attempts_log.append((time.time(), request.path, request.headers.get("User-Agent", "")))
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=503)  # never reaches the client: the socket is gone
        if time.time() < self._limited_until and request.path.startswith("/v1/"):
            with self._lock:
                self.refused_while_limited += 1
            headers: dict[str, str] = {} if self._retry_after is None else {"Retry-After": f"{self._retry_after:g}"}
            return web.json_response({"error_message": "Too many requests"}, status=429, headers=headers)
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[self._when_down])
        app.router.add_post("/v1/models/{model:.+}", self._submit)
        app.router.add_get("/v1/requests/{request_id}/status", self._status)
        app.router.add_get("/v1/requests/{request_id}/result", self._result)
        app.router.add_post("/v1/requests/{request_id}/cancel", self._cancel)
        app.router.add_get("/media/{request_id}/video.mp4", self._video)
        app.router.add_get("/cdn/{request_id}/video.mp4", self._video)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/script", self._script)
        app.router.add_post("/_sim/inject/{call}", self._inject)
        app.router.add_post("/_sim/reset", self._reset)
        app.router.add_get("/_sim/done/{request_id}", self._done)
        app.router.add_get("/_sim/requests", self._timelines)
        app.router.add_post("/_sim/rebase", self._rebase)
        app.router.add_post("/_sim/outage/{state}", self._outage)
        app.router.add_get("/_sim/polls_after/{at}", self._polls_after)
        return app

    def _next_fault(self, call: str) -> Fault | None:
        with self._lock:
            self.calls[call] += 1
            queue = self._faults[call]
            return queue.popleft() if queue else None

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """The fault's answer, or ``None`` to carry on normally (after a delay)."""
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "hang":
            await asyncio.sleep(HANG_SECONDS)  # cancelled when the client gives up and disconnects
            return web.Response(status=504)
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        if fault.kind == "malformed":
            return web.Response(status=200, text=fault.body, content_type=fault.content_type)
        if fault.kind == "error_code":
            return web.json_response({"error_code": 500001, "error_message": "simulated internal error"})
        if fault.kind == "echo":
            headers = "".join(f"<li>{name}: {value}</li>" for name, value in sorted(request.headers.items()))
            page = f"<html><body><h1>Bad Request</h1><ul>{headers}</ul><p>{request.method} {request.path_qs}</p>"
            return web.Response(status=fault.status_code, text=page, content_type="text/html")
        return web.Response(
            status=fault.status_code, text=fault.body, headers=fault.headers, content_type=fault.content_type
        )

    @staticmethod
    async def _cut_short(request: web.Request, answer: web.Response) -> web.StreamResponse:
        """Announce ``answer``'s full length, send half of its body, and close the connection."""
        body = answer.body if isinstance(answer.body, bytes) else b""
        cut = web.StreamResponse(
            status=answer.status, headers={"Content-Type": answer.content_type, "Content-Length": str(len(body))}
        )
        await cut.prepare(request)
        await cut.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort()
        return cut

    async def _answer(self, request: web.Request, fault: Fault | None, answer: web.Response) -> web.StreamResponse:
        """The normal ``answer``, or with a ``truncate`` fault, half of it."""
        if fault is not None and fault.kind == "truncate":
            return await self._cut_short(request, answer)
        return answer

    async def _fault_first(self, request: web.Request, call: str) -> tuple[Fault | None, web.StreamResponse | None]:
        """The next fault of ``call``, and its answer when it replaces the normal one."""
        fault = self._next_fault(call)
        if fault is None or fault.kind in ("truncate", "gzip"):
            return fault, None
        return fault, await self._apply_fault(request, fault)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or (self.token is not None and auth != f"Bearer {self.token}"):
            return _error(401, 400004, "Invalid or expired API token")
        return None

    def _lookup(self, request: web.Request, call: str) -> SimulatedRequest | web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        rid = request.match_info["request_id"]
        with self._lock:
            sim_request = self.requests.get(rid)
        if sim_request is None or (
            sim_request.scenario.expire and self._phase(sim_request) in ("completed", "cancelled")
        ):
            return _error(404, 404001, f"Request {rid} not found or expired")
        self._record(rid, call)
        return sim_request

    def _record(self, request_id: str, call: str) -> None:
        with self._lock:
            self.history.setdefault(request_id, []).append((call, time.time()))

    def _timeline(self, sim_request: SimulatedRequest) -> tuple[float, float]:
        scenario = sim_request.scenario
        queue = self.queue_seconds if scenario.queue_seconds is None else scenario.queue_seconds
        run = self.run_seconds if scenario.run_seconds is None else scenario.run_seconds
        return queue, run

    def _phase(self, sim_request: SimulatedRequest) -> str:
        return sim_request.phase(time.monotonic(), *self._timeline(sim_request))

    def _urls(self, request: web.Request, rid: str) -> dict[str, str]:
        base = f"{request.scheme}://{request.host}/v1/requests/{rid}"
        return {"status_url": f"{base}/status", "result_url": f"{base}/result", "cancel_url": f"{base}/cancel"}

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        fault = self._next_fault("submit")
        if fault is not None and not fault.after_create and fault.kind != "truncate":
            answer = await self._apply_fault(request, fault)
            if answer is not None:
                return answer
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if model not in KNOWN_MODELS:
            return _error(400, 400001, f"Unknown model: {model}")
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error_message": "Body must be JSON"}, status=422)
        if not isinstance(body, dict) or (model == TEXT_TO_VIDEO and not str(body.get("prompt") or "").strip()):
            return web.json_response({"error_message": "prompt is required"}, status=422)
        lacking = missing(model, body)
        if lacking:
            return web.json_response({"error_message": f"{', '.join(lacking)} is required"}, status=422)
        rid = f"sim-{next(self._ids):06d}-{uuid.uuid4().hex[:8]}"
        sim_request = SimulatedRequest(
            request_id=rid,
            model=model,
            input=body,
            scenario=self._scenario_for(body),
            created=time.monotonic(),
            created_at=_iso(time.time()),
        )
        with self._lock:
            self.requests[rid] = sim_request
        if RULES.get(model, RULES[TEXT_TO_VIDEO]).images:
            fetch = asyncio.ensure_future(self._fetch_inputs(sim_request))
            sim_request.fetching = fetch
            self._fetches.add(fetch)
            fetch.add_done_callback(self._fetches.discard)
        self._record(rid, "submit")
        answer = web.json_response({"request_id": rid, **self._urls(request, rid)})
        if fault is not None and fault.kind == "truncate":
            return await self._cut_short(request, answer)
        if fault is not None:
            faulty = await self._apply_fault(request, fault)
            if faulty is not None:
                return faulty
        return answer

    async def _fetch_inputs(self, sim_request: SimulatedRequest) -> None:
        """When the request starts running, fetch its images as RunComfy's servers would; one that fails fails it."""
        queue, _ = self._timeline(sim_request)
        await asyncio.sleep(max(queue - (time.monotonic() - sim_request.created), 0.0))
        fetched = await fetch_images(sim_request.model, sim_request.input, into=sim_request.images)
        self.image_fetches.extend(fetched)
        failures = [outcome for outcome in fetched if outcome != "ok"]
        if failures:
            error = "Could not fetch the input: " + "; ".join(failures)
            sim_request.scenario = replace(sim_request.scenario, outcome="failed", error=error)

    def _scenario_for(self, body: dict[str, Any]) -> Scenario:
        with self._lock:
            if self._scenarios:
                return self._scenarios.popleft()
        prompt = str(body.get("prompt", ""))
        outcome: Outcome = "succeeded"
        if "[sim:fail]" in prompt or "[sim:cancel]" in prompt:
            outcome = "failed" if "[sim:fail]" in prompt else "cancelled"
        timing = {key: float(value) for key, value in re.findall(r"\[sim:(queue|run|seconds)=([0-9.]+)\]", prompt)}
        shape = re.search(r"\[sim:shape=([0-9]+:[0-9]+)\]", prompt)
        media = re.search(r"\[sim:media=(html_page|html_as_mp4|audio_only|undecodable)\]", prompt)
        return Scenario(
            outcome=outcome,
            queue_seconds=timing.get("queue"),
            run_seconds=timing.get("run"),
            media=media.group(1) if media else "video",  # type: ignore[arg-type]
            served_aspect_ratio=shape.group(1) if shape else None,
            served_seconds=timing.get("seconds"),
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        fault, answer = await self._fault_first(request, "status")
        if answer is not None:
            return answer
        found = self._lookup(request, "status")
        if isinstance(found, web.Response):
            return found
        self.polls[found.request_id] += 1
        phase = self._phase(found)
        body: dict[str, Any] = {"request_id": found.request_id, "status": phase}
        if phase == "in_queue":
            body["queue_position"] = self._queue_position(found)
        urls = self._urls(request, found.request_id)
        body.update(status_url=urls["status_url"], result_url=urls["result_url"])
        return await self._answer(request, fault, web.json_response(body))

    def _queue_position(self, sim_request: SimulatedRequest) -> int:
        queue, _ = self._timeline(sim_request)
        left = max(queue - (time.monotonic() - sim_request.created), 0.0) / queue if queue else 0.0
        return max(1, math.ceil(sim_request.scenario.queue_position * left))

    async def _result(self, request: web.Request) -> web.StreamResponse:
        fault, answer = await self._fault_first(request, "result")
        if answer is not None:
            return answer
        found = self._lookup(request, "result")
        if isinstance(found, web.Response):
            return found
        self.result_polls[found.request_id] += 1
        phase = self._phase(found)
        status = {"completed": "failed" if found.scenario.outcome == "failed" else "succeeded"}.get(phase, phase)
        body: dict[str, Any] = {"request_id": found.request_id, "status": status, "created_at": found.created_at}
        if phase in ("completed", "cancelled"):
            queue, run = self._timeline(found)
            end = found.cancelled_at if found.cancelled_at is not None else found.created + queue + run
            body["finished_at"] = _iso(time.time() - (time.monotonic() - end))
        if status == "succeeded":
            host = self.media_url if found.scenario.video_host == "other" else f"{request.scheme}://{request.host}"
            folder = "cdn" if found.scenario.video_host == "other" else "media"
            url = found.scenario.video_url or f"{host}/{folder}/{found.request_id}/video.mp4"
            body["output"] = {"video": url} if found.scenario.output == "video" else {"videos": [url]}
        elif status == "failed":
            body["error"] = {"error_message": found.scenario.error}
        if request.query.get("include_cost") == "true" and status == "succeeded":
            body["cost"] = round(0.1 * int(found.input.get("duration", 5)), 2)
        return await self._answer(request, fault, web.json_response(body))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        fault, answer = await self._fault_first(request, "cancel")
        if answer is not None:
            return answer
        found = self._lookup(request, "cancel")
        if isinstance(found, web.Response):
            return found
        phase = self._phase(found)
        if phase == "in_queue":
            found.cancelled_at = time.monotonic()
            phase, outcome = "cancelled", "cancelled"
        else:
            outcome = "cancelled" if phase == "cancelled" else "not_cancellable"
        body = {"request_id": found.request_id, "status": phase, "outcome": outcome}
        return await self._answer(request, fault, web.json_response(body, status=202))

    async def _video(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["request_id"]
        sim_request = self.requests.get(rid)
        on_other_host = request.path.startswith("/cdn/")
        if on_other_host:
            with self._lock:
                self.media_requests.append((request.path, request.headers.get("Authorization")))
        elif sim_request is not None and sim_request.scenario.video_host == "redirect":
            raise web.HTTPFound(f"{self.media_url}/cdn/{rid}/video.mp4")
        fault = self._next_fault("video")
        special = fault is not None and fault.kind in ("truncate", "gzip")
        if fault is not None and not special and (answer := await self._apply_fault(request, fault)) is not None:
            return answer
        if sim_request is None:
            return web.Response(status=404, text="no such video")
        if sim_request.fetching is not None:
            await asyncio.wait([sim_request.fetching])  # its video starts from its image
        self._record(rid, "video")
        if sim_request.scenario.media in ("html_page", "html_as_mp4"):
            served_as = "text/html" if sim_request.scenario.media == "html_page" else "video/mp4"
            return web.Response(body=SIGN_IN_PAGE, content_type=served_as)
        video = self.video_of(sim_request)
        if fault is not None and fault.kind == "gzip":
            # Compressed whatever the client asked for (Accept-Encoding: identity included), as some
            # CDNs do: Content-Length counts the compressed bytes.
            body = gzip.compress(b"".join(self._video_chunks(video)))
            return web.Response(body=body, headers={"Content-Type": "video/mp4", "Content-Encoding": "gzip"})
        size = len(video) if self.video_size is None else self.video_size
        response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(size)})
        await response.prepare(request)
        budget = size // 2 if fault is not None and fault.kind == "truncate" else size
        for chunk in self._video_chunks(video):
            if len(chunk) > budget:
                await response.write(chunk[:budget])
                assert request.transport is not None
                request.transport.abort()  # cut short: the client sees fewer bytes than announced
                return response
            await response.write(chunk)
            budget -= len(chunk)
        await response.write_eof()
        return response

    def _video_chunks(self, video: bytes) -> Iterator[bytes]:
        return iter([video]) if self.video_size is None else synthetic_video_chunks(self.video_size)

    def video_of(self, sim_request: SimulatedRequest) -> bytes:
        """The MP4 a request's video URL serves: of the shape it asked for, unless its scenario says otherwise."""
        scenario = sim_request.scenario
        if scenario.media == "undecodable":
            return undecodable_video()
        if self._fixed_video:
            return self.video
        try:
            seconds = scenario.served_seconds or float(sim_request.input.get("duration") or 5)
        except (TypeError, ValueError):
            seconds = 5.0
        if scenario.media == "full_hd":
            return make_full_hd_video(seconds)
        ratio = scenario.served_aspect_ratio or str(sim_request.input.get("aspect_ratio") or "16:9")
        audio_only = scenario.media == "audio_only"
        sound = RULES[sim_request.model].sound if sim_request.model in RULES else True
        rules = RULES.get(sim_request.model)
        first = sim_request.images.get(rules.images[0]) if rules and rules.images else None
        if first is not None and not audio_only:
            try:
                return make_video_from_image(first, seconds, ratio, audio=sound)
            except Exception:  # noqa: BLE001 - an image FFmpeg cannot read: the take starts elsewhere
                pass
        return make_video(seconds, ratio, audio=sound or audio_only, video=not audio_only)

    async def _done(self, request: web.Request) -> web.Response:
        """404 until the request is finished, then 200: what a plain ``HttpSensor`` can wait on."""
        self.calls["done"] += 1
        found = self.requests.get(request.match_info["request_id"])
        if found is None or self._phase(found) not in ("completed", "cancelled"):
            return web.Response(status=404, text="not finished")
        return web.Response(status=200, text="finished")

    async def _timelines(self, request: web.Request) -> web.Response:
        """Each request's finish time (``time.monotonic()`` of this machine), status and result calls."""
        polls, results = self.polls, self.result_polls
        with self._lock:
            found = list(self.requests.values())
        return web.json_response(
            {
                r.request_id: {
                    "finishes_at": r.created + sum(self._timeline(r)),
                    "polls": polls[r.request_id],
                    "results": results[r.request_id],
                }
                for r in found
            }
        )

    async def _rebase(self, request: web.Request) -> web.Response:
        """Start every request's timeline now (benchmarks submit first, then start the clock)."""
        now = time.monotonic()
        with self._lock:
            for sim_request in self.requests.values():
                sim_request.created = now
        return web.json_response({"ok": True})

    async def _outage(self, request: web.Request) -> web.Response:
        """``/_sim/outage/down`` or ``/_sim/outage/up``; answers the attempts made while it was down, and when."""
        self.outage(request.match_info["state"] == "down")
        with self._lock:
            times = [at for at, _path, _agent in self.attempts_log]
        return web.json_response({"attempts_while_down": self.attempts_while_down, "attempt_times": times})

    async def _polls_after(self, request: web.Request) -> web.Response:
        """Each request's first answered status or result call at or after a Unix time."""
        at = float(request.match_info["at"])
        with self._lock:
            history = {rid: list(calls) for rid, calls in self.history.items()}
        first = {
            rid: min(when for call, when in calls if call in ("status", "result") and when >= at)
            for rid, calls in history.items()
            if any(call in ("status", "result") and when >= at for call, when in calls)
        }
        return web.json_response(first)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _script(self, request: web.Request) -> web.Response:
        self.script(Scenario(**await request.json()))
        return web.json_response({"ok": True})

    async def _inject(self, request: web.Request) -> web.Response:
        self.inject(request.match_info["call"], Fault(**await request.json()))
        return web.json_response({"ok": True})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def scenario_dict(scenario: Scenario) -> dict[str, Any]:
    return asdict(scenario)

"""
What the simulator knows of the Kling family on RunComfy: its own copy of each model's documented
rules (the fields a request must carry, which of them are images, whether its videos have sound),
written from the same pages as :mod:`airflow_provider_kling.family` but not imported from it, so
that a mistake there is caught here; and how RunComfy's servers fetch an image input.

How a fetch that fails shows: RunComfy's docs say only that inputs are fetched from public URLs. We
assume (and say in the docs) that the submit is accepted and the request then fails, naming the
field, as a generation error does. Only URLs on this machine are fetched, so that no test or demo
reaches another host; any other ``https`` URL is taken as reachable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from airflow_provider_kling.images import on_this_machine


@dataclass(frozen=True)
class ModelRules:
    """A model's required fields, its image fields (the first is where its video starts), whether it has sound."""

    required: tuple[str, ...]
    images: tuple[str, ...] = ()
    sound: bool = False


RULES: dict[str, ModelRules] = {
    "kling/kling-1-6/pro/text-to-video": ModelRules(("prompt",)),
    "kling/kling-1-6/pro/image-to-video": ModelRules(("image_url",), ("image_url",)),
    "kling/kling-2-1/pro/image-to-video": ModelRules(("prompt", "image_url"), ("image_url",)),
    "kling/kling-2-1/master/image-to-video": ModelRules(("prompt", "image_url"), ("image_url",)),
    "kling/kling-2-6/pro/text-to-video": ModelRules(("prompt",), sound=True),
    "kling/kling-2-6/pro/image-to-video": ModelRules(("prompt", "image_url"), ("image_url",), sound=True),
    "kling/kling-video-o1/image-to-video": ModelRules(
        ("prompt", "start_image_url", "end_image_url"), ("start_image_url", "end_image_url")
    ),
    "kling/kling-video-o3/pro/image-to-video": ModelRules(("image", "prompt"), ("image",)),
    "kling/kling-3.0/standard/text-to-video": ModelRules(("prompt",)),
    "kling/kling-3.0/pro/text-to-video": ModelRules(("prompt",)),
    "kling/kling-3.0/standard/image-to-video": ModelRules(("prompt", "start_image_url"), ("start_image_url",)),
    "kling/kling-3.0/pro/image-to-video": ModelRules(("prompt", "start_image_url"), ("start_image_url",)),
}

#: The first bytes of the image formats RunComfy's pages show (PNG, JPEG, WebP).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")
#: Seconds a fetch may take.
FETCH_TIMEOUT = 10.0


def missing(model: str, body: dict[str, object]) -> list[str]:
    """The required fields ``body`` lacks for ``model`` (none for a model not in :data:`RULES`)."""
    rules = RULES.get(model)
    return [name for name in rules.required if body.get(name) in (None, "")] if rules else []


async def fetch_images(model: str, body: dict[str, object], into: dict[str, bytes] | None = None) -> list[str]:
    """
    Fetch each image input of ``body`` on this machine as RunComfy's servers would: how each went,
    ``ok`` or why it failed (``image_url: HTTP 403 (Request has expired)``). The images fetched
    are put ``into`` the mapping given, by field (the first frame is where the video starts).
    """
    rules = RULES.get(model)
    outcomes = []
    for name in rules.images if rules else ():
        url = body.get(name)
        if isinstance(url, str) and on_this_machine(url):
            outcome, data = await _fetch(name, url)
            outcomes.append(outcome)
            if data is not None and into is not None:
                into[name] = data
    return outcomes


async def _fetch(name: str, url: str) -> tuple[str, bytes | None]:
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
            data = await answer.read()
            kind, status = answer.headers.get("Content-Type", ""), answer.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:  # asyncio's is not the builtin before 3.11
        return f"{name}: could not be fetched ({type(err).__name__})", None
    if status != 200:
        reason = "Request has expired" if b"Request has expired" in data else data[:80].decode(errors="replace")
        return f"{name}: HTTP {status} ({reason.strip()})", None
    if not kind.startswith("image/") or not data.startswith(_IMAGE_MAGIC):
        return f"{name}: not an image ({kind or 'no Content-Type'})", None
    return "ok", data

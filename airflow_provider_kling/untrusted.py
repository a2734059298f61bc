"""
Strings the provider did not write: what RunComfy answers, and prompts that come from data.

Three rules, each in one place, so every caller applies the same one:

- **A video URL** is an ``http`` or ``https`` URL with a host (:func:`video_url_problem`). The
  wait, the result, the "Kling video" button, the review form, the copy and the ``kling`` command
  all ask here; anything else (``javascript:``, ``data:``, ``file:``...) is not a video.
- **Text stays text** in Markdown, HTML and Slack (:func:`markdown_text`, :func:`markdown_block`,
  :func:`markdown_code`, :func:`markdown_link`, :func:`html_text`, :func:`slack_text`): a prompt
  holding a link, an image, HTML or a code fence shows literally and never becomes markup.
- **The API token is never quoted** (:func:`redact`): every error, excerpt and printed answer
  passes through it, so a gateway that echoes the request's ``Authorization`` header into its
  error page does not put the token into exception text, logs, XCom, events or the terminal.

Standard library only: the modules a DAG file imports use it.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote, urlsplit

# --- video URLs ------------------------------------------------------------------------------

#: The only schemes a video URL may have.
VIDEO_URL_SCHEMES = ("http", "https")
#: Whitespace (Unicode's too) and control characters, which no usable URL holds.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def video_url_problem(url: object) -> str | None:
    """Why ``url`` is not a usable video URL (naming its scheme), or ``None`` when it is one."""
    if not isinstance(url, str) or not url:
        return "there is no video URL"
    if _SPACE_OR_CONTROL.search(url):
        return "the video URL holds spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the video URL cannot be parsed"
    if parts.scheme.lower() not in VIDEO_URL_SCHEMES:
        scheme = repr(parts.scheme) if parts.scheme else "none"
        return f"the video URL's scheme is {scheme}, not http or https"
    if not parts.hostname:
        return "the video URL names no host"
    return None


def is_video_url(url: object) -> bool:
    """Whether ``url`` is an ``http(s)`` URL with a host: the only thing the provider treats as a video."""
    return video_url_problem(url) is None


# --- text in markup --------------------------------------------------------------------------

#: Every ASCII punctuation character: CommonMark lets any of them be escaped with a backslash.
_MARKDOWN_PUNCTUATION = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def markdown_text(value: object) -> str:
    """
    ``value`` as Markdown that shows it literally, on one line: links, images, HTML, emphasis and
    code all appear as the characters they are (every punctuation character escaped, line breaks
    turned into spaces, so that no line can start a heading, a list or a block).
    """
    flat = " ".join(str(value).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)


def markdown_block(value: object) -> str:
    """
    ``value`` as a fenced Markdown code block, shown literally with its line breaks. The fence is
    longer than any run of backticks in the text, so nothing inside can close it.
    """
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    return f"{fence}text\n{text}\n{fence}"


def markdown_code(value: object) -> str:
    """``value`` as inline code on one line, whatever backticks it holds."""
    flat = " ".join(str(value).split())
    fence = "`" * (_longest_run(flat, "`") + 1)
    return f"{fence} {flat} {fence}"


def markdown_link(label: object, url: object) -> str | None:
    """
    A Markdown link with a literal ``label`` to ``url``, or ``None`` when ``url`` is not a video
    URL: a link is offered only to an ``http(s)`` address.
    """
    if not is_video_url(url):
        return None
    # A destination in angle brackets ends only at ">": encode what could end it early.
    target = quote(str(url), safe=":/?#[]@!$&'()*+,;=%~-._")
    return f"[{markdown_text(label)}](<{target}>)"


def html_text(value: object) -> str:
    """``value`` as HTML text: every tag and entity shows literally, line breaks are kept."""
    return html.escape(str(value), quote=True).replace("\n", "<br>\n")


def slack_text(value: object) -> str:
    """
    ``value`` as Slack ``mrkdwn`` text with its control characters (``&``, ``<``, ``>``) escaped, so
    no ``<url|label>`` link, mention or command can be formed.
    """
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


# --- secrets ---------------------------------------------------------------------------------

#: What :func:`redact` puts where a secret was.
REDACTED = "***"
#: Tokens of the connections this process has read; :func:`redact` removes them wherever they appear.
_SECRETS: set[str] = set()
#: Too short to be a token: replacing it would mangle ordinary text.
_MIN_SECRET_CHARS = 6
#: ``Bearer <credential>`` and ``Authorization: [<scheme>] <credential>``, as an echoing gateway quotes them.
_CREDENTIAL = re.compile(
    r"(?i)(\bbearer\s+|\bauthorization\W{0,4}?\s*[:=]\s*[\"']?(?!bearer\b))"
    r"(?:(?:basic|digest|token)\s+)?[^\s\"'<>,;&]+"
)


def register_secret(secret: str | None) -> None:
    """Remember a token this process uses, so that :func:`redact` removes it from any text."""
    if secret and len(secret) >= _MIN_SECRET_CHARS:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    """
    ``text`` without any known token (as is, HTML-escaped or URL-encoded) and without the
    credential of any ``Bearer ...`` or ``Authorization: ...`` it quotes.
    """
    for secret in _SECRETS:
        for form in (secret, html.escape(secret), quote(secret, safe="")):
            text = text.replace(form, REDACTED)
    return _CREDENTIAL.sub(lambda match: match.group(1) + REDACTED, text)


def redact_data(value: Any) -> Any:
    """:func:`redact` applied to every string inside JSON-like data (dicts, lists, strings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value

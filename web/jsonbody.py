"""JSON from clients, bounded before it is parsed (issue 11 item 9).

Python's ``json`` recurses once per nesting level: ``[[[[…]]]]`` a hundred thousand deep
raises ``RecursionError`` (a 500 where it escapes), and a value nested a few hundred deep
that does parse still costs every recursive consumer after it. What the gateway takes as
JSON (consultation options, a form to send, an events message) is small and flat, so
every JSON body and message goes through :func:`parse_json`: a size cap, then a nesting
cap checked with regular expressions (C speed, no recursion), then ``json.loads``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from web.problems import ProblemError

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16

# A JSON string (RFC 8259 §7): quotes, escapes; its brackets are text, not nesting.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


class JsonRejected(ValueError):
    """The text is not JSON we take; the message is safe to show to the client."""


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """True when ``text`` nests arrays/objects deeper than ``max_depth`` (or its brackets
    do not pair up, which ``json.loads`` would refuse anyway).

    Strings are blanked, everything but brackets dropped, then innermost pairs removed
    ``max_depth`` times: whatever is left was deeper."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub('""', text))
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:
            return True  # unpaired
    return bool(brackets)


def parse_json(
    data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads`` after the size and nesting caps; :class:`JsonRejected` otherwise."""
    if len(data) > max_bytes:
        raise JsonRejected(f"JSON may have at most {max_bytes} bytes.")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise JsonRejected("JSON must be UTF-8 (RFC 8259 §8.1).") from None
    if nesting_exceeds(text, max_depth):
        raise JsonRejected(f"JSON may nest at most {max_depth} levels deep.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise JsonRejected("The body is not valid JSON.") from None


async def read_json(
    request: web.Request,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    empty: Any = ...,
) -> Any:
    """The request's JSON body, or ``400`` problem+json naming what is wrong (``413``
    for a declared length above ``max_bytes``, before anything is read). An empty body
    gives ``empty`` when one is passed, else ``400``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ProblemError(413, f"JSON may have at most {max_bytes} bytes.")
    raw = await request.read()  # at most the application's client_max_size
    if len(raw) > max_bytes:
        raise ProblemError(413, f"JSON may have at most {max_bytes} bytes.")
    if empty is not ... and not raw.strip():
        return empty
    try:
        return parse_json(raw, max_bytes=max_bytes, max_depth=max_depth)
    except JsonRejected as exc:
        raise ProblemError(400, str(exc)) from None

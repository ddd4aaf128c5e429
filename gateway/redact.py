"""Redaction of secrets from request targets and RTMP URLs before they reach any log."""

from __future__ import annotations

import re

REDACTED = "…"

# Participant tokens are secrets.token_urlsafe(24) (32 characters), advisor sessions 43:
# any long base64url-looking path segment is treated as a secret. Consultation ids (12
# characters) stay readable so operators can follow a session through the log.
_TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_\-=.~+]{16,}")
# Words of our own URL space ("session-events") are lower-case letters and hyphens; a
# random 16+ character token is that only with probability below 1e-6.
_WORDISH = re.compile(r"[a-z\-]+")
# "customer-page.js": a file name, not a secret.
_FILENAME = re.compile(r"[A-Za-z0-9_\-]+\.[a-z]{1,5}")


def _looks_secret(segment: str) -> bool:
    if not _TOKEN_SEGMENT.fullmatch(segment):
        return False
    return not (_WORDISH.fullmatch(segment) or _FILENAME.fullmatch(segment))


def redact_path(path: str) -> str:
    """``path`` with every token-like segment replaced by ``…``."""
    return "/".join(REDACTED if _looks_secret(seg) else seg for seg in path.split("/"))


def redact_target(path: str, query_string: str) -> str:
    """Path plus ``?…`` when there was a query: the whole query string is dropped, as
    any parameter (``token``, ``pin``, a future one) may carry a secret."""
    return redact_path(path) + (f"?{REDACTED}" if query_string else "")


def redact_url(url: str) -> str:
    """An RTMP ``tcUrl``/app name (``rtmp://host:1935/consult?token=T``) for a log: the
    scheme and host kept, token-like path segments masked, any query dropped."""
    base, _, query = url.partition("?")
    scheme, sep, rest = base.partition("://")
    if not sep:
        return redact_target(base, query)
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host}{slash}{redact_target(path, query)}"


def log_safe(text: str, limit: int) -> str:
    """Keep a client-sent value (User-Agent, flashVer) from forging log lines (CR/LF,
    quotes) and bound its size."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return text.replace('"', "'")

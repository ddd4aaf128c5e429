"""Application log set-up: plain text (default) or one JSON object per line.

``--log-format json`` is for log shippers: ``{"ts", "level", "logger", "msg"}`` plus
``exc`` for tracebacks. Either way the application log carries no personal data: our
own messages name consultations by short id and never chat text, tokens or PINs, and a
filter masks IP addresses (the access log, kept ``--access-log-days`` under
``<data-dir>/logs/``, is the one place addresses are recorded, for protection, as the
terms of use say).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# IPv4, and IPv6 written with at least two colons and hex groups (not times like 12:30)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})(?![\w:])"
)
MASK = "[address]"


def mask_addresses(text: str) -> str:
    # an IPv6 address has "::" or all eight groups (so times like 12:30:05 stay)
    text = _IPV6.sub(lambda m: MASK if "::" in m[0] or m[0].count(":") >= 5 else m[0], text)
    return _IPV4.sub(MASK, text)


class AddressFilter(logging.Filter):
    """Masks IP addresses in the rendered message (peer addresses of RTMP warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_addresses(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Root logging for ``serve``: one stderr handler, the address filter, the format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(AddressFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


# -- reading our own log back (tests, the attack suite, the soak) -------------------------
# A record starts with the text format's "2026-01-02 03:04:05,678 LEVEL" or is one JSON
# object; every other line (a traceback, anything Python wrote to stderr itself) belongs
# to the record before it.
_TEXT_HEAD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ")
_SERIOUS_TEXT = re.compile(
    r"Traceback \(most recent call last\)|internal error|Exception ignored in"
    r"|Task was destroyed but it is pending",
    re.IGNORECASE,
)
_SERIOUS_LEVELS = frozenset({"ERROR", "CRITICAL"})


@dataclass(frozen=True, slots=True)
class LogRecordText:
    level: str | None  # None: text before any record (the interpreter's own output)
    text: str  # the whole record, head line and continuation lines

    @property
    def serious(self) -> bool:
        """A traceback, an "internal error", or anything logged at ERROR or above."""
        return self.level in _SERIOUS_LEVELS or bool(_SERIOUS_TEXT.search(self.text))


def read_records(text: str) -> list[LogRecordText]:
    """Split log output (text or ``--log-format json``) into records."""
    records: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        level: str | None
        head = _TEXT_HEAD.match(line)
        if head:
            records.append((head["level"], [line]))
            continue
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict) and "level" in data:
                level = str(data["level"])
                body = [line, str(data.get("exc", ""))]
                records.append((level, body))
                continue
        if records:
            records[-1][1].append(line)
        elif line.strip():
            records.append((None, [line]))
    return [LogRecordText(level, "\n".join(lines)) for level, lines in records]


def serious_records(text: str, allowed: Iterable[re.Pattern[str]] = ()) -> list[LogRecordText]:
    """The records of ``text`` that show a defect: tracebacks, "internal error", ERROR
    lines, except those a caller expects (``allowed`` patterns searched in the whole
    record: a test that provokes an error names exactly that error)."""
    patterns = list(allowed)
    return [
        r for r in read_records(text) if r.serious and not any(p.search(r.text) for p in patterns)
    ]

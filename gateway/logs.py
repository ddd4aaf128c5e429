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

"""An access log that never contains a token.

The terms of use allow keeping browser technical data (address, time, browser, page,
status) for a short time against attacks; they do not allow keeping credentials. Tokens
travel in query strings (``?token=`` on WebSocket and RTMP URLs, ``/login?token=``) and
could appear as path segments, so this logger drops every query string and masks
token-like path segments. It never logs request headers other than the User-Agent
(``Authorization``, ``Cookie`` and ``Referer`` may all carry secrets).

Use it with ``web.AppRunner(app, access_log_class=RedactingAccessLogger)``. The lines go
to the ``aiohttp.access`` logger, which the composition root routes into the daily files
of :mod:`gateway.accesslog` (and nowhere else).
"""

from __future__ import annotations

import logging

from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.redact import log_safe as _clean
from web.redact import redact_target

_MAX_AGENT = 200
# RTMPT polls (web/rtmpt.py): a tunnelled client POSTs /send or /idle several times a
# second. /open and /close are logged, and so is every poll that failed (an unknown
# tunnel id, a bad sequence number, a body too large), but not each successful poll.
# The same for the advisor start page asking who is waiting (every 3 s, signed in).
_QUIET_POLLS = ("/send/", "/idle/", "/advisor/state")


class RedactingAccessLogger(AbstractAccessLogger):
    """``ADDRESS "METHOD PATH HTTP/x.y" STATUS SIZE "USER-AGENT" SECONDS``.

    ``log_format`` (aiohttp's ``%``-format) is ignored on purpose: a configurable
    format could be made to log ``%{Authorization}i`` or ``%r`` with the query.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if response.status < 400 and request.path.startswith(_QUIET_POLLS):
            return
        try:
            # request.path is percent-decoded: a %0A in it must not start a new log line.
            target = _clean(redact_target(request.path, request.query_string), 2000)
            version = f"{request.version.major}.{request.version.minor}"
            agent = _clean(request.headers.get(hdrs.USER_AGENT, "-"), _MAX_AGENT)
            self.logger.info(
                '%s "%s %s HTTP/%s" %d %d "%s" %.3f',
                request.remote or "-",
                _clean(request.method, 16),
                target,
                version,
                response.status,
                response.body_length,
                agent,
                time,
            )
        except Exception:
            # An access log line is never worth failing a request; log nothing of it.
            self.logger.exception("access log entry failed")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

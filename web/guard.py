"""The HTTP port under attack: connection caps, a body deadline, quiet error answers.

aiohttp is the HTTP server; this module only stands at its door (docs/web.md,
"Protection of the HTTP port"):

- :class:`ConnectionGuard` wraps aiohttp's protocol factory. A connection beyond
  ``http_max_connections`` in total, or beyond ``http_max_connections_per_address`` from
  one address (IPv6 counted by its /64, as :func:`web.throttle.address_key` does for
  guessing), is closed at accept, before aiohttp sees a byte, with one rate-limited log
  line. Long-lived connections (the events WebSocket, the ``/ops`` feed, RTMPT's polls)
  count like any other.
- A request body must keep arriving: after ``http_body_timeout`` seconds at least
  ``http_body_min_rate`` bytes per second on average (a body trickled a byte at a time
  would otherwise hold a connection and a handler for ever; aiohttp has no read
  deadline for bodies). A request without a body (WebSocket upgrades, server-sent
  events) has nothing to read and no deadline: its handler may run as long as it likes.
- The silent connection, the request head trickled in and the idle keep-alive
  connection are aiohttp's own ``keepalive_timeout`` (``http_keepalive_timeout``): since
  aiohttp 3.10 it runs from the accept and closes a connection whose next request head
  is not complete in time (tests/test_http_guard.py pins this).
- :class:`QuietRequestHandler` answers aiohttp's own errors (a malformed request line or
  header: 400; a 500 outside the application) as problem+json with the security headers
  and without echoing the input, logs them as one rate-limited line instead of a
  traceback each, and treats a client that went away mid-body as what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from web.problems import problem_response
from web.security import ERROR_HEADERS
from web.throttle import address_key

log = logging.getLogger("web.guard")


CLIENT_CLOSED_REQUEST = 499


class RateLimitedLog:
    """One log line per ``kind`` at most every ``interval`` seconds; lines in between are
    counted and the count is reported with the next line (a flood is one line, not a
    line per connection)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True if logged."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] += 1
            return False
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        if more:
            message += " (and %d more like it since the last report)"
            args = (*args, more)
        self.logger.warning(message, *args)
        return True


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int
    max_connections_per_address: int
    body_timeout: float
    body_min_rate: float


class _Conn:
    """What the guard knows of one accepted connection."""

    __slots__ = ("address", "body_bytes_at", "body_since", "bytes_in", "handler", "request")

    def __init__(self, address: str, handler: RequestHandler) -> None:
        self.address = address
        self.handler = handler
        self.bytes_in = 0
        self.request: BaseRequest | None = None
        self.body_since = 0.0
        self.body_bytes_at = 0


class _GuardedProtocol(asyncio.Protocol):
    """Stands in front of one aiohttp ``RequestHandler``: counts the connection against
    the caps and its bytes for the body deadline, and passes everything on."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.conn: _Conn | None = None
        self.inner: RequestHandler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        conn = self.guard.admit(transport)
        if conn is None:
            # uvloop's transports implement the interface without subclassing asyncio's
            cast(asyncio.Transport, transport).abort()
            return
        self.conn = conn
        self.inner = conn.handler
        conn.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None and self.conn is not None:
            self.conn.bytes_in += len(data)
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        # aiohttp's returns None: the transport closes once the response is written
        if self.inner is not None:
            self.inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is None or self.inner is None:
            return
        self.guard.release(self.conn)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)


class ConnectionGuard:
    """Caps and the body deadline for one HTTP listener (or several sharing the caps).

    ``make_handler`` builds the aiohttp ``RequestHandler`` for an admitted connection;
    :meth:`protocol_factory` is what ``loop.create_server`` gets instead of aiohttp's
    server object. Install :meth:`middleware` first in the application, so the guard
    learns when a request's head has been read and its body begins.
    """

    def __init__(
        self,
        limits: HttpLimits,
        make_handler: Callable[[], RequestHandler],
        *,
        report: RateLimitedLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.make_handler = make_handler
        self.clock = clock
        self.total = 0
        self.per_address: dict[str, int] = defaultdict(int)
        self._by_handler: dict[RequestHandler, _Conn] = {}
        self.refused = 0
        self.cut = 0
        # shared with the listener's QuietRequestHandlers: one budget of log lines
        self.report = report or RateLimitedLog(log)
        self._sweeper: asyncio.Task[None] | None = None

    # -- accept side --------------------------------------------------------------------
    def protocol_factory(self) -> asyncio.Protocol:
        return _GuardedProtocol(self)

    def admit(self, transport: asyncio.BaseTransport) -> _Conn | None:
        peer = transport.get_extra_info("peername")
        address = address_key(str(peer[0]) if peer else None)
        limits = self.limits
        if self.total >= limits.max_connections:
            self.refused += 1
            self.report.warning(
                "total",
                "http: refusing connections: %d open in total (limit http_max_connections)",
                self.total,
            )
            return None
        if self.per_address[address] >= limits.max_connections_per_address:
            self.refused += 1
            self.report.warning(
                "address",
                "http: refusing connections from %s: %d open from there "
                "(limit http_max_connections_per_address)",
                address,
                self.per_address[address],
            )
            return None
        conn = _Conn(address, self.make_handler())
        self.total += 1
        self.per_address[address] += 1
        self._by_handler[conn.handler] = conn
        return conn

    def release(self, conn: _Conn) -> None:
        self._by_handler.pop(conn.handler, None)
        self.total -= 1
        left = self.per_address[conn.address] - 1
        if left <= 0:
            self.per_address.pop(conn.address, None)
        else:
            self.per_address[conn.address] = left

    # -- request side -------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._by_handler.get(cast(RequestHandler, request.protocol))
        if conn is None:  # a test client or another listener without the guard
            return await handler(request)
        conn.request = request
        conn.body_since = self.clock()
        conn.body_bytes_at = conn.bytes_in
        try:
            return await handler(request)
        finally:
            if conn.request is request:
                conn.request = None

    def sweep(self) -> int:
        """Close connections whose request body does not keep arriving; how many."""
        now = self.clock()
        limits = self.limits
        cut = 0
        for conn in list(self._by_handler.values()):
            request = conn.request
            if request is None or request.content.is_eof():
                continue
            elapsed = now - conn.body_since
            if elapsed <= limits.body_timeout:
                continue
            if conn.bytes_in - conn.body_bytes_at >= limits.body_min_rate * elapsed:
                continue
            transport = request.transport
            if transport is None:
                continue
            # aiohttp stops reading when the handler does not keep up: then the client
            # is not to blame (uploads go to disk in a thread).
            is_reading = getattr(transport, "is_reading", None)
            if is_reading is not None and not is_reading():
                continue
            cut += 1
            self.cut += 1
            self.report.warning(
                "body",
                "http: closing a connection from %s: request body slower than %d bytes/s "
                "(limits http_body_timeout, http_body_min_rate)",
                conn.address,
                int(limits.body_min_rate),
            )
            conn.request = None
            transport.abort()
        return cut

    async def _sweep_forever(self) -> None:
        interval = max(0.1, min(1.0, self.limits.body_timeout / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # the guard must never take the service down
                log.exception("http guard sweep failed")

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="http-guard")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


class QuietRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering aiohttp's own errors our way.

    ``handle_error`` is called for what never reaches the application: a request line or
    header aiohttp cannot parse (400, its text quotes the offending bytes), and for an
    exception that escapes every middleware (500). Its default logs a traceback for each
    (a flood of garbage is a flood of tracebacks) and answers in plain text without the
    security headers.
    """

    report: RateLimitedLog | None = None  # set per listener by make_handler_factory

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        report = self.report or _DEFAULT_REPORT
        if isinstance(exc, ConnectionError) or self.transport is None:
            # The client went away (mid-body, say): nothing to answer, nothing wrong here.
            log.debug("http: client disconnected during a request")
        elif status < 500:
            report.warning(
                "malformed",
                "http: malformed request from %s answered with %d (%s)",
                address_key(request.remote),
                status,
                type(exc).__name__ if exc is not None else "no detail",
            )
        else:
            # A bug: keep the traceback, but not once per request of a flood.
            if report.warning("error", "http: internal error answering a request (%s)", status):
                log.error("http: the internal error was", exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way")
        if isinstance(exc, ConnectionError):
            # Never delivered; what the access log shows. nginx's 499 "client closed
            # request", which operators know, rather than a 500 that looks like our fault.
            status = CLIENT_CLOSED_REQUEST
        response = problem_response(
            status,
            title="Client Closed Request" if status == CLIENT_CLOSED_REQUEST else None,
            headers=ERROR_HEADERS,
        )
        response.force_close()
        return response


_DEFAULT_REPORT = RateLimitedLog(log)


def make_handler_factory(
    runner: web.AppRunner, report: RateLimitedLog, **handler_args: Any
) -> Callable[[], RequestHandler]:
    """A factory of :class:`QuietRequestHandler` for ``runner``'s server, given the same
    ``handler_args`` as the runner (keep-alive, access log, ...)."""

    def make() -> RequestHandler:
        server = runner.server
        assert server is not None, "runner.setup() first"
        handler = QuietRequestHandler(server, loop=asyncio.get_running_loop(), **handler_args)
        handler.report = report
        return handler

    return make


class GuardedSite(web.BaseSite):
    """A TCP listener of ``runner`` whose connections pass the :class:`ConnectionGuard`
    (aiohttp's ``TCPSite`` hands the runner's server to ``create_server`` directly)."""

    def __init__(
        self,
        runner: web.AppRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        ssl_context: Any = None,
        ssl_handshake_timeout: float | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.guard = guard
        self.host = host
        self._port = port
        self.ssl_handshake_timeout = ssl_handshake_timeout

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self.host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self._ssl_context is not None and self.ssl_handshake_timeout is not None:
            extra["ssl_handshake_timeout"] = self.ssl_handshake_timeout
        self._server = await loop.create_server(
            self.guard.protocol_factory,
            self.host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            **extra,
        )

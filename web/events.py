"""The events WebSocket: a participant's live view of its consultation.

On connect the socket is attached to the participant (it counts as present), gets the
chat history and a snapshot of both participants, then every consultation event as one
JSON text message: both from the participant's channel (gateway/channel.py), which
filters and addresses them; this module only encodes them. Clients send ``chat`` and
``media`` messages.

Two entry points share the handler:

* ``/api/sessions/{id}/events`` – token as ``Authorization: Bearer`` or ``?token=`` (the
  ``events_url`` handed out), or the advisor cookie (the advisor pages);
* ``/k/{id}/events`` – the customer page's HttpOnly cookie, scoped to ``/k/{id}``, so
  the customer token never has to be readable by JavaScript.

Cookie-authenticated handshakes must come from our own origin: browsers attach cookies
to cross-site WebSocket handshakes too, and ``Origin`` is the only defence there
(RFC 6455 §10.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.channel import ParticipantChannel
from gateway.consultation import ChatRejected, Connection, Consultation, Role
from gateway.events import ConsultationEvent, Typing
from web.auth import CUSTOMER_COOKIE, gateway_of, identify, known_role, same_origin
from web.jsonbody import JsonRejected, parse_json
from web.problems import ProblemError, unauthorized

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 64 * 1024
OUTGOING_QUEUE = 256
HEARTBEAT = 25.0
# "… schreibt": at most one typing event per socket this often (a client sends one per
# keystroke at worst); the pages show the indicator a little longer than this
TYPING_INTERVAL = 2.0
CLOSE_TIMEOUT = 5.0

_END = object()

WEBSOCKETS_KEY = web.AppKey("events_websockets", weakref.WeakSet[web.WebSocketResponse])

routes = web.RouteTableDef()


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class EventsSocket:
    """One events WebSocket: a bounded outgoing queue drained by a writer task.

    Events arrive synchronously from ``Consultation.emit``; they are queued and never
    awaited there, so one slow browser cannot stall the consultation. A client that lets
    more than ``OUTGOING_QUEUE`` messages pile up is closed (1008) rather than buffered
    without bound.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        channel: ParticipantChannel,
    ) -> None:
        self.ws = ws
        self.channel = channel
        self.consultation = channel.consultation
        self.role = channel.role
        self.queue: asyncio.Queue[object] = asyncio.Queue(OUTGOING_QUEUE)
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        # set once the writer runs the close handshake itself: it must then not be
        # cancelled, or the handshake ends in an abnormal closure
        self._writer_closing = False
        self._typing_at = float("-inf")

    # -- called synchronously by the consultation ---------------------------------------
    def push(self, event: ConsultationEvent) -> None:
        """``event``, already meant for this participant and addressed to it (the
        channel), encoded now: a document's or form's state is the one it was sent in."""
        self._queue(event.wire())

    def _queue(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.info("events socket of %s/%s too slow, closing", self.consultation.id, self.role)
            self.abort(WSCloseCode.POLICY_VIOLATION, b"too slow")

    def end(self) -> None:
        """``Connection.close``: finish after what is queued (``session_ended`` last)."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(_END)
        except asyncio.QueueFull:
            self.abort(WSCloseCode.GOING_AWAY, b"ended")

    def abort(self, code: int, message: bytes) -> None:
        if self.closing:
            return
        self.closing = True
        if self.writer is not None:
            self.writer.cancel()
        self._closer = asyncio.get_running_loop().create_task(self._close(code, message))

    # -- tasks ------------------------------------------------------------------------------
    async def _close(self, code: int, message: bytes) -> None:
        # A client that does not read may not take the close frame either: bound the wait,
        # aiohttp then drops the transport.
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT)

    async def write(self, initial: list[dict[str, Any]]) -> None:
        try:
            for event in initial:
                await self.ws.send_str(_dumps(event))
            while True:
                item = await self.queue.get()
                if item is _END:
                    break
                assert isinstance(item, dict)
                await self.ws.send_str(_dumps(item))
                if item.get("type") == "session_ended":
                    break
        except (ConnectionError, RuntimeError):
            # the peer went away (aiohttp: ClientConnectionResetError, or RuntimeError
            # on a socket already closing); the reader loop notices too
            return
        if not self.closing:
            self.closing = True
            self._writer_closing = True
            await self._close(WSCloseCode.OK, b"session ended")

    def send_error(self, detail: str) -> None:
        self._queue({"type": "error", "detail": detail})

    # -- client messages -----------------------------------------------------------------
    def handle_text(self, data: str) -> None:
        try:
            message = parse_json(data)
        except JsonRejected as exc:
            self.send_error(str(exc))
            return
        if not isinstance(message, dict):
            self.send_error("a message must be a JSON object with a 'type'")
            return
        kind = message.get("type")
        if kind == "chat":
            try:
                self.consultation.chat(self.role, message.get("text"))
            except ChatRejected as exc:
                self.send_error(str(exc))
        elif kind == "media":
            camera, microphone = message.get("camera"), message.get("microphone")
            if not isinstance(camera, bool) or not isinstance(microphone, bool):
                self.send_error("media needs boolean 'camera' and 'microphone'")
                return
            if self.consultation.ended:
                self.send_error("the consultation has ended")
                return
            self.consultation.set_media_state(self.role, camera, microphone)
        elif kind == "typing":
            self.typing()
        else:
            self.send_error("unknown message type (expected 'chat', 'media' or 'typing')")

    def typing(self) -> None:
        """Tell the other participant that this one is typing, at most once per
        ``TYPING_INTERVAL`` (further ones in between are dropped silently)."""
        if self.consultation.ended:
            return
        now = asyncio.get_running_loop().time()
        if now - self._typing_at < TYPING_INTERVAL:
            return
        self._typing_at = now
        self.consultation.emit(Typing(sender=self.role, audience=self.role.other))

    async def run(self, request: web.Request) -> None:
        ws = self.ws
        consultation = self.consultation
        connection = Connection(kind="events", close=self.end)
        # attach → snapshot → subscribe without an await in between: nothing emitted in
        # the meantime can be missed, and the snapshot already shows this client present.
        consultation.attach(self.role, connection)
        initial = [event.wire() for event in self.channel.open(self.push)]
        self.writer = asyncio.get_running_loop().create_task(self.write(initial))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self.handle_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.send_error("binary messages are not supported")
                # ERROR (e.g. a frame over max_msg_size, closed with 1009) ends the loop.
        finally:
            self.closing = True
            self.channel.close()
            consultation.detach(self.role, connection)
            if self.writer is not None and not self._writer_closing:
                self.writer.cancel()
            for task in (self.writer, self._closer):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task


async def _serve(
    request: web.Request, consultation: Consultation, role: Role
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT, max_msg_size=MAX_CLIENT_MESSAGE, timeout=CLOSE_TIMEOUT
    )
    await ws.prepare(request)
    sockets = request.app[WEBSOCKETS_KEY]
    sockets.add(ws)
    try:
        if consultation.ended:
            await ws.send_str(_dumps({"type": "session_ended", "reason": "ended"}))
            await ws.close()
            return ws
        channel = gateway_of(request).channel(consultation, role)
        await EventsSocket(ws, channel).run(request)
    finally:
        sockets.discard(ws)
    return ws


@routes.get("/api/sessions/{id}/events", allow_head=False)
async def api_events(request: web.Request) -> web.WebSocketResponse:
    principal = identify(request, query_token=True)
    if principal is None:
        raise unauthorized("A participant token is required (Bearer or ?token=).")
    if principal.via_cookie and not same_origin(request, required=True):
        raise ProblemError(403, "Cross-origin WebSocket refused.")
    # as GET /api/sessions/{id}: no probing for other consultations' ids, and an
    # advisor only in their own consultations
    known = gateway_of(request).directory.get(request.match_info["id"])
    consultation, role = known_role(principal, known)
    return await _serve(request, consultation, role)


@routes.get("/k/{id}/events", allow_head=False)
async def customer_page_events(request: web.Request) -> web.WebSocketResponse:
    if not same_origin(request, required=True):
        raise ProblemError(403, "Cross-origin WebSocket refused.")
    grant = gateway_of(request).authorize(request.cookies.get(CUSTOMER_COOKIE))
    if grant is None or grant.consultation.id != request.match_info["id"]:
        raise ProblemError(403, "Please enter the PIN on the consultation page first.")
    return await _serve(request, grant.consultation, grant.role)


async def _close_all(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for handlers: close sockets so they end.
    sockets = app[WEBSOCKETS_KEY]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def setup(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[WEBSOCKETS_KEY] = sockets
    app.on_shutdown.append(_close_all)
    app.add_routes(routes)

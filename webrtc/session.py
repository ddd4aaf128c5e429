"""What WHIP and WHEP sessions share: one peer, its lifetime, its place in the consultation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.consultation import CAMERA, Connection, Consultation, Role
from webrtc.peers import PeerFactory

log = logging.getLogger(__name__)

# ICE + DTLS must complete within this time after the answer, or the peer is dropped
# (a client that never connects must not hold a peer, ports and a thread forever).
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class PeerPlace:
    """Where a new WHIP or WHEP resource belongs: the front-end's peer factory, the
    participant and stream, the resource id and who to tell when it closes."""

    factory: PeerFactory
    consultation: Consultation
    role: Role
    resource_id: str
    on_closed: Callable[[PeerSession], None]
    stream: str = CAMERA


class PeerSession:
    """One WHIP or WHEP resource (RFC 9725 §4.2: the ``Location`` of the 201)."""

    kind = "peer"
    # which of the consultation's streams this resource sends or receives (CAMERA, or the
    # advisor's SCREEN share; docs/web.md "Screen sharing")
    stream_name = CAMERA

    def __init__(self, place: PeerPlace) -> None:
        factory = place.factory
        self.factory = factory
        self.consultation = place.consultation
        self.role = place.role
        self.resource_id = place.resource_id
        self.stream_name = place.stream
        self.pc: RTCPeerConnection = factory.create()
        self.connection = Connection(kind="webrtc", close=self.close_soon)
        self.closed = False
        self._on_closed = place.on_closed
        self._close_task: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def label(self) -> str:
        screen = "/screen" if self.stream_name != CAMERA else ""
        return f"{self.kind} {self.consultation.id[:4]}…/{self.role}{screen}"

    async def negotiate(self, offer: str) -> str:
        """Take the offer, return the answer SDP; OfferError for what we cannot take."""
        raise NotImplementedError

    async def _answer(self, offer: str) -> None:
        """setRemoteDescription must have run; create and set the answer, gathering every
        candidate on our ICE addresses first (no trickle: RFC 9725 §4.3.1 lets the
        server answer with all of them, RFC 8829 §5.3.1)."""
        answer = await self.pc.createAnswer()
        with self.factory.gathering():
            await self.pc.setLocalDescription(answer)

    async def _set_offer(self, offer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))

    @property
    def answer_sdp(self) -> str:
        return str(self.pc.localDescription.sdp)

    def start(self) -> None:
        """The answer is out: join the consultation and wait for the peer to connect."""
        self.consultation.attach(self.role, self.connection)
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(CONNECT_TIMEOUT, self._connect_timeout)

    def _connect_timeout(self) -> None:
        if not self._connected.is_set():
            log.info("%s: no connection within %.0f s; closing", self.label, CONNECT_TIMEOUT)
            self.close_soon()

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._connected.is_set():
            self._connected.set()
            if self._watchdog is not None:
                self._watchdog.cancel()
            log.info("%s: connected", self.label)
            self.on_connected()
        elif state in ("failed", "closed"):
            self.close_soon()

    def on_connected(self) -> None:
        """Hook for subclasses."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget coroutine, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_soon(self) -> None:
        """Synchronous close (``Connection.close``, consultation end, a failed peer):
        schedules :meth:`close`."""
        if not self.closed and self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        """Leave the consultation and close the peer; concurrent callers all return
        once it is closed (shutdown waits for every peer this way)."""
        if self.closed:
            await self._finished.wait()
            return
        self.closed = True
        try:
            if self._watchdog is not None:
                self._watchdog.cancel()
            try:
                self.before_close()
            except Exception:
                log.exception("%s: cleaning up failed", self.label)
            self.consultation.detach(self.role, self.connection)
            try:
                await self.pc.close()
            except Exception:
                log.exception("%s: closing the peer failed", self.label)
            try:
                await self.after_close()
            except Exception:
                log.exception("%s: cleaning up failed", self.label)
            log.info("%s: closed", self.label)
        finally:
            self._on_closed(self)
            self._finished.set()

    async def abandon(self) -> None:
        """The offer was refused (or the consultation ended while it was negotiated):
        close the peer that never joined the consultation.

        Marked closed first, so the peer's own "closed" state change schedules no
        :meth:`close` task (one left pending at shutdown: "Task was destroyed but it is
        pending"). A half-negotiated aiortc peer can fail to close (a transceiver whose
        transport was never made): then its transports are stopped one by one."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            await self.pc.close()
        except Exception as exc:
            log.info("%s: closing a refused peer: %s", self.label, type(exc).__name__)
            await _stop_transports(self.pc)
        finally:
            self._finished.set()

    def before_close(self) -> None:
        """Hook: runs synchronously first, before the peer is closed."""

    async def after_close(self) -> None:
        """Hook: runs after the peer is closed."""


async def _stop_transports(pc: RTCPeerConnection) -> None:
    """Best effort for a peer whose ``close()`` failed: stop every DTLS and ICE transport
    it made, so no socket or task outlives the refused offer."""
    transports = {
        id(t): t
        for tr in pc.getTransceivers()
        for t in (tr.sender.transport, tr.receiver.transport)
        if t is not None
    }
    for dtls in transports.values():
        for stop in (dtls.stop, dtls.transport.stop):
            try:
                await stop()
            except Exception as exc:  # already stopped, or never started
                log.debug("stopping a transport of a refused peer: %s", exc)

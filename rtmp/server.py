"""Thin asyncio glue: TCP (and native TLS) sockets feeding :class:`RtmpSession`.

All protocol and application rules live in ``rtmp.connection`` and ``rtmp.session``;
this module only moves bytes, enforces connection limits per address, and drives the
sessions' timers from one periodic tick (one timer for all connections, not one each).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import ssl
import struct
import termios
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from gateway.addresses import address_key
from gateway.service import Gateway
from rtmp.session import RtmpSession, RtmpShared

log = logging.getLogger("rtmp")

TICK_INTERVAL = 1.0

_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def server_tls_context(cert: Path, key: Path, min_version: str = "1.2") -> ssl.SSLContext:
    """The server context for native RTMPS and the web port (HTTPS, WSS, RTMPTS).

    TLS 1.2 at least by default (BSI TR-02102-2). ``--tls-min-version 1.0`` admits the
    Flash Player 11 era systems that offer nothing newer (Windows 7 without KB3140245,
    old Safari): TLS 1.0/1.1 sign the handshake with MD5+SHA-1, which OpenSSL 3 refuses
    above security level 0 (RFC 8996 deprecates both), so only then is the level lowered
    -- knowingly, for this operator's choice alone.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    version = _TLS_VERSIONS[min_version]
    ctx.minimum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


class AdmissionControl:
    """Connection floods: a cap per address (concurrent and per second) and in total."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.per_address: dict[str, int] = defaultdict(int)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.total = 0

    def admit(self, address: str, now: float) -> str | None:
        """None when admitted, else the reason for refusing.

        Addresses are counted by :func:`~gateway.addresses.address_key` (IPv6 by its
        /64, as the HTTP limits do): a host has a whole /64 to pick addresses from."""
        address = address_key(address)
        limits = self.gateway.config.limits
        if self.total >= limits.max_connections:
            return "too many connections"
        if self.per_address[address] >= limits.max_connections_per_address:
            return "too many connections from this address"
        rate = limits.connection_rate_per_address
        tokens, last = self._buckets.get(address, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return "connection rate from this address too high"
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > 10000:  # forget idle addresses, bounded memory
            cutoff = now - 60
            self._buckets = {a: b for a, b in self._buckets.items() if b[1] > cutoff}
        self.per_address[address] += 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        address = address_key(address)
        self.total -= 1
        left = self.per_address[address] - 1
        if left <= 0:
            self.per_address.pop(address, None)
        else:
            self.per_address[address] = left


def _backlog_of(transport: asyncio.Transport, sock: Any) -> Callable[[], int]:
    """Bytes written but not yet at the player: the transport's buffer plus the kernel's
    send queue (TIOCOUTQ: unsent and unacknowledged bytes, Linux tcp(7)). The kernel's
    share matters: 256 KiB there are seconds of video for a player that stopped reading."""
    fileno = sock.fileno() if sock is not None else -1
    user = transport.get_write_buffer_size
    if fileno < 0:
        return user
    arg = b"\0\0\0\0"

    def backlog() -> int:
        try:
            kernel: int = struct.unpack("i", fcntl.ioctl(fileno, termios.TIOCOUTQ, arg))[0]
        except OSError:
            kernel = 0
        return user() + kernel

    return backlog


class _RtmpProtocol(asyncio.Protocol):
    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.session: RtmpSession | None = None
        self.transport: asyncio.Transport | None = None
        self.address = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        refused = self.server.admission.admit(self.address, time.monotonic())
        if refused is not None:
            log.warning("rtmp %s %s: refused: %s", self.server.kind, self.address, refused)
            self.address = ""
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        send_buffer = self.server.gateway.config.limits.socket_send_buffer
        if sock is not None and send_buffer > 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.session = RtmpSession(
            self.server.gateway,
            shared=self.server.shared,
            transport=self.server.kind,
            peer=self.address,
            write=transport.write,
            close=transport.close,
            buffer_size=_backlog_of(transport, sock),
        )
        self.server.sessions.add(self.session)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        try:
            session.receive_data(data)
        except Exception:
            # A bug, not the peer's fault alone: keep the traceback, close only this one.
            log.exception("rtmp %s %s: internal error; closing", self.server.kind, self.address)
            session.close()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None:
            session.connection_lost()
            self.server.sessions.discard(session)
            self.session = None
        if self.address:
            self.server.admission.release(self.address)
            self.address = ""


class RtmpServer:
    """RTMP on a TCP port; with an SSL context, native RTMPS (what ffmpeg/OBS call rtmps)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        shared: RtmpShared,
        kind: str = "rtmp",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.gateway = gateway
        # shared with the gateway's other RTMP servers and the RTMPT tunnels
        self.shared = shared
        self.kind = kind
        self.ssl_context = ssl_context
        self.sessions: set[RtmpSession] = set()
        self.admission = AdmissionControl(gateway)
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _RtmpProtocol(self), host, port, ssl=self.ssl_context, backlog=256
        )
        self._ticker = asyncio.create_task(self._tick_forever(), name=f"{self.kind}-tick")

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.monotonic()
            for session in list(self.sessions):
                session.tick(now)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()
            for session in list(self.sessions):
                session.close()
            await self._server.wait_closed()
            self._server = None

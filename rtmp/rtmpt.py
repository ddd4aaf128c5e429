"""RTMPT: RTMP tunnelled through HTTP POSTs, sans-I/O.

An RTMPT client (Flash Player behind a proxy, ffmpeg's and librtmp's ``rtmpt://``)
speaks plain RTMP, but carries it in HTTP requests on the web port:

``POST /fcs/ident2``
    probed first by Flash; answered ``404``.
``POST /open/1``
    opens a tunnel; the answer is the tunnel id and a newline, *without* a polling byte.
``POST /send/<id>/<seq>``
    the body is RTMP bytes from the client.
``POST /idle/<id>/<seq>``
    a poll without data (ffmpeg and librtmp send one ``\\0`` byte, ignored).
``POST /close/<id>/<seq>``
    the client leaves.

Answers to ``/send`` and ``/idle`` start with the *polling-delay byte* and carry every
byte the server has for the client since the last poll. The byte follows FMS: ``0x01``
while data flows, then, poll after empty poll, ``0x03``, ``0x05``, ``0x09``, ``0x11``
and at most ``0x21`` (Flash waits longer between polls the higher it is; ffmpeg and
librtmp read and ignore it).

This module knows nothing of HTTP servers or event loops: the aiohttp glue
(``web/rtmpt.py``) parses the request, calls :class:`RtmptTunnels` with the path
parameters, the body and the time, and writes the :class:`Reply` back. Each tunnel
drives one transport-independent RTMP session (``rtmp.session.RtmpSession`` in the
gateway) through the same ``write``/``close``/``buffer_size`` callables the TCP server
gives it: ``write`` appends to the tunnel's pending output, ``buffer_size`` reports how
much is pending, so a player whose client polls too slowly loses frames until the next
keyframe exactly as a slow TCP player does, and a tunnel whose pending output exceeds a
hard cap is closed.

Clients often never send ``/close`` (a Flash page closed, a killed ffmpeg): a tunnel
without a request for ``idle_timeout`` seconds is ended by :meth:`RtmptTunnels.tick`
and its RTMP session closed, which releases everything it held (published stream,
players, the participant's connection).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("rtmp")

CONTENT_TYPE = "application/x-fcs"

# FMS's polling delays: 0x01 while data flows, growing while the tunnel is idle.
POLL_DELAYS = (0x01, 0x03, 0x05, 0x09, 0x11, 0x21)
# Consecutive empty polls before the delay steps up one rung (ffmpeg polls every 50 ms
# when idle: about 1 s from 0x01 to 0x21).
EMPTY_POLLS_PER_STEP = 4
# Sequence numbers: decimal, as every client sends them. ffmpeg and librtmp count from 0
# after /open/1; a number beyond 31 bits is no client's.
MAX_SEQ = 2**31 - 1
_SEQ = re.compile(r"[0-9]{1,10}")
# Tunnel ids: 128 random bits, hex (safe in any URL path and in ffmpeg's 64-byte buffer).
_ID = re.compile(r"[0-9a-f]{32}")
# An idle poll that finds nothing pending may be held this long, answered as soon as
# output arrives (see RtmptTunnels.idle_or_wait): librtmp polls again the moment an
# answer arrives, thousands of times a second on an idle tunnel, and ffmpeg's player
# sleeps 50 ms between empty polls; holding keeps both cheap and quick.
IDLE_HOLD = 0.1
# A tunnel whose RTMP session ended keeps its last bytes (an _error, a close status) for
# the client's next poll, but not for long.
CLOSED_LINGER = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: the HTTP status and the body (``Content-Type`` is always
    :data:`CONTENT_TYPE`). Error bodies are one line of text saying what was wrong."""

    status: int
    body: bytes


class TransportSession(Protocol):
    """The RTMP session a tunnel drives (``rtmp.session.RtmpSession``)."""

    @property
    def closed(self) -> bool: ...

    def receive_data(self, data: bytes, now: float | None = None) -> None: ...

    def tick(self, now: float) -> None: ...

    def abort(self, reason: str) -> None: ...

    def close(self) -> None: ...

    def connection_lost(self) -> None: ...


class Admission(Protocol):
    """Connection admission per address (``rtmp.server.AdmissionControl``)."""

    def admit(self, address: str, now: float) -> str | None: ...

    def release(self, address: str) -> None: ...


# (tunnel) -> the RTMP session it carries, built with the tunnel's write/close/buffer_size
SessionFactory = Callable[["Tunnel"], TransportSession]


def _error(status: int, text: str) -> Reply:
    return Reply(status, text.encode() + b"\n")


NOT_FOUND = _error(404, "no such RTMPT session (unknown, closed or timed out)")


class Tunnel:
    """One RTMPT tunnel: sequence, pending output, polling delay, liveness."""

    def __init__(
        self, tunnel_id: str, *, peer: str, transport: str, max_pending: int, now: float
    ) -> None:
        self.id = tunnel_id
        self.peer = peer
        self.transport = transport  # "rtmpt" or "rtmpts"
        self.max_pending = max_pending
        self.opened = now
        self.last_request = now
        self.last_seq = -1
        self.pending = bytearray()
        self.session: TransportSession | None = None
        self.server_closed = False  # the RTMP session closed its "transport"
        self.closed_at: float | None = None  # when the table first saw that
        self.overflow = False
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._delay_step = 0
        self._empty_polls = 0
        # Set by the I/O glue while an idle poll is held: called when output arrives,
        # the session closes or the tunnel ends.
        self.waiter: Callable[[], None] | None = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter()

    # -- the transport callables the RTMP session gets ----------------------------------
    def write(self, data: bytes) -> None:
        if self.server_closed or self.overflow:
            return
        if len(self.pending) + len(data) > self.max_pending:
            # The client stopped collecting (media already drops at the session's own
            # player limit, so this is a client that does not poll at all): drop and close.
            self.overflow = True
            self._wake()
            return
        self.pending += data
        self._wake()

    def close_transport(self) -> None:
        self.server_closed = True
        self._wake()

    def buffer_size(self) -> int:
        return len(self.pending)

    # -- polling ------------------------------------------------------------------------
    @property
    def polling_delay(self) -> int:
        return POLL_DELAYS[self._delay_step]

    def take_output(self, data_in: bool) -> bytes:
        """Polling byte + everything pending; adjusts the delay for the next answer."""
        out = self.pending
        if out or data_in:
            self._delay_step = 0
            self._empty_polls = 0
        else:
            self._empty_polls += 1
            if self._empty_polls >= EMPTY_POLLS_PER_STEP:
                self._empty_polls = 0
                self._delay_step = min(self._delay_step + 1, len(POLL_DELAYS) - 1)
        body = bytes((POLL_DELAYS[self._delay_step],)) + out
        self.bytes_out += len(out)
        self.pending = bytearray()
        return body


class RtmptTunnels:
    """The table of open tunnels and the rules of the RTMPT requests."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        idle_timeout: float,
        max_pending: int,
        max_body: int,
        admission: Admission | None = None,
        new_id: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self.factory = factory
        self.idle_timeout = idle_timeout
        self.max_pending = max_pending
        self.max_body = max_body
        self.admission = admission
        self.new_id = new_id
        self.tunnels: dict[str, Tunnel] = {}

    def __len__(self) -> int:
        return len(self.tunnels)

    def __iter__(self) -> Iterator[Tunnel]:
        return iter(list(self.tunnels.values()))

    # -- requests -----------------------------------------------------------------------
    def open(self, *, peer: str, transport: str, now: float) -> Reply:
        """``/open/1``: a new tunnel and its RTMP session; the answer is ``id\\n``."""
        if self.admission is not None:
            refused = self.admission.admit(peer, now)
            if refused is not None:
                log.warning("rtmp %s %s: refused: %s", transport, peer, refused)
                return _error(503, f"RTMPT session refused: {refused}")
        tunnel_id = self.new_id()
        while tunnel_id in self.tunnels:  # pragma: no cover - 128 random bits
            tunnel_id = self.new_id()
        tunnel = Tunnel(
            tunnel_id, peer=peer, transport=transport, max_pending=self.max_pending, now=now
        )
        try:
            tunnel.session = self.factory(tunnel)
        except Exception:
            if self.admission is not None:
                self.admission.release(peer)
            raise
        self.tunnels[tunnel_id] = tunnel
        log.info("rtmp %s %s: tunnel opened", transport, peer)
        return Reply(200, tunnel_id.encode() + b"\n")

    def send(self, tunnel_id: str, seq: str, body: bytes, now: float) -> Reply:
        """``/send/<id>/<seq>``: feed the RTMP bytes, answer with what is pending."""
        result = self._poll(tunnel_id, seq, body, now, hold=False)
        assert isinstance(result, Reply)
        return result

    def idle(self, tunnel_id: str, seq: str, now: float) -> Reply:
        """``/idle/<id>/<seq>``: answer with what is pending (the body is ignored)."""
        result = self._poll(tunnel_id, seq, b"", now, hold=False)
        assert isinstance(result, Reply)
        return result

    def idle_or_wait(self, tunnel_id: str, seq: str, now: float) -> Reply | Tunnel:
        """``/idle`` for callers that can hold the request: the answer, or, when nothing
        is pending, the tunnel. The caller then sets :attr:`Tunnel.waiter`, waits for
        it at most :data:`IDLE_HOLD` seconds and answers with :meth:`collect`."""
        return self._poll(tunnel_id, seq, b"", now, hold=True)

    def collect(self, tunnel: Tunnel) -> Reply:
        """The answer to a held idle poll (after its wait, whatever ended it)."""
        if self.tunnels.get(tunnel.id) is not tunnel:
            return NOT_FOUND  # closed by the client or ended meanwhile
        return self._answer(tunnel, False)

    def close(self, tunnel_id: str, seq: str, now: float) -> Reply:
        """``/close/<id>/<seq>``: the client leaves; its RTMP session ends at once."""
        tunnel = self.tunnels.get(tunnel_id) if _ID.fullmatch(tunnel_id) else None
        if tunnel is None:
            return NOT_FOUND
        bad = self._check_seq(tunnel, seq, carries_data=False)
        if bad is not None:
            return bad
        tunnel.last_request = now
        self._end(tunnel, None)
        return Reply(200, b"\x00")

    def _poll(
        self, tunnel_id: str, seq: str, body: bytes, now: float, *, hold: bool
    ) -> Reply | Tunnel:
        tunnel = self.tunnels.get(tunnel_id) if _ID.fullmatch(tunnel_id) else None
        if tunnel is None:
            return NOT_FOUND
        if len(body) > self.max_body:
            return _error(413, f"RTMPT request body over {self.max_body} bytes")
        bad = self._check_seq(tunnel, seq, carries_data=bool(body))
        if bad is not None:
            return bad
        tunnel.last_request = now
        tunnel.requests += 1
        session = tunnel.session
        if body and session is not None and not tunnel.server_closed:
            tunnel.bytes_in += len(body)
            try:
                session.receive_data(body, now)
            except Exception:
                # A bug, not the peer's fault alone: keep the traceback, end only this one.
                log.exception("rtmp %s %s: internal error; closing", tunnel.transport, tunnel.peer)
                session.abort("internal error")
        if hold and not (tunnel.pending or tunnel.overflow or tunnel.server_closed):
            return tunnel
        return self._answer(tunnel, bool(body))

    def _answer(self, tunnel: Tunnel, data_in: bool) -> Reply:
        if tunnel.overflow:
            self._end(tunnel, "output over the RTMPT pending limit (client does not poll)")
            return _error(503, "RTMPT session closed: the client did not collect its data")
        if tunnel.server_closed:
            # The RTMP session ended (a refusal, a protocol error, the consultation's
            # end): hand over its last words, then the tunnel is gone.
            self._remove(tunnel, "closed by the server")
            if not tunnel.pending:
                return _error(400, "RTMPT session closed by the server (see its RTMP status)")
        return Reply(200, tunnel.take_output(data_in))

    def _check_seq(self, tunnel: Tunnel, seq: str, *, carries_data: bool) -> Reply | None:
        """Sequence numbers are decimal and below 2^31. A request with RTMP bytes must
        come after every earlier one (a replayed or reordered ``/send`` would feed bytes
        twice or out of order); an ``/idle`` or ``/close`` carries none, so one that
        overtook a ``/send`` on another HTTP connection is harmless and accepted."""
        if not _SEQ.fullmatch(seq) or int(seq) > MAX_SEQ:
            return _error(400, "RTMPT sequence number must be a decimal number below 2^31")
        number = int(seq)
        if number <= tunnel.last_seq and carries_data:
            return _error(400, f"RTMPT sequence number {number} is not after {tunnel.last_seq}")
        tunnel.last_seq = max(tunnel.last_seq, number)
        return None

    # -- time -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Timers: the RTMP sessions' own (handshake, idle, pings) and the tunnels'
        expiry (no request for ``idle_timeout``; closed and not collected)."""
        for tunnel in list(self.tunnels.values()):
            session = tunnel.session
            if tunnel.overflow:
                self._end(tunnel, "output over the RTMPT pending limit (client does not poll)")
            elif tunnel.server_closed:
                if tunnel.closed_at is None:
                    tunnel.closed_at = now
                elif now - tunnel.closed_at >= CLOSED_LINGER:
                    self._remove(tunnel, "closed by the server")
            elif now - tunnel.last_request > self.idle_timeout:
                self._end(tunnel, "idle timeout (no RTMPT request)")
            elif session is not None:
                session.tick(now)
                if tunnel.overflow:
                    self._end(tunnel, "output over the RTMPT pending limit")

    def close_all(self) -> None:
        """Shutdown: every tunnel's RTMP session is closed."""
        for tunnel in list(self.tunnels.values()):
            session = tunnel.session
            if session is not None and not session.closed:
                session.close()
            self._remove(tunnel, "shutdown")

    # -- ending -----------------------------------------------------------------------------
    def _end(self, tunnel: Tunnel, reason: str | None) -> None:
        """End the RTMP session (an abort with a log line when ``reason`` is given) and
        forget the tunnel."""
        session = tunnel.session
        if session is not None and not session.closed:
            if reason is None:
                session.connection_lost()
            else:
                session.abort(reason)
        self._remove(tunnel, reason or "closed by the client")

    def _remove(self, tunnel: Tunnel, how: str) -> None:
        if self.tunnels.pop(tunnel.id, None) is None:
            return
        tunnel._wake()
        if self.admission is not None:
            self.admission.release(tunnel.peer)
        log.info(
            "rtmp %s %s: tunnel ended (%s) after %.0f s, %d requests, %d bytes in, %d out",
            tunnel.transport,
            tunnel.peer,
            how,
            tunnel.last_request - tunnel.opened,
            tunnel.requests,
            tunnel.bytes_in,
            tunnel.bytes_out,
        )

"""The RTMP application ``consult``: what a connection means for a consultation.

:class:`RtmpSession` sits between one :class:`~rtmp.connection.RtmpConnection` (the
protocol) and the gateway core (consultations, published streams). It does no socket
I/O itself: the TCP/TLS server and the RTMPT tunnel hand it bytes and give it a
``write`` callable, so both transports share every rule here.

A newcomer reads it in this order:

* this module: the session's state, the transport boundary (:meth:`~RtmpSession.receive_data`,
  :meth:`~RtmpSession.flush`, :meth:`~RtmpSession.tick`, closing), the dispatch of the
  protocol's events, and who the connection is (``bind``, ``authorize_stream``);
* ``rtmp/commands.py``: every command by name (``connect``, ``createStream``, the
  consultation's calls such as ``chat`` and ``documents``);
* ``rtmp/publisher.py``: ``publish`` and the media a publisher sends into the core;
* ``rtmp/player.py``: ``play`` and :class:`~rtmp.player.PlayerReceiver`, which writes a
  published stream to the socket;
* ``rtmp/output.py``: the write batch shared by a gateway's sessions and the time
  behind live of one session's output.

Time: the transport passes ``now`` to ``receive_data`` and ``tick`` for the timers
(handshake, connect, idle, pings). The output's time behind live is kept on the
session's ``clock`` (``time.monotonic`` unless a test passes a fake one): the fan-out
into a player has no time to pass in, so :meth:`rtmp.player.PlayerReceiver.deliver`
reads the clock once per unit and hands that ``now`` to the lag check and the write;
:class:`rtmp.output.LagMeter` itself reads no clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.channel import ParticipantChannel
from gateway.consultation import Connection, Grant
from gateway.events import ChatMessage, ConsultationEvent, SessionEnded
from gateway.media import PublishedStream
from gateway.quality import INTERVAL as QUALITY_INTERVAL
from gateway.service import Gateway
from rtmp.commands import COMMANDS, split_query
from rtmp.connection import RtmpConnection, Stages
from rtmp.events import (
    CommandReceived,
    DataReceived,
    HandshakeCompleted,
    MediaReceived,
    PingResponse,
    ProtocolViolation,
    RtmpEvent,
    SharedObjectReceived,
)
from rtmp.output import LagMeter, RtmpShared
from rtmp.player import PlayerReceiver
from rtmp.publisher import Uplink, on_data, on_media, stop_publishing, uplink_ended

__all__ = ["PING_INTERVAL", "PlayerReceiver", "RtmpSession", "RtmpShared"]

log = logging.getLogger("rtmp")

PING_INTERVAL = 30.0

# connect capability bits (Adobe RTMP spec 7.2.1.1)
SUPPORT_VID_H264 = 0x0080
SUPPORT_SND_AAC = 0x0400


class RtmpSession:
    """Application logic for one RTMP connection (any transport)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        shared: RtmpShared,
        transport: str,
        peer: str,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        buffer_size: Callable[[], int],
        now: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        limits = gateway.config.limits
        self.transport = transport
        self.peer = peer
        self._write = write
        self._close_transport = close
        self.buffer_size = buffer_size
        self.clock = clock
        self.player_buffer_limit = limits.player_buffer_bytes
        # Time behind live (issue 11, item 5): what was written but is not at the peer
        # yet, by when it was written (rtmp/output.py).
        self.max_lag = limits.player_max_lag
        self.output = LagMeter()
        self.conn = RtmpConnection(
            max_message_size=limits.max_message_size,
            max_chunk_size=limits.max_chunk_size,
            max_chunk_streams=limits.max_chunk_streams,
            stages=Stages(
                pre_connect_size=limits.pre_connect_message_size,
                pre_connect_values=limits.pre_connect_amf_values,
                command_size=limits.command_message_size,
                max_values=limits.amf_max_values,
                budget=shared.budget,
            ),
        )
        self.batch = shared.batch
        self.closed = False
        self.started = clock() if now is None else now
        # the idle timer restarts with each complete message, not with each byte: one
        # byte every so often must not hold a slot (issue 11, item 4)
        self.last_receive = self.started
        self.handshake_at: float | None = None
        self._last_ping = self.started
        self.connected = False  # connect accepted
        self._redirecting: asyncio.Future[None] | None = None  # cluster: connect elsewhere
        self.grant: Grant | None = None
        self.capabilities: dict[str, Any] = {}
        self.flash_version = ""
        self.publishing: dict[int, PublishedStream] = {}
        self.playing: dict[int, PlayerReceiver] = {}
        self._participant_conn: Connection | None = None
        # the participant's channel (gateway/channel.py): its events, listings and URLs
        self.channel: ParticipantChannel | None = None
        self.media_errors = 0
        # when the read being processed began (time.perf_counter(), the latency meter's
        # clock, gateway/latency.py): the arrival of the messages it completes
        self.read_at = 0.0
        self.uplink: Uplink | None = None  # while publishing as the customer

    # -- transport boundary -------------------------------------------------------------
    def receive_data(self, data: bytes, now: float | None = None) -> None:
        if self.closed:
            return
        now = self.clock() if now is None else now
        self.read_at = time.perf_counter()  # the messages this read completes arrived
        conn = self.conn
        before = conn.messages_received
        conn.receive_data(data)
        if conn.messages_received != before:
            self.last_receive = now
        if self.handshake_at is None and conn.handshake_done:
            self.handshake_at = now
        # One read often completes several messages: players get one write per read
        # instead of one per message (the socket write is the relay's biggest cost).
        batch = self.batch
        batch.begin()
        try:
            event = conn.next_event()
            while event is not None:
                if type(event) is MediaReceived:
                    on_media(self, event)
                else:
                    self._on_event(event)
                if self.closed:
                    return
                event = conn.next_event()
        finally:
            batch.end()
        self.flush(now)  # the read's time: microseconds do not matter to a lag in seconds

    def flush(self, now: float | None = None) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.output.wrote(len(data), self.clock() if now is None else now)
            self._write(data)

    def tick(self, now: float) -> None:
        """Timers: handshake timeout, idle timeout, keep-alive pings (time passed in)."""
        if self.closed:
            return
        limits = self.gateway.config.limits
        if not self.conn.handshake_done and now - self.started > limits.handshake_timeout:
            self.abort("handshake timeout")
            return
        if (
            self.grant is None
            and self.handshake_at is not None
            and now - self.handshake_at > limits.connect_timeout
        ):
            # connect with a valid token (at connect, publish or play) or go: a slot
            # is not held by a client that never says who it is
            self.abort("no authorised connect in time")
            return
        if now - self.last_receive > limits.idle_timeout:
            self.abort("idle timeout")
            return
        uplink = self.uplink
        if uplink is not None and now >= uplink.next_at:
            uplink.next_at = now + QUALITY_INTERVAL
            uplink.consultation.emit(uplink.event(now))
            # the round trip for the next event: only a ping answered within the
            # interval counts (a frozen client answers none, and shows no stale one)
            uplink.rtt_ms = None
            self._last_ping = now
            self.conn.ping(int(self.clock() * 1000))
            self.flush()
        # Pings are what an honest player (which sends nothing else) answers with a whole
        # message; they come often enough that a short idle_timeout never cuts it.
        interval = min(PING_INTERVAL, limits.idle_timeout / 4)
        if self.conn.handshake_done and now - self._last_ping >= interval:
            self._last_ping = now
            self.conn.ping(int(now * 1000))
            self.flush()

    def abort(self, reason: str) -> None:
        """Close this one connection because of the peer; one log line."""
        if self.closed:
            return
        log.warning("rtmp %s %s: closing: %s", self.transport, self.peer, reason)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.conn.close()
        self._cleanup()
        self._close_transport()

    def connection_lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()
            self._cleanup()

    def _cleanup(self) -> None:
        for stream in self.publishing.values():
            stream.stop(owner=self)
        self.publishing.clear()
        uplink_ended(self)
        for receiver in self.playing.values():
            receiver.detach()
        self.playing.clear()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.grant is not None and self._participant_conn is not None:
            self.grant.consultation.detach(self.grant.role, self._participant_conn)
            self._participant_conn = None

    # -- events -------------------------------------------------------------------------
    def _on_event(self, event: RtmpEvent) -> None:
        if isinstance(event, CommandReceived):
            self.on_command(event)
        elif isinstance(event, DataReceived):
            on_data(self, event)
        elif isinstance(event, ProtocolViolation):
            self.abort(event.reason)
        elif isinstance(event, HandshakeCompleted):
            log.debug(
                "rtmp %s %s: handshake done (digest=%s)", self.transport, self.peer, event.digest
            )
        elif isinstance(event, SharedObjectReceived):
            # Remote shared objects are not part of the consultation: ignore cleanly.
            log.debug("rtmp %s: shared object %r ignored", self.peer, event.name[:40])
        elif isinstance(event, PingResponse) and self.uplink is not None:
            # our PingRequest carried the clock in ms, echoed back: the round trip,
            # modulo the field's 32 bits (a keep-alive ping's too)
            rtt = (int(self.clock() * 1000) - event.timestamp) & 0xFFFFFFFF
            if rtt < 60_000:
                self.uplink.rtt_ms = rtt

    def on_command(self, cmd: CommandReceived) -> None:
        handler = COMMANDS.get(cmd.name)
        if handler is None:
            if cmd.transaction_id > 0:
                self.conn.send_error(
                    cmd.transaction_id,
                    "NetConnection.Call.Failed",
                    f"Method not found ({cmd.name}).",
                )
            return
        if cmd.name != "connect" and not self.connected:
            self.abort(f"{cmd.name!r} before connect")
            return
        handler(self, cmd)

    def _on_session_event(self, event: ConsultationEvent) -> None:
        """One event of the participant's channel (already meant for it, documents and
        forms with URLs of its own for navigateToURL), as an AMF call: ``onChat`` for
        chat, ``onSessionEvent`` with the event's wire object for the rest."""
        if self.closed:
            return
        conn = self.conn
        if isinstance(event, ChatMessage):
            if event.origin is not None and event.origin is self._participant_conn:
                return  # the sender's own message: its client shows it already
            conn.send_command(
                0, "onChat", 0.0, None, str(event.sender), event.text, float(event.ts)
            )
        else:
            conn.send_command(0, "onSessionEvent", 0.0, None, event.wire())
        self.flush()
        if isinstance(event, SessionEnded):
            self.close()

    # -- who this connection is ---------------------------------------------------------
    @property
    def participant_connection(self) -> Connection | None:
        return self._participant_conn

    @property
    def supports_h264(self) -> bool:
        return bool(self.capabilities.get("videoCodecs", 0) & SUPPORT_VID_H264)

    @property
    def supports_aac(self) -> bool:
        return bool(self.capabilities.get("audioCodecs", 0) & SUPPORT_SND_AAC)

    def bind(self, grant: Grant) -> bool:
        """Tie this connection to a participant. A second, different grant is refused."""
        if self.grant is not None:
            return self.grant.consultation is grant.consultation and self.grant.role is grant.role
        self.grant = grant
        self._participant_conn = Connection(kind=self.transport, close=self.close)
        grant.consultation.attach(grant.role, self._participant_conn)
        self.channel = self.gateway.channel(grant.consultation, grant.role)
        # no snapshot for Flash: the SWF asks for documents() and forms() itself
        self.channel.subscribe(self._on_session_event)
        return True

    def authorize_stream(self, params: dict[str, str]) -> Grant | None:
        """The grant for a ``publish``/``play``: a token on the stream name (bound to this
        connection), or the connection's own grant while its token is still valid."""
        token = params.get("token")
        if token is not None:
            grant = self.gateway.authorize(token)
            if grant is None or not self.bind(grant):
                return None
            return grant
        if self.grant is not None and self.gateway.authorize(
            self.grant.consultation.participants[self.grant.role].token
        ):
            return self.grant
        return None

    # -- NetStreams ---------------------------------------------------------------------
    def stream_name(self, cmd: CommandReceived) -> tuple[str, dict[str, str]]:
        """The stream name of a ``publish``/``play`` and its query (``?token=``)."""
        raw = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
        name, params = split_query(raw)
        # FMS accepts "mp4:" style prefixes and a trailing extension; neither applies here.
        return name.strip("/"), params

    def close_stream(self, sid: int) -> None:
        if sid in self.publishing:
            stop_publishing(self, sid)
        receiver = self.playing.pop(sid, None)
        if receiver is not None:
            receiver.detach()

"""RTMP connection as a plain state machine (no sockets), after aioquic's QuicConnection.

Bytes in (:meth:`RtmpConnection.receive_data`), events out (:meth:`next_event`), bytes
to send (:meth:`data_to_send`). The core answers what the protocol itself demands
(ping responses, acknowledgements by window size, window size echo on SetPeerBandwidth,
chunk sizes) and leaves application decisions (accept a connect, authorise a publish)
to its user, which answers through the ``send_*``/``accept_*`` methods.

The same class serves the client side (``is_client=True``) for our Flash-like test
client and the benchmark load generator.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rtmp import messages as m
from rtmp.amf import AmfError, ECMAArray, decode_command_payload, encode_command_payload
from rtmp.chunk import BufferBudget, ChunkReader
from rtmp.chunk_writer import ChunkWriter
from rtmp.events import (
    CommandReceived,
    DataReceived,
    HandshakeCompleted,
    MediaReceived,
    PingResponse,
    ProtocolViolation,
    ResultReceived,
    RtmpEvent,
    SharedObjectReceived,
    UserControlReceived,
)
from rtmp.handshake import ClientHandshake, HandshakeError, ServerHandshake
from rtmp.messages import Message, ProtocolError

# Chunk stream ids as FMS uses them: 2 protocol control (mandatory, spec 5.4),
# 3 NetConnection commands, 5 NetStream commands/data, 4 audio, 6 video.
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_STREAM = 5
CSID_VIDEO = 6

FMS_VERSION = "FMS/4,5,0,297"
DEFAULT_WINDOW = 2_500_000
DEFAULT_OUT_CHUNK_SIZE = 4096
MAX_STREAMS = 16


@dataclass(frozen=True, slots=True)
class Stages:
    """What a server-side peer may send before it has earned more (issue: an
    unauthenticated client must not cost more than a few KiB and a few values).

    * before ``connect`` is accepted: messages of at most ``pre_connect_size`` bytes
      (Flash's ``connect`` is under 2 KiB) with at most ``pre_connect_values`` AMF values
      each (which also caps the properties of the ``connect`` object);
    * connected: commands up to ``command_size`` bytes and ``max_values`` values;
    * on a stream whose publish was authorised (:meth:`RtmpConnection.allow_publish`):
      media and data up to the connection's ``max_message_size``.

    Media and data messages on any other stream are dropped undecoded (counted in
    :attr:`RtmpConnection.dropped`); partial messages may hold twice the current message
    size, and all connections together ``budget`` bytes (when given).
    """

    pre_connect_size: int = 4096
    pre_connect_values: int = 256
    command_size: int = 64 * 1024
    max_values: int = 10_000
    budget: BufferBudget | None = None


class RtmpConnection:
    """One RTMP connection's protocol state."""

    def __init__(
        self,
        *,
        is_client: bool = False,
        max_message_size: int = 16 * 1024 * 1024,
        max_chunk_size: int = 16 * 1024 * 1024,
        max_chunk_streams: int = 64,
        window_ack_size: int = DEFAULT_WINDOW,
        out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
        client_digest: bool = True,
        client_validate: bool = True,
        rng: Callable[[int], bytes] = os.urandom,
        stages: Stages | None = None,
    ) -> None:
        self.is_client = is_client
        self._handshake: ServerHandshake | ClientHandshake
        if is_client:
            self._handshake = ClientHandshake(
                digest=client_digest, validate=client_validate, rng=rng
            )
        else:
            self._handshake = ServerHandshake(rng=rng)
        self.handshake_done = False
        self.digest = False
        self.max_message_size = max_message_size
        # Server side with stages: limits grow as the peer connects and is authorised.
        self.stages = None if is_client else stages
        self.connected = False  # accept_connect was called
        self.publish_streams: set[int] = set()  # streams whose publish was authorised
        self.dropped = 0  # media/data messages dropped undecoded (not allowed yet)
        self.messages_received = 0  # complete messages (an idle timer counts these)
        self._reader = ChunkReader(
            max_message_size=max_message_size,
            max_chunk_size=max_chunk_size,
            max_chunk_streams=max_chunk_streams,
            budget=None if self.stages is None else self.stages.budget,
        )
        self._max_values: int | None = None
        self._apply_stage()
        self._writer = ChunkWriter()
        self._out: list[bytes] = []
        self._events: deque[RtmpEvent] = deque()
        self.closed = False
        self.close_reason: str | None = None
        self.window_ack_size = window_ack_size
        self.out_chunk_size = out_chunk_size
        self.peer_window: int | None = None  # set by the peer: we acknowledge every N bytes
        self._handshake_bytes = 0
        self._acked = 0
        self.object_encoding = 0
        self.streams: set[int] = set()
        self._next_stream_id = 1
        self._next_transaction = 2.0
        self.bytes_sent = 0
        # A client may queue its connect before the handshake is over; it goes after C2.
        self._held: list[bytes] = []
        if is_client:
            self._queue(self._handshake.data_to_send())

    # -- I/O boundary -------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.closed or not data:
            return
        try:
            if not self.handshake_done:
                self._handshake_bytes += len(data)
                self._handshake.receive_data(data)
                out = self._handshake.data_to_send()
                if out:
                    self._queue(out)
                if not self._handshake.done:
                    return
                self.handshake_done = True
                hs = self._handshake
                if isinstance(hs, ServerHandshake):
                    self.digest = hs.digest
                    peer_version = hs.client_version
                else:
                    self.digest = hs.s1_digest_valid
                    peer_version = hs.server_version
                self._events.append(HandshakeCompleted(self.digest, peer_version))
                if self._held:
                    self._out.extend(self._held)
                    self._held.clear()
                data = hs.leftover
                self._handshake_bytes -= len(data)
                if not data:
                    return
            for msg in self._reader.feed(data):
                self.messages_received += 1
                self._handle(msg)
            self._maybe_ack()
        except (HandshakeError, ProtocolError, AmfError) as exc:
            self._violation(str(exc) or exc.__class__.__name__)

    def next_event(self) -> RtmpEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[RtmpEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self.bytes_sent += len(data)
        return data

    def close(self, reason: str = "closed") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._reader.release()  # partial messages go, and their shared budget

    @property
    def bytes_received(self) -> int:
        return self._handshake_bytes + self._reader.bytes_received

    # -- stages (server side) -------------------------------------------------------------
    def allow_publish(self, stream_id: int) -> None:
        """The application authorised a publish on ``stream_id``: take its media."""
        self.publish_streams.add(stream_id)
        self._apply_stage()

    def end_publish(self, stream_id: int) -> None:
        self.publish_streams.discard(stream_id)
        self._apply_stage()

    def _apply_stage(self) -> None:
        stages = self.stages
        reader = self._reader
        if stages is None:
            size = self.max_message_size
            self._max_values = None
        elif not self.connected:
            size = min(stages.pre_connect_size, self.max_message_size)
            self._max_values = stages.pre_connect_values
        elif not self.publish_streams:
            size = min(stages.command_size, self.max_message_size)
            self._max_values = stages.max_values
        else:
            size = self.max_message_size
            self._max_values = stages.max_values
        # Only ever grows while a message may be in progress (a stage is never left
        # for a smaller one but by ending a publish, which only matters from then on).
        reader.max_message_size = size
        reader.max_buffered = 2 * size

    def _accepts_media(self, stream_id: int) -> bool:
        return self.stages is None or stream_id in self.publish_streams

    # -- internals ------------------------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        self._out.append(data)

    def _violation(self, reason: str) -> None:
        self._events.append(ProtocolViolation(reason))
        self.close(reason)

    def _maybe_ack(self) -> None:
        # Spec 5.4.3: acknowledge after receiving bytes equal to the window size.
        window = self.peer_window
        if window and self.bytes_received - self._acked >= window:
            self._acked = self.bytes_received
            self.send(m.ack(self._acked & 0xFFFFFFFF))

    def _handle(self, msg: Message) -> None:
        t = msg.type_id
        if t == m.VIDEO or t == m.AUDIO:
            if not self._accepts_media(msg.stream_id):
                self.dropped += 1
                return
            self._events.append(MediaReceived(msg.stream_id, t, msg.timestamp, msg.payload))
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            self._handle_command(msg, t == m.COMMAND_AMF3)
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            if not self._accepts_media(msg.stream_id):
                self.dropped += 1  # not decoded at all: decoding is the costly part
                return
            values = decode_command_payload(
                msg.payload, t == m.DATA_AMF3, max_values=self._max_values
            )
            self._events.append(DataReceived(msg.stream_id, msg.timestamp, values, msg.payload))
        elif t == m.USER_CONTROL:
            event, uc_values = m.parse_user_control(msg.payload)
            if event == m.UC_PING_REQUEST:
                self.send(m.user_control(m.UC_PING_RESPONSE, uc_values[0] if uc_values else 0))
            elif event == m.UC_PING_RESPONSE:
                self._events.append(PingResponse(uc_values[0] if uc_values else 0))
            else:
                self._events.append(UserControlReceived(event, tuple(uc_values)))
        elif t == m.WINDOW_ACK_SIZE:
            size = m.parse_u32(msg.payload)
            if size == 0:
                raise ProtocolError("window acknowledgement size 0")
            self.peer_window = size
        elif t == m.SET_PEER_BANDWIDTH:
            size, _limit = m.parse_set_peer_bandwidth(msg.payload)
            # Spec 5.4.5: answer with a Window Acknowledgement Size if it differs.
            if size and size != self.window_ack_size:
                self.window_ack_size = size
                self.send(m.window_ack_size(size))
        elif t == m.SET_CHUNK_SIZE or t == m.ABORT or t == m.ACK:
            pass  # the chunk reader applied chunk size/abort; acks need no answer
        elif t == m.SHARED_OBJECT_AMF0 or t == m.SHARED_OBJECT_AMF3:
            self._events.append(_parse_shared_object(msg, t == m.SHARED_OBJECT_AMF3))
        elif t == m.AGGREGATE:
            for sub in m.split_aggregate(msg):
                if sub.type_id == m.AGGREGATE:
                    raise ProtocolError("nested aggregate message")
                self._handle(sub)
        else:
            raise ProtocolError(f"unknown message type {t}")

    def _handle_command(self, msg: Message, amf3: bool) -> None:
        if self.stages is not None and len(msg.payload) > self.stages.command_size:
            # a publisher's messages may be large (video); its commands may not
            raise ProtocolError(
                f"command message of {len(msg.payload)} bytes exceeds {self.stages.command_size}"
            )
        values = decode_command_payload(msg.payload, amf3, max_values=self._max_values)
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError("command without a name and transaction id")
        name = values[0]
        tid = values[1]
        if not isinstance(tid, (int, float)) or isinstance(tid, bool):
            tid = 0.0
        cmd_obj = values[2] if len(values) > 2 else None
        args = list(values[3:])
        if name in ("_result", "_error"):
            self._events.append(
                ResultReceived(msg.stream_id, float(tid), name == "_error", cmd_obj, args, amf3)
            )
        else:
            self._events.append(
                CommandReceived(msg.stream_id, name, float(tid), cmd_obj, args, amf3)
            )

    # -- sending --------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        if self.handshake_done:
            self._out.append(self._writer.write(msg))
        else:
            self._held.append(self._writer.write(msg))

    def send_command(
        self,
        stream_id: int,
        name: str,
        transaction_id: float,
        command_object: Any,
        *args: Any,
        amf3: bool | None = None,
        csid: int | None = None,
    ) -> None:
        use_amf3 = (self.object_encoding == 3) if amf3 is None else amf3
        payload = encode_command_payload([name, transaction_id, command_object, *args], use_amf3)
        type_id = m.COMMAND_AMF3 if use_amf3 else m.COMMAND_AMF0
        if csid is None:
            csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self.send(Message(type_id, stream_id, 0, payload, csid))

    def send_result(
        self, transaction_id: float, command_object: Any, *args: Any, amf3: bool | None = None
    ) -> None:
        self.send_command(0, "_result", transaction_id, command_object, *args, amf3=amf3)

    def send_error(
        self, transaction_id: float, code: str, description: str, amf3: bool | None = None
    ) -> None:
        info = {"level": "error", "code": code, "description": description}
        self.send_command(0, "_error", transaction_id, None, info, amf3=amf3)

    def send_status(
        self, stream_id: int, code: str, description: str, level: str = "status", **extra: Any
    ) -> None:
        """``onStatus`` on a NetStream (FMS sends these with transaction id 0)."""
        info = {"level": level, "code": code, "description": description, **extra}
        self.send_command(stream_id, "onStatus", 0.0, None, info)

    def send_data(self, stream_id: int, values: Sequence[Any], timestamp: int = 0) -> None:
        payload = encode_command_payload(list(values), False)
        self.send(Message(m.DATA_AMF0, stream_id, timestamp, payload, CSID_STREAM))

    def send_data_raw(
        self, stream_id: int, payload: bytes, timestamp: int = 0, amf3: bool = False
    ) -> None:
        self.send(
            Message(
                m.DATA_AMF3 if amf3 else m.DATA_AMF0, stream_id, timestamp, payload, CSID_STREAM
            )
        )

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        csid = CSID_VIDEO if type_id == m.VIDEO else CSID_AUDIO
        self.send(Message(type_id, stream_id, timestamp, payload, csid))

    def stream_begin(self, stream_id: int) -> None:
        self.send(m.user_control(m.UC_STREAM_BEGIN, stream_id))

    def stream_eof(self, stream_id: int) -> None:
        self.send(m.user_control(m.UC_STREAM_EOF, stream_id))

    def ping(self, timestamp: int) -> None:
        self.send(m.user_control(m.UC_PING_REQUEST, timestamp & 0xFFFFFFFF))

    def set_chunk_size(self, size: int) -> None:
        self.send(self._writer.set_chunk_size(size))

    # -- server side helpers ----------------------------------------------------------------
    def accept_connect(self, transaction_id: float, object_encoding: int) -> None:
        """Answer ``connect`` as FMS does: window, peer bandwidth, chunk size, ``_result``."""
        self.connected = True
        self._apply_stage()
        self.object_encoding = 3 if object_encoding == 3 else 0
        self.send(m.window_ack_size(self.window_ack_size))
        self.send(m.set_peer_bandwidth(self.window_ack_size, 2))
        if self.out_chunk_size != self._writer.chunk_size:
            self.set_chunk_size(self.out_chunk_size)
        props = {"fmsVer": FMS_VERSION, "capabilities": 255.0, "mode": 1.0}
        info = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": float(self.object_encoding),
            "data": ECMAArray(version="4,5,0,297"),
        }
        # The connect answer itself is AMF0 (type 20): the client switches to type 17
        # only after reading objectEncoding 3 from it.
        self.send_command(0, "_result", transaction_id, props, info, amf3=False)

    def reject_connect(
        self, transaction_id: float, description: str, redirect: str | None = None
    ) -> None:
        info: dict[str, object] = {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": description,
        }
        if redirect is not None:
            # where to connect instead, as Flash Media Server and Wowza send it: the
            # client finds ``info.ex.code`` 302 and ``info.ex.redirect`` (docs/cluster.md)
            info["ex"] = {"code": 302.0, "redirect": redirect}
        self.send_command(0, "_error", transaction_id, None, info, amf3=False)

    def allocate_stream(self) -> int:
        if len(self.streams) >= MAX_STREAMS:
            raise ProtocolError("too many streams on one connection")
        while self._next_stream_id in self.streams:
            self._next_stream_id += 1
        sid = self._next_stream_id
        self._next_stream_id += 1
        self.streams.add(sid)
        return sid

    def release_stream(self, stream_id: int) -> None:
        self.streams.discard(stream_id)

    # -- client side helpers (Flash-like test client, load generator) -------------------------
    def next_transaction(self) -> float:
        tid = self._next_transaction
        self._next_transaction += 1.0
        return tid

    def connect(
        self,
        app: str,
        tc_url: str,
        *extra: Any,
        object_encoding: int = 3,
        flash_ver: str = "WIN 11,2,202,235",
        video_codecs: float = 252.0,
        audio_codecs: float = 3575.0,
    ) -> float:
        """Send ``connect`` the way Flash Player 11 does (AMF0 message, objectEncoding 3)."""
        props = {
            "app": app,
            "flashVer": flash_ver,
            "swfUrl": "",
            "tcUrl": tc_url,
            "fpad": False,
            "capabilities": 239.0,
            "audioCodecs": audio_codecs,
            "videoCodecs": video_codecs,
            "videoFunction": 1.0,
            "pageUrl": "",
            "objectEncoding": float(object_encoding),
        }
        self.send_command(0, "connect", 1.0, props, *extra, amf3=False)
        self.object_encoding = object_encoding
        return 1.0

    def call(self, name: str, *args: Any, stream_id: int = 0) -> float:
        tid = self.next_transaction()
        self.send_command(
            stream_id, name, tid, None, *args, csid=CSID_COMMAND if stream_id == 0 else 8
        )
        return tid


def _parse_shared_object(msg: Message, amf3: bool) -> SharedObjectReceived:
    """Parse the shared object message header (spec 7.1.3) and its event list."""
    data = msg.payload
    pos = 0
    if amf3 and data[:1] == b"\x00":
        pos = 1  # AMF3 format selector byte
    if len(data) < pos + 2:
        raise ProtocolError("shared object message too short")
    name_len = int.from_bytes(data[pos : pos + 2], "big")
    pos += 2
    if len(data) < pos + name_len + 12:
        raise ProtocolError("shared object message truncated")
    try:
        name = data[pos : pos + name_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("shared object name is not UTF-8") from exc
    pos += name_len + 12  # version u32, persistence flags u32, reserved u32
    events: list[tuple[int, bytes]] = []
    while pos < len(data):
        if len(data) < pos + 5:
            raise ProtocolError("shared object event truncated")
        ev_type = data[pos]
        ev_len = int.from_bytes(data[pos + 1 : pos + 5], "big")
        pos += 5
        if len(data) < pos + ev_len:
            raise ProtocolError("shared object event longer than its message")
        events.append((ev_type, data[pos : pos + ev_len]))
        pos += ev_len
    return SharedObjectReceived(msg.stream_id, amf3, name, events)

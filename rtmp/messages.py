"""RTMP message type constants, the :class:`Message` container and codecs for the
protocol control and user control messages.

References are to the Adobe RTMP specification 1.0 (December 2012):

* 5.4    protocol control messages (set chunk size, abort, acknowledgement, window
         acknowledgement size, set peer bandwidth) -- always message stream 0, chunk
         stream 2 (5.4: "These protocol control messages MUST have message stream ID 0
         ... and be sent in chunk stream ID 2").
* 6.2 / 7.1.7  user control messages (type 4), event type (u16) + event data.
* 6.1.5 / 7.1.6  aggregate messages (type 22).

Everything here is pure byte manipulation; no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "ABORT",
    "ACK",
    "AGGREGATE",
    "AUDIO",
    "COMMAND_AMF0",
    "COMMAND_AMF3",
    "DATA_AMF0",
    "DATA_AMF3",
    "PROTOCOL_CONTROL_CSID",
    "SET_CHUNK_SIZE",
    "SET_PEER_BANDWIDTH",
    "SHARED_OBJECT_AMF0",
    "SHARED_OBJECT_AMF3",
    "UC_PING_REQUEST",
    "UC_PING_RESPONSE",
    "UC_SET_BUFFER_LENGTH",
    "UC_STREAM_BEGIN",
    "UC_STREAM_DRY",
    "UC_STREAM_EOF",
    "UC_STREAM_IS_RECORDED",
    "UC_SWF_VERIFY_REQUEST",
    "UC_SWF_VERIFY_RESPONSE",
    "USER_CONTROL",
    "VIDEO",
    "WINDOW_ACK_SIZE",
    "Message",
    "ProtocolError",
    "abort",
    "ack",
    "parse_set_peer_bandwidth",
    "parse_u32",
    "parse_user_control",
    "set_chunk_size",
    "set_peer_bandwidth",
    "split_aggregate",
    "user_control",
    "window_ack_size",
]

# --- message type ids (spec 5.4 protocol control, 7.1 RTMP message types) -------------
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# --- user control event types (spec 7.1.7) ---------------------------------------------
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7
# FMS extension, not in the spec: a server may ask for the client's SWF verification
# (26); the client answers (27) with 0x01 0x01, the SWF's size twice (u32) and the
# 32-byte HMAC of it (librtmp's RTMP_SendCtrl 0x1B). This server never asks.
UC_SWF_VERIFY_REQUEST = 26
UC_SWF_VERIFY_RESPONSE = 27
_SWF_VERIFY_RESPONSE_BYTES = 42

#: Chunk stream reserved for protocol control messages (spec 5.4, 6.2 for user control).
PROTOCOL_CONTROL_CSID = 2

_U32_MAX = 0xFFFFFFFF
_BE_U32 = struct.Struct(">I")
_BE_U16 = struct.Struct(">H")

# Number of u32 event-data fields for each known user control event (spec 7.1.7):
# StreamBegin/EOF/Dry/IsRecorded carry the stream id, SetBufferLength the stream id and
# the buffer length in ms, PingRequest/PingResponse the server timestamp.
_UC_ARITY: dict[int, int] = {
    UC_STREAM_BEGIN: 1,
    UC_STREAM_EOF: 1,
    UC_STREAM_DRY: 1,
    UC_SET_BUFFER_LENGTH: 2,
    UC_STREAM_IS_RECORDED: 1,
    UC_PING_REQUEST: 1,
    UC_PING_RESPONSE: 1,
}


class ProtocolError(ValueError):
    """The peer sent something the RTMP specification does not allow."""


@dataclass(slots=True)
class Message:
    """One complete RTMP message (spec 6.1: header fields + payload).

    ``timestamp`` is the absolute 32-bit message timestamp in milliseconds; it wraps
    at 2**32 (spec 5.3.1.2 / 6.1.1 "timestamps ... roll over").  ``csid`` is the chunk
    stream the message travelled on (reader) or should travel on (writer).
    """

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int = 0


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} must fit in 32 bits, got {value}")
    return _BE_U32.pack(value)


def _control(type_id: int, payload: bytes) -> Message:
    # Spec 5.4: protocol control messages use message stream 0 and chunk stream 2.
    # The timestamp is ignored by receivers; 0 is what Flash and ffmpeg send.
    return Message(type_id, 0, 0, payload, PROTOCOL_CONTROL_CSID)


def set_chunk_size(n: int) -> Message:
    """Set Chunk Size (spec 5.4.1): 31-bit size, the top bit MUST be zero.

    Sizes above 0xFFFFFF are legal but equivalent to 0xFFFFFF because a message can
    never be longer than that; 1 is the smallest meaningful size.
    """
    if not 1 <= n <= 0x7FFFFFFF:
        raise ValueError(f"chunk size must be in 1..2**31-1, got {n}")
    return _control(SET_CHUNK_SIZE, _BE_U32.pack(n))


def abort(csid: int) -> Message:
    """Abort Message (spec 5.4.2): discard the partial message on ``csid``."""
    return _control(ABORT, _u32(csid, "chunk stream id"))


def ack(seq: int) -> Message:
    """Acknowledgement (spec 5.4.3) carrying the number of bytes received so far.

    The sequence number is a 32-bit field; a long-running session passes 4 GiB, so the
    count is reduced modulo 2**32 like every implementation (Flash, FMS, ffmpeg) does.
    """
    if seq < 0:
        raise ValueError(f"sequence number must be non-negative, got {seq}")
    return _control(ACK, _BE_U32.pack(seq & _U32_MAX))


def window_ack_size(n: int) -> Message:
    """Window Acknowledgement Size (spec 5.4.4)."""
    return _control(WINDOW_ACK_SIZE, _u32(n, "window size"))


def set_peer_bandwidth(n: int, limit_type: int = 2) -> Message:
    """Set Peer Bandwidth (spec 5.4.5): window size + limit type (0 hard, 1 soft, 2 dynamic)."""
    if limit_type not in (0, 1, 2):
        raise ValueError(f"limit type must be 0, 1 or 2, got {limit_type}")
    return _control(SET_PEER_BANDWIDTH, _u32(n, "window size") + bytes((limit_type,)))


def user_control(event: int, *values: int) -> Message:
    """User Control Message (spec 6.2, 7.1.7): u16 event type followed by u32 fields.

    Known events are checked for the right number of fields; unknown event types (for
    example the FMS buffer empty/ready events 31/32) are encoded as given.  Sent on
    chunk stream 2, message stream 0 (spec 6.2: "User Control messages SHOULD use
    message stream ID 0 ... and, when sent over RTMP Chunk Stream, be sent on chunk
    stream ID 2").
    """
    if not 0 <= event <= 0xFFFF:
        raise ValueError(f"event type must fit in 16 bits, got {event}")
    arity = _UC_ARITY.get(event)
    if arity is not None and len(values) != arity:
        raise ValueError(f"user control event {event} takes {arity} value(s), got {len(values)}")
    payload = _BE_U16.pack(event) + b"".join(_u32(v, "event data") for v in values)
    return Message(USER_CONTROL, 0, 0, payload, PROTOCOL_CONTROL_CSID)


def parse_u32(payload: bytes) -> int:
    """Decode a protocol control payload that is exactly one big-endian u32
    (set chunk size, abort, acknowledgement, window acknowledgement size)."""
    if len(payload) != 4:
        raise ProtocolError(f"expected a 4-byte payload, got {len(payload)} bytes")
    value: int = _BE_U32.unpack(payload)[0]
    return value


def parse_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """Decode Set Peer Bandwidth (spec 5.4.5) into ``(window size, limit type)``."""
    if len(payload) != 5:
        raise ProtocolError(f"set peer bandwidth payload must be 5 bytes, got {len(payload)}")
    limit_type = payload[4]
    if limit_type > 2:
        raise ProtocolError(f"invalid set peer bandwidth limit type {limit_type}")
    window: int = _BE_U32.unpack_from(payload)[0]
    return window, limit_type


def parse_user_control(payload: bytes) -> tuple[int, tuple[int, ...]]:
    """Decode a User Control Message (spec 7.1.7) into ``(event, values)``.

    Known events must carry exactly their fields; unknown events must carry a whole
    number of u32 fields (the only shape this gateway can represent).
    """
    if len(payload) < 2:
        raise ProtocolError(f"user control payload too short ({len(payload)} bytes)")
    event: int = _BE_U16.unpack_from(payload)[0]
    body = len(payload) - 2
    arity = _UC_ARITY.get(event)
    if arity is not None:
        if body != 4 * arity:
            raise ProtocolError(
                f"user control event {event} needs {4 * arity} data bytes, got {body}"
            )
    elif event == UC_SWF_VERIFY_RESPONSE and body == _SWF_VERIFY_RESPONSE_BYTES:
        # not u32 fields; unasked for here, so ignored rather than fatal
        return event, ()
    elif body % 4:
        raise ProtocolError(f"user control event {event} data is not a multiple of 4 bytes")
    values = struct.unpack_from(f">{body // 4}I", payload, 2)
    return event, values


# FLV-style tag header inside an aggregate (spec 7.1.6): type u8, data size u24,
# timestamp u24, timestamp extension u8 (bits 24..31), stream id u24.
_AGG_HEADER = 11
_AGG_BACKPOINTER = 4


def split_aggregate(msg: Message) -> list[Message]:
    """Split an Aggregate message (type 22, spec 6.1.5 / 7.1.6) into its sub-messages.

    The body is a sequence of ``header(11) + body + back pointer(4)``.  Per spec 7.1.6
    the aggregate's message stream id overrides the sub-messages' ids, and the
    difference between the aggregate timestamp and the first sub-message timestamp is
    an offset added to every sub-message timestamp (modulo 2**32, timestamps wrap).
    The back pointer is required to be present but not checked against the tag size:
    ffmpeg and librtmp ignore it too, and servers are known to get it wrong.
    """
    data = msg.payload
    end = len(data)
    pos = 0
    out: list[Message] = []
    offset = 0
    while pos < end:
        if end - pos < _AGG_HEADER:
            raise ProtocolError(f"truncated aggregate sub-message header at offset {pos}")
        type_id = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body_start = pos + _AGG_HEADER
        body_end = body_start + size
        if body_end + _AGG_BACKPOINTER > end:
            raise ProtocolError(f"aggregate sub-message at offset {pos} overruns the payload")
        if not out:
            offset = (msg.timestamp - ts) & _U32_MAX
        out.append(
            Message(
                type_id,
                msg.stream_id,
                (ts + offset) & _U32_MAX,
                data[body_start:body_end],
                msg.csid,
            )
        )
        pos = body_end + _AGG_BACKPOINTER
    return out

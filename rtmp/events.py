"""Events an :class:`rtmp.connection.RtmpConnection` produces (aioquic's events.py style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RtmpEvent:
    pass


@dataclass(slots=True)
class HandshakeCompleted(RtmpEvent):
    digest: bool
    peer_version: bytes


@dataclass(slots=True)
class CommandReceived(RtmpEvent):
    """A command (type 20, or 17 for AMF3 clients) other than the ones the core answers."""

    stream_id: int
    name: str
    transaction_id: float
    command_object: Any
    args: list[Any] = field(default_factory=list)
    amf3: bool = False


@dataclass(slots=True)
class ResultReceived(RtmpEvent):
    """A ``_result``/``_error`` for a command we sent (client side)."""

    stream_id: int
    transaction_id: float
    error: bool
    command_object: Any
    args: list[Any] = field(default_factory=list)
    amf3: bool = False


@dataclass(slots=True)
class MediaReceived(RtmpEvent):
    stream_id: int
    type_id: int  # 8 audio, 9 video
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class DataReceived(RtmpEvent):
    """Data message (type 18/15): ``@setDataFrame``, ``onMetaData``, ``|RtmpSampleAccess``."""

    stream_id: int
    timestamp: int
    values: list[Any]
    payload: bytes


@dataclass(slots=True)
class SharedObjectReceived(RtmpEvent):
    stream_id: int
    amf3: bool
    name: str
    events: list[tuple[int, bytes]]


@dataclass(slots=True)
class UserControlReceived(RtmpEvent):
    event_type: int
    values: tuple[int, ...]


@dataclass(slots=True)
class PingResponse(RtmpEvent):
    timestamp: int


@dataclass(slots=True)
class ProtocolViolation(RtmpEvent):
    """The peer broke the protocol; the connection is unusable and must be closed."""

    reason: str

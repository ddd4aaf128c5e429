"""RTP for the telephone leg, sans-I/O: packets (RFC 3550), DTMF events (RFC 4733 and
SIP INFO), the outgoing packetiser and the silence of each codec.

Bytes in, typed values out, nothing sent: the leg (``gateway/phone/leg.py``) owns the
socket. Everything here is written for hostile input (a packet is whatever arrived on
the port): a malformed packet parses to ``None``, never to an exception.
"""

from __future__ import annotations

import re
import secrets
import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")

# The codecs of the telephone leg: SDP encoding name -> (MediaUnit codec, static payload
# type, sample rate of the audio). G.722's RTP clock is 8000 although it samples at 16 kHz
# (RFC 3551 section 4.5.2), so every codec here runs an 8 kHz RTP clock: 160 timestamp
# units per 20 ms packet of 160 bytes (G.711: one byte per sample; G.722: 64 kbit/s).
CODECS: dict[str, tuple[str, int, int]] = {
    "PCMA": ("alaw", 8, 8000),
    "PCMU": ("mulaw", 0, 8000),
    "G722": ("g722", 9, 16000),
}
# Our preference when the caller offers several: A-law first (the German network's
# G.711 law, no transcoding at the PBX), then G.722 (wideband), then µ-law.
PREFERENCE = ("PCMA", "G722", "PCMU")
RTP_CLOCK = 8000
PTIME_MS = 20
FRAME_BYTES = 160  # 20 ms of any of the codecs above
# The byte a codec uses for digital silence: A-law 0xD5 (ITU-T G.711 table 1a, the code
# for +0), µ-law 0xFF; G.722 silence is encoded once (prompts.silence), not a constant.
SILENCE_BYTE = {"alaw": 0xD5, "mulaw": 0xFF}

DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 section 3.2: events 0-15


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def serialize(self) -> bytes:
        return (
            _HEADER.pack(
                RTP_VERSION << 6,
                (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
            + self.payload
        )


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet (RFC 3550 section 5.1), or None for anything else (RTCP on the same
    port, garbage). CSRCs, the header extension and padding are skipped."""
    if len(data) < _HEADER.size:
        return None
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        return None
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:  # RTCP packet types 200-204 share the port (RFC 5761)
        return None
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte counts it
        pad = data[-1]
        if pad == 0 or offset + pad > end:
            return None
        end -= pad
    if offset > end:
        return None
    return RtpPacket(payload_type, seq, ts, ssrc, bytes(data[offset:end]), bool(second & 0x80))


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload (section 2.3)."""

    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent | None:
    if len(payload) < 4:
        return None
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DigitCollector:
    """DTMF digits from RFC 4733 events: one digit per event, however many packets.

    A sender repeats an event's packets while the key is held and sends its end packet
    three times (RFC 4733 section 2.5.1.4); all carry the event's RTP timestamp, so a new
    (timestamp, event) pair is a new key press. A digit counts on its first packet, so a
    lost end packet loses nothing.
    """

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        event = parse_telephone_event(packet.payload)
        if event is None or event.event >= len(DTMF_EVENTS):
            return None
        key = (packet.timestamp, event.event)
        if key == self._last:
            return None
        self._last = key
        return DTMF_EVENTS[event.event]


_INFO_SIGNAL = re.compile(r"^\s*Signal\s*=\s*([0-9*#A-Da-d])\s*$", re.MULTILINE)


def parse_info_digit(content_type: str | None, body: str) -> str | None:
    """The digit of a SIP INFO (``application/dtmf-relay``: ``Signal=5``, the de-facto
    format of Cisco/Asterisk/baresip; ``application/dtmf``: the bare digit), or None."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/dtmf-relay":
        found = _INFO_SIGNAL.search(body[:1024])
        return found.group(1).upper() if found else None
    if kind == "application/dtmf":
        text = body[:16].strip().upper()
        if len(text) == 1 and text in DTMF_EVENTS:
            return text
        if text.isdigit() and int(text) < len(DTMF_EVENTS):
            return DTMF_EVENTS[int(text)]
    return None


class Packetiser:
    """Our outgoing RTP stream: 20 ms frames with a random SSRC, sequence and timestamp
    origin (RFC 3550 section 5.1), the marker bit on the first packet after a gap."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.sent = 0
        self.octets = 0
        self._marker = True

    def packet(self, frame: bytes) -> bytes:
        packet = RtpPacket(
            self.payload_type, self.sequence, self.timestamp, self.ssrc, frame, self._marker
        )
        self._marker = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + RTP_CLOCK * PTIME_MS // 1000) & 0xFFFFFFFF
        self.sent += 1
        self.octets += len(frame)
        return packet.serialize()


def sender_report(packetiser: Packetiser, ntp_seconds: float) -> bytes:
    """An RTCP sender report without report blocks (RFC 3550 section 6.4.1): what a
    telephony stack sends every few seconds so the far end can measure and keep the
    session alive."""
    seconds = int(ntp_seconds)
    fraction = int((ntp_seconds - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        "!BBHIIIIII",
        RTP_VERSION << 6,
        200,
        6,  # length in 32-bit words minus one
        packetiser.ssrc,
        seconds & 0xFFFFFFFF,
        fraction,
        packetiser.timestamp,
        packetiser.sent & 0xFFFFFFFF,
        packetiser.octets & 0xFFFFFFFF,
    )

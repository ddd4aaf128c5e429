"""The sending side of a WHEP peer: media units in, encoded ``av.Packet``s out.

:class:`WebRtcSink` is a :class:`gateway.media.Receiver`: it takes the other
participant's units (passed through, or from a transcoder) and queues them as
``av.Packet``s for two :class:`PacketTrack`s. aiortc's ``RTCRtpSender`` calls
``encoder.pack(packet)`` for packets (``_next_encoded_frame``): no re-encoding in aiortc,
the gateway does all encoding once per target format (docs/architecture.md, "Media routing").
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable
from time import perf_counter

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.codecs import h264
from gateway.latency import METER
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream
from webrtc.seams import Forwarded

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)
TICKS_PER_MS = {VIDEO: 90, AUDIO: 48}
TIME_BASES = {VIDEO: VIDEO_TIME_BASE, AUDIO: AUDIO_TIME_BASE}
# About two seconds of media each: enough to ride out a stall of the sender task,
# small enough that a receiver which is really behind drops instead of lagging.
QUEUE_SIZE = {VIDEO: 64, AUDIO: 100}
# Ask upstream for a keyframe at most this often (PLI storms from several receivers or
# repeated drops must not make the publisher send nothing but keyframes).
KEYFRAME_REQUEST_INTERVAL = 0.5
# Gap put between the last packet before a publisher restart and the first after it.
RESTART_GAP_MS = 40


class PacketTrack(MediaStreamTrack):
    """A track whose ``recv()`` returns ready-encoded ``av.Packet``s from a queue."""

    def __init__(self, kind: str, queue: asyncio.Queue[av.Packet | None]) -> None:
        super().__init__()
        self.kind = kind
        self.queue = queue

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self.queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        source = packet.opaque
        if isinstance(source, Forwarded):
            # sent in the RTP payloads it arrived in (seams.ForwardingEncoder)
            if source.arrived:
                METER.observe(
                    source.origin,
                    "webrtc",
                    source.transcoded,
                    perf_counter() - source.arrived,
                    self.kind,
                    packet.size,
                    forwarded=True,
                )
        elif isinstance(source, tuple):
            # aiortc's sender packetises and sends what this returns right away.
            arrived, origin, transcoded = source
            METER.observe(
                origin, "webrtc", transcoded, perf_counter() - arrived, self.kind, packet.size
            )
        return packet


class WebRtcSink:
    """Units → per-track bounded queues of ``av.Packet``s for one WHEP peer.

    ``negotiated`` is what the browser accepted in the SDP answer (video ``vp8`` or
    ``h264``, audio ``opus``); units of another codec are not deliverable here and are
    counted in ``mismatched`` (routing sends a transcoder's output instead).
    """

    def __init__(
        self, negotiated: dict[str, str], *, clock: Callable[[], float] | None = None
    ) -> None:
        self.negotiated = dict(negotiated)
        # for the keyframe requests' rate limit only: read where a request comes in
        # without a time (aiortc's sender, a drop in deliver) and passed on as ``now``
        self.clock = clock or time.monotonic
        self.queues: dict[str, asyncio.Queue[av.Packet | None]] = {
            kind: asyncio.Queue(QUEUE_SIZE[kind]) for kind in negotiated
        }
        self.tracks: dict[str, PacketTrack] = {
            kind: PacketTrack(kind, queue) for kind, queue in self.queues.items()
        }
        # PLI/FIR from the browser (RFC 4585 §6.3.1, RFC 5104 §4.3.1) and REMB
        # (draft-alvestrand-rmcat-remb): bound to the route by gateway.routing.connect.
        self.on_keyframe_request: Callable[[], None] | None = None
        self.on_bitrate: Callable[[int], None] | None = None
        self.bitrate: int | None = None
        self.delivered = {kind: 0 for kind in negotiated}
        self.dropped = {kind: 0 for kind in negotiated}
        self.mismatched = 0
        self.keyframe_requests = 0
        self.closed = False
        self._waiting_for_keyframe = True
        self._last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL
        self._warned: set[str] = set()
        # H.264: parameter sets from the last config unit, NAL length size
        self._sps: list[bytes] = []
        self._pps: list[bytes] = []
        self._length_size = 4
        # output clock: source timestamps (32-bit ms) unwrapped and rebased so that
        # the RTP timestamps the browser sees never jump back when the publisher restarts
        self._last_in: int | None = None
        self._ext = 0
        self._offset: int | None = None
        self._last_out: int | None = None

    # -- Receiver protocol ------------------------------------------------------------
    def stream_started(self, stream: PublishedStream) -> None:
        self._waiting_for_keyframe = True
        self._sps, self._pps, self._length_size = [], [], 4
        self._last_in = None
        self._offset = None

    def stream_stopped(self, stream: PublishedStream) -> None:
        self._waiting_for_keyframe = True

    def deliver(self, unit: MediaUnit) -> bool:
        if self.closed:
            return True
        kind = unit.kind
        if kind not in self.queues:
            return True  # metadata, or a kind this peer did not negotiate
        if unit.config:
            if unit.codec == "h264":
                self._take_avcc_config(unit.payload)
            return True
        if unit.codec != self.negotiated[kind]:
            self.mismatched += 1
            if unit.codec not in self._warned:
                self._warned.add(unit.codec)
                log.info(
                    "WHEP receiver negotiated %s, source sends %s: not deliverable",
                    self.negotiated[kind],
                    unit.codec,
                )
            return True
        if kind == VIDEO and self._waiting_for_keyframe:
            if not unit.keyframe:
                return True
            self._waiting_for_keyframe = False
        packet = self._packet(unit)
        if packet is None:
            return True
        queue = self.queues[kind]
        if queue.full():
            self.dropped[kind] += 1
            if kind == VIDEO:
                # Drop until the next keyframe (a decoder cannot resume mid-GOP) and ask
                # for one so the gap is short.
                self._waiting_for_keyframe = True
                self.request_keyframe()
            return False
        queue.put_nowait(packet)
        self.delivered[kind] += 1
        return True

    # -- conversions ----------------------------------------------------------------------
    def _take_avcc_config(self, record: bytes) -> None:
        try:
            config = h264.parse_avc_config(record)
            self._sps, self._pps, self._length_size = config.sps, config.pps, config.length_size
        except ValueError:
            log.info("ignoring a malformed AVCDecoderConfigurationRecord")

    def _out_ms(self, timestamp: int) -> int:
        if self._last_in is None:
            self._ext = timestamp
        else:
            delta = (timestamp - self._last_in) & 0xFFFFFFFF
            if delta >= 1 << 31:
                delta -= 1 << 32
            self._ext += delta
        self._last_in = timestamp
        if self._offset is None:
            start = 0 if self._last_out is None else self._last_out + RESTART_GAP_MS
            self._offset = start - self._ext
        out = self._ext + self._offset
        if self._last_out is None or out > self._last_out:
            self._last_out = out
        return out

    def _packet(self, unit: MediaUnit) -> av.Packet | None:
        payload = unit.payload
        if unit.codec == "h264":
            payload = unit.annexb if unit.annexb is not None else self._annexb(unit)
            if not payload:
                return None
        packet = av.Packet(payload)
        kind = unit.kind
        pts = (self._out_ms(unit.timestamp) + unit.cts) * TICKS_PER_MS[kind]
        packet.pts = pts
        packet.dts = pts
        packet.time_base = TIME_BASES[kind]
        packet.is_keyframe = unit.keyframe or kind == AUDIO
        if unit.rtp:
            # the browser's own RTP payloads go out again (docs/webrtc.md, "Forwarding")
            packet.opaque = Forwarded(unit.rtp, unit.arrived, unit.origin, unit.transcoded)
        elif unit.arrived:
            packet.opaque = (unit.arrived, unit.origin, unit.transcoded)
        return packet

    def _annexb(self, unit: MediaUnit) -> bytes:
        """AVCC → Annex-B (aiortc's H.264 packetiser splits on start codes), with SPS/PPS
        in front of every IDR: a browser that joins or lost packets needs them in band
        (RFC 6184 §8.4), and the session core keeps them only in the config unit."""
        try:
            nals = h264.split_avcc(unit.payload, self._length_size)
        except ValueError:
            return b""  # a malformed frame is dropped; the next keyframe recovers
        if not nals:
            return b""
        framed = h264.insert_parameter_sets(nals, self._sps, self._pps)
        if framed is None:
            log.debug("H.264 IDR before any configuration record; waiting")
            self._waiting_for_keyframe = True
            return b""
        return h264.join_annexb(framed)

    # -- control --------------------------------------------------------------------------
    def request_keyframe(self, now: float | None = None) -> None:
        """The browser lost a picture (PLI/FIR), or we dropped video: ask upstream, at
        most once per ``KEYFRAME_REQUEST_INTERVAL``. aiortc's sender calls it without
        arguments (``_send_keyframe``, webrtc/whep.py), so ``now`` is the clock's then."""
        if now is None:
            now = self.clock()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        if self.on_keyframe_request is not None:
            self.on_keyframe_request()

    def bind_feedback(
        self, request_keyframe: Callable[[], None], report_bitrate: Callable[[int], None]
    ) -> None:
        """Where the browser's PLI/FIR and REMB go (gateway.routing.FeedbackSink)."""
        self.on_keyframe_request = request_keyframe
        self.on_bitrate = report_bitrate

    def report_bitrate(self, bitrate: int) -> None:
        """REMB from the browser: the highest bitrate it wants from us now."""
        self.bitrate = bitrate
        if self.on_bitrate is not None:
            self.on_bitrate(bitrate)

    def close(self) -> None:
        """End both tracks: aiortc's sender stops on the track's MediaStreamError."""
        if self.closed:
            return
        self.closed = True
        for queue in self.queues.values():
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

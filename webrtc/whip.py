"""WHIP (RFC 9725): a participant's camera and microphone from a browser into the core.

Each receiver's RTP goes to the gateway's reorder-only buffer (``webrtc/receive.py``,
through aiortc's jitter-buffer seam in ``webrtc.seams``): a frame is handed on, still
encoded, as soon as it is complete and in order – no playout delay (issue 14,
docs/webrtc.md). Frames become ``MediaUnit``s (``vp8``/``h264``/``opus``) on the session
clock (``webrtc.clock``), pushed into ``consultation.streams[role]``; with
``--rtp-receive forward`` they keep the RTP payloads they arrived in, so a WebRTC
receiver of the same codec forwards those instead of packetizing again.
``--rtp-receive aiortc`` keeps aiortc's own jitter buffer (the receivers are registered
for passthrough: their tracks yield the depayloaded frames as ``av.Packet``s).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from time import perf_counter

import av
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import AnyRtcpPacket, RtcpSrPacket, RtpPacket

from gateway.codecs import h264, vp8
from gateway.latency import METER
from gateway.media import AUDIO, VIDEO, AudioParams, MediaUnit, VideoParams
from webrtc import seams
from webrtc.clock import LagMonitor, SessionClock, TrackClock
from webrtc.offer import OfferError, check_offer, media_ssrc, restrict_codecs
from webrtc.receive import AIORTC, FORWARD, RtpReceive
from webrtc.reorder import RtpFrame
from webrtc.session import PeerPlace, PeerSession

log = logging.getLogger(__name__)

# RFC 4585 §6.3.1 leaves PLI pacing to the receiver; one per half second is what a
# recovering stream needs, and several WHEP viewers asking at once become one request.
PLI_INTERVAL = 0.5
OPUS_PARAMS = AudioParams(sample_rate=48000, channels=2)
ARRIVALS_KEPT = 256  # RTP timestamps remembered per track (seconds of video frames)


class _Ingest:
    """One received track: its receiver, clock and reader task."""

    def __init__(self, receiver: RTCRtpReceiver, track: MediaStreamTrack, clock: TrackClock):
        self.receiver = receiver
        self.track = track
        self.clock = clock
        self.media_ssrc: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.frames = 0
        self.lag = LagMonitor()
        self.skipping = False  # video: dropping stale frames until a fresh keyframe
        # RTP timestamp -> when its latest packet arrived (the jitter buffer's share of
        # the delay is measured from there to the frame leaving the buffer)
        self.arrivals: dict[int, float] = {}
        # the reorder-only receive path (None: aiortc's jitter buffer, --rtp-receive aiortc)
        self.rtp: RtpReceive | None = None


def _no_pli() -> None:
    """Audio has no picture to lose."""


class WhipSession(PeerSession):
    """A participant publishing over WebRTC."""

    kind = "whip"

    def __init__(self, place: PeerPlace) -> None:
        super().__init__(place)
        consultation, role, stream = place.consultation, place.role, place.stream
        self.stream = consultation.published(role, stream)
        self.clock = SessionClock()
        self.ingests: dict[str, _Ingest] = {}
        self.negotiated: dict[str, str] = {}
        self.publishing = False
        self.pli_sent = 0
        self._last_pli = -PLI_INTERVAL
        # H.264 parameter sets already announced as a config unit
        self._h264_sets: tuple[bytes, bytes] | None = None

    async def negotiate(self, offer: str) -> str:
        """Answer a WHIP offer; raises OfferError (→ 400) for what we cannot take."""
        description = check_offer(offer, publish=True)
        await self._set_offer(offer)
        self.negotiated = restrict_codecs(self.pc)
        for transceiver in self.pc.getTransceivers():
            # WHIP is one-way (RFC 9725 §4.2): we never send back.
            transceiver.direction = "recvonly"
            receiver = transceiver.receiver
            track = receiver.track
            if track is None:
                continue
            rate = transceiver._codecs[0].clockRate
            settings = self.factory.receive
            ingest: _Ingest
            if settings.mode == AIORTC:
                seams.register_passthrough(receiver)
                clock = self.clock.track(rate, functools.partial(seams.rtp_origin, receiver))
                ingest = _Ingest(receiver, track, clock)
                self._hook_arrivals(ingest)
            else:
                kind = track.kind
                rtp = RtpReceive(
                    kind == VIDEO,
                    self.negotiated.get(kind, ""),
                    settings,
                    functools.partial(self._on_rtp_frame, kind),
                    self.request_keyframe if kind == VIDEO else _no_pli,
                )
                clock = self.clock.track(rate, functools.partial(getattr, rtp, "origin"))
                ingest = _Ingest(receiver, track, clock)
                ingest.rtp = rtp
                seams.tap_receiver(receiver, rtp.on_packet)
            ingest.media_ssrc = media_ssrc(description, transceiver)
            self._hook_sender_reports(ingest)
            self.ingests[track.kind] = ingest
        if not self.ingests:
            raise OfferError("No media section of the offer sends media.")
        await self._answer(offer)
        self.connection.codecs_in = dict(self.negotiated)
        return self.answer_sdp

    def start(self) -> None:
        super().start()
        for kind, ingest in self.ingests.items():
            if ingest.rtp is None:  # aiortc's path: frames come from the track
                ingest.task = asyncio.ensure_future(self._read(kind, ingest))

    # -- RTCP -------------------------------------------------------------------------------
    def _hook_sender_reports(self, ingest: _Ingest) -> None:
        """Wrap this receiver's RTCP handler (per instance; aiortc's transport routes an
        SR to the receiver of its SSRC) to feed sender reports to the track's clock."""
        original = ingest.receiver._handle_rtcp_packet

        async def handle(packet: AnyRtcpPacket) -> None:
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                ingest.clock.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
                if ingest.media_ssrc is None:
                    ingest.media_ssrc = packet.ssrc
            await original(packet)

        ingest.receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]

    def _hook_arrivals(self, ingest: _Ingest) -> None:
        """Wrap this receiver's RTP handler (per instance, like the RTCP one) to note when
        each frame's last packet arrived, for the jitter-buffer delay (gateway/latency.py).
        """
        original = ingest.receiver._handle_rtp_packet
        arrivals = ingest.arrivals

        async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
            arrivals[packet.timestamp] = perf_counter()
            if len(arrivals) > ARRIVALS_KEPT:
                del arrivals[next(iter(arrivals))]
            await original(packet, arrival_time_ms)

        ingest.receiver._handle_rtp_packet = handle  # type: ignore[method-assign]

    def request_keyframe(self) -> None:
        """The stream's ``on_keyframe_request``: a PLI to the browser (RFC 4585 §6.3.1),
        paced, sent through the video receiver (``_send_rtcp_pli``, private)."""
        ingest = self.ingests.get(VIDEO)
        if self.closed or ingest is None:
            return
        now = time.monotonic()
        if now - self._last_pli < PLI_INTERVAL:
            return
        ssrc = ingest.media_ssrc
        if ssrc is None:
            sources = ingest.receiver.getSynchronizationSources()
            if not sources:
                return
            ssrc = sources[0].source
        self._last_pli = now
        self.pli_sent += 1
        self.spawn(ingest.receiver._send_rtcp_pli(ssrc))

    # -- media ------------------------------------------------------------------------------
    async def _read(self, kind: str, ingest: _Ingest) -> None:
        try:
            while not self.closed:
                try:
                    packet = await ingest.track.recv()
                except MediaStreamError:
                    break
                if isinstance(packet, av.Packet) and not self.closed:
                    self._on_packet(kind, ingest, packet)
        except Exception:
            log.exception("%s: reading %s failed", self.label, kind)
            self.close_soon()

    def _start_publishing(self) -> None:
        self.publishing = True
        self._h264_sets = None
        self.stream.start(
            "webrtc",
            owner=self,
            on_preempt=self.close_soon,
            on_keyframe_request=self.request_keyframe,
        )
        log.info("%s: publishing %s", self.label, self.negotiated)

    def _owns_stream(self) -> bool:
        return self.publishing and self.stream.owner is self

    def _on_packet(self, kind: str, ingest: _Ingest, packet: av.Packet) -> None:
        """A frame out of aiortc's own jitter buffer and decoder thread (``--rtp-receive
        aiortc``): its latency counts from its last packet's arrival, as with ours."""
        frame_info = packet.opaque
        codec, released = self.negotiated[kind], perf_counter()
        arrived = released
        if isinstance(frame_info, seams.FrameInfo):
            codec, released = frame_info.codec, frame_info.left_jitter_buffer
            arrived = released
            origin = seams.rtp_origin(ingest.receiver)
            if origin is not None and packet.pts is not None:
                last_packet = ingest.arrivals.pop((packet.pts + origin) & 0xFFFFFFFF, None)
                if last_packet is not None:
                    METER.observe_jitter(kind, released - last_packet)
                    arrived = last_packet
        assert packet.pts is not None
        self._on_frame(kind, ingest, codec, packet.pts, bytes(packet), packet.is_keyframe, arrived)

    def _on_rtp_frame(self, kind: str, frame: RtpFrame, pts: int) -> None:
        """A frame from the reorder-only buffer (``webrtc/receive.py``), on the loop."""
        ingest = self.ingests.get(kind)
        if self.closed or ingest is None:
            return
        # the buffer's own share; the hop to here counts in the added latency
        METER.observe_jitter(kind, (frame.released or perf_counter()) - frame.arrived)
        payloads = frame.payloads if self.factory.receive.mode == FORWARD else None
        codec = self.negotiated[kind]
        keyframe = frame.keyframe or kind == AUDIO
        self._on_frame(kind, ingest, codec, pts, frame.data, keyframe, frame.arrived, payloads)

    def _on_frame(
        self,
        kind: str,
        ingest: _Ingest,
        codec: str,
        pts: int,
        data: bytes,
        keyframe: bool,
        arrived: float,
        payloads: tuple[bytes, ...] | None = None,
    ) -> None:
        if not data:
            return
        if not self.publishing:
            self._start_publishing()
        elif not self._owns_stream():
            return  # another publisher (a newer WHIP session, RTMP) took the stream over
        ingest.frames += 1
        if self.connection.codecs_in.get(kind) != codec:
            self.connection.codecs_in[kind] = codec
        timestamp = ingest.clock.to_ms(pts)
        # An overloaded loop lets frames pile up in aiortc's unbounded receive queues:
        # forwarding them late only grows the delay. Drop what is over a second behind
        # (counted) and restart video at a fresh keyframe.
        if ingest.lag.too_late(timestamp, self.clock.elapsed_ms()):
            if kind == VIDEO and not ingest.skipping:
                ingest.skipping = True
                log.info("%s: %s over a second behind; dropping until a keyframe", self.label, kind)
                self.request_keyframe()
            return
        if ingest.skipping:
            if not keyframe:
                return
            ingest.skipping = False
        if kind == AUDIO:
            first = OPUS_PARAMS if ingest.frames == 1 else None
            self.stream.push(
                MediaUnit(
                    AUDIO,
                    codec,
                    timestamp,
                    data,
                    keyframe=True,
                    audio=first,
                    arrived=arrived,
                    origin="webrtc",
                    rtp=payloads,
                )
            )
        elif codec == "h264":
            self._push_h264(timestamp, data, arrived, payloads)
        else:
            params: VideoParams | None = None
            if keyframe:
                dims = vp8.dimensions(data)
                if dims is not None:
                    params = VideoParams(*dims)
            self.stream.push(
                MediaUnit(
                    VIDEO,
                    codec,
                    timestamp,
                    data,
                    keyframe=keyframe,
                    video=params,
                    arrived=arrived,
                    origin="webrtc",
                    rtp=payloads,
                )
            )

    def _push_h264(
        self, timestamp: int, data: bytes, arrived: float, payloads: tuple[bytes, ...] | None
    ) -> None:
        """Annex-B → AVCC, with a config unit (avcC) before the first IDR and whenever
        SPS/PPS change (docs/media-pipeline.md). Parameter sets travel in the config unit
        only; frames before the first configuration cannot be decoded and are dropped."""
        try:
            nals = h264.split_annexb(data)
        except ValueError:
            self.request_keyframe()  # a malformed frame: drop it, recover at a keyframe
            return
        sps, pps = h264.parameter_sets(nals)
        if sps and pps:
            sets = (b"".join(sps), b"".join(pps))
            if sets != self._h264_sets:
                self._h264_sets = sets
                record = h264.build_avc_config(sps, pps)
                self.stream.push(MediaUnit(VIDEO, "h264", timestamp, record, config=True))
        if self._h264_sets is None:
            self.request_keyframe()
            return
        frame = [n for n in nals if h264.nal_type(n) not in (h264.NAL_SPS, h264.NAL_PPS)]
        if not frame:
            return
        keyframe = any(h264.nal_type(n) == h264.NAL_IDR for n in frame)
        self.stream.push(
            MediaUnit(
                VIDEO,
                "h264",
                timestamp,
                h264.join_avcc(frame),
                keyframe,
                # A WHEP viewer gets the browser's own Annex-B (no AVCC round trip) when
                # an IDR brought its parameter sets, as browsers send them
                annexb=data if not keyframe or (sps and pps) else None,
                arrived=arrived,
                origin="webrtc",
                rtp=payloads,
            )
        )

    # -- end ----------------------------------------------------------------------------------
    def before_close(self) -> None:
        for kind, ingest in self.ingests.items():
            if ingest.rtp is not None:
                ingest.rtp.close()
                stats = ingest.rtp.buffer.stats
                log.info(
                    "%s: %s receive buffer: %d released, %d skipped, %d late, "
                    "%d frames dropped, %d keyframe requests",
                    self.label,
                    kind,
                    stats.released,
                    stats.skipped,
                    stats.late,
                    stats.dropped_frames,
                    stats.pli,
                )
        if self._owns_stream():
            self.stream.stop(owner=self)
        self.publishing = False

    async def after_close(self) -> None:
        tasks = [i.task for i in self.ingests.values() if i.task is not None]
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

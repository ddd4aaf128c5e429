"""Transcoders: one per (source stream, target format), decoding and encoding with PyAV.

A :class:`Transcoder` is a receiver (``gateway.media.Receiver``) attached to a source
:class:`PublishedStream`. ``deliver()`` runs on the event loop and only queues the unit;
a worker thread decodes and encodes (libavcodec releases the GIL while it works, so the
loop keeps serving) and hands the resulting units back to the loop with
``call_soon_threadsafe``, where they are pushed into :attr:`Transcoder.output`, a
:class:`PublishedStream` that RTMP players and WebRTC tracks attach to like any other.

Rules this module keeps (docs/media-pipeline.md, DESIGN.md "Media routing"):

- Bounded queue (about 2 s of media). When it is full, video is dropped until the next
  source keyframe and audio unit by unit; every dropped unit is counted.
- Output timestamps stay on the session clock: video keeps the decoded frame's time,
  audio is counted in samples from the first input timestamp so it is continuous and
  monotonic; both come from the source's own clock, so A/V stay aligned.
- Output H.264 is Baseline without B-frames, AVCC, with an AVCDecoderConfigurationRecord
  config unit first and whenever SPS/PPS change; AAC has its AudioSpecificConfig first.
- Key frames: forced on request (PLI/FIR), at least every 2-3 s, after every encoder
  (re)open (resolution or bitrate change, source restart).
- Decoder errors are counted; video then waits for the next source keyframe. Nothing a
  source sends can end the worker thread.

PyAV 18's ``CodecContext`` has no ``close()``; ``avcodec_free_context`` runs when the
last reference goes. The worker owns the only references and drops them explicitly when
a pipeline resets and when it exits, so codecs are freed on the worker thread at a known
point, not at some later garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from gateway import h264
from gateway.latency import METER, direction
from gateway.media import AUDIO, VIDEO, AudioParams, MediaUnit, PublishedStream, VideoParams

log = logging.getLogger(__name__)

TS_MASK = 0xFFFFFFFF  # RTMP/FLV timestamps are 32-bit milliseconds
MS = Fraction(1, 1000)

VIDEO_TARGETS = ("vp8", "h264", "spark")
AUDIO_TARGETS = ("opus", "aac", "nellymoser", "mp3")

# Source codec (MediaUnit.codec) -> libavcodec decoder.
VIDEO_DECODERS = {"spark": "flv", "vp6": "vp6f", "vp6a": "vp6a", "h264": "h264", "vp8": "vp8"}
AUDIO_DECODERS = {
    "nellymoser": "nellymoser",
    "speex": "speex",  # FFmpeg's native Speex decoder (libspeex is not in PyAV's FFmpeg)
    "mp3": "mp3float",
    "aac": "aac",
    "alaw": "pcm_alaw",
    "mulaw": "pcm_mulaw",
    "opus": "opus",
}
VIDEO_ENCODERS = {"vp8": "libvpx", "h264": "libx264", "spark": "flv"}
AUDIO_ENCODERS = {"opus": "libopus", "aac": "aac", "nellymoser": "nellymoser", "mp3": "libmp3lame"}

# Output sample rates. Opus is always 48 kHz in WebRTC (RFC 7587). AAC at 44.1 kHz is
# what the FLV AAC head byte 0xAF declares (FLV spec E.4.2.1: AAC is signalled as 44 kHz
# stereo; the AudioSpecificConfig is authoritative). Nellymoser at 16 kHz mono has its
# own FLV SoundFormat 4; MP3 at 44.1 kHz is FLV rate index 3.
AUDIO_RATES = {"opus": 48000, "aac": 44100, "nellymoser": 16000, "mp3": 44100}
# Rates an encoder takes as they come: no resampling then (Opus codes 8–48 kHz input
# natively and its RTP clock is 48 kHz whatever the input; Flash and every AAC decoder
# play 48 kHz AAC-LC as well as 44.1). A Flash microphone's 16 kHz Speex stays 16 kHz
# into Opus, a browser's 48 kHz Opus stays 48 kHz into AAC.
NATIVE_RATES = {"opus": (8000, 12000, 16000, 24000, 48000), "aac": (44100, 48000)}

# Forced key frame spacing per output codec: WebRTC receivers ask with PLI when they need
# one, so VP8 can space them wider; Flash players cannot ask, so H.264/Spark key more.
KEYFRAME_INTERVAL_MS = {"vp8": 3000, "h264": 2000, "spark": 2000}
# Requests arriving within this time after a key frame wait for its end: several
# receivers' PLIs for the same loss then cost one key frame, not one each.
MIN_KEYFRAME_GAP_MS = 200

MIN_VIDEO_BITRATE = 50_000
MAX_VIDEO_BITRATE = 5_000_000
# A bitrate drop at least this large is applied at once (congestion); smaller changes
# wait for the next scheduled key frame, as a libvpx/Spark reopen costs one.
URGENT_BITRATE_DROP = 0.7
BITRATE_HYSTERESIS = 0.1

# Audio whose timestamps run ahead of the sample count by more than this (a muted
# microphone, silence suppression, lost packets) is re-anchored to the source clock;
# audio whose sample count runs ahead of its timestamps by more than this is dropped
# until the two agree again, so output timestamps never repeat or go back.
AUDIO_RESYNC_MS = 200
# A source clock jumping back further than this (a broken publisher, not drift) starts
# a new output timeline.
TIMELINE_JUMP_MS = 10_000

_AUDIO_DEFAULTS = {
    "opus": (48000, 2),
    "speex": (16000, 1),
    "nellymoser": (16000, 1),
    "alaw": (8000, 1),
    "mulaw": (8000, 1),
    "pcm": (44100, 1),
    "pcm_le": (44100, 1),
    "mp3": (44100, 2),
    "aac": (44100, 2),
}
# Sampling frequency index of AudioSpecificConfig (ISO/IEC 14496-3 §1.6.3.4, Table 1.18)
_AAC_RATE_INDEX = {
    rate: index
    for index, rate in enumerate(
        (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
    )
}


def audio_specific_config(sample_rate: int, channels: int, object_type: int = 2) -> bytes:
    """AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) for AAC-LC without extensions.

    5 bits audioObjectType (2 = AAC LC), 4 bits samplingFrequencyIndex, 4 bits
    channelConfiguration, then GASpecificConfig: frameLengthFlag, dependsOnCoreCoder and
    extensionFlag, all 0 (1024-sample frames).
    """
    index = _AAC_RATE_INDEX.get(sample_rate)
    if index is None or not 1 <= channels <= 7:
        raise ValueError(f"no AudioSpecificConfig for {sample_rate} Hz x {channels}")
    bits = (object_type << 11) | (index << 7) | (channels << 3)
    return bits.to_bytes(2, "big")


@dataclass(frozen=True)
class TargetFormat:
    """What a group of receivers needs; one transcoder per (source, TargetFormat)."""

    video: str | None  # "vp8" | "h264" | "spark" | None (drop video)
    audio: str | None  # "opus" | "aac" | "nellymoser" | "mp3" | None (drop audio)
    video_bitrate: int = 500_000
    audio_bitrate: int = 32_000

    def __post_init__(self) -> None:
        if self.video is not None and self.video not in VIDEO_TARGETS:
            raise ValueError(f"cannot encode video as {self.video!r}")
        if self.audio is not None and self.audio not in AUDIO_TARGETS:
            raise ValueError(f"cannot encode audio as {self.audio!r}")


@dataclass
class TranscoderStats:
    """Counters for the ops monitor. Each field has one writer (the loop or the worker)."""

    video_in: int = 0  # units taken by the worker
    audio_in: int = 0
    video_frames_decoded: int = 0
    audio_frames_decoded: int = 0
    video_out: int = 0  # encoded units (config units not counted)
    audio_out: int = 0
    keyframes_out: int = 0
    config_out: int = 0
    bytes_out: int = 0  # encoded payload bytes (for the bitrate the ops monitor shows)
    decode_seconds: float = 0.0
    decode_count: int = 0
    encode_seconds: float = 0.0
    encode_count: int = 0
    encode_max_seconds: float = 0.0
    busy_seconds: float = 0.0  # wall time the worker spent on units
    video_media_seconds: float = 0.0
    audio_media_seconds: float = 0.0
    queued: int = 0  # written by deliver() on the loop
    dequeued: int = 0  # written by the worker
    dropped: int = 0  # units refused because the queue was full (or skipped after that)
    drop_episodes: int = 0
    skipped_waiting_keyframe: int = 0  # decoder waiting for a key frame after an error
    audio_resync_drops: int = 0  # frames dropped because samples ran ahead of the clock
    decode_errors: int = 0
    encode_errors: int = 0
    keyframe_requests: int = 0
    encoder_opens: int = 0
    last_error: str | None = None

    @property
    def queue_depth(self) -> int:
        return max(0, self.queued - self.dequeued)

    @property
    def media_seconds(self) -> float:
        return max(self.video_media_seconds, self.audio_media_seconds)

    @property
    def realtime_factor(self) -> float:
        """Media seconds processed per wall second of work (> 1: faster than real time)."""
        return self.media_seconds / self.busy_seconds if self.busy_seconds > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        data["queue_depth"] = self.queue_depth
        data["realtime_factor"] = round(self.realtime_factor, 2)
        data["media_seconds"] = round(self.media_seconds, 3)
        return data


_CLOSE = object()
_NUMBERS = itertools.count(1)


class Transcoder:
    """Decode a source stream and re-encode it to one :class:`TargetFormat`.

    Construct on the event loop (or pass ``loop``); it attaches itself to ``source`` and
    starts its worker thread at once. ``deliver()`` manages drop-until-keyframe itself and
    returns True (False only once closed), so each dropped unit is counted here, not
    just the first of a run. Codecs are chosen per unit (the source may change codec,
    size or sample rate at any time); same-codec targets are re-encoded too, so bitrate
    and key frames stay under control (pass-through is the routing's decision).
    ``threads`` is the encoder thread count (1: parallelism comes from running many
    transcoders, and one thread has no frame-threading delay).
    """

    def __init__(
        self,
        source: PublishedStream,
        target: TargetFormat,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        threads: int = 1,
        max_queued_video: int = 60,
        max_queued_audio: int = 150,
    ) -> None:
        self.source = source
        self.target = target
        self.threads = max(1, threads)
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.output = PublishedStream(f"{source.name}>{target.video or '-'}+{target.audio or '-'}")
        self.number = next(_NUMBERS)  # a label for the ops monitor, unique per process
        self.stats = TranscoderStats()
        self.max_queued_video = max_queued_video
        self.max_queued_audio = max_queued_audio
        self._video_bitrate = _clamp_bitrate(target.video_bitrate)
        self._key_requests = 0  # written on the loop; the worker compares its own count
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Queue bookkeeping, written only by the loop (put) or only by the worker (taken).
        self._put_video = self._put_audio = 0
        self._taken_video = self._taken_audio = 0
        self._skipping = False  # dropping video until the next source keyframe
        self._generation = 0  # bumped at every source start/stop; stale work is dropped
        self._busy = False
        self._closed = False
        self._outbox: list[tuple[int, list[MediaUnit]]] = []
        self._outbox_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"transcode {self.output.name}", daemon=True
        )
        self._thread.start()
        source.add_receiver(self)

    # -- description (ops monitor, /metrics; no personal data) ---------------------------
    def labels(self) -> dict[str, str]:
        """``direction`` (``flash_to_webrtc``…), ``kind`` and ``codec`` (``spark>vp8``).

        The sink side follows from the target codec (VP8/Opus go to browsers, Spark,
        Nellymoser, MP3 and AAC to Flash); H.264 is made for a browser from Flash media
        and for Flash from a browser's."""
        kind = VIDEO if self.target.video else AUDIO
        codec_out = self.target.video or self.target.audio or "-"
        source = self.source
        codec_in = (source.video_codec if kind == VIDEO else source.audio_codec) or "?"
        origin = source.kind or "?"
        if codec_out in ("vp8", "opus"):
            sink = "webrtc"
        elif codec_out == "h264":
            sink = "webrtc" if origin == "rtmp" else "flash"
        else:
            sink = "flash"
        return {
            "direction": direction(origin, sink),
            "kind": kind,
            "codec": f"{codec_in}>{codec_out}",
        }

    # -- control (event loop) -----------------------------------------------------------
    def request_keyframe(self) -> None:
        """Make the next encoded video frame a key frame (a PLI/FIR from a receiver)."""
        self._key_requests += 1
        self.stats.keyframe_requests += 1

    def set_video_bitrate(self, bps: int) -> None:
        """Follow the lowest REMB among the receivers (clamped to sane bounds)."""
        self._video_bitrate = _clamp_bitrate(bps)

    @property
    def video_bitrate(self) -> int:
        return self._video_bitrate

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def pending(self) -> int:
        """Units queued or being worked on (0 when the worker is idle)."""
        return self.stats.queue_depth + (1 if self._busy else 0)

    def close(self, timeout: float = 5.0) -> None:
        """Detach from the source, end the output, join the worker (codecs freed there).

        The worker checks for closing between units, so the join waits for at most the
        unit in progress.
        """
        if self._closed:
            return
        self._closed = True
        self.source.remove_receiver(self)
        self.output.stop()
        self._queue.put(_CLOSE)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: worker did not stop within %.1f s", self.output.name, timeout)

    # -- Receiver protocol (event loop) -------------------------------------------------
    def deliver(self, unit: MediaUnit) -> bool:
        if self._closed:
            return False
        kind = unit.kind
        stats = self.stats
        if kind == VIDEO:
            if self.target.video is None:
                return True
            depth = self._put_video - self._taken_video
            if unit.config:
                # Configs are small and the decoder needs them: they may use a second
                # queue's worth of room (a bound still, against a publisher that floods).
                if depth >= 2 * self.max_queued_video:
                    stats.dropped += 1
                    return True
            else:
                if self._skipping:
                    if not unit.keyframe:
                        stats.dropped += 1
                        return True
                    self._skipping = False
                if depth >= self.max_queued_video:
                    # Behind: drop until the next keyframe (the decoder needs one after
                    # a gap anyway).
                    stats.dropped += 1
                    stats.drop_episodes += 1
                    self._skipping = True
                    log.info("%s: falling behind, dropping to the next keyframe", self.output.name)
                    return True
            self._put_video += 1
        elif kind == AUDIO:
            if self.target.audio is None:
                return True
            limit = self.max_queued_audio * (2 if unit.config else 1)
            if self._put_audio - self._taken_audio >= limit:
                stats.dropped += 1
                return True
            self._put_audio += 1
        else:
            return True  # metadata describes the source's codecs, not ours
        stats.queued += 1
        self._queue.put((self._generation, unit))
        return True

    @property
    def direction(self) -> str:
        """``flash_to_webrtc`` and the like (a label; see :meth:`labels`)."""
        return self.labels()["direction"]

    def stream_started(self, stream: PublishedStream) -> None:
        self._generation += 1
        self._skipping = False
        if not self._closed:
            self.output.start("transcoder")
            self._queue.put((self._generation, "start"))

    def stream_stopped(self, stream: PublishedStream) -> None:
        self._generation += 1
        self._skipping = False
        if not self._closed:
            self.output.stop()
            self._queue.put((self._generation, "stop"))

    # -- worker -> loop -----------------------------------------------------------------
    def _emit(self, generation: int, units: list[MediaUnit]) -> None:
        """Hand units to the loop (worker thread).

        One loop wake-up serves everything the worker produced until the loop gets to
        it: each ``call_soon_threadsafe`` writes to the loop's self-pipe and makes the
        two threads trade the GIL, which costs more than the push itself.
        """
        with self._outbox_lock:
            self._outbox.append((generation, units))
            if len(self._outbox) > 1:
                return  # a flush is already scheduled and will take these too
        try:
            self.loop.call_soon_threadsafe(self._flush_outbox)
        except RuntimeError:  # the loop is closed: the process is shutting down
            self._closed = True

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        push = self.output.push
        for generation, units in batch:
            if generation != self._generation or self._closed:
                continue  # made for a source run that has ended since
            for unit in units:
                push(unit)

    # -- worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        video = _VideoPipe(self) if self.target.video else None
        audio = _AudioPipe(self) if self.target.audio else None
        clock = _Unwrapper()
        generation = 0
        stats = self.stats
        get = self._queue.get
        try:
            while True:
                item = get()
                if item is _CLOSE or self._closed:
                    break
                gen, unit = item
                if isinstance(unit, str):  # "start" / "stop": a new source run
                    generation = gen
                    clock = _Unwrapper()
                    for pipe in (video, audio):
                        if pipe is not None:
                            pipe.reset()
                    continue
                # Busy before the unit leaves the queue count, idle only after its
                # output is handed to the loop: pending() never reads 0 in between.
                self._busy = True
                if unit.kind == VIDEO:
                    self._taken_video += 1
                else:
                    self._taken_audio += 1
                stats.dequeued += 1
                try:
                    if gen == generation == self._generation:  # else from an ended run
                        self._work(unit, gen, clock, video, audio)
                finally:
                    self._busy = False
        finally:
            for pipe in (video, audio):
                if pipe is not None:
                    pipe.reset()

    def _work(
        self,
        unit: MediaUnit,
        generation: int,
        clock: _Unwrapper,
        video: _VideoPipe | None,
        audio: _AudioPipe | None,
    ) -> None:
        stats = self.stats
        pipe = video if unit.kind == VIDEO else audio
        began = time.perf_counter()
        try:
            ts = clock.unwrap(unit.timestamp)
            if unit.kind == VIDEO:
                stats.video_in += 1
            else:
                stats.audio_in += 1
            out = pipe.handle(unit, ts) if pipe is not None else []
        except Exception as exc:  # never let one unit end the worker
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: transcoding failed", self.output.name)
            if pipe is not None:
                pipe.reset()  # start over cleanly at the next keyframe
            out = []
        finally:
            stats.busy_seconds += time.perf_counter() - began
        if out:
            # The output is as late as the source frame that completed it: with no
            # encoder look-ahead (lag-in-frames 0, zerolatency, no B-frames) a frame in
            # is a packet out, and an audio packet is due when its last input arrives.
            for produced in out:
                produced.arrived = unit.arrived
                produced.origin = unit.origin
                produced.transcoded = True
            self._emit(generation, out)


class _Unwrapper:
    """Extend 32-bit millisecond timestamps to a monotonic 64-bit clock across wraps."""

    __slots__ = ("last", "offset")

    def __init__(self) -> None:
        self.last: int | None = None
        self.offset = 0

    def unwrap(self, ts: int) -> int:
        ts &= TS_MASK
        last = self.last
        if last is not None:
            if ts < last - 0x80000000:
                self.offset += 0x100000000
            elif ts > last + 0x80000000 and self.offset:
                # A straggler from before the wrap (audio and video interleave).
                return ts + self.offset - 0x100000000
        self.last = ts
        return ts + self.offset


def _clamp_bitrate(bps: int) -> int:
    return max(MIN_VIDEO_BITRATE, min(MAX_VIDEO_BITRATE, int(bps)))


def _record_error(stats: TranscoderStats, what: str, exc: BaseException) -> None:
    stats.last_error = f"{what}: {exc}"


class _VideoPipe:
    """Decoder -> yuv420p -> encoder for one output codec. Worker thread only."""

    def __init__(self, owner: Transcoder) -> None:
        self.owner = owner
        self.stats = owner.stats
        target = owner.target.video
        assert target is not None
        self.target: str = target
        self.reset()

    def reset(self) -> None:
        self.dec: VideoCodecContext | None = None  # dropping these frees the codecs
        self.dec_key: tuple[str, bytes | None] | None = None
        self.avcc: bytes | None = None  # source avcC record (H.264 extradata)
        self.need_key = True
        self.last_in_ms: int | None = None
        self.fps: float | None = None
        self._close_encoder()
        self.params: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None
        self.key_served = self.owner._key_requests

    def _close_encoder(self) -> None:
        self.enc: VideoCodecContext | None = None
        self.enc_size = (0, 0)
        self.enc_params: VideoParams | None = None
        self.enc_bitrate = 0
        self.enc_maxrate = 0
        self.enc_fps = 0
        self.enc_counter = 0
        self.last_pts_ms: int | None = None
        self.last_key_ms: int | None = None  # a new encoder starts with a key frame
        self.pts_map: dict[int, int] = {}

    # -- decoding -------------------------------------------------------------------------
    def handle(self, unit: MediaUnit, ts: int) -> list[MediaUnit]:
        if unit.config:
            if unit.codec == "h264" and unit.payload:
                try:
                    h264.parse_avc_config(unit.payload)
                except ValueError as exc:
                    self.stats.decode_errors += 1
                    _record_error(self.stats, "avcC", exc)
                    return []
                self.avcc = unit.payload
            return []  # info/end-of-sequence units carry no picture
        frames = self._decode(unit, ts)
        out: list[MediaUnit] = []
        for frame in frames:
            out += self._encode(frame)
        return out

    def _decode(self, unit: MediaUnit, ts: int) -> list[VideoFrame]:
        stats = self.stats
        name = VIDEO_DECODERS.get(unit.codec)
        if name is None or not unit.payload:
            stats.decode_errors += 1
            stats.last_error = f"no decoder for video codec {unit.codec!r}"
            return []
        payload = unit.payload
        extradata: bytes | None = None
        if unit.codec == "h264":
            if self.avcc is not None:
                extradata = self.avcc
            else:
                # No sequence header seen: let the decoder find in-band SPS/PPS.
                try:
                    payload = h264.avcc_to_annexb(payload)
                except ValueError as exc:
                    stats.decode_errors += 1
                    _record_error(stats, "AVCC", exc)
                    return []
        elif unit.codec in ("vp6", "vp6a"):
            # FLV's VP6 body starts with the crop adjustment byte, which FFmpeg's VP6
            # decoders take as 1-byte extradata (as its FLV demuxer passes it).
            extradata, payload = payload[:1], payload[1:]
        key = (name, extradata)
        if self.dec is None or self.dec_key != key:
            if not unit.keyframe:
                stats.skipped_waiting_keyframe += 1
                return []
            self.dec = _video_decoder(name, extradata)
            self.dec_key = key
            self.need_key = False
        elif self.need_key:
            if not unit.keyframe:
                stats.skipped_waiting_keyframe += 1
                return []
            self.need_key = False
        packet = av.Packet(payload)
        packet.pts = ts + unit.cts
        packet.dts = ts
        packet.time_base = MS
        began = time.perf_counter()
        try:
            frames = self.dec.decode(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            stats.decode_errors += 1
            _record_error(stats, f"{name} decode", exc)
            self.need_key = True
            return []
        finally:
            spent = time.perf_counter() - began
            stats.decode_seconds += spent
            stats.decode_count += 1
            METER.observe_codec("decode", self.owner.direction, unit.codec, spent)
        stats.video_frames_decoded += len(frames)
        return frames

    # -- encoding -------------------------------------------------------------------------
    def _encode(self, frame: VideoFrame) -> list[MediaUnit]:
        stats = self.stats
        ms = frame.pts if frame.pts is not None else self.last_in_ms
        if ms is None:
            return []
        ms = int(ms)
        self._track_rate(ms)
        width, height = frame.width & ~1, frame.height & ~1  # 4:2:0 needs even sizes
        if width < 16 or height < 16:
            return []
        if self.last_pts_ms is not None and ms < self.last_pts_ms - TIMELINE_JUMP_MS:
            self._close_encoder()  # the publisher's clock jumped back: a new timeline
        if self.last_pts_ms is not None and ms <= self.last_pts_ms:
            ms = self.last_pts_ms + 1  # encoders need strictly increasing time
        force = False
        owner = self.owner
        if owner._key_requests != self.key_served and (
            self.last_key_ms is None or ms - self.last_key_ms >= MIN_KEYFRAME_GAP_MS
        ):
            force = True
            self.key_served = owner._key_requests
        if self.last_key_ms is None or ms - self.last_key_ms >= KEYFRAME_INTERVAL_MS[self.target]:
            force = True
        if self.enc is not None and (
            (width, height) != self.enc_size or self._reopen_due(force, owner._video_bitrate)
        ):
            self._close_encoder()
        if self.enc is None:
            self._open_encoder(width, height, owner._video_bitrate)
            force = True
        enc = self.enc
        assert enc is not None
        if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        if self.target == "spark":
            enc_pts = self.enc_counter  # mpegvideo rate control counts frames
            self.enc_counter += 1
        else:
            enc_pts = ms
        self.pts_map[enc_pts] = ms
        self.last_pts_ms = ms
        frame.pts = enc_pts
        frame.time_base = enc.time_base
        frame.pict_type = PictureType.I if force else PictureType.NONE
        began = time.perf_counter()
        try:
            packets = enc.encode(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            stats.encode_errors += 1
            _record_error(stats, f"{enc.name} encode", exc)
            self._close_encoder()
            return []
        finally:
            spent = time.perf_counter() - began
            stats.encode_seconds += spent
            stats.encode_count += 1
            stats.encode_max_seconds = max(stats.encode_max_seconds, spent)
            METER.observe_codec("encode", owner.direction, self.target, spent)
        return self._units(packets)

    def _track_rate(self, ms: int) -> None:
        last = self.last_in_ms
        self.last_in_ms = ms
        if last is None:
            return
        delta = ms - last
        if 0 < delta <= 1000:
            self.stats.video_media_seconds += delta / 1000
        if 5 <= delta <= 1000:
            rate = 1000 / delta
            self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate

    def _reopen_due(self, force: bool, bitrate: int) -> bool:
        """Whether a new bitrate (or, for Spark, frame rate) warrants a reopen now."""
        enc = self.enc
        assert enc is not None
        current = self.enc_bitrate
        if abs(bitrate - current) > BITRATE_HYSTERESIS * current:
            if self.target == "h264" and bitrate <= self.enc_maxrate:
                # x264 retunes ABR under VBV on the fly (libx264.c reconfig_encoder), no
                # key frame needed; above the VBV rate it was opened with, reopen.
                enc.bit_rate = bitrate
                self.enc_bitrate = bitrate
                return False
            if force or bitrate <= URGENT_BITRATE_DROP * current:
                return True
        if self.target == "spark" and force and self.fps is not None:
            return abs(self.fps - self.enc_fps) > 0.3 * self.enc_fps
        return False

    def _open_encoder(self, width: int, height: int, bitrate: int) -> None:
        target = self.target
        fps = self.fps or (15.0 if self.dec_key and self.dec_key[0] in ("flv", "vp6f") else 30.0)
        fps_int = max(1, min(60, round(fps)))
        ctx = CodecContext.create(VIDEO_ENCODERS[target], "w")
        assert isinstance(ctx, VideoCodecContext)
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bitrate
        ctx.framerate = Fraction(fps_int, 1)
        ctx.thread_count = self.owner.threads
        rate = str(bitrate)
        if target == "vp8":
            ctx.time_base = MS
            ctx.gop_size = 100 * fps_int  # backstop; key frames are forced on time
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",  # no look-ahead: a frame in, a packet out
                "auto-alt-ref": "0",
                "error-resilient": "default",
                "max-intra-rate": "300",  # key frames at most 3x a frame's budget
                # CBR (minrate == maxrate == bitrate) with a 1 s buffer, like WebRTC
                "minrate": rate,
                "maxrate": rate,
                "bufsize": rate,
            }
        elif target == "h264":
            ctx.time_base = MS
            ctx.gop_size = 100 * fps_int
            ctx.options = {
                "preset": "veryfast",
                "tune": "zerolatency",  # no frame threads, no look-ahead, no B-frames
                "profile": "baseline",
                "bf": "0",
                "forced-idr": "1",  # a forced key frame is an IDR
                "maxrate": rate,
                "bufsize": rate,
                # In-band SPS/PPS on every IDR (no global header): we rebuild the avcC
                # from them. No scene-cut key frames: we decide when to key.
                "x264-params": "repeat-headers=1:scenecut=0",
            }
        else:  # Spark (FLV1, Sorenson H.263)
            ctx.time_base = Fraction(1, fps_int)
            ctx.gop_size = 100 * fps_int
        ctx.open()
        self.enc = ctx
        self.enc_size = (width, height)
        self.enc_params = VideoParams(width, height)
        self.enc_bitrate = self.enc_maxrate = bitrate
        self.enc_fps = fps_int
        self.stats.encoder_opens += 1

    def _units(self, packets: list[av.Packet]) -> list[MediaUnit]:
        out: list[MediaUnit] = []
        stats = self.stats
        params = self.enc_params
        for packet in packets:
            pts = packet.pts
            ms = self.pts_map.pop(pts, None) if pts is not None else None
            if ms is None:
                ms = self.last_pts_ms or 0
            if len(self.pts_map) > 64:  # frames an encoder never returned
                self.pts_map.clear()
            data = bytes(packet)
            keyframe = bool(packet.is_keyframe)
            if self.target == "h264":
                nals = h264.split_annexb(data)
                sps, pps = h264.parameter_sets(nals)
                if sps and pps and (tuple(sps), tuple(pps)) != self.params:
                    self.params = (tuple(sps), tuple(pps))
                    record = h264.build_avc_config(sps, pps)
                    out.append(MediaUnit(VIDEO, "h264", ms & TS_MASK, record, config=True))
                    stats.config_out += 1
                if self.params is None:
                    continue  # nothing decodable before the first SPS/PPS
                data = h264.join_avcc(
                    n for n in nals if n[0] & 0x1F not in (h264.NAL_SPS, h264.NAL_PPS, h264.NAL_AUD)
                )
            if keyframe:
                self.last_key_ms = ms
                stats.keyframes_out += 1
            stats.video_out += 1
            stats.bytes_out += len(data)
            out.append(MediaUnit(VIDEO, self.target, ms & TS_MASK, data, keyframe, video=params))
        return out


def _video_decoder(name: str, extradata: bytes | None) -> VideoCodecContext:
    ctx = CodecContext.create(name, "r")
    assert isinstance(ctx, VideoCodecContext)
    if extradata:
        ctx.extradata = extradata
    # One thread: frame threading would add a frame of delay per thread, and the
    # gateway gets its parallelism from running many transcoders.
    ctx.thread_count = 1
    ctx.open()
    return ctx


class _AudioPipe:
    """Decoder -> resampler -> encoder, with sample-counted timestamps. Worker only."""

    def __init__(self, owner: Transcoder) -> None:
        self.owner = owner
        self.stats = owner.stats
        target = owner.target.audio
        assert target is not None
        self.target: str = target
        self.reset()

    def reset(self) -> None:
        self.dec: AudioCodecContext | None = None
        self.dec_key: tuple[Any, ...] | None = None
        self.asc: bytes | None = None  # source AudioSpecificConfig (AAC extradata)
        self.resampler: AudioResampler | None = None
        self.rs_key: tuple[str, str, int] | None = None
        self.enc: AudioCodecContext | None = None
        self.rate = AUDIO_RATES[self.target]
        self.channels = 1
        self.out_params: AudioParams | None = None
        self.anchor_ms: float | None = None  # session ms of encoder sample 0
        self.fed = 0  # samples given to the encoder
        self.last_out_ms = -1
        self.config_sent = False

    def handle(self, unit: MediaUnit, ts: int) -> list[MediaUnit]:
        if unit.config:
            if unit.codec == "aac" and unit.payload:
                self.asc = unit.payload
            return []
        frames, rate = self._decode(unit, ts)
        out: list[MediaUnit] = []
        offset = 0
        for frame in frames:
            out += self._encode(frame, ts + offset * 1000 / rate)
            offset += frame.samples
        return out

    def _spec(self, unit: MediaUnit) -> tuple[str, int, int, bytes | None] | None:
        codec = unit.codec
        params = unit.audio
        rate, channels = _AUDIO_DEFAULTS.get(codec, (44100, 1))
        if params is not None and params.sample_rate is not None:
            rate = params.sample_rate
            channels = params.channels or channels
        if codec in ("pcm", "pcm_le"):
            # FLV SoundFormat 0 is "platform endian": little endian in practice.
            bits = params.sample_bits if params is not None else None
            name = "pcm_u8" if bits == 8 else "pcm_s16le"
        else:
            found = AUDIO_DECODERS.get(codec)
            if found is None:
                return None
            name = found
        extradata = self.asc if codec == "aac" else None
        return name, rate, channels, extradata

    def _decode(self, unit: MediaUnit, ts: int) -> tuple[list[AudioFrame], int]:
        stats = self.stats
        spec = self._spec(unit)
        if spec is None or not unit.payload:
            stats.decode_errors += 1
            stats.last_error = f"no decoder for audio codec {unit.codec!r}"
            return [], 1
        name, rate, channels, extradata = spec
        if unit.codec == "aac" and extradata is None:
            stats.skipped_waiting_keyframe += 1  # raw AAC is undecodable without its ASC
            return [], 1
        if self.dec is None or self.dec_key != spec:
            self.dec = _audio_decoder(name, rate, channels, extradata)
            self.dec_key = spec
        packet = av.Packet(unit.payload)
        packet.pts = ts
        packet.time_base = MS
        began = time.perf_counter()
        try:
            frames = self.dec.decode(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            stats.decode_errors += 1
            _record_error(stats, f"{name} decode", exc)
            return [], 1
        finally:
            spent = time.perf_counter() - began
            stats.decode_seconds += spent
            stats.decode_count += 1
            METER.observe_codec("decode", self.owner.direction, unit.codec, spent)
        stats.audio_frames_decoded += len(frames)
        out_rate = frames[0].sample_rate if frames else rate
        stats.audio_media_seconds += sum(f.samples for f in frames) / (out_rate or 1)
        return frames, out_rate or 1

    def _open_encoder(self, channels: int, in_rate: int) -> None:
        target = self.target
        native = NATIVE_RATES.get(target, ())
        self.rate = in_rate if in_rate in native else AUDIO_RATES[target]
        self.channels = 1 if target == "nellymoser" else max(1, min(2, channels))
        layout = "mono" if self.channels == 1 else "stereo"
        ctx = CodecContext.create(AUDIO_ENCODERS[target], "w")
        assert isinstance(ctx, AudioCodecContext)
        formats = [f.name for f in ctx.codec.audio_formats or ()]
        ctx.format = next((f for f in ("fltp", "flt", "s16") if f in formats), formats[0])
        ctx.sample_rate = self.rate
        ctx.layout = layout
        ctx.time_base = Fraction(1, self.rate)
        if target != "nellymoser":  # Nellymoser's rate is fixed by its sample rate
            ctx.bit_rate = self.owner.target.audio_bitrate * self.channels
        if target == "opus":
            # 20 ms frames (WebRTC's default ptime), tuned for speech.
            ctx.options = {"application": "voip", "frame_duration": "20"}
        elif target == "mp3":
            # No bit reservoir: each MP3 frame decodes alone, so a player that joins
            # mid-stream (or after a drop) does not start with broken frames.
            ctx.options = {"reservoir": "0"}
        ctx.open()
        self.enc = ctx
        self.stats.encoder_opens += 1
        # Opus is 48 kHz on the wire (RFC 7587) whatever rate the encoder was fed
        self.out_params = AudioParams(48000 if target == "opus" else self.rate, self.channels)
        # PyAV's encode() wraps every frame in an AudioResampler of its own that cuts the
        # encoder's frame_size; ours only converts rate/format/layout, so the pair never
        # converts twice.

    def _encode(self, frame: AudioFrame, ms: float) -> list[MediaUnit]:
        if self.enc is None:
            self._open_encoder(frame.layout.nb_channels, frame.sample_rate)
        enc = self.enc
        assert enc is not None
        out: list[MediaUnit] = []
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.resampler is None or key != self.rs_key:
            if self.resampler is not None:
                for rest in self.resampler.resample(None):
                    out += self._feed(rest)
            self.resampler = AudioResampler(
                format=enc.format.name, layout=enc.layout.name, rate=self.rate
            )
            self.rs_key = key
        if self.anchor_ms is None:
            self.anchor_ms = ms - self.fed * 1000 / self.rate
        else:
            drift = ms - (self.anchor_ms + self.fed * 1000 / self.rate)
            if drift > AUDIO_RESYNC_MS or drift < -TIMELINE_JUMP_MS:
                # A gap in the source (or a new timeline): follow its clock.
                self.anchor_ms = ms - self.fed * 1000 / self.rate
                if drift < 0:
                    self.last_out_ms = -1
            elif drift < -AUDIO_RESYNC_MS:
                self.stats.audio_resync_drops += 1
                return out
        for converted in self.resampler.resample(frame):
            out += self._feed(converted)
        return out

    def _feed(self, frame: AudioFrame) -> list[MediaUnit]:
        enc = self.enc
        assert enc is not None and self.anchor_ms is not None
        stats = self.stats
        frame.pts = self.fed
        frame.time_base = enc.time_base
        self.fed += frame.samples
        began = time.perf_counter()
        try:
            packets = enc.encode(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            stats.encode_errors += 1
            _record_error(stats, f"{enc.name} encode", exc)
            return []
        finally:
            spent = time.perf_counter() - began
            stats.encode_seconds += spent
            stats.encode_count += 1
            stats.encode_max_seconds = max(stats.encode_max_seconds, spent)
            METER.observe_codec("encode", self.owner.direction, self.target, spent)
        out: list[MediaUnit] = []
        params = self.out_params
        for packet in packets:
            pts = max(0, packet.pts or 0)
            ms = max(self.last_out_ms, math.floor(self.anchor_ms + pts * 1000 / self.rate))
            self.last_out_ms = ms
            if not self.config_sent:
                self.config_sent = True
                if self.target == "aac":
                    asc = enc.extradata or audio_specific_config(self.rate, self.channels)
                    out.append(
                        MediaUnit(AUDIO, "aac", ms & TS_MASK, bytes(asc), config=True, audio=params)
                    )
                    stats.config_out += 1
            stats.audio_out += 1
            data = bytes(packet)
            stats.bytes_out += len(data)
            out.append(MediaUnit(AUDIO, self.target, ms & TS_MASK, data, audio=params))
        return out


def _audio_decoder(
    name: str, rate: int, channels: int, extradata: bytes | None
) -> AudioCodecContext:
    ctx = CodecContext.create(name, "r")
    assert isinstance(ctx, AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "stereo" if channels == 2 else "mono"
    if extradata:
        ctx.extradata = extradata
    ctx.open()
    return ctx


@dataclass
class _PoolEntry:
    transcoder: Transcoder
    key: tuple[int, TargetFormat]
    refs: int = 1


class TranscoderPool:
    """One shared transcoder per (source stream, target format), refcounted."""

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        # Admission (gateway/monitor.py): called before a new transcoder is made; raises
        # gateway.routing.CapacityRefused when there is no capacity for one.
        self.admit: Callable[[], None] | None = None
        self._entries: dict[tuple[int, TargetFormat], _PoolEntry] = {}
        self._by_transcoder: dict[int, _PoolEntry] = {}

    def acquire(self, source: PublishedStream, target: object) -> Transcoder:
        """The transcoder for ``source`` -> ``target`` (a TargetFormat), made on first use.

        ``target`` is typed ``object`` so the pool satisfies gateway.routing's
        ``TranscoderSource`` protocol, which does not import this module (PyAV).
        """
        if not isinstance(target, TargetFormat):
            raise TypeError(f"target must be a TargetFormat, not {type(target).__name__}")
        key = (id(source), target)
        entry = self._entries.get(key)
        if entry is not None and not entry.transcoder.closed:
            entry.refs += 1
            return entry.transcoder
        if self.admit is not None:
            self.admit()  # sharing a running transcoder costs nothing; a new one might
        transcoder = Transcoder(source, target, threads=self.threads)
        entry = _PoolEntry(transcoder, key)
        self._entries[key] = entry
        self._by_transcoder[id(transcoder)] = entry
        return transcoder

    def release(self, transcoder: object) -> None:
        """Drop one reference; the last one closes the transcoder (thread joined).

        Anything this pool did not hand out is ignored.
        """
        entry = self._by_transcoder.get(id(transcoder))
        if entry is None or entry.transcoder is not transcoder:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del self._by_transcoder[id(transcoder)]
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            entry.transcoder.close()

    def close(self) -> None:
        """Close every transcoder (gateway shutdown)."""
        entries = list(self._by_transcoder.values())
        self._entries.clear()
        self._by_transcoder.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                entry.transcoder.close()

    @property
    def transcoders(self) -> list[Transcoder]:
        return [entry.transcoder for entry in self._by_transcoder.values()]

    def __len__(self) -> int:
        return len(self._by_transcoder)

"""What a transcoder makes and how it reports: formats, targets, tables and stats.

PyAV-free, so routing, the ops monitor and ``/ops`` import the real types (the codec
work lives in ``worker``, ``video`` and ``audio``; the shared transcoders in ``pool``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Protocol

from gateway.latency import METER

TS_MASK = 0xFFFFFFFF  # RTMP/FLV timestamps are 32-bit milliseconds
MS = Fraction(1, 1000)

VIDEO_TARGETS = ("vp8", "h264", "spark")
# alaw/mulaw/g722: the telephone leg (G.711, G.722; docs/phone.md)
AUDIO_TARGETS = ("opus", "aac", "nellymoser", "mp3", "alaw", "mulaw", "g722")

# Source codec (MediaUnit.codec) -> libavcodec decoder.
VIDEO_DECODERS = {"spark": "flv", "vp6": "vp6f", "vp6a": "vp6a", "h264": "h264", "vp8": "vp8"}
AUDIO_DECODERS = {
    "nellymoser": "nellymoser",
    "speex": "speex",  # FFmpeg's native Speex decoder (libspeex is not in PyAV's FFmpeg)
    "mp3": "mp3float",
    "aac": "aac",
    "alaw": "pcm_alaw",
    "mulaw": "pcm_mulaw",
    "g722": "g722",
    "opus": "opus",
}
VIDEO_ENCODERS = {"vp8": "libvpx", "h264": "libx264", "spark": "flv"}
AUDIO_ENCODERS = {
    "opus": "libopus",
    "aac": "aac",
    "nellymoser": "nellymoser",
    "mp3": "libmp3lame",
    "alaw": "pcm_alaw",
    "mulaw": "pcm_mulaw",
    "g722": "g722",
}

# Output sample rates. Opus is always 48 kHz in WebRTC (RFC 7587). AAC at 44.1 kHz is
# what the FLV AAC head byte 0xAF declares (FLV spec E.4.2.1: AAC is signalled as 44 kHz
# stereo; the AudioSpecificConfig is authoritative). Nellymoser at 16 kHz mono has its
# own FLV SoundFormat 4; MP3 at 44.1 kHz is FLV rate index 3.
# G.711 is 8 kHz (ITU-T G.711), G.722 16 kHz (ITU-T G.722; its RTP clock says 8000 for
# a historical error, RFC 3551 section 4.5.2, which the phone leg's packetiser knows).
AUDIO_RATES = {
    "opus": 48000,
    "aac": 44100,
    "nellymoser": 16000,
    "mp3": 44100,
    "alaw": 8000,
    "mulaw": 8000,
    "g722": 16000,
}
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

AUDIO_DEFAULTS = {
    "opus": (48000, 2),
    "speex": (16000, 1),
    "nellymoser": (16000, 1),
    "alaw": (8000, 1),
    "mulaw": (8000, 1),
    "g722": (16000, 1),
    "pcm": (44100, 1),
    "pcm_le": (44100, 1),
    "mp3": (44100, 2),
    "aac": (44100, 2),
}


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


def clamp_bitrate(bps: int) -> int:
    return max(MIN_VIDEO_BITRATE, min(MAX_VIDEO_BITRATE, int(bps)))


def record_error(stats: TranscoderStats, what: str, exc: BaseException) -> None:
    stats.last_error = f"{what}: {exc}"


@dataclass
class PipeControl:
    """What the loop tells a transcoder's pipes, and where they count (their only view
    of the transcoder). The loop writes ``key_requests`` and ``video_bitrate``; the
    worker's pipes read them between units (single int writes, no lock needed)."""

    target: TargetFormat
    stats: TranscoderStats
    threads: int
    video_bitrate: int
    # ``flash_to_webrtc`` and the like, for the latency meter's labels
    direction: Callable[[], str]
    key_requests: int = 0  # bumped per request; a pipe keys when its count differs

    def decoded(self, codec: str, spent: float) -> None:
        """Count one decode call that took ``spent`` seconds (worker thread)."""
        stats = self.stats
        stats.decode_seconds += spent
        stats.decode_count += 1
        METER.observe_codec("decode", self.direction(), codec, spent)

    def encoded(self, codec: str, spent: float) -> None:
        """Count one encode call that took ``spent`` seconds (worker thread)."""
        stats = self.stats
        stats.encode_seconds += spent
        stats.encode_count += 1
        stats.encode_max_seconds = max(stats.encode_max_seconds, spent)
        METER.observe_codec("encode", self.direction(), codec, spent)


class BitrateFollower(Protocol):
    def set_video_bitrate(self, bps: int) -> None: ...


class BitrateArbiter:
    """A shared encoder follows the lowest REMB among its receivers (docs/architecture.md):
    each receiver files its own estimate, and the minimum applies."""

    def __init__(self) -> None:
        # transcoder -> {offerer id: its receiver's latest estimate}; weak, so closed
        # transcoders vanish
        self._offers: weakref.WeakKeyDictionary[BitrateFollower, dict[int, int]] = (
            weakref.WeakKeyDictionary()
        )

    def offer(self, transcoder: BitrateFollower, offerer: object, bps: int | None) -> None:
        """``offerer``'s estimate for ``transcoder`` (None: it no longer receives)."""
        offers = self._offers.setdefault(transcoder, {})
        if bps is None:
            if offers.pop(id(offerer), None) is None:
                return
        else:
            offers[id(offerer)] = bps
        if offers:
            transcoder.set_video_bitrate(min(offers.values()))

    def forget(self, transcoder: BitrateFollower) -> None:
        self._offers.pop(transcoder, None)

"""Codec-neutral media units and the per-participant published stream.

Front-ends convert their wire format to :class:`MediaUnit` and back. A
:class:`PublishedStream` keeps what a late receiver needs to start cleanly (codec
configuration, metadata and the current GOP, bounded in bytes) and fans units out to
its receivers. Fan-out never waits: a receiver that cannot take a unit now drops it and
everything up to the next keyframe, counting the drop (MediaMTX's ring-buffer rule:
the publisher never waits for a slow reader).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

log = logging.getLogger(__name__)

AUDIO = "audio"
VIDEO = "video"


@dataclass(frozen=True, slots=True)
class AudioParams:
    """What a decoder needs to know of an audio unit beyond its codec name.

    ``None`` means not known from the unit: the decoder uses the codec's defaults.
    ``sample_bits`` is the sample size of uncompressed PCM (8 or 16); compressed codecs
    carry their own sample format. Front-ends translate their wire headers into these
    (the FLV AUDIODATA head byte in ``rtmp/flv.py``) and back.
    """

    sample_rate: int | None = None
    channels: int | None = None
    sample_bits: int | None = None


@dataclass(frozen=True, slots=True)
class VideoParams:
    """The picture size of a video unit, where the front-end or the encoder knows it."""

    width: int
    height: int


@dataclass(slots=True)
class MediaUnit:
    """One access unit (a video frame or an audio packet) or a codec configuration.

    ``timestamp`` is the decode time in milliseconds on the session clock (32-bit
    wrapping, as RTMP carries it); ``cts`` is the composition offset (pts - dts) in ms.
    ``payload`` is in the codec's native framing (H.264: AVCC length-prefixed NAL units,
    optionally also ``annexb``; AAC: raw access unit). ``wire`` optionally keeps the
    front-end's own encoding of the unit (the FLV tag body for RTMP) so a receiver of
    the same kind relays it without re-serialising. ``audio`` / ``video`` are the typed
    codec parameters, where known (sample rate, channels, sample format; picture size).
    ``arrived`` (``time.perf_counter()``) and ``origin`` (``rtmp`` or ``webrtc``) say
    when and where the complete source frame reached the gateway; a transcoder copies
    them and sets ``transcoded`` (``gateway/latency.py``).
    """

    kind: str
    codec: str
    timestamp: int
    payload: bytes
    keyframe: bool = False
    config: bool = False
    cts: int = 0
    wire: bytes | None = None
    audio: AudioParams | None = None
    video: VideoParams | None = None
    # H.264 only: the same access unit as an Annex-B byte stream with SPS/PPS in band
    # before an IDR, where the producer had it (a browser's frame, x264's output); a
    # WebRTC sender takes it as is instead of converting the AVCC payload back.
    annexb: bytes | None = None
    arrived: float = 0.0
    origin: str = ""
    transcoded: bool = False
    # The RTP payloads the frame arrived in (a WebRTC publisher's, in order), so that a
    # WebRTC receiver of the same codec forwards them instead of packetizing the payload
    # again (docs/webrtc.md, "Forwarding"); None for every other source.
    rtp: tuple[bytes, ...] | None = None


def _cached_bytes(unit: MediaUnit) -> int:
    """What a unit holds in the GOP cache: its payload, and the RTP payloads it keeps
    for forwarding (about as much again)."""
    return len(unit.payload) + (sum(map(len, unit.rtp)) if unit.rtp else 0)


class Receiver(Protocol):
    """A consumer of a published stream (an RTMP player, a transcoder, a WebRTC track)."""

    def deliver(self, unit: MediaUnit) -> bool:
        """Take a unit without blocking. Return False when it could not be taken."""

    def stream_started(self, stream: PublishedStream) -> None: ...

    def stream_stopped(self, stream: PublishedStream) -> None: ...


@dataclass(slots=True)
class ReceiverState:
    receiver: Receiver
    waiting_for_keyframe: bool = True
    dropped: int = 0
    delivered: int = 0
    lagging: bool = False


@dataclass
class StreamStats:
    units_in: int = 0
    bytes_in: int = 0
    keyframes: int = 0
    dropped: int = 0
    gop_evictions: int = 0
    # what the consultation used, for its anonymous statistics row (gateway/stats.py):
    # units that passed the camera/microphone gates, and transcoders attached
    video_units: int = 0
    audio_units: int = 0
    transcodes: int = 0


class PublishedStream:
    """A participant's camera and microphone as published into the consultation."""

    def __init__(self, name: str, *, gop_cache_bytes: int = 8 * 1024 * 1024) -> None:
        self.name = name
        self.gop_cache_bytes = gop_cache_bytes
        self.live = False
        self.kind = ""  # front-end kind of the publisher ("rtmp", "webrtc", ...)
        self.metadata: MediaUnit | None = None
        self.video_config: MediaUnit | None = None
        self.audio_config: MediaUnit | None = None
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self._gop: list[MediaUnit] = []
        self._gop_bytes = 0
        self._receivers: dict[int, ReceiverState] = {}
        self.stats = StreamStats()
        # Camera and microphone gates: the customer decides (terms of use). While a gate
        # is closed nothing of that kind is forwarded.
        self.video_enabled = True
        self.audio_enabled = True
        # A telephone leg carrying this participant's audio (docs/phone.md): while set,
        # the publisher's own audio is dropped and the leg's (push_taken_audio) goes out
        # instead, past the microphone gate (the call is the customer's own choice).
        self.audio_taken_by: object | None = None
        self.on_change: Callable[[PublishedStream], None] | None = None
        self.owner: object | None = None
        self._on_preempt: Callable[[], None] | None = None
        self._on_keyframe_request: Callable[[], None] | None = None

    # -- publisher side -------------------------------------------------------------
    def start(
        self,
        kind: str,
        owner: object | None = None,
        on_preempt: Callable[[], None] | None = None,
        on_keyframe_request: Callable[[], None] | None = None,
    ) -> None:
        """A publisher starts. One publisher owns the stream at a time: a new one (the
        participant reconnected, or switched from Flash to the browser) takes over, and
        the previous owner is told through its ``on_preempt`` so it stops pushing.
        ``on_keyframe_request`` asks the publisher for a key frame (a PLI to a browser);
        RTMP has no way to ask, so an RTMP publisher passes none."""
        previous = self._on_preempt if self.live and self.owner is not owner else None
        if self.live:
            self.stop()
        self.owner = owner
        self._on_preempt = on_preempt
        self._on_keyframe_request = on_keyframe_request
        self.live = True
        self.kind = kind
        self._reset_caches()
        for state in list(self._receivers.values()):
            state.waiting_for_keyframe = True
            state.receiver.stream_started(self)
        if self.on_change:
            self.on_change(self)
        if previous is not None:
            previous()

    def stop(self, owner: object | None = None) -> None:
        """The publisher ends; a stale owner's stop (after a takeover) is ignored."""
        if not self.live or (owner is not None and owner is not self.owner):
            return
        self.live = False
        self._on_keyframe_request = None
        self._on_preempt = None
        self._reset_caches()
        for state in list(self._receivers.values()):
            state.receiver.stream_stopped(self)
        if self.on_change:
            self.on_change(self)

    def _reset_caches(self) -> None:
        self.metadata = None
        self.video_config = None
        self.audio_config = None
        self.video_codec = None
        self.audio_codec = None
        self._gop.clear()
        self._gop_bytes = 0

    def take_audio(self, taker: object) -> None:
        """From now on the audio comes from ``taker`` (a telephone leg), not the publisher."""
        self.audio_taken_by = taker

    def release_audio(self, taker: object) -> None:
        """The publisher's own audio again (a stale taker's release is ignored)."""
        if self.audio_taken_by is taker:
            self.audio_taken_by = None

    def push_taken_audio(self, taker: object, unit: MediaUnit) -> None:
        """An audio unit of the leg that took the audio (ignored from anyone else)."""
        if self.audio_taken_by is taker and unit.kind == AUDIO:
            self.push(unit, taken=True)

    def push(self, unit: MediaUnit, *, taken: bool = False) -> None:
        """Publish one unit: update the caches, then hand it to every receiver."""
        stats = self.stats
        stats.units_in += 1
        stats.bytes_in += len(unit.payload)
        kind = unit.kind
        if kind == VIDEO:
            if not self.video_enabled:
                return
            stats.video_units += 1
            self.video_codec = unit.codec
            if unit.config:
                self.video_config = unit
                self._gop.clear()
                self._gop_bytes = 0
            elif unit.keyframe:
                stats.keyframes += 1
                self._gop = [unit]
                self._gop_bytes = _cached_bytes(unit)
            elif self._gop:
                self._append_gop(unit)
        elif kind == AUDIO:
            if not taken and (self.audio_taken_by is not None or not self.audio_enabled):
                return
            stats.audio_units += 1
            self.audio_codec = unit.codec
            if unit.config:
                self.audio_config = unit
            elif self._gop:
                self._append_gop(unit)
        else:  # metadata
            self.metadata = unit
        # A snapshot: a receiver may add or remove receivers while taking a unit (a Route
        # acquiring or releasing a transcoder, which attaches itself to this stream).
        for state in tuple(self._receivers.values()):
            self._deliver(state, unit)

    def _append_gop(self, unit: MediaUnit) -> None:
        self._gop_bytes += _cached_bytes(unit)
        if self._gop_bytes > self.gop_cache_bytes:
            # A GOP larger than the cache (a camera that never sends keyframes): give up
            # on caching it; a late receiver then waits for the next keyframe.
            self._gop.clear()
            self._gop_bytes = 0
            self.stats.gop_evictions += 1
            return
        self._gop.append(unit)

    def _deliver(self, state: ReceiverState, unit: MediaUnit) -> None:
        if state.waiting_for_keyframe:
            if unit.config or unit.kind not in (VIDEO, AUDIO):
                pass
            elif unit.kind == VIDEO:
                if not unit.keyframe:
                    return
                state.waiting_for_keyframe = False
            elif self.video_codec is not None and self.video_enabled:
                return  # audio waits with video so the player starts in sync
        if state.receiver.deliver(unit):
            state.delivered += 1
            if state.lagging:
                state.lagging = False
                log.info("%s: receiver caught up (%d units dropped)", self.name, state.dropped)
            return
        if not state.lagging:
            state.lagging = True
            log.info("%s: a receiver fell behind; dropping until the next keyframe", self.name)
        state.dropped += 1
        self.stats.dropped += 1
        if unit.kind == VIDEO or unit.config:
            state.waiting_for_keyframe = True

    # -- receiver side --------------------------------------------------------------
    def add_receiver(self, receiver: Receiver) -> ReceiverState:
        """Attach a receiver; a live stream first replays its caches to it."""
        state = ReceiverState(receiver)
        self._receivers[id(receiver)] = state
        if self.live:
            receiver.stream_started(self)
            self.replay(state)
        return state

    def replay(self, state: ReceiverState) -> None:
        """Bring a new receiver up to date: metadata, configs, then the cached GOP."""
        state.waiting_for_keyframe = True
        for unit in (self.metadata, self.video_config, self.audio_config):
            if unit is not None:
                self._deliver(state, unit)
        for unit in self._gop:
            # A cached unit's lateness is the cache's purpose, not latency the gateway
            # adds to live media: replays are not measured (gateway/latency.py).
            self._deliver(state, replace(unit, arrived=0.0) if unit.arrived else unit)

    def resync(self, receiver: Receiver) -> None:
        """Restart a receiver at the next clean point (after pause or receiveVideo)."""
        state = self._receivers.get(id(receiver))
        if state is not None and self.live:
            self.replay(state)

    def set_gates(self, video: bool, audio: bool) -> None:
        """Open or close the camera/microphone gates; reopened video restarts at a keyframe."""
        if video and not self.video_enabled:
            self._gop.clear()
            self._gop_bytes = 0
            for state in self._receivers.values():
                state.waiting_for_keyframe = True
        self.video_enabled = video
        self.audio_enabled = audio

    def remove_receiver(self, receiver: Receiver) -> None:
        self._receivers.pop(id(receiver), None)

    @property
    def receivers(self) -> list[ReceiverState]:
        return list(self._receivers.values())

    def request_keyframe(self) -> None:
        """Ask the publisher for a key frame, where its front-end can (see :meth:`start`)."""
        if self._on_keyframe_request is not None:
            self._on_keyframe_request()

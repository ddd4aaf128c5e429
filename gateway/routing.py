"""Routes: which path a receiver's media takes (docs/architecture.md, "Media routing").

A :class:`Route` joins one *sink* (an RTMP player, a WebRTC sender) to a participant's
:class:`~gateway.media.PublishedStream`. Per kind (video, audio) it passes the source's
units straight through when the sink accepts that codec, and otherwise attaches the
sink to the shared transcoder for the sink's preferred codec. The decision is made when
the first unit of a kind arrives and again whenever the publisher restarts (a Flash
customer may come back over WebRTC with other codecs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gateway.codecs import h264
from gateway.consultation import CAMERA, Consultation, Role
from gateway.events import Notice
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream, Receiver
from gateway.transcode.formats import TargetFormat

log = logging.getLogger(__name__)

# What Flash Player 11 decodes as FLV tags (FLV spec E.4.2.1 / E.4.3.1).
FLASH_VIDEO = frozenset({"spark", "vp6", "vp6a", "screen", "screen2"})
FLASH_AUDIO = frozenset({"nellymoser", "speex", "mp3", "pcm", "pcm_le", "adpcm", "alaw", "mulaw"})


@dataclass(frozen=True)
class SinkCaps:
    """What a sink takes as is, and what it wants when something must be transcoded."""

    video_pass: frozenset[str]
    audio_pass: frozenset[str]
    video_target: str | None
    audio_target: str | None
    # H.264 passes to WebRTC only as (constrained) baseline: no B-frames (docs/architecture.md).
    h264_needs_baseline: bool = False


def flash_caps(h264: bool, aac: bool) -> SinkCaps:
    """A Flash player: H.264/AAC when its ``connect`` capabilities say so."""
    video = FLASH_VIDEO | ({"h264"} if h264 else set())
    audio = FLASH_AUDIO | ({"aac"} if aac else set())
    return SinkCaps(
        frozenset(video),
        frozenset(audio),
        "h264" if h264 else "spark",
        "aac" if aac else "nellymoser",
    )


def webrtc_caps(video_codec: str | None, audio_codec: str | None) -> SinkCaps:
    """A WebRTC receiver with the codecs negotiated in its SDP answer."""
    return SinkCaps(
        frozenset({video_codec} if video_codec else set()),
        frozenset({audio_codec} if audio_codec else set()),
        video_codec,
        audio_codec,
        h264_needs_baseline=True,
    )


@runtime_checkable
class FeedbackSink(Protocol):
    """A sink whose far end reports back (RTCP PLI/FIR and REMB for WebRTC; a telephone
    leg's RTCP later). :func:`connect` binds its reports to the route."""

    def bind_feedback(
        self, request_keyframe: Callable[[], None], report_bitrate: Callable[[int], None]
    ) -> None: ...


class CapacityRefused(Exception):
    """No transcoding capacity for a new transcoder now (gateway/monitor.py)."""


# A refused kind is tried again on the next keyframe (video) or unit (audio) this long
# after the refusal: capacity may have come back.
REFUSAL_RETRY_SECONDS = 5.0


class TranscoderLike(Protocol):
    output: PublishedStream

    def request_keyframe(self) -> None: ...

    def set_video_bitrate(self, bps: int) -> None: ...


class TranscoderSource(Protocol):
    """What routing needs of gateway.transcode.TranscoderPool."""

    def acquire(self, source: PublishedStream, target: TargetFormat) -> TranscoderLike: ...

    def release(self, transcoder: TranscoderLike) -> None: ...

    def offer_video_bitrate(
        self, transcoder: TranscoderLike, offerer: object, bps: int | None
    ) -> None:
        """A route's receiver estimate for a shared encoder (None: withdrawn); the pool
        applies the lowest (gateway.transcode.formats.BitrateArbiter)."""


def is_baseline_avcc_config(record: bytes) -> bool:
    """Whether an AVCDecoderConfigurationRecord's stream can pass to a browser: no
    B-frames (Baseline, Constrained High, or a VUI saying no reordering; gateway/codecs/h264.py
    has the rule)."""
    try:
        config = h264.parse_avc_config(record)
        return bool(config.sps) and h264.baseline_without_bframes(config.sps[0])
    except ValueError:
        return False


class _KindFilter:
    """The sink's attachment to a transcoder's output for one kind. Start/stop comes
    from the source through the Route, so the output's own notices are swallowed."""

    def __init__(self, route: Route, kind: str) -> None:
        self.route = route
        self.kind = kind

    def deliver(self, unit: MediaUnit) -> bool:
        if unit.kind != self.kind:
            return True
        return self.route.sink.deliver(unit)

    def stream_started(self, stream: PublishedStream) -> None:
        pass

    def stream_stopped(self, stream: PublishedStream) -> None:
        pass


@dataclass
class _Path:
    codec: str
    transcoder: TranscoderLike | None = None
    attachment: _KindFilter | None = None
    refused_at: float | None = None  # no capacity for the transcoder this kind needs

    def retry_due(self, now: float) -> bool:
        """Whether a refused path may ask the pool again (``now`` passed in)."""
        return self.refused_at is not None and now - self.refused_at >= REFUSAL_RETRY_SECONDS


@dataclass
class RouteStats:
    passed: dict[str, int] = field(default_factory=lambda: {VIDEO: 0, AUDIO: 0})
    transcoded: dict[str, str] = field(default_factory=dict)  # kind -> "in>out"


class Route:
    """One sink's connection to one published stream."""

    def __init__(
        self,
        source: PublishedStream,
        sink: Receiver,
        caps: SinkCaps,
        pool: TranscoderSource | None,
        target_factory: Callable[..., TargetFormat] = TargetFormat,
        on_refused: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.caps = caps
        self.pool = pool
        self.target_factory = target_factory
        self._paths: dict[str, _Path] = {}
        self.stats = RouteStats()
        self.closed = False
        # Told when a kind cannot be delivered for want of transcoding capacity (the
        # owner tells the participant); called with the kind.
        self.on_refused = on_refused
        # Time is needed only for the refusal retry. The fan-out passes none with a unit,
        # so the route reads its clock at this edge, only when a retry may be due, and
        # hands ``now`` to the decisions (time.monotonic unless a test passes a fake).
        self.clock = clock or time.monotonic
        # the receiver's latest estimate (REMB), filed with the pool for a transcoder
        self.video_bitrate: int | None = None
        source.add_receiver(self)

    # -- Receiver protocol (on the source) ------------------------------------------------
    def deliver(self, unit: MediaUnit) -> bool:
        kind = unit.kind
        if kind != VIDEO and kind != AUDIO:
            # Metadata describes the source's codecs: only meaningful passed through.
            path = self._paths.get(VIDEO)
            if path is None or path.transcoder is None:
                return self.sink.deliver(unit)
            return True
        path = self._paths.get(kind)
        if path is None or path.codec != unit.codec:
            path = self._choose(kind, unit, self.clock())
        elif path.refused_at is not None and (kind == AUDIO or unit.keyframe):
            # refused for capacity: try again now and then, on a unit a path can start with
            now = self.clock()
            if path.retry_due(now):
                path = self._choose(kind, unit, now)
        if path.refused_at is not None:
            return True  # nothing of this kind for now; the sink was told
        if path.transcoder is not None:
            return True  # the transcoder is a receiver of the source itself
        ok = self.sink.deliver(unit)
        if ok:
            self.stats.passed[kind] += 1
        return ok

    def stream_started(self, stream: PublishedStream) -> None:
        self._reset()
        self.sink.stream_started(stream)

    def stream_stopped(self, stream: PublishedStream) -> None:
        self._reset()
        self.sink.stream_stopped(stream)

    # -- decisions ------------------------------------------------------------------------
    def _passes(self, kind: str, unit: MediaUnit) -> bool:
        caps = self.caps
        if kind == VIDEO:
            if unit.codec not in caps.video_pass:
                return False
            if unit.codec == "h264" and caps.h264_needs_baseline:
                config = self.source.video_config
                record = unit.payload if unit.config else (config.payload if config else b"")
                return is_baseline_avcc_config(record)
            return True
        return unit.codec in caps.audio_pass

    def _choose(self, kind: str, unit: MediaUnit, now: float) -> _Path:
        old = self._paths.pop(kind, None)
        if old is not None:
            self._drop_path(old)
        target_codec = self.caps.video_target if kind == VIDEO else self.caps.audio_target
        if self._passes(kind, unit) or self.pool is None or target_codec is None:
            path = _Path(unit.codec)
            if not self._passes(kind, unit):
                log.info(
                    "%s: no way to deliver %s %s to this receiver",
                    self.source.name,
                    kind,
                    unit.codec,
                )
        else:
            target = self._target(kind, target_codec)
            try:
                transcoder = self.pool.acquire(self.source, target)
            except CapacityRefused:
                refused = old is None or old.refused_at is None  # tell once, not per retry
                path = _Path(unit.codec, refused_at=now)
                self._paths[kind] = path
                self.stats.transcoded[kind] = f"{unit.codec}>{target_codec} refused (capacity)"
                if refused and self.on_refused is not None:
                    self.on_refused(kind)
                return path
            attachment = _KindFilter(self, kind)
            path = _Path(unit.codec, transcoder, attachment)
            transcoder.output.add_receiver(attachment)
            if kind == VIDEO and self.video_bitrate is not None:
                self.pool.offer_video_bitrate(transcoder, self, self.video_bitrate)
            self.stats.transcoded[kind] = f"{unit.codec}>{target_codec}"
            self.source.stats.transcodes += 1
        self._paths[kind] = path
        return path

    def _target(self, kind: str, codec: str) -> TargetFormat:
        factory = self.target_factory
        if kind == VIDEO:
            return factory(video=codec, audio=None)
        return factory(video=None, audio=codec)

    def _drop_path(self, path: _Path) -> None:
        if path.refused_at is not None:
            return
        if path.transcoder is not None and self.pool is not None:
            self.pool.offer_video_bitrate(path.transcoder, self, None)
            if path.attachment is not None:
                path.transcoder.output.remove_receiver(path.attachment)
            self.pool.release(path.transcoder)

    def _reset(self) -> None:
        for path in self._paths.values():
            self._drop_path(path)
        self._paths.clear()
        self.stats.transcoded.clear()

    # -- control from the sink --------------------------------------------------------------
    def request_keyframe(self) -> None:
        """A receiver lost a picture (PLI/FIR): key the encoder, or ask the publisher."""
        path = self._paths.get(VIDEO)
        if path is not None and path.transcoder is not None:
            path.transcoder.request_keyframe()
        else:
            self.source.request_keyframe()

    def set_video_bitrate(self, bps: int) -> None:
        """REMB from a WebRTC receiver. A shared encoder follows the lowest estimate among
        its receivers (docs/architecture.md, "Media routing"), so each route files its own
        and the minimum applies."""
        self.video_bitrate = bps
        path = self._paths.get(VIDEO)
        if path is not None and path.transcoder is not None and self.pool is not None:
            self.pool.offer_video_bitrate(path.transcoder, self, bps)

    def describe(self) -> dict[str, str]:
        out = {}
        for kind, path in self._paths.items():
            out[kind] = self.stats.transcoded.get(kind, f"{path.codec} (passthrough)")
        return out

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.source.remove_receiver(self)
        self._reset()


def refusal_notice(consultation: Consultation, role: Role) -> Callable[[str], None]:
    """A Route's ``on_refused``: tell the receiving participant (events WebSocket,
    RTMP ``onSessionEvent``) that a kind cannot be delivered for want of capacity."""

    def notify(kind: str) -> None:
        consultation.emit(Notice(code="capacity", role=role, kind=kind))

    return notify


def connect(
    consultation: Consultation,
    role: Role,
    sink: Receiver,
    caps: SinkCaps,
    pool: TranscoderSource | None,
    stream: str = CAMERA,
) -> Route:
    """The one way a front-end's receiver gets media: ``role`` (the receiving participant)
    watches what the other role publishes in ``consultation`` (``stream``: its camera,
    or ``SCREEN``, the advisor's shared screen: ``Consultation.source``).

    Every front-end (RTMP players, WHEP peers, a later telephone leg) comes through here,
    so the wiring is the same for all: passthrough or the pool's shared transcoder per
    kind (:class:`Route`), a refusal for want of capacity told to ``role``, and, for a
    :class:`FeedbackSink`, its keyframe requests and bitrate estimates to the route (which
    keys the transcoder or asks the publisher, and files the estimate with the pool).
    ``pool`` None: passthrough only. Close the returned route to detach.
    """
    route = Route(
        consultation.source(role, stream),
        sink,
        caps,
        pool,
        on_refused=refusal_notice(consultation, role),
    )
    if isinstance(sink, FeedbackSink):
        sink.bind_feedback(route.request_keyframe, route.set_video_bitrate)
    return route

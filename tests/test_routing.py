"""Routing decisions: passthrough where the receiver takes the codec, else a shared
transcoder for the receiver's preferred codec, re-decided when the publisher restarts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.consultation import Role
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream
from gateway.routing import CapacityRefused, Route, connect, flash_caps, webrtc_caps
from gateway.service import Gateway
from gateway.transcode.formats import BitrateArbiter


@dataclass(frozen=True)
class Target:
    video: str | None
    audio: str | None


class FakeTranscoder:
    def __init__(self, source: PublishedStream, target: Target) -> None:
        self.source = source
        self.target = target
        self.output = PublishedStream(f"{source.name}->{target}")
        self.output.start("transcoder")
        self.keyframes_requested = 0
        self.refs = 0
        self.bitrates: list[int] = []

    def set_video_bitrate(self, bps: int) -> None:
        self.bitrates.append(bps)

    def request_keyframe(self) -> None:
        self.keyframes_requested += 1


class FakePool:
    def __init__(self) -> None:
        self.live: dict[tuple[int, Target], FakeTranscoder] = {}
        self.closed: list[Target] = []
        self.bitrates = BitrateArbiter()  # what gateway.transcode.TranscoderPool uses

    def offer_video_bitrate(
        self, transcoder: FakeTranscoder, offerer: object, bps: int | None
    ) -> None:
        self.bitrates.offer(transcoder, offerer, bps)

    def acquire(self, source: PublishedStream, target: object) -> FakeTranscoder:
        assert isinstance(target, Target)
        key = (id(source), target)
        if key not in self.live:
            self.live[key] = FakeTranscoder(source, target)
        self.live[key].refs += 1
        return self.live[key]

    def release(self, transcoder: object) -> None:
        assert isinstance(transcoder, FakeTranscoder)
        transcoder.refs -= 1
        if transcoder.refs == 0:
            del self.live[(id(transcoder.source), transcoder.target)]
            self.closed.append(transcoder.target)


class Sink:
    def __init__(self) -> None:
        self.units: list[MediaUnit] = []
        self.started = 0
        self.stopped = 0

    def deliver(self, unit: MediaUnit) -> bool:
        self.units.append(unit)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        self.started += 1

    def stream_stopped(self, stream: PublishedStream) -> None:
        self.stopped += 1


def _video(codec: str, key: bool, ts: int = 0) -> MediaUnit:
    return MediaUnit(VIDEO, codec, ts, b"v", keyframe=key)


def _audio(codec: str, ts: int = 0) -> MediaUnit:
    return MediaUnit(AUDIO, codec, ts, b"a")


def _route(caps_video: str | None = "vp8") -> tuple[PublishedStream, Sink, FakePool, Route]:
    source = PublishedStream("c/customer")
    source.start("rtmp")
    sink, pool = Sink(), FakePool()
    route = Route(source, sink, webrtc_caps(caps_video, "opus"), pool, Target)
    return source, sink, pool, route


def test_flash_to_flash_passes_through_without_a_transcoder() -> None:
    source = PublishedStream("c/customer")
    source.start("rtmp")
    sink, pool = Sink(), FakePool()
    Route(source, sink, flash_caps(h264=True, aac=True), pool, Target)
    source.push(_video("spark", True))
    source.push(_audio("speex"))
    assert [u.codec for u in sink.units] == ["spark", "speex"]
    assert pool.live == {}


def test_flash_camera_to_browser_uses_one_transcoder_per_kind() -> None:
    source, sink, pool, route = _route()
    source.push(_video("spark", True))
    source.push(_audio("nellymoser"))
    targets = {t.target for t in pool.live.values()}
    assert targets == {Target(None, "opus"), Target("vp8", None)}
    assert sink.units == []  # nothing raw reaches the browser
    vp8 = next(t for t in pool.live.values() if t.target.video == "vp8")
    vp8.output.push(_video("vp8", True))
    vp8.output.push(_audio("opus"))  # another kind on this output is not this path's
    assert [u.codec for u in sink.units] == ["vp8"]
    assert route.describe() == {"video": "spark>vp8", "audio": "nellymoser>opus"}


def test_receivers_of_the_same_format_share_the_transcoder() -> None:
    source, _, pool, _ = _route()
    Route(source, Sink(), webrtc_caps("vp8", "opus"), pool, Target)
    source.push(_video("spark", True))
    assert len(pool.live) == 1
    assert next(iter(pool.live.values())).refs == 2


def test_last_receiver_leaving_closes_the_transcoder() -> None:
    source, _, pool, route = _route()
    other = Route(source, Sink(), webrtc_caps("vp8", "opus"), pool, Target)
    source.push(_video("spark", True))
    route.close()
    assert pool.closed == []
    other.close()
    assert pool.closed == [Target("vp8", None)]


def test_h264_passes_to_webrtc_only_without_b_frames() -> None:
    from gateway.codecs import h264
    from tests.test_h264 import x264_frames

    def record(profile: str, bframes: int) -> bytes:
        first = h264.split_annexb(x264_frames(profile, bframes=bframes)[0])
        return h264.build_avc_config(*h264.parameter_sets(first))

    # baseline as Flash 11's camera sends it; High with B-frames as an encoder might
    for config, expect_pass in ((record("baseline", 0), True), (record("high", 2), False)):
        source, sink, pool, _ = _route("h264")
        source.push(MediaUnit(VIDEO, "h264", 0, config, config=True))
        source.push(_video("h264", True))
        assert bool(sink.units) is expect_pass
        assert bool(pool.live) is not expect_pass


def test_publisher_restart_with_other_codecs_redecides() -> None:
    source, sink, pool, _ = _route()
    source.push(_video("spark", True))
    assert pool.live
    source.stop()
    assert pool.closed == [Target("vp8", None)]
    source.start("webrtc")
    source.push(_video("vp8", True))
    assert [u.codec for u in sink.units] == ["vp8"] and not pool.live
    assert sink.stopped == 1 and sink.started >= 1


def test_keyframe_request_goes_to_the_encoder_or_the_publisher() -> None:
    source, _, pool, route = _route()
    asked: list[int] = []
    source.start("webrtc", on_keyframe_request=lambda: asked.append(1))
    source.push(_video("vp8", True))
    route.request_keyframe()
    assert asked == [1]
    source.push(_video("spark", True))  # the codec changed: now transcoded
    route.request_keyframe()
    assert next(iter(pool.live.values())).keyframes_requested == 1


def test_old_flash_player_gets_spark_and_nellymoser_targets() -> None:
    caps = flash_caps(h264=False, aac=False)
    assert (caps.video_target, caps.audio_target) == ("spark", "nellymoser")
    assert "h264" not in caps.video_pass and "aac" not in caps.audio_pass


def test_shared_encoder_follows_the_lowest_receiver_estimate() -> None:
    source, _, pool, slow = _route()
    fast = Route(source, Sink(), webrtc_caps("vp8", "opus"), pool, Target)
    source.push(_video("spark", True))
    transcoder = next(iter(pool.live.values()))
    fast.set_video_bitrate(900_000)
    slow.set_video_bitrate(300_000)
    fast.set_video_bitrate(800_000)
    assert transcoder.bitrates == [900_000, 300_000, 300_000]
    slow.close()  # the slow receiver leaves: the encoder may speed up again
    assert transcoder.bitrates[-1] == 800_000


class FeedbackSink(Sink):
    """A sink whose far end reports back, as a WHEP sink (gateway.routing.FeedbackSink)."""

    def __init__(self) -> None:
        super().__init__()
        self.request_keyframe: Callable[[], None] | None = None
        self.report_bitrate: Callable[[int], None] | None = None

    def bind_feedback(
        self, request_keyframe: Callable[[], None], report_bitrate: Callable[[int], None]
    ) -> None:
        self.request_keyframe = request_keyframe
        self.report_bitrate = report_bitrate


class AnyTargetPool(FakePool):
    """FakePool for the real TargetFormat that connect() asks for; refuses on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = False

    def acquire(self, source: PublishedStream, target: object) -> FakeTranscoder:
        if self.refuse:
            raise CapacityRefused("no capacity in this test")
        key = (id(source), target)
        if key not in self.live:
            self.live[key] = FakeTranscoder(source, target)  # type: ignore[arg-type]
        self.live[key].refs += 1
        return self.live[key]


def test_connect_feeds_the_other_role_and_binds_the_sinks_feedback_to_the_route() -> None:
    """The one entry point (issue 13 item 3): the advisor's sink gets what the customer
    publishes; its keyframe requests key the shared encoder and its estimates reach it."""
    consultation = Gateway.from_config(Config()).directory.create()
    source = consultation.streams[Role.CUSTOMER]
    source.start("rtmp")
    sink, pool = FeedbackSink(), AnyTargetPool()
    route = connect(consultation, Role.ADVISOR, sink, webrtc_caps("vp8", "opus"), pool)
    assert route.source is source
    source.push(_video("spark", True))
    (transcoder,) = pool.live.values()
    assert sink.request_keyframe is not None and sink.report_bitrate is not None
    sink.request_keyframe()
    sink.report_bitrate(400_000)
    assert transcoder.keyframes_requested == 1
    assert transcoder.bitrates == [400_000]
    route.close()
    assert pool.closed  # the last route gone: the transcoder is released


def test_connect_tells_the_receiving_role_when_capacity_is_refused() -> None:
    consultation = Gateway.from_config(Config()).directory.create()
    events: list[Any] = []
    consultation.subscribe(events.append)
    source = consultation.streams[Role.ADVISOR]
    source.start("webrtc")
    pool = AnyTargetPool()
    pool.refuse = True
    connect(consultation, Role.CUSTOMER, Sink(), flash_caps(h264=False, aac=False), pool)
    source.push(_video("vp8", True))
    source.push(_video("vp8", True, ts=40))  # told once, not per unit
    notices = [e for e in events if "capacity" in str(e)]
    assert len(notices) == 1 and "customer" in str(notices[0])


def test_routing_the_monitor_and_the_transcode_types_load_without_pyav() -> None:
    """gateway.transcode.formats is PyAV-free (issue 13): routing and the monitor import
    real types from it, and the PyAV modules load only with the transcoders."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.routing, gateway.monitor, gateway.transcode;"
        "assert 'av' not in sys.modules, 'PyAV loaded';"
        "from gateway.transcode import TranscoderPool;"
        "assert 'av' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_refused_kind_is_retried_after_the_interval_on_the_routes_clock() -> None:
    """The refusal retry (REFUSAL_RETRY_SECONDS) on a fake clock, no sleeps: video asks the
    pool again on the first keyframe at or after the interval, audio on any unit."""
    from gateway.routing import REFUSAL_RETRY_SECONDS

    t = [100.0]
    source = PublishedStream("c/customer")
    source.start("rtmp")
    pool = AnyTargetPool()
    pool.refuse = True
    refused: list[str] = []
    route = Route(
        source,
        Sink(),
        webrtc_caps("vp8", "opus"),
        pool,
        on_refused=refused.append,
        clock=lambda: t[0],
    )
    source.push(_video("spark", True))
    source.push(_audio("speex"))
    assert refused == ["video", "audio"] and not pool.live
    pool.refuse = False
    t[0] = 100.0 + REFUSAL_RETRY_SECONDS - 0.5
    source.push(_video("spark", True, ts=40))
    source.push(_audio("speex", ts=40))
    assert not pool.live, "retried before the interval"
    t[0] = 100.0 + REFUSAL_RETRY_SECONDS  # exactly the interval: due
    source.push(_video("spark", False, ts=80))  # not a keyframe: a path cannot start here
    assert not pool.live
    source.push(_audio("speex", ts=80))
    source.push(_video("spark", True, ts=120))
    assert len(pool.live) == 2
    assert route.describe() == {"video": "spark>vp8", "audio": "speex>opus"}
    assert refused == ["video", "audio"], "told once, not again on the retry"

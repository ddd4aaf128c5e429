"""Unit tests of the WebRTC front-end's pure parts: session clock, sink, H.264 framing,
ICE server configuration."""

from __future__ import annotations

import fractions
import json

import pytest
from aiortc.mediastreams import MediaStreamError

from gateway.codecs import h264
from gateway.codecs.vp8 import dimensions as vp8_dimensions
from gateway.config import Config
from gateway.media import MediaUnit, PublishedStream
from webrtc.clock import SessionClock
from webrtc.peers import PeerFactory, parse_ice_server
from webrtc.sink import KEYFRAME_REQUEST_INTERVAL, QUEUE_SIZE, WebRtcSink

# -- session clock -------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def ntp(ms: float) -> int:
    """NTP timestamp for ``ms`` milliseconds after an arbitrary epoch."""
    seconds = 3_900_000_000 + ms / 1000
    return (int(seconds) << 32) | int((seconds % 1) * (1 << 32))


def test_clock_without_reports_uses_arrival_time() -> None:
    now = FakeTime()
    clock = SessionClock(now)
    video = clock.track(90000, lambda: 1_000_000)
    audio = clock.track(48000, lambda: 5)
    assert video.to_ms(0) == 0
    now.t += 0.5
    assert audio.to_ms(0) == 500  # its first frame came half a second later
    assert video.to_ms(90000) == 1000  # one second of RTP progress
    assert audio.to_ms(48000) == 1500
    assert not video.synced


def test_clock_aligns_tracks_through_sender_reports() -> None:
    """Video's first frame is held up 200 ms (e.g. a keyframe wait): by arrival time the
    tracks are 200 ms apart, by the sender's clock they are not."""
    now = FakeTime()
    clock = SessionClock(now)
    v_origin, a_origin = 4_000_000_000, 123_456
    video = clock.track(90000, lambda: v_origin)
    audio = clock.track(48000, lambda: a_origin)
    # both captured at sender time T=0 ms: audio arrives at once, video 200 ms later
    assert audio.to_ms(0) == 0
    now.t += 0.2
    assert video.to_ms(0) == 200
    # sender reports: RTP timestamps (absolute, wrapping) at sender NTP times
    audio.on_sender_report(ntp(1000), (a_origin + 48000) & 0xFFFFFFFF)
    video.on_sender_report(ntp(1000), (v_origin + 90000) & 0xFFFFFFFF)  # wraps past 2^32
    # audio brought the first report: it keeps its mapping exactly
    assert audio.to_ms(48000) == 1000
    # video moves onto the same base: the same capture instant, the same time
    assert video.to_ms(90000 + 9000) == 1100
    assert audio.to_ms(48000 + 4800) == 1100
    assert video.synced and audio.synced


def test_clock_smooths_report_jitter_and_stays_monotonic() -> None:
    clock = SessionClock(FakeTime())
    track = clock.track(90000, lambda: 0)
    track.to_ms(0)
    track.on_sender_report(ntp(0), 0)
    assert track.to_ms(90000) == 1000
    # a report 50 ms "late" (send delay) moves the mapping by a fifth of that only
    track.on_sender_report(ntp(1050), 90000)
    assert track.to_ms(90000 + 900) == 1010 + 10
    # going backwards is clamped: decode timestamps never decrease
    track.on_sender_report(ntp(0), 180000)  # an outlier beyond 500 ms resets instead
    assert track.to_ms(180000) >= 1020


def test_clock_wraps_at_32_bits() -> None:
    now = FakeTime()
    clock = SessionClock(now)
    track = clock.track(1000, lambda: 0)  # 1 tick per ms
    track.to_ms(0)
    assert track.to_ms((1 << 32) + 5) == 5


# -- sink ------------------------------------------------------------------------------------


def unit(kind: str, codec: str, ts: int, payload: bytes = b"x", **kw: object) -> MediaUnit:
    return MediaUnit(kind, codec, ts, payload, **kw)  # type: ignore[arg-type]


SPS = b"\x67\x42\xc0\x1f\xda\x01"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00"
SLICE = b"\x41\x9a\x02"


async def test_sink_vp8_and_opus_packets() -> None:
    sink = WebRtcSink({"video": "vp8", "audio": "opus"})
    assert sink.deliver(unit("video", "vp8", 1000, b"\x11inter"))  # taken (and skipped)
    assert sink.queues["video"].empty()  # waiting for a keyframe: skipped, not queued
    assert sink.deliver(unit("video", "vp8", 1000, b"\x10key", keyframe=True))
    assert sink.deliver(unit("audio", "opus", 1010, b"\xfc"))
    video = await sink.tracks["video"].recv()
    audio = await sink.tracks["audio"].recv()
    assert bytes(video) == b"\x10key" and video.pts == 0 and video.is_keyframe
    assert video.time_base == fractions.Fraction(1, 90000)
    assert audio.pts == 10 * 48 and audio.time_base == fractions.Fraction(1, 48000)


async def test_sink_h264_avcc_to_annexb_with_parameter_sets() -> None:
    sink = WebRtcSink({"video": "h264", "audio": "opus"})
    record = h264.build_avc_config([SPS], [PPS])
    assert sink.deliver(unit("video", "h264", 0, record, config=True))
    assert sink.deliver(unit("video", "h264", 0, h264.join_avcc([IDR]), keyframe=True))
    assert sink.deliver(unit("video", "h264", 33, h264.join_avcc([SLICE])))
    key = bytes(await sink.tracks["video"].recv())
    assert key == b"".join(h264.START_CODE + n for n in (SPS, PPS, IDR))
    inter = await sink.tracks["video"].recv()
    assert bytes(inter) == h264.START_CODE + SLICE and inter.pts == 33 * 90


async def test_sink_h264_takes_the_producers_annexb_as_is() -> None:
    """A browser's or x264's Annex-B goes out unconverted (no Annex-B -> AVCC -> Annex-B),
    even before any configuration record: the IDR carries its parameter sets."""
    sink = WebRtcSink({"video": "h264"})
    key = h264.join_annexb([SPS, PPS, IDR])
    inter = h264.join_annexb([SLICE])
    avcc = h264.join_avcc([IDR])
    assert sink.deliver(unit("video", "h264", 0, avcc, keyframe=True, annexb=key))
    assert sink.deliver(unit("video", "h264", 33, h264.join_avcc([SLICE]), annexb=inter))
    assert bytes(await sink.tracks["video"].recv()) == key
    assert bytes(await sink.tracks["video"].recv()) == inter


def test_sink_h264_idr_without_configuration_waits() -> None:
    sink = WebRtcSink({"video": "h264"})
    sink.deliver(unit("video", "h264", 0, h264.join_avcc([IDR]), keyframe=True))
    assert sink.queues["video"].empty()


async def test_sink_full_queue_drops_until_keyframe_and_asks_for_one() -> None:
    sink = WebRtcSink({"video": "vp8", "audio": "opus"})
    asked: list[int] = []
    sink.on_keyframe_request = lambda: asked.append(1)
    assert sink.deliver(unit("video", "vp8", 0, b"\x10", keyframe=True))
    for i in range(1, QUEUE_SIZE["video"]):
        assert sink.deliver(unit("video", "vp8", i * 33, b"\x11"))
    assert not sink.deliver(unit("video", "vp8", 9999, b"\x11"))  # full: refused
    assert sink.dropped["video"] == 1 and asked == [1]
    while not sink.queues["video"].empty():
        sink.queues["video"].get_nowait()
    assert sink.deliver(unit("video", "vp8", 10000, b"\x11"))  # still waiting: skipped
    assert sink.queues["video"].empty()
    assert sink.deliver(unit("video", "vp8", 10033, b"\x10", keyframe=True))
    assert sink.queues["video"].qsize() == 1


def test_sink_keyframe_requests_are_rate_limited_on_the_sinks_clock() -> None:
    """PLI storms and repeated drops ask upstream at most once per interval: a fake
    clock, no sleeps; ``now`` passed in counts the same as the clock's."""
    now = FakeTime()
    sink = WebRtcSink({"video": "vp8"}, clock=now)
    asked: list[int] = []
    sink.bind_feedback(lambda: asked.append(1), lambda bps: None)
    sink.request_keyframe()  # as aiortc's sender calls it: the clock's now
    sink.request_keyframe()
    assert len(asked) == 1
    now.t += KEYFRAME_REQUEST_INTERVAL - 0.01
    sink.request_keyframe()
    assert len(asked) == 1
    now.t += 0.01
    sink.request_keyframe()
    assert len(asked) == 2 and sink.keyframe_requests == 2
    sink.request_keyframe(now=now.t + KEYFRAME_REQUEST_INTERVAL / 2)
    assert len(asked) == 2
    sink.request_keyframe(now=now.t + KEYFRAME_REQUEST_INTERVAL)
    assert len(asked) == 3


async def test_sink_restart_keeps_output_time_moving_forward() -> None:
    sink = WebRtcSink({"video": "vp8"})
    stream = PublishedStream("x")
    sink.deliver(unit("video", "vp8", 50_000, b"\x10", keyframe=True))
    sink.deliver(unit("video", "vp8", 51_000, b"\x11"))
    sink.stream_started(stream)  # the publisher came back with a fresh clock
    sink.deliver(unit("video", "vp8", 0, b"\x10", keyframe=True))
    pts = [(await sink.tracks["video"].recv()).pts for _ in range(3)]
    assert pts == [0, 1000 * 90, 1040 * 90]


async def test_sink_other_codec_is_counted_and_close_ends_tracks() -> None:
    sink = WebRtcSink({"video": "vp8", "audio": "opus"})
    assert sink.deliver(unit("video", "h264", 0, b"\x00\x00\x00\x01\x65", keyframe=True))
    assert sink.mismatched == 1 and sink.queues["video"].empty()
    sink.close()
    with pytest.raises(MediaStreamError):
        await sink.tracks["video"].recv()
    assert sink.deliver(unit("audio", "opus", 0))  # after close: swallowed


# -- H.264 framing ---------------------------------------------------------------------------


def test_h264_round_trips() -> None:
    annexb = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    nals = h264.split_annexb(annexb)
    # zero bytes at the end of the stream are trailing_zero_8bits (H.264 B.1.1), not data
    assert nals == [SPS, PPS, IDR.rstrip(b"\x00")]
    assert h264.split_avcc(h264.join_avcc(nals)) == nals
    record = h264.build_avc_config([SPS], [PPS])
    assert record[:4] == b"\x01\x42\xc0\x1f"
    config = h264.parse_avc_config(record)
    assert (config.sps, config.pps, config.length_size) == ([SPS], [PPS], 4)
    with pytest.raises(ValueError):
        h264.parse_avc_config(record[:9])
    with pytest.raises(ValueError):
        h264.split_avcc(b"\x00\x00\x00\x09ab")  # truncated


def test_vp8_dimensions() -> None:
    header = b"\x10\x02\x00\x9d\x01\x2a" + (320).to_bytes(2, "little") + (240).to_bytes(2, "little")
    assert vp8_dimensions(header) == (320, 240)
    assert vp8_dimensions(b"\x11" + header[1:]) is None  # an inter frame has no size


# -- ICE servers --------------------------------------------------------------------------------


def test_ice_servers_come_from_our_configuration_only() -> None:
    factory = PeerFactory(Config())
    assert factory.configuration().iceServers == []
    config = Config(
        stun=["stun:stun.example.de:3478"],
        turn=["turn:user:p%40ss@turn.example.de:3478?transport=udp"],
    )
    servers = PeerFactory(config).configuration().iceServers
    assert servers is not None
    assert [s.urls for s in servers] == [
        "stun:stun.example.de:3478",
        "turn:turn.example.de:3478?transport=udp",
    ]
    assert (servers[1].username, servers[1].credential) == ("user", "p@ss")
    with pytest.raises(ValueError):
        parse_ice_server("http://example.de")
    with pytest.raises(ValueError):
        parse_ice_server("stun")
    with pytest.raises(ValueError):
        PeerFactory(Config(ice_host=["gateway.example.de"]))


def test_ice_servers_are_announced_in_link_headers() -> None:
    from web.whip import _link_header

    assert _link_header(
        [("stun:a.example.de", None, None), ("turn:b.example.de:3478?transport=udp", "u", 'p"w')]
    ) == (
        '<stun:a.example.de>; rel="ice-server", '
        '<turn:b.example.de:3478?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p\\"w"; credential-type="password"'
    )


def test_pages_get_our_ice_servers_with_turn_credentials() -> None:
    from web.templates import ice_servers

    assert json.loads(ice_servers([])) == []
    assert json.loads(
        ice_servers(["stun:s.example.de:3478", "turn:user:p%40ss@t.example.de:3478?transport=tcp"])
    ) == [
        {"urls": "stun:s.example.de:3478"},
        {"urls": "turn:t.example.de:3478?transport=tcp", "username": "user", "credential": "p@ss"},
    ]


def test_lag_monitor_flags_backlog_beyond_the_usual_delay() -> None:
    from webrtc.clock import LagMonitor

    lag = LagMonitor(limit_ms=1000)
    # steady flow with 80 ms of path + jitter-buffer delay: never late
    assert not any(lag.too_late(m, m + 80.0) for m in range(0, 5000, 33))
    # frames now arrive 1.5 s behind (a backlog in a queue): late, and counted
    assert lag.too_late(5000, 5000 + 1580.0)
    assert lag.stale == 1
    # across the 2^32 ms wrap the difference is still small
    wrap = LagMonitor()
    assert not wrap.too_late(4294967290, 100.0)
    assert not wrap.too_late(10, 116.0)

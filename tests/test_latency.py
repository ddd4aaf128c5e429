"""The latency meter (gateway/latency.py) and its stamps on the media path."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from gateway.latency import LatencyMeter, direction, percentile
from gateway.media import VIDEO, MediaUnit, PublishedStream
from tests.test_routing import Sink


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 100) == 100
    assert percentile([7.0], 95) == 7.0


def test_direction_names() -> None:
    assert direction("rtmp", "webrtc") == "flash_to_webrtc"
    assert direction("webrtc", "flash") == "webrtc_to_flash"
    assert direction("", "flash") == "unknown_to_flash"


def test_snapshot_per_key_and_since() -> None:
    meter = LatencyMeter()
    for ms in (1, 2, 3, 4, 100):
        meter.observe("rtmp", "webrtc", False, ms / 1000)
    meter.observe("webrtc", "flash", True, 0.020, "audio")
    meter.observe("rtmp", "flash", False, -1.0)  # a clock gone backwards is not a sample
    meter.observe_jitter("video", 0.033)
    snap = meter.snapshot()
    passthrough = snap["added"]["flash_to_webrtc/passthrough/video"]
    assert passthrough["count"] == 5
    assert passthrough["p50_ms"] == 3.0 and passthrough["max_ms"] == 100.0
    assert snap["added"]["webrtc_to_flash/transcoded/audio"]["p95_ms"] == 20.0
    assert set(snap["added"]) == {
        "flash_to_webrtc/passthrough/video",
        "webrtc_to_flash/transcoded/audio",
    }
    assert snap["jitter_buffer"]["video"]["count"] == 1
    later = meter.snapshot(since=snap["clock"])
    assert later["added"] == {} and later["jitter_buffer"] == {}
    meter.observe("rtmp", "webrtc", False, 0.005)
    window = meter.snapshot(since=snap["clock"])
    assert window["added"]["flash_to_webrtc/passthrough/video"]["count"] == 1


def test_histograms_in_prometheus_text() -> None:
    meter = LatencyMeter()
    meter.observe("rtmp", "webrtc", True, 0.004)
    registry = CollectorRegistry()
    registry.register(meter.collector())
    text = generate_latest(registry).decode()
    assert (
        'vb_added_latency_seconds_bucket{direction="flash_to_webrtc",kind="video",le="0.005",'
        'path="transcoded"} 1.0' in text
    )
    assert (
        'vb_added_latency_seconds_bucket{direction="flash_to_webrtc",kind="video",le="0.003"'
        in text
    )


def test_replayed_units_are_not_measured_live_ones_are() -> None:
    """A late receiver's GOP replay is old on purpose; only live units carry a stamp."""
    stream = PublishedStream("c/customer")
    stream.start("rtmp")
    stamp = time.perf_counter()
    key = MediaUnit(VIDEO, "spark", 0, b"k", keyframe=True, arrived=stamp, origin="rtmp")
    stream.push(key)
    sink = Sink()
    stream.add_receiver(sink)
    assert [u.payload for u in sink.units] == [b"k"]
    assert sink.units[0].arrived == 0.0 and key.arrived == stamp  # a copy, not mutated
    live = MediaUnit(VIDEO, "spark", 66, b"p", arrived=stamp, origin="rtmp")
    stream.push(live)
    assert sink.units[-1] is live and sink.units[-1].arrived == stamp

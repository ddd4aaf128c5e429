"""The numbers behind issue 10's advisor and ops views, without a browser: the
customer's uplink as the gateway measures it (``webrtc/quality.py``) and passthrough
traffic in the ops monitor's samples (``gateway/monitor.py``, ``gateway/latency.py``)."""

from __future__ import annotations

import datetime

from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCStatsReport,
    RTCTransportStats,
)

from gateway.latency import LatencyMeter
from gateway.monitor import Monitor
from webrtc.quality import UplinkMeter, UplinkSample, round_trip_ms, sample

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _report(received: int, lost: int, octets: int, rtt: float | None = None) -> RTCStatsReport:
    report = RTCStatsReport()
    report["in"] = RTCInboundRtpStreamStats(
        timestamp=NOW,
        type="inbound-rtp",
        id="in",
        ssrc=1,
        kind="video",
        transportId="t",
        packetsReceived=received,
        packetsLost=lost,
        jitter=0,
    )
    report["t"] = RTCTransportStats(
        timestamp=NOW,
        type="transport",
        id="t",
        packetsSent=0,
        packetsReceived=received,
        bytesSent=0,
        bytesReceived=octets,
        iceRole="controlled",
        dtlsState="connected",
    )
    if rtt is not None:
        report["rin"] = RTCRemoteInboundRtpStreamStats(
            timestamp=NOW,
            type="remote-inbound-rtp",
            id="rin",
            ssrc=2,
            kind="video",
            transportId="t",
            packetsReceived=0,
            packetsLost=0,
            jitter=0,
            roundTripTime=rtt,
            fractionLost=0,
        )
    return report


def test_uplink_bitrate_loss_and_round_trip_from_two_samples() -> None:
    meter = UplinkMeter("customer")
    first = meter.event(sample(_report(100, 0, 10_000), 10.0), expecting=True, rtt_ms=None)
    assert first["sending"] is True and first["stalled"] is False  # nothing to compare yet
    event = meter.event(sample(_report(290, 10, 110_000), 12.0), expecting=True, rtt_ms=45)
    assert event == {
        "type": "quality",
        "role": "customer",
        "sending": True,
        "stalled": False,
        "kbps": 400,  # 100 000 bytes in 2 s
        "loss_pct": 5.0,  # 10 of 200
        "rtt_ms": 45,
        "quality": "fair",
    }
    assert round_trip_ms(_report(0, 0, 0, rtt=0.123)) == 123
    assert round_trip_ms(_report(0, 0, 0)) is None


def test_an_outage_is_a_stall_only_while_something_is_switched_on() -> None:
    meter = UplinkMeter("customer")
    meter.event(UplinkSample(0.0, 1000, 50, 0), expecting=True, rtt_ms=20)
    # the camera is on, but no packet came in the whole interval: the customer is gone
    stalled = meter.event(UplinkSample(2.0, 1100, 50, 0), expecting=True, rtt_ms=20)
    assert stalled["stalled"] is True and stalled["quality"] == "poor"
    # packets again: flowing
    back = meter.event(UplinkSample(4.0, 60_000, 150, 0), expecting=True, rtt_ms=20)
    assert back["stalled"] is False and back["quality"] == "good"
    # nothing switched on: silence is no outage
    quiet = meter.event(UplinkSample(6.0, 60_000, 150, 0), expecting=False, rtt_ms=20)
    assert quiet["stalled"] is False
    # the WHIP session ended
    assert meter.event(None, expecting=True, rtt_ms=None) == {
        "type": "quality",
        "role": "customer",
        "sending": False,
    }


def test_passthrough_counts_in_the_monitor_samples() -> None:
    meter = LatencyMeter()
    monitor = Monitor(
        lambda: [], cores=2, cpu_seconds=lambda: 0.0, passthrough=meter.passthrough_totals
    )
    monitor.sample(now=100.0)
    for _ in range(30):  # one second of browser-to-browser video, 1 kB a frame
        meter.observe("webrtc", "webrtc", False, 0.001, "video", 1000)
    meter.observe("webrtc", "webrtc", True, 0.001, "video", 1000)  # transcoded: not here
    rows = monitor.sample(now=101.0)["passthrough"]
    assert rows == [
        {
            "direction": "webrtc_to_webrtc",
            "kind": "video",
            "path": "passthrough",
            "fps": 30.0,
            "bitrate": 240_000,
        }
    ]
    # nothing passed in the next second: no row (the chart shows a gap, not a zero)
    assert monitor.sample(now=102.0)["passthrough"] == []

"""A customer's connection as the gateway sees it, for the advisor's page.

The advisor's own quality line measures the advisor's legs (gateway → advisor and
back); during a customer outage it stays green while nothing arrives from the customer.
So the gateway measures the customer's uplink itself, from its WHIP peer's statistics
(aiortc's ``RTCInboundRtpStreamStats``: packets received and lost; the transport's
bytes received), takes the round trip from the customer's WHEP peer (the receiver
reports it sends back: ``RTCRemoteInboundRtpStreamStats.roundTripTime``, RFC 3550
§6.4.1), and tells the consultation with a ``quality`` event every few seconds.

:class:`gateway.quality.UplinkMeter` is the pure part (two samples in, one event out),
shared with the RTMP front-end; here are the aiortc statistics that feed it
(``WebRtcFrontEnd._watch_quality``).
"""

from __future__ import annotations

from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCStatsReport,
    RTCTransportStats,
)

from gateway.quality import INTERVAL, UplinkMeter, UplinkSample, rate

__all__ = ["INTERVAL", "UplinkMeter", "UplinkSample", "rate", "round_trip_ms", "sample"]


def sample(report: RTCStatsReport, at: float) -> UplinkSample:
    """The counters of a WHIP peer's ``getStats()`` report."""
    received = lost = 0
    octets = 0
    for stats in report.values():
        if isinstance(stats, RTCInboundRtpStreamStats):
            received += stats.packetsReceived
            lost += max(0, stats.packetsLost)
        elif isinstance(stats, RTCTransportStats):
            octets += stats.bytesReceived
    return UplinkSample(at, octets, received, lost)


def round_trip_ms(report: RTCStatsReport) -> int | None:
    """The round trip to the customer from a WHEP peer's report (None: none measured yet)."""
    rtts = [
        s.roundTripTime
        for s in report.values()
        if isinstance(s, RTCRemoteInboundRtpStreamStats) and s.roundTripTime
    ]
    return round(max(rtts) * 1000) if rtts else None

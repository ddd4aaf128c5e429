"""A participant's uplink as the gateway sees it, for the advisor's page.

The advisor's own quality line measures the advisor's legs (gateway → advisor and
back); during a customer outage it stays green while nothing arrives from the customer.
So the gateway measures the customer's uplink itself and tells the consultation with a
``quality`` event every few seconds. :class:`UplinkMeter` is the pure part (two samples
of counters in, one event out), shared by every front-end: the WebRTC front end feeds it
from aiortc's statistics (``webrtc/quality.py``), the RTMP session from the bytes and
messages of the customer's publish (``rtmp/publisher.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.events import Quality
from gateway.roles import Role

# how often the advisor hears of the customer's connection
INTERVAL = 2.0
# the same thresholds as the pages' own rating (static/rtc.js, rate())
POOR_LOSS_PCT, POOR_RTT_MS = 8.0, 600
FAIR_LOSS_PCT, FAIR_RTT_MS = 2.0, 250


@dataclass(frozen=True, slots=True)
class UplinkSample:
    """Counters of one participant's uplink at one moment (monotonic seconds)."""

    at: float
    bytes_received: int
    packets_received: int
    packets_lost: int


def rate(loss_pct: float, rtt_ms: int | None) -> str:
    rtt = rtt_ms or 0
    if loss_pct >= POOR_LOSS_PCT or rtt >= POOR_RTT_MS:
        return "poor"
    if loss_pct >= FAIR_LOSS_PCT or rtt >= FAIR_RTT_MS:
        return "fair"
    return "good"


class UplinkMeter:
    """Turns successive samples of one participant's uplink into ``quality`` events.

    ``expecting``: the participant said a camera or microphone is on, so packets should
    arrive; none in a whole interval is a stall (an outage, or the customer's page
    reconnecting), which the advisor is shown instead of "camera on".
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self.previous: UplinkSample | None = None

    def event(
        self, now: UplinkSample | None, *, expecting: bool, rtt_ms: int | None
    ) -> dict[str, Any]:
        """:meth:`measure` in its wire form (what the events WebSocket sends)."""
        return self.measure(now, expecting=expecting, rtt_ms=rtt_ms).wire()

    def measure(self, now: UplinkSample | None, *, expecting: bool, rtt_ms: int | None) -> Quality:
        previous, self.previous = self.previous, now
        role = Role(self.role)
        if now is None:  # nothing publishing (or not connected yet)
            return Quality(role=role, sending=False)
        if previous is None or now.at <= previous.at:
            packets = lost = octets = 0
            span = 0.0
        else:
            span = now.at - previous.at
            packets = max(0, now.packets_received - previous.packets_received)
            lost = max(0, now.packets_lost - previous.packets_lost)
            octets = max(0, now.bytes_received - previous.bytes_received)
        loss_pct = 100.0 * lost / (packets + lost) if packets + lost else 0.0
        kbps = round(octets * 8 / 1000 / span) if span else 0
        stalled = expecting and span > 0 and packets == 0
        return Quality(
            role=role,
            sending=True,
            stalled=stalled,
            kbps=kbps,
            loss_pct=round(loss_pct, 1),
            rtt_ms=rtt_ms,
            quality="poor" if stalled else rate(loss_pct, rtt_ms),
        )

"""One session clock for a WebRTC publisher's tracks (RTP timestamps → milliseconds).

Each RTP stream has its own random timestamp origin and clock rate (RFC 3550 §5.1), so
audio and video of one browser only line up through the RTCP sender reports, which pair
an RTP timestamp with the sender's NTP wall clock (RFC 3550 §6.4.1). docs/architecture.md
asks for one session clock per source so both directions stay in sync.

* Before any sender report: a track's time is the *arrival* time of its first frame on
  the peer's clock (milliseconds since the peer's first frame of any track) plus its
  RTP progress since then. Both tracks of a peer share that base, which is as good as
  the two receive buffers are equal (the reorder-only buffer holds neither in order;
  with ``--rtp-receive aiortc``, ~33–67 ms video and ~80 ms audio).
* From the first sender report on (any track): ``session = sender_ntp + offset``; the
  offset is fixed by the first report so the track that brings it does not jump, and
  every track with a report of its own maps through its report from then on. A track
  whose fallback guess was off jumps once, onto the shared NTP base: that is the sync.
* Sender reports jitter by the sender's send delay; each report nudges the track's
  mapping (exponential smoothing) instead of replacing it, and an outlier beyond
  ``RESET_MS`` (a restarted sender) replaces it.
* Output is monotonic per track (FLV/RTMP decode timestamps must not go backwards) and
  wraps at 2^32 ms like every timestamp on the session core.
"""

from __future__ import annotations

import time
from collections.abc import Callable

NTP_FRACTION = float(1 << 32)
SMOOTHING = 0.2
RESET_MS = 500.0


def ntp_to_ms(ntp: int) -> float:
    """64-bit NTP timestamp (RFC 3550 §4) → milliseconds."""
    return (ntp >> 32) * 1000.0 + (ntp & 0xFFFFFFFF) * 1000.0 / NTP_FRACTION


class SessionClock:
    """The shared time base of one publishing peer."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._t0: float | None = None
        # session_ms = sender_ntp_ms + ntp_offset, fixed by the first sender report used
        self.ntp_offset: float | None = None

    def elapsed_ms(self) -> float:
        t = self._now()
        if self._t0 is None:
            self._t0 = t
        return (t - self._t0) * 1000.0

    def track(self, clock_rate: int, origin: Callable[[], int | None]) -> TrackClock:
        return TrackClock(self, clock_rate, origin)


class TrackClock:
    """One RTP stream's mapping. ``pts`` values are aiortc's receiver timestamps: RTP
    timestamps minus ``origin()`` (the stream's first), unwrapped."""

    def __init__(
        self, session: SessionClock, clock_rate: int, origin: Callable[[], int | None]
    ) -> None:
        self.session = session
        self.rate_ms = clock_rate / 1000.0  # RTP ticks per millisecond
        self._origin = origin
        self._first_pts: int | None = None
        self._first_ms = 0.0
        self._pending_sr: tuple[int, float] | None = None  # (rtp32, sender ntp ms)
        # sender NTP ms at pts 0, from the sender reports (smoothed)
        self._ntp_at_zero: float | None = None
        self._last_ms: int | None = None
        self.reports = 0

    @property
    def synced(self) -> bool:
        """Whether this track is mapped through sender reports (not arrival time)."""
        return self._ntp_at_zero is not None

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """An RTCP SR for this stream (RFC 3550 §6.4.1). Applied on the next frame,
        when the RTP origin is known for sure."""
        self._pending_sr = (rtp_timestamp & 0xFFFFFFFF, ntp_to_ms(ntp_timestamp))
        self.reports += 1

    def _fallback_ms(self, pts: int) -> float:
        assert self._first_pts is not None
        return self._first_ms + (pts - self._first_pts) / self.rate_ms

    def _apply_report(self, pts: int) -> None:
        assert self._pending_sr is not None
        origin = self._origin()
        if origin is None:
            return
        rtp32, ntp_ms = self._pending_sr
        self._pending_sr = None
        # The report's RTP timestamp in pts units, unwrapped next to the current pts.
        delta = (rtp32 - origin - pts) % (1 << 32)
        if delta >= 1 << 31:
            delta -= 1 << 32
        sr_pts = pts + delta
        at_zero = ntp_ms - sr_pts / self.rate_ms
        session = self.session
        if session.ntp_offset is None:
            # The first report of the peer fixes the NTP → session offset so that this
            # track continues exactly where its arrival-time mapping was.
            session.ntp_offset = self._fallback_ms(sr_pts) - ntp_ms
        if self._ntp_at_zero is None or abs(at_zero - self._ntp_at_zero) > RESET_MS:
            self._ntp_at_zero = at_zero
        else:
            self._ntp_at_zero += SMOOTHING * (at_zero - self._ntp_at_zero)

    def to_ms(self, pts: int) -> int:
        """Session milliseconds (32-bit wrapping) for a frame with receiver ``pts``."""
        if self._first_pts is None:
            self._first_pts = pts
            self._first_ms = self.session.elapsed_ms()
        if self._pending_sr is not None:
            self._apply_report(pts)
        offset = self.session.ntp_offset
        if self._ntp_at_zero is not None and offset is not None:
            ms = self._ntp_at_zero + pts / self.rate_ms + offset
        else:
            ms = self._fallback_ms(pts)
        out = max(0, round(ms))
        if self._last_ms is not None and out < self._last_ms:
            out = self._last_ms
        self._last_ms = out
        return out & 0xFFFFFFFF


class LagMonitor:
    """How far a track's media falls behind the wall clock, beyond its usual delay.

    ``wall - media`` is constant while frames flow in real time (the path's delay plus
    the jitter buffer); it grows when frames pile up in queues we do not bound (aiortc's
    receive queues while the event loop is overloaded). The smallest value seen is the
    path's own delay, so the excess over it is the backlog.
    """

    def __init__(self, limit_ms: float = 1000.0) -> None:
        self.limit_ms = limit_ms
        self.best: float | None = None
        self.stale = 0

    def backlog_ms(self, media_ms: int, wall_ms: float) -> float:
        diff = (wall_ms - media_ms) % 4294967296.0  # media time wraps at 2^32 ms
        if diff >= 2147483648.0:
            diff -= 4294967296.0
        if self.best is None or diff < self.best:
            self.best = diff
        return diff - self.best

    def too_late(self, media_ms: int, wall_ms: float) -> bool:
        late = self.backlog_ms(media_ms, wall_ms) > self.limit_ms
        if late:
            self.stale += 1
        return late

"""One received RTP stream without aiortc's playout buffer (issue 14, docs/webrtc.md).

:class:`RtpReceive` is the thin asyncio glue around the sans-I/O
:class:`~webrtc.reorder.ReorderBuffer`: aiortc's receiver hands it every packet through
the jitter-buffer seam (``webrtc.seams.tap_receiver``), it feeds the buffer, arms the
loop timer the buffer asks for (a gap's wait), and passes each released frame on, on the
event loop, with no thread hop (aiortc's path adds a decoder thread and two queues).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from aiortc.rtp import RtpPacket

from gateway.codecs import h264, vp8
from webrtc import seams
from webrtc.reorder import ReorderBuffer, RtpFrame, RtpIn, vp8_starts_frame

# --rtp-receive: how a WHIP peer's RTP becomes frames
FORWARD = "forward"  # reorder-only, and frames keep their RTP payloads for forwarding
REORDER = "reorder"  # reorder-only, every WebRTC receiver packetizes again
AIORTC = "aiortc"  # aiortc's own playout buffer (the old path, for comparison)


@dataclass(frozen=True, slots=True)
class ReceiveSettings:
    """``--rtp-receive``, ``--rtp-reorder-ms``, ``--rtp-video-wait-ms``."""

    mode: str = FORWARD
    reorder_ms: float = 20.0
    video_wait_ms: float = 100.0


def _keyframe_test(codec: str) -> Callable[[bytes], bool]:
    if codec == "vp8":
        return vp8.is_keyframe
    if codec == "h264":
        return h264.annexb_has_idr
    return lambda data: True


class RtpReceive:
    """A WHIP track's packets → frames in order, handed to ``on_frame``.

    ``pts`` of a frame is its RTP timestamp relative to the first frame's, unwrapped
    (what aiortc's ``TimestampMapper`` gives its frames); :attr:`origin` is that first
    timestamp, for the sender-report clock (``webrtc/clock.py``)."""

    def __init__(
        self,
        video: bool,
        codec: str,
        settings: ReceiveSettings,
        on_frame: Callable[[RtpFrame, int], None],
        on_pli: Callable[[], None],
    ) -> None:
        self.buffer = ReorderBuffer(
            video=video,
            window=settings.reorder_ms / 1000.0,
            video_wait=settings.video_wait_ms / 1000.0,
            is_keyframe=_keyframe_test(codec),
            starts_frame=vp8_starts_frame if codec == "vp8" else None,
        )
        self.on_frame = on_frame
        self.on_pli = on_pli
        self.origin: int | None = None
        self._last_ts = 0
        self._ext_ts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._pending: list[RtpFrame] = []
        self._scheduled = False
        self.closed = False

    def on_packet(self, packet: RtpPacket, now: float) -> None:
        """From aiortc's receiver (``ReceiveTap``), on the event loop."""
        if self.closed:
            return
        incoming = RtpIn(
            packet.sequence_number,
            packet.timestamp,
            bool(packet.marker),
            packet.payload,
            seams.depayloaded(packet),
            now,
        )
        self._emit(self.buffer.add(incoming, now))

    def _on_timer(self) -> None:
        self._timer = None
        self._deadline = None
        if not self.closed:
            self._emit(self.buffer.handle_timer(perf_counter()))

    def _emit(self, frames: list[RtpFrame]) -> None:
        """Hand the released frames on in the loop's next round, not inside aiortc's
        receive loop: that loop reads its ICE queue without yielding while packets are
        queued (``asyncio.Queue.get`` does not suspend when it has items), so a burst of
        packets would otherwise run the whole fan-out (RTMP writes, transcoder queues)
        before any other task – the WHEP senders of other consultations included."""
        if frames:
            now = perf_counter()
            for frame in frames:
                frame.released = now
            self._pending.extend(frames)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._deliver)
        if self.buffer.take_pli():
            self.on_pli()
        self._arm()

    def _deliver(self) -> None:
        self._scheduled = False
        frames, self._pending = self._pending, []
        for frame in frames:
            if self.closed:
                return
            self.on_frame(frame, self._pts(frame.timestamp))

    def _arm(self) -> None:
        deadline = self.buffer.get_timer()
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - perf_counter())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _pts(self, timestamp: int) -> int:
        """RTP timestamp → ticks since the first frame (32-bit wrap unwrapped)."""
        if self.origin is None:
            self.origin = timestamp
            self._last_ts = timestamp
            self._ext_ts = 0
            return 0
        delta = (timestamp - self._last_ts) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        self._last_ts = timestamp
        self._ext_ts += delta
        return self._ext_ts

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

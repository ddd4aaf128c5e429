"""Receive without playout delay: RTP reordered and reassembled, nothing held for pacing.

aiortc's receive ``JitterBuffer`` is a playout buffer: it releases an audio packet only
when four later ones have arrived (``prefetch=4``, about 80 ms of Opus) and a video
frame only when the next frame's first packet arrives (one frame interval, ~33 ms).
Every receiver of the gateway's media (a browser, Flash Player) has its own playout
buffer, so the gateway holding media for pacing only adds mouth-to-ear delay
(docs/webrtc.md, "Receiving without playout delay").

:class:`ReorderBuffer` only puts packets back in sequence order (RFC 3550 §A.1) and
reassembles frames:

* **audio** – a packet goes on as soon as it is the next in sequence. When one is
  missing, the packets after it wait at most ``window`` seconds (``--rtp-reorder-ms``)
  for it, then the gap is skipped (the receiver's decoder conceals it, Opus PLC).
* **video** – a frame goes on when its last packet (the RTP marker bit, RFC 7741 §4.1
  for VP8, RFC 6184 §5.1 for H.264) has arrived and every packet before it is there.
  A missing packet is asked for again by aiortc's NACK generator (RFC 4585 §6.2.1,
  unchanged); the frames after it wait at most ``video_wait`` seconds for the
  retransmission. Then the broken frame is dropped, a picture loss indication is
  asked for (RFC 4585 §6.3.1) and frames are dropped until the next keyframe.

Sans-I/O in the aioquic manner (time is passed in, :meth:`get_timer` says when to call
:meth:`handle_timer`), so the tests drive it with crafted packets and no clock.
Sequence numbers are 16 bits and wrap; they are extended to integers here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SEQ_MOD = 1 << 16
# A jump this far from the expected sequence number is a new sender (a restarted
# encoder, a new SSRC behind the same receiver), not loss: start over from it.
MAX_JUMP = 3000
# Packets held behind a gap at most; beyond this the gap is skipped at once.
MAX_HELD = {False: 64, True: 1024}


@dataclass(slots=True)
class RtpIn:
    """A received RTP packet as the buffer needs it."""

    seq: int  # 16-bit sequence number
    timestamp: int  # 32-bit RTP timestamp
    marker: bool
    payload: bytes  # the RTP payload as received (kept for forwarding, docs/webrtc.md)
    data: bytes  # the depayloaded bytes (aiortc's depayload)
    arrived: float  # when it arrived (time.perf_counter() in the gateway)


@dataclass(slots=True)
class RtpFrame:
    """A complete frame (video) or packet (audio), in sequence order."""

    timestamp: int  # RTP timestamp
    data: bytes  # the depayloaded packets joined (what aiortc's buffer would give)
    payloads: tuple[bytes, ...]  # the packets' RTP payloads in order
    arrived: float  # the latest arrival of its packets: the frame was complete then
    keyframe: bool = False
    first_seq: int = 0
    released: float = 0.0  # when the buffer let it go (set by the caller's glue)


@dataclass(slots=True)
class ReorderStats:
    released: int = 0
    late: int = 0  # arrived after their place was skipped (or duplicates)
    skipped: int = 0  # sequence numbers given up on
    dropped_frames: int = 0  # video frames dropped (broken, or waiting for a keyframe)
    resets: int = 0
    pli: int = 0  # keyframe requests taken by the caller


@dataclass(slots=True)
class ReorderBuffer:
    """Reorder-only receive buffer for one RTP stream (see the module docstring).

    ``is_keyframe(data)`` tells a video keyframe from the depayloaded frame;
    ``starts_frame(payload)`` (optional) says whether an RTP payload begins a frame
    (VP8: the S bit with partition 0, RFC 7741 §4.2), used to resume after a gap
    without waiting for the broken frame's marker.
    """

    video: bool
    window: float = 0.02
    video_wait: float = 0.1
    is_keyframe: Callable[[bytes], bool] | None = None
    starts_frame: Callable[[bytes], bool] | None = None
    stats: ReorderStats = field(default_factory=ReorderStats)
    _expected: int | None = None  # extended sequence number of the next to release
    _held: dict[int, RtpIn] = field(default_factory=dict)
    _last_ext: int = 0
    _need_keyframe: bool = True
    _resync: bool = False  # video: discarding until a frame boundary
    _pli: bool = False

    # -- input ------------------------------------------------------------------------
    def add(self, packet: RtpIn, now: float) -> list[RtpFrame]:
        """Take one packet; return the frames it completes (in order)."""
        if self._expected is None:
            self._start(packet.seq)
        ext = self._extend(packet.seq)
        assert self._expected is not None
        if abs(ext - self._expected) > MAX_JUMP:
            self.stats.resets += 1
            self._held.clear()
            self._start(packet.seq)
            ext = self._extend(packet.seq)
        if ext < self._expected or ext in self._held:
            self.stats.late += 1
            return []
        if self._resync_needed_at_start(ext, packet):
            self._resync = True
        self._held[ext] = packet
        return self._drain(now)

    def handle_timer(self, now: float) -> list[RtpFrame]:
        """The time :meth:`get_timer` asked for has come: give up on what is overdue."""
        return self._drain(now)

    def get_timer(self) -> float | None:
        """When a gap's wait ends (the ``now`` of :meth:`handle_timer`), if one waits."""
        held_after = self._held_after_gap()
        if not held_after:
            return None
        return min(p.arrived for p in held_after) + self._wait

    def take_pli(self) -> bool:
        """Whether a picture loss indication should go to the sender (once per ask)."""
        pli, self._pli = self._pli, False
        if pli:
            self.stats.pli += 1
        return pli

    # -- internals ----------------------------------------------------------------------
    @property
    def _wait(self) -> float:
        return self.video_wait if self.video else self.window

    def _start(self, seq: int) -> None:
        self._expected = seq
        self._last_ext = seq
        self._resync = False
        if self.video:
            self._need_keyframe = True

    def _extend(self, seq: int) -> int:
        """The extended sequence number nearest to the last one seen (RFC 3550 §A.1)."""
        delta = (seq - self._last_ext) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        ext = self._last_ext + delta
        if delta > 0:
            self._last_ext = ext
        return ext

    def _resync_needed_at_start(self, ext: int, packet: RtpIn) -> bool:
        # The very first video packet may be from the middle of a frame (joined late,
        # or the frame's first packet overtaken): resume at a frame boundary.
        return (
            self.video
            and ext == self._expected
            and self.stats.released == 0
            and not self._held
            and self.starts_frame is not None
            and not self.starts_frame(packet.payload)
        )

    def _held_after_gap(self) -> list[RtpIn]:
        """Held packets beyond the first missing sequence number (evidence of a gap)."""
        if self._expected is None or not self._held:
            return []
        seq = self._expected
        while seq in self._held:
            seq += 1
        return [p for s, p in self._held.items() if s > seq]

    def _drain(self, now: float) -> list[RtpFrame]:
        out: list[RtpFrame] = []
        while self._held:
            if self._release_next(out):
                continue
            after_gap = self._held_after_gap()
            if not after_gap:
                break  # only the start of an incomplete frame: wait for the rest
            overdue = now >= min(p.arrived for p in after_gap) + self._wait
            if not overdue and len(self._held) <= MAX_HELD[self.video]:
                break
            self._skip_gap()
        return out

    def _release_next(self, out: list[RtpFrame]) -> bool:
        """Release the packet (audio) or frame (video) at the expected position if it is
        complete; True when something was taken off (released or discarded)."""
        assert self._expected is not None
        first = self._held.get(self._expected)
        if first is None:
            return False
        if not self.video:
            del self._held[self._expected]
            self._expected += 1
            if not first.payload:
                return True  # padding only
            self.stats.released += 1
            out.append(RtpFrame(first.timestamp, first.data, (first.payload,), first.arrived, True))
            return True
        if self._resync:
            return self._discard_to_boundary()
        packets = [first]
        seq = self._expected + 1
        complete = first.marker
        while not complete:
            nxt = self._held.get(seq)
            if nxt is None:
                return False
            if nxt.timestamp != first.timestamp:
                complete = True  # the marker was lost or never set: a new frame began
                break
            packets.append(nxt)
            complete = nxt.marker
            seq += 1
        for i in range(len(packets)):
            del self._held[self._expected + i]
        start = self._expected
        self._expected += len(packets)
        if not any(p.payload for p in packets):
            return True  # padding only (RFC 3550 §5.1): no frame
        data = b"".join(p.data for p in packets)
        keyframe = bool(self.is_keyframe(data)) if self.is_keyframe is not None else False
        if self._need_keyframe and not keyframe:
            # nothing can be decoded until a keyframe: ask for one (the caller paces PLIs)
            self.stats.dropped_frames += 1
            self._pli = True
            return True
        self._need_keyframe = False
        self.stats.released += 1
        out.append(
            RtpFrame(
                first.timestamp,
                data,
                # padding-only packets keep the sequence whole but carry nothing to forward
                tuple(p.payload for p in packets if p.payload),
                max(p.arrived for p in packets),
                keyframe,
                start & 0xFFFF,
            )
        )
        return True

    def _discard_to_boundary(self) -> bool:
        """Video after a gap: drop packets up to the end of the broken frame (its
        marker, or the next packet with another timestamp or a frame start)."""
        assert self._expected is not None
        packet = self._held.get(self._expected)
        if packet is None:
            return False
        del self._held[self._expected]
        self._expected += 1
        nxt = self._held.get(self._expected)
        if packet.marker or (
            nxt is not None
            and (
                nxt.timestamp != packet.timestamp
                or (self.starts_frame is not None and self.starts_frame(nxt.payload))
            )
        ):
            self._resync = False
        return True

    def _skip_gap(self) -> None:
        """Give up on the missing packet(s) at the expected position."""
        assert self._expected is not None
        nxt = min(s for s in self._held if s > self._expected)
        self.stats.skipped += nxt - self._expected
        self._expected = nxt
        if self.video:
            # the frame with the hole is broken, and every frame until the next
            # keyframe may refer to it: drop them and ask for a keyframe
            self.stats.dropped_frames += 1
            self._need_keyframe = True
            self._pli = True
            first = self._held[nxt]
            self._resync = not (self.starts_frame is not None and self.starts_frame(first.payload))


def vp8_starts_frame(payload: bytes) -> bool:
    """RFC 7741 §4.2: the S bit set and partition index 0 mark a frame's first packet."""
    return bool(payload) and payload[0] & 0x10 != 0 and payload[0] & 0x07 == 0

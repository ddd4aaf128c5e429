"""What an RTMP session's output shares and measures: the write batch and time behind live.

Two pieces of the session's output side, apart from the application (``rtmp/session.py``)
so that each can be read, and tested, on its own:

* :class:`WriteBatch` -- while a publisher's read is processed, the players it feeds are
  written to once when the read is done, not once per message (the socket write is the
  relay's biggest cost). :class:`RtmpShared` holds it with the partial-message budget;
  the composition root makes one per gateway, nothing of it is module state.
* :class:`LagMeter` -- how long the oldest byte a player has not received yet has been
  waiting (issue 11, item 5: a stalled player is cut off by time behind live, not only by
  bytes). Sans-I/O in the aioquic manner: the caller passes ``now`` and the backlog; the
  meter reads neither a clock nor a socket.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from gateway.config import Limits
from rtmp.chunk import BufferBudget

# One mark per this many seconds of writes is enough to tell the lag (a player at 30
# frames per second would otherwise add a mark per frame).
MARK_INTERVAL = 0.01


class Flushable(Protocol):
    def flush(self, now: float | None = None) -> None: ...


class WriteBatch:
    """Players written to while a publisher's read is processed: each gets one write when
    the read is done instead of one per message. One event-loop thread; shared by every
    session of a gateway (:class:`RtmpShared`) because the publisher's read fills other
    sessions' output.

    ``begin``/``end`` bracket a read (they nest: a player's flush may run inside another
    read); ``defer`` marks a session to be flushed at the outermost ``end``."""

    def __init__(self) -> None:
        self.depth = 0
        self.dirty: set[Flushable] = set()

    def begin(self) -> None:
        self.depth += 1

    def end(self, now: float | None = None) -> None:
        self.depth -= 1
        if not self.depth and self.dirty:
            dirty = self.dirty
            self.dirty = set()
            for session in dirty:
                session.flush(now)


class RtmpShared:
    """What all RTMP sessions of one gateway share, whatever their transport (TCP, TLS,
    RTMPT): the partial-message budget (the process-wide bound of issue 11, item 3) and
    the write batch. The composition root makes one and passes it to every RTMP server
    and the RTMPT tunnels; nothing of it is module state."""

    def __init__(self, limits: Limits) -> None:
        self.budget = BufferBudget(limits.rtmp_buffer_budget)
        self.batch = WriteBatch()


class LagMeter:
    """Time behind live of one output: what was written but is not at the peer yet, by
    when it was written.

    ``wrote`` is told every write (its size and ``now``); ``lag`` is given the backlog in
    bytes (the transport's buffer and the kernel's send queue, which only the I/O layer
    can ask) and ``now``, and answers how long the oldest byte still waiting has waited.
    """

    def __init__(self) -> None:
        self.written = 0  # bytes written in all
        # (byte offset of the output after a write, time of that write), oldest first
        self._marks: deque[tuple[int, float]] = deque()

    def wrote(self, size: int, now: float) -> None:
        self.written += size
        marks = self._marks
        if marks and now - marks[-1][1] < MARK_INTERVAL:
            marks[-1] = (self.written, marks[-1][1])  # the older time: lag is not understated
        else:
            marks.append((self.written, now))

    def lag(self, backlog: int, now: float) -> float:
        """Seconds since the oldest byte the peer has not received yet was written."""
        marks = self._marks
        if not marks:
            return 0.0
        delivered = self.written - backlog
        while marks and marks[0][0] <= delivered:
            marks.popleft()
        if not marks:
            return 0.0
        return now - marks[0][1]

"""The pool: one shared transcoder per (source stream, target format), refcounted.

It also arbitrates the bitrate of a shared encoder: each route files its receiver's
estimate and the lowest applies (:class:`BitrateArbiter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.media import PublishedStream
from gateway.transcode.formats import BitrateArbiter, BitrateFollower, TargetFormat
from gateway.transcode.worker import Transcoder


@dataclass
class _PoolEntry:
    transcoder: Transcoder
    key: tuple[int, TargetFormat]
    refs: int = 1


class TranscoderPool:
    """One shared transcoder per (source stream, target format), refcounted."""

    def __init__(self, *, threads: int = 1, admit: Callable[[], None] | None = None) -> None:
        self.threads = threads
        # Admission (gateway/monitor.py): called before a new transcoder is made; raises
        # gateway.routing.CapacityRefused when there is no capacity for one.
        self.admit = admit
        self._entries: dict[tuple[int, TargetFormat], _PoolEntry] = {}
        self._by_transcoder: dict[int, _PoolEntry] = {}
        self._bitrates = BitrateArbiter()

    def acquire(self, source: PublishedStream, target: TargetFormat) -> Transcoder:
        """The transcoder for ``source`` -> ``target``, made on first use."""
        if not isinstance(target, TargetFormat):
            raise TypeError(f"target must be a TargetFormat, not {type(target).__name__}")
        key = (id(source), target)
        entry = self._entries.get(key)
        if entry is not None and not entry.transcoder.closed:
            entry.refs += 1
            return entry.transcoder
        if self.admit is not None:
            self.admit()  # sharing a running transcoder costs nothing; a new one might
        transcoder = Transcoder(source, target, threads=self.threads)
        entry = _PoolEntry(transcoder, key)
        self._entries[key] = entry
        self._by_transcoder[id(transcoder)] = entry
        return transcoder

    def release(self, transcoder: object) -> None:
        """Drop one reference; the last one closes the transcoder (thread joined).

        Anything this pool did not hand out is ignored.
        """
        entry = self._by_transcoder.get(id(transcoder))
        if entry is None or entry.transcoder is not transcoder:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del self._by_transcoder[id(transcoder)]
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            self._bitrates.forget(entry.transcoder)
            entry.transcoder.close()

    def offer_video_bitrate(
        self, transcoder: BitrateFollower, offerer: object, bps: int | None
    ) -> None:
        """A receiver's estimate (REMB) for a shared encoder, filed by its route
        (``offerer``); None withdraws it. The encoder follows the lowest."""
        self._bitrates.offer(transcoder, offerer, bps)

    def close(self) -> None:
        """Close every transcoder (gateway shutdown)."""
        entries = list(self._by_transcoder.values())
        self._entries.clear()
        self._by_transcoder.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                entry.transcoder.close()

    @property
    def transcoders(self) -> list[Transcoder]:
        return [entry.transcoder for entry in self._by_transcoder.values()]

    def __len__(self) -> int:
        return len(self._by_transcoder)

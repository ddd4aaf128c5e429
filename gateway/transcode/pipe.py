"""What the video and audio pipes share: their control, and timed codec calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import av.error

from gateway.media import MediaUnit
from gateway.transcode.formats import PipeControl, record_error

In = TypeVar("In")
Out = TypeVar("Out")


class Pipe:
    """A decoder -> encoder chain for one output codec, run on the worker thread; the
    transcoder reaches it through :meth:`handle` and :meth:`reset` only, and the pipe
    sees the transcoder only through its :class:`PipeControl`."""

    def __init__(self, control: PipeControl, target: str) -> None:
        self.control = control
        self.stats = control.stats
        self.target = target
        self.reset()

    def reset(self) -> None:
        """Drop the codecs (freeing them on this thread) and start over."""
        raise NotImplementedError

    def handle(self, unit: MediaUnit, ts: int) -> list[MediaUnit]:
        """Decode one source unit (``ts``: its unwrapped time) and encode what it gives."""
        raise NotImplementedError

    def decode(
        self, call: Callable[[In], list[Out]], arg: In, name: str, codec: str
    ) -> list[Out] | None:
        """``call(arg)`` (a decoder's ``decode``), timed and counted; None when it
        failed (counted, the error kept for the monitor)."""
        return self._timed(call, arg, name, codec, encoding=False)

    def encode(self, call: Callable[[In], list[Out]], arg: In, name: str) -> list[Out] | None:
        """``call(arg)`` (an encoder's ``encode``), timed and counted; None when it failed."""
        return self._timed(call, arg, name, self.target, encoding=True)

    def _timed(
        self, call: Callable[[In], list[Out]], arg: In, name: str, codec: str, *, encoding: bool
    ) -> list[Out] | None:
        stats = self.stats
        began = time.perf_counter()
        try:
            return call(arg)
        except (av.error.FFmpegError, ValueError) as exc:
            if encoding:
                stats.encode_errors += 1
            else:
                stats.decode_errors += 1
            record_error(stats, f"{name} {'encode' if encoding else 'decode'}", exc)
            return None
        finally:
            spent = time.perf_counter() - began
            if encoding:
                self.control.encoded(codec, spent)
            else:
                self.control.decoded(codec, spent)

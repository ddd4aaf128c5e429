"""The transcoder: a receiver with a bounded queue, a worker thread and an outbox.

A :class:`Transcoder` is a receiver (``gateway.media.Receiver``) attached to a source
:class:`PublishedStream`. ``deliver()`` runs on the event loop and only queues the unit;
a worker thread decodes and encodes (libavcodec releases the GIL while it works, so the
loop keeps serving) and hands the resulting units back to the loop with
``call_soon_threadsafe``, where they are pushed into :attr:`Transcoder.output`, a
:class:`PublishedStream` that RTMP players and WebRTC tracks attach to like any other.

Rules this module keeps (docs/media-pipeline.md, docs/architecture.md "Media routing"):

- Bounded queue (about 2 s of media). When it is full, video is dropped until the next
  source keyframe and audio unit by unit; every dropped unit is counted.
- Output timestamps stay on the session clock: video keeps the decoded frame's time,
  audio is counted in samples from the first input timestamp so it is continuous and
  monotonic; both come from the source's own clock, so A/V stay aligned.
- Output formats, key frames and bitrate: ``video`` and ``audio`` (the pipes), which
  see the transcoder only through its :class:`PipeControl`.
- Decoder errors are counted; video then waits for the next source keyframe. Nothing a
  source sends can end the worker thread.

PyAV 18's ``CodecContext`` has no ``close()``; ``avcodec_free_context`` runs when the
last reference goes. The worker owns the only references and drops them explicitly when
a pipeline resets and when it exits, so codecs are freed on the worker thread at a known
point, not at some later garbage collection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from typing import Any

from gateway.latency import direction
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream
from gateway.transcode.audio import AudioPipe
from gateway.transcode.formats import (
    TS_MASK,
    PipeControl,
    TargetFormat,
    TranscoderStats,
    clamp_bitrate,
)
from gateway.transcode.video import VideoPipe

log = logging.getLogger(__name__)

_CLOSE = object()
_NUMBERS = itertools.count(1)


class Transcoder:
    """Decode a source stream and re-encode it to one :class:`TargetFormat`.

    Construct on the event loop (or pass ``loop``); it attaches itself to ``source`` and
    starts its worker thread at once. ``deliver()`` manages drop-until-keyframe itself and
    returns True (False only once closed), so each dropped unit is counted here, not
    just the first of a run. Codecs are chosen per unit (the source may change codec,
    size or sample rate at any time); same-codec targets are re-encoded too, so bitrate
    and key frames stay under control (pass-through is the routing's decision).
    ``threads`` is the encoder thread count (1: parallelism comes from running many
    transcoders, and one thread has no frame-threading delay).
    """

    def __init__(
        self,
        source: PublishedStream,
        target: TargetFormat,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        threads: int = 1,
        max_queued_video: int = 60,
        max_queued_audio: int = 150,
    ) -> None:
        self.source = source
        self.target = target
        self.threads = max(1, threads)
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.output = PublishedStream(f"{source.name}>{target.video or '-'}+{target.audio or '-'}")
        self.number = next(_NUMBERS)  # a label for the ops monitor, unique per process
        self.stats = TranscoderStats()
        self.max_queued_video = max_queued_video
        self.max_queued_audio = max_queued_audio
        # the pipes' only view of this transcoder (written here on the loop)
        self.control = PipeControl(
            target, self.stats, self.threads, clamp_bitrate(target.video_bitrate), self._direction
        )
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Queue bookkeeping, written only by the loop (put) or only by the worker (taken).
        self._put_video = self._put_audio = 0
        self._taken_video = self._taken_audio = 0
        self._skipping = False  # dropping video until the next source keyframe
        self._generation = 0  # bumped at every source start/stop; stale work is dropped
        self._busy = False
        self._closed = False
        self._outbox: list[tuple[int, list[MediaUnit]]] = []
        self._outbox_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"transcode {self.output.name}", daemon=True
        )
        self._thread.start()
        source.add_receiver(self)

    # -- description (ops monitor, /metrics; no personal data) ---------------------------
    def labels(self) -> dict[str, str]:
        """``direction`` (``flash_to_webrtc``…), ``kind`` and ``codec`` (``spark>vp8``).

        The sink side follows from the target codec (VP8/Opus go to browsers, Spark,
        Nellymoser, MP3 and AAC to Flash); H.264 is made for a browser from Flash media
        and for Flash from a browser's."""
        kind = VIDEO if self.target.video else AUDIO
        codec_out = self.target.video or self.target.audio or "-"
        source = self.source
        codec_in = (source.video_codec if kind == VIDEO else source.audio_codec) or "?"
        origin = source.kind or "?"
        if codec_out in ("vp8", "opus"):
            sink = "webrtc"
        elif codec_out == "h264":
            sink = "webrtc" if origin == "rtmp" else "flash"
        else:
            sink = "flash"
        return {
            "direction": direction(origin, sink),
            "kind": kind,
            "codec": f"{codec_in}>{codec_out}",
        }

    # -- control (event loop) -----------------------------------------------------------
    def request_keyframe(self) -> None:
        """Make the next encoded video frame a key frame (a PLI/FIR from a receiver)."""
        self.control.key_requests += 1
        self.stats.keyframe_requests += 1

    def set_video_bitrate(self, bps: int) -> None:
        """Follow the lowest REMB among the receivers (clamped to sane bounds)."""
        self.control.video_bitrate = clamp_bitrate(bps)

    @property
    def video_bitrate(self) -> int:
        return self.control.video_bitrate

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def pending(self) -> int:
        """Units queued or being worked on (0 when the worker is idle)."""
        return self.stats.queue_depth + (1 if self._busy else 0)

    def close(self, timeout: float = 5.0) -> None:
        """Detach from the source, end the output, join the worker (codecs freed there).

        The worker checks for closing between units, so the join waits for at most the
        unit in progress.
        """
        if self._closed:
            return
        self._closed = True
        self.source.remove_receiver(self)
        self.output.stop()
        self._queue.put(_CLOSE)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: worker did not stop within %.1f s", self.output.name, timeout)

    # -- Receiver protocol (event loop) -------------------------------------------------
    def deliver(self, unit: MediaUnit) -> bool:
        if self._closed:
            return False
        kind = unit.kind
        stats = self.stats
        if kind == VIDEO:
            if self.target.video is None:
                return True
            depth = self._put_video - self._taken_video
            if unit.config:
                # Configs are small and the decoder needs them: they may use a second
                # queue's worth of room (a bound still, against a publisher that floods).
                if depth >= 2 * self.max_queued_video:
                    stats.dropped += 1
                    return True
            else:
                if self._skipping:
                    if not unit.keyframe:
                        stats.dropped += 1
                        return True
                    self._skipping = False
                if depth >= self.max_queued_video:
                    # Behind: drop until the next keyframe (the decoder needs one after
                    # a gap anyway).
                    stats.dropped += 1
                    stats.drop_episodes += 1
                    self._skipping = True
                    log.info("%s: falling behind, dropping to the next keyframe", self.output.name)
                    return True
            self._put_video += 1
        elif kind == AUDIO:
            if self.target.audio is None:
                return True
            limit = self.max_queued_audio * (2 if unit.config else 1)
            if self._put_audio - self._taken_audio >= limit:
                stats.dropped += 1
                return True
            self._put_audio += 1
        else:
            return True  # metadata describes the source's codecs, not ours
        stats.queued += 1
        self._queue.put((self._generation, unit))
        return True

    @property
    def direction(self) -> str:
        """``flash_to_webrtc`` and the like (a label; see :meth:`labels`)."""
        return self._direction()

    def _direction(self) -> str:
        return self.labels()["direction"]

    def stream_started(self, stream: PublishedStream) -> None:
        self._generation += 1
        self._skipping = False
        if not self._closed:
            self.output.start("transcoder")
            self._queue.put((self._generation, "start"))

    def stream_stopped(self, stream: PublishedStream) -> None:
        self._generation += 1
        self._skipping = False
        if not self._closed:
            self.output.stop()
            self._queue.put((self._generation, "stop"))

    # -- worker -> loop -----------------------------------------------------------------
    def _emit(self, generation: int, units: list[MediaUnit]) -> None:
        """Hand units to the loop (worker thread).

        One loop wake-up serves everything the worker produced until the loop gets to
        it: each ``call_soon_threadsafe`` writes to the loop's self-pipe and makes the
        two threads trade the GIL, which costs more than the push itself.
        """
        with self._outbox_lock:
            self._outbox.append((generation, units))
            if len(self._outbox) > 1:
                return  # a flush is already scheduled and will take these too
        try:
            self.loop.call_soon_threadsafe(self._flush_outbox)
        except RuntimeError:  # the loop is closed: the process is shutting down
            self._closed = True

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        push = self.output.push
        for generation, units in batch:
            if generation != self._generation or self._closed:
                continue  # made for a source run that has ended since
            for unit in units:
                push(unit)

    # -- worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        target = self.target
        video = VideoPipe(self.control, target.video) if target.video else None
        audio = AudioPipe(self.control, target.audio) if target.audio else None
        clock = Unwrapper()
        generation = 0
        stats = self.stats
        get = self._queue.get
        try:
            while True:
                item = get()
                if item is _CLOSE or self._closed:
                    break
                gen, unit = item
                if isinstance(unit, str):  # "start" / "stop": a new source run
                    generation = gen
                    clock = Unwrapper()
                    for pipe in (video, audio):
                        if pipe is not None:
                            pipe.reset()
                    continue
                # Busy before the unit leaves the queue count, idle only after its
                # output is handed to the loop: pending() never reads 0 in between.
                self._busy = True
                if unit.kind == VIDEO:
                    self._taken_video += 1
                else:
                    self._taken_audio += 1
                stats.dequeued += 1
                try:
                    if gen == generation == self._generation:  # else from an ended run
                        self._work(unit, gen, clock, video, audio)
                finally:
                    self._busy = False
        finally:
            for pipe in (video, audio):
                if pipe is not None:
                    pipe.reset()

    def _work(
        self,
        unit: MediaUnit,
        generation: int,
        clock: Unwrapper,
        video: VideoPipe | None,
        audio: AudioPipe | None,
    ) -> None:
        stats = self.stats
        pipe = video if unit.kind == VIDEO else audio
        began = time.perf_counter()
        try:
            ts = clock.unwrap(unit.timestamp)
            if unit.kind == VIDEO:
                stats.video_in += 1
            else:
                stats.audio_in += 1
            out = pipe.handle(unit, ts) if pipe is not None else []
        except Exception as exc:  # never let one unit end the worker
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: transcoding failed", self.output.name)
            if pipe is not None:
                pipe.reset()  # start over cleanly at the next keyframe
            out = []
        finally:
            stats.busy_seconds += time.perf_counter() - began
        if out:
            # The output is as late as the source frame that completed it: with no
            # encoder look-ahead (lag-in-frames 0, zerolatency, no B-frames) a frame in
            # is a packet out, and an audio packet is due when its last input arrives.
            for produced in out:
                produced.arrived = unit.arrived
                produced.origin = unit.origin
                produced.transcoded = True
            self._emit(generation, out)


class Unwrapper:
    """Extend 32-bit millisecond timestamps to a monotonic 64-bit clock across wraps."""

    __slots__ = ("last", "offset")

    def __init__(self) -> None:
        self.last: int | None = None
        self.offset = 0

    def unwrap(self, ts: int) -> int:
        ts &= TS_MASK
        last = self.last
        if last is not None:
            if ts < last - 0x80000000:
                self.offset += 0x100000000
            elif ts > last + 0x80000000 and self.offset:
                # A straggler from before the wrap (audio and video interleave).
                return ts + self.offset - 0x100000000
        self.last = ts
        return ts + self.offset

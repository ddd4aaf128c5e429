"""The latency the gateway itself adds, per direction and path.

Measured from the moment a complete source frame reached the gateway to the moment its
packets leave for the receiver:

* start: an RTMP message complete (the read that completed it, before parsing), or the
  arrival of a WebRTC frame's last RTP packet (``webrtc/receive.py``), so the receive
  buffering (reordering, and with ``--rtp-receive aiortc`` aiortc's playout buffer) is
  included, as issue 14 asks;
* end: an RTMP player's FLV tag handed to the socket write, or a WHEP sender's
  ``av.Packet`` taken by aiortc's ``RTCRtpSender`` to packetise (or forward) and send.

Front-ends stamp :attr:`gateway.media.MediaUnit.arrived` (``time.perf_counter()``) and
``origin``; a transcoder copies both onto its output and marks it ``transcoded``. The
receive buffer's own share (a frame's last RTP packet in to the frame out) is kept
beside it (``vb_webrtc_jitter_buffer_seconds``). Paths: ``passthrough``, ``forwarded``
(sent in the RTP payloads it arrived in, docs/webrtc.md), ``transcoded``.

The meter is process-wide (like prometheus_client's default registry); its histograms
are exposed by ``/metrics`` and its exact percentiles (a bounded reservoir of recent
samples per key) by the ops snapshot the benchmarks read.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Where a unit came from (MediaUnit.origin) and which kind of sink sends it out.
ORIGIN_SINK_NAMES = {"rtmp": "flash", "webrtc": "webrtc"}
BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
CODEC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1)
RESERVOIR = 4096  # recent samples per key kept for exact percentiles


def direction(origin: str, sink: str) -> str:
    """``flash_to_webrtc`` and the like (label values, no personal data)."""
    return f"{ORIGIN_SINK_NAMES.get(origin, origin or 'unknown')}_to_{sink}"


def _when(sample: tuple[float, float]) -> float:
    return sample[0]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list (q in 0..100)."""
    return ranked(sorted(values), q)


def ranked(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list already sorted."""
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


class LatencyMeter:
    """Histograms (for /metrics) and recent samples (for exact p50/p95)."""

    def __init__(self) -> None:
        self.added = Histogram(
            "vb_added_latency_seconds",
            "Latency the gateway adds, from a complete source frame to its packets sent.",
            ["direction", "path", "kind"],
            buckets=BUCKETS,
            registry=None,
        )
        self.jitter = Histogram(
            "vb_webrtc_jitter_buffer_seconds",
            "Delay in the WebRTC receive buffer (last RTP packet of a frame to the frame "
            "leaving the buffer), part of the added latency.",
            ["kind"],
            buckets=BUCKETS,
            registry=None,
        )
        self.codec = Histogram(
            "vb_transcoder_codec_seconds",
            "Time to decode or encode one frame in a transcoder (PyAV), by stage.",
            ["stage", "direction", "codec"],
            buckets=CODEC_BUCKETS,
            registry=None,
        )
        self._codec_children: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Any] = {}
        # (when, seconds) per key, when = time.perf_counter() of the observation
        self._samples: dict[tuple[str, ...], deque[tuple[float, float]]] = {}
        # frames and bytes sent without transcoding, per (direction, kind): the ops
        # charts count a browser-to-browser call too, which has no transcoder
        self._passed: dict[tuple[str, str], list[int]] = {}
        # (origin, sink, transcoded, forwarded, kind) -> what observe() updates
        self._slots: dict[
            tuple[str, str, bool, bool, str],
            tuple[list[int] | None, Any, deque[tuple[float, float]]],
        ] = {}

    def _child(self, key: tuple[str, ...]) -> Any:
        child = self._children.get(key)
        if child is None:
            with self._lock:
                if key[0] == "added":
                    child = self.added.labels(direction=key[1], path=key[2], kind=key[3])
                else:
                    child = self.jitter.labels(kind=key[1])
                self._children[key] = child
                self._samples[key] = deque(maxlen=RESERVOIR)
        return child

    def observe(
        self,
        origin: str,
        sink: str,
        transcoded: bool,
        seconds: float,
        kind: str = "video",
        size: int = 0,
        forwarded: bool = False,
    ) -> None:
        """One unit sent: ``sink`` is ``flash`` or ``webrtc``, ``kind`` video or audio,
        ``size`` its payload in bytes (counted for passthrough); ``forwarded``: sent in
        the RTP payloads it arrived in (path ``forwarded``, a kind of passthrough)."""
        # Called for every unit sent (issue 14: on the hot path of every relay): one
        # dict lookup finds the counters, the histogram child and the reservoir.
        slot = self._slots.get((origin, sink, transcoded, forwarded, kind))
        if slot is None:
            slot = self._slot(origin, sink, transcoded, forwarded, kind)
        passed, child, samples = slot
        if passed is not None:
            passed[0] += 1
            passed[1] += size
        if seconds < 0:
            return
        child.observe(seconds)
        samples.append((perf_counter(), seconds))

    def _slot(
        self, origin: str, sink: str, transcoded: bool, forwarded: bool, kind: str
    ) -> tuple[list[int] | None, Any, deque[tuple[float, float]]]:
        way = direction(origin, sink)
        passed = None if transcoded else self._passed.setdefault((way, kind), [0, 0])
        path = "transcoded" if transcoded else "forwarded" if forwarded else "passthrough"
        key = ("added", way, path, kind)
        child = self._child(key)
        slot = (passed, child, self._samples[key])
        self._slots[(origin, sink, transcoded, forwarded, kind)] = slot
        return slot

    def observe_codec(self, stage: str, direction: str, codec: str, seconds: float) -> None:
        """One frame decoded or encoded (``stage``) in a transcoder's worker thread."""
        key = (stage, direction, codec)
        child = self._codec_children.get(key)
        if child is None:
            with self._lock:
                child = self.codec.labels(stage=stage, direction=direction, codec=codec)
                self._codec_children[key] = child
        child.observe(seconds)

    def observe_jitter(self, kind: str, seconds: float) -> None:
        if seconds < 0:
            return
        key = ("jitter", kind)
        self._child(key).observe(seconds)
        self._samples[key].append((perf_counter(), seconds))

    def passthrough_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Frames and bytes passed through so far, per (direction, kind)."""
        return {key: (c[0], c[1]) for key, c in list(self._passed.items())}

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """``{"clock": now, "added": {"flash_to_webrtc/transcoded/video": {count, p50_ms,
        p95_ms, …}}, "jitter_buffer": {"video": {…}}}`` over the recent samples, only
        those observed after ``since`` (a ``clock`` value of an earlier snapshot) if
        given: a benchmark takes one snapshot when its window opens, one when it closes.
        """
        out: dict[str, Any] = {"clock": perf_counter(), "added": {}, "jitter_buffer": {}}
        with self._lock:
            items = [(key, list(samples)) for key, samples in self._samples.items()]
        for key, samples in items:
            # samples are in time order: the window starts after the last one at `since`
            # (the ops monitor asks every second: one sort per key, no Python walk)
            start = 0 if since is None else bisect_right(samples, since, key=_when)
            if start >= len(samples):
                continue
            ordered = sorted([v for _, v in samples[start:]])
            summary = {
                "count": len(ordered),
                "p50_ms": round(ranked(ordered, 50) * 1000, 3),
                "p95_ms": round(ranked(ordered, 95) * 1000, 3),
                "p99_ms": round(ranked(ordered, 99) * 1000, 3),
                "max_ms": round(ordered[-1] * 1000, 3),
            }
            if key[0] == "added":
                out["added"][f"{key[1]}/{key[2]}/{key[3]}"] = summary
            else:
                out["jitter_buffer"][key[1]] = summary
        return out

    def collector(self) -> Collector:
        """A collector for a registry of the caller's (``/metrics``)."""
        return _MeterCollector(self)


class _MeterCollector(Collector):
    def __init__(self, meter: LatencyMeter) -> None:
        self.meter = meter

    def collect(self) -> Iterator[Metric]:
        yield from self.meter.added.collect()
        yield from self.meter.jitter.collect()
        yield from self.meter.codec.collect()


METER = LatencyMeter()

"""Watching the transcoders live, and admission by measured capacity (issue 6).

:class:`Monitor` samples once a second (driven by the composition root, or by a test
with its own clock): per transcoder the frame rate and bitrate it produced, its
real-time factor and share of a core over the last interval, queue depth, drops and
keyframe requests; for the process its CPU share and memory; the latency the gateway
added (``gateway/latency.py``). Each sample is kept for a few minutes of charts and
carries the alarms an operator on call must see: a transcoder slower than real time,
or one dropping frames.

Admission: transcoding is where the CPU goes, so capacity is measured as the process's
CPU over the last seconds against a budget (a share of the machine's cores,
``--limit cpu_budget=0.85``). A new consultation is refused while the measured load
plus what one more consultation costs (measured per consultation that transcodes,
until then ``--limit consultation_cost``) would exceed the budget; a new transcoder
(a new receiver needing a format nobody receives yet) is refused only when the
budget is already exceeded, so running consultations keep their quality. Nothing
here knows consultations by name: samples carry short ids only.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from gateway.latency import METER
from gateway.media import PublishedStream
from gateway.routing import CapacityRefused
from gateway.transcode.formats import TargetFormat, TranscoderStats

log = logging.getLogger(__name__)

HISTORY = 300  # samples kept (5 minutes at one a second)
LOAD_WINDOW = 5.0  # seconds over which CPU load is judged for admission
LATENCY_WINDOW = 10.0  # seconds of latency samples behind each sample's p95
SHORT_ID = 6


class TranscoderView(Protocol):
    """What the monitor reads of gateway.transcode.Transcoder."""

    number: int
    stats: TranscoderStats
    source: PublishedStream
    target: TargetFormat

    def labels(self) -> dict[str, str]: ...

    @property
    def video_bitrate(self) -> int: ...


def short_id(consultation_id: str) -> str:
    return consultation_id[:SHORT_ID]


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def process_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class _Previous:
    at: float
    frames_out: int
    bytes_out: int
    busy: float
    media: float
    dropped: int


class Monitor:
    """Once-a-second samples of the transcoders and the process; admission decisions."""

    def __init__(
        self,
        transcoders: Callable[[], Iterable[TranscoderView]],
        *,
        cores: int | None = None,
        cpu_budget: float = 0.85,
        consultation_cost: float = 0.35,
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
        rss_bytes: Callable[[], int] = process_rss_bytes,
        transcoding_consultations: Callable[[], int] = lambda: 0,
        passthrough: Callable[[], dict[tuple[str, str], tuple[int, int]]] = (
            METER.passthrough_totals
        ),
    ) -> None:
        self._transcoders = transcoders
        self.cores = cores or usable_cores()
        self.cpu_budget = cpu_budget
        self.default_cost = consultation_cost
        self._cpu_seconds = cpu_seconds
        self._rss = rss_bytes
        self._transcoding_consultations = transcoding_consultations
        self._passthrough = passthrough
        self._passed_before: tuple[float, dict[tuple[str, str], tuple[int, int]]] | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._previous: dict[int, _Previous] = {}
        self._cpu_marks: deque[tuple[float, float]] = deque(maxlen=64)  # (at, cpu s)
        self._last: dict[str, Any] | None = None
        self.refused_consultations = 0
        self.refused_transcoders = 0

    # -- sampling -----------------------------------------------------------------------
    def sample(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        cpu = self._cpu_seconds()
        self._cpu_marks.append((now, cpu))
        rows = []
        seen = set()
        for transcoder in list(self._transcoders()):
            seen.add(transcoder.number)
            rows.append(self._transcoder_row(transcoder, now))
        for gone in set(self._previous) - seen:
            del self._previous[gone]
        load = self.load()
        sample = {
            "at": round(time.time(), 3),
            "process": {
                "cpu_cores": round(load, 3),  # cores busy, averaged over LOAD_WINDOW
                "cpu_percent": round(100 * load / self.cores, 1),
                "rss_bytes": self._rss(),
                "cores": self.cores,
            },
            "transcoders": rows,
            "passthrough": self._passthrough_rows(now),
            "latency": _latency_p95(METER.snapshot(since=perf_counter() - LATENCY_WINDOW)),
            "admission": self.admission(),
            "alarms": [a for row in rows for a in row["alarms"]],
        }
        self._last = sample
        self.history.append(sample)
        return sample

    def _passthrough_rows(self, now: float) -> list[dict[str, Any]]:
        """Frames and bitrate sent without a transcoder over the last interval, per
        direction and kind (``flash_to_flash``, ``webrtc_to_webrtc``, and H.264 passed
        between the two), in the transcoder rows' units, so the charts add them up."""
        totals = self._passthrough()
        before, self._passed_before = self._passed_before, (now, totals)
        if before is None or now <= before[0]:
            return []
        span = now - before[0]
        rows = []
        for (direction, kind), (frames, octets) in sorted(totals.items()):
            frames0, octets0 = before[1].get((direction, kind), (0, 0))
            if frames == frames0:
                continue
            rows.append(
                {
                    "direction": direction,
                    "kind": kind,
                    "path": "passthrough",
                    "fps": round((frames - frames0) / span, 2),
                    "bitrate": round((octets - octets0) * 8 / span),
                }
            )
        return rows

    def _transcoder_row(self, transcoder: TranscoderView, now: float) -> dict[str, Any]:
        stats = transcoder.stats
        frames_out = stats.video_out + stats.audio_out
        bytes_out = stats.bytes_out
        busy = stats.busy_seconds
        media = stats.media_seconds
        dropped = stats.dropped
        prev = self._previous.get(transcoder.number)
        self._previous[transcoder.number] = _Previous(
            now, frames_out, bytes_out, busy, media, dropped
        )
        row: dict[str, Any] = {
            "number": transcoder.number,
            "consultation": short_id(str(transcoder.source.name).split("/", 1)[0]),
            **transcoder.labels(),
            "queue_depth": stats.queue_depth,
            "dropped_total": dropped,
            "keyframe_requests": stats.keyframe_requests,
            "decode_errors": stats.decode_errors,
            "fps": 0.0,
            "bitrate": 0,
            "realtime_factor": None,
            "cpu_share": 0.0,
            "dropped": 0,
            "alarms": [],
        }
        if prev is None or now <= prev.at:
            return row
        span = now - prev.at
        row["fps"] = round((frames_out - prev.frames_out) / span, 2)
        row["bitrate"] = round((bytes_out - prev.bytes_out) * 8 / span)
        worked = busy - prev.busy
        processed = media - prev.media
        row["cpu_share"] = round(worked / span, 3)
        row["dropped"] = dropped - prev.dropped
        if worked > 0 and processed > 0:
            row["realtime_factor"] = round(processed / worked, 2)
        label = f"#{transcoder.number} {row['codec']} ({row['consultation']})"
        # Slower than real time: the worker spent more wall time than the media lasted,
        # or its queue holds more than a second of frames.
        behind = (worked > 0 and processed > 0 and worked > processed * 1.0) or (
            row["queue_depth"] > 45 and row["fps"] > 0
        )
        if behind:
            row["alarms"].append({"kind": "slower_than_realtime", "transcoder": label})
        if row["dropped"] > 0:
            row["alarms"].append(
                {"kind": "dropping", "transcoder": label, "frames": row["dropped"]}
            )
        return row

    # -- admission ----------------------------------------------------------------------
    def load(self) -> float:
        """Cores busy in this process over about the last LOAD_WINDOW seconds."""
        marks = self._cpu_marks
        if len(marks) < 2:
            return 0.0
        newest = marks[-1]
        oldest = marks[0]
        for mark in marks:
            if newest[0] - mark[0] <= LOAD_WINDOW:
                oldest = mark
                break
        span = newest[0] - oldest[0]
        if span <= 0:
            return 0.0
        return max(0.0, (newest[1] - oldest[1]) / span)

    def consultation_cost(self) -> float:
        """Cores one more consultation is expected to take: measured (the load shared
        by the consultations that transcode) once there are some, else the default."""
        count = self._transcoding_consultations()
        if count <= 0:
            return self.default_cost
        return max(self.default_cost * 0.25, self.load() / count)

    def budget_cores(self) -> float:
        return self.cpu_budget * self.cores

    def admission(self) -> dict[str, Any]:
        load = self.load()
        cost = self.consultation_cost()
        budget = self.budget_cores()
        return {
            "load_cores": round(load, 3),
            "budget_cores": round(budget, 3),
            "consultation_cost_cores": round(cost, 3),
            "accepting_consultations": load + cost <= budget,
            "accepting_transcoders": load <= budget,
            "refused_consultations": self.refused_consultations,
            "refused_transcoders": self.refused_transcoders,
        }

    def check_new_consultation(self) -> None:
        """Raise :class:`CapacityRefused` when one more consultation would exceed the budget."""
        load, cost, budget = self.load(), self.consultation_cost(), self.budget_cores()
        if load + cost > budget:
            self.refused_consultations += 1
            log.warning(
                "admission: refusing a new consultation (load %.2f + %.2f > budget %.2f cores)",
                load,
                cost,
                budget,
            )
            raise CapacityRefused("transcoding capacity exhausted")

    def check_new_transcoder(self) -> None:
        """Raise :class:`CapacityRefused` when the budget is already exceeded."""
        load, budget = self.load(), self.budget_cores()
        if load > budget:
            self.refused_transcoders += 1
            log.warning(
                "admission: refusing a new transcoder (load %.2f > budget %.2f cores)",
                load,
                budget,
            )
            raise CapacityRefused("transcoding capacity exhausted")

    @property
    def last(self) -> dict[str, Any] | None:
        return self._last


def _latency_p95(snapshot: dict[str, Any]) -> dict[str, float]:
    """``{"flash_to_webrtc/transcoded/video": p95 ms, …}`` over the recent samples."""
    return {key: value["p95_ms"] for key, value in snapshot["added"].items()}

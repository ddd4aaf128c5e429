"""Anonymous statistics: one row per consultation, written when it ends.

The terms of use allow logging "duration, time and features used" anonymously and
never sharing them. A row therefore holds only: the start rounded down to the hour
(UTC), the duration, how long both sides were there together, how each side was
connected (``flash``, ``webrtc``, ``chat-only``), which features were used (video,
audio, chat, documents, forms, transcoding) and why it ended. No consultation id, token,
PIN, address, name, browser string or chat text is ever passed to this module: a row is
built from counters (:func:`row_for`), not from the consultation's identity.

Storage is the data-access layer's statistics backend (gateway/store/): SQLite at
``<data-dir>/stats.sqlite`` by default, PostgreSQL in a cluster. All database work runs
on one worker thread, so the event loop never waits for a commit and writes stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import statistics as pystats
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gateway.consultation import Consultation, Role
from gateway.store.base import STATS_COLUMNS, StatsStore
from gateway.store.sqlite import STATS_SCHEMA_VERSION, SqliteStats

log = logging.getLogger(__name__)

SCHEMA_VERSION = STATS_SCHEMA_VERSION  # the SQLite file's PRAGMA user_version

FEATURES = ("video", "audio", "chat", "documents", "forms", "transcoding")
# "phone": a telephone leg carried the customer's audio (docs/phone.md) -- that it was
# used, nothing of the call
CLIENT_KINDS = ("flash", "webrtc", "chat-only", "phone")

# connection kind (gateway.consultation.Connection.kind) -> client kind in statistics
_CLIENT_OF_KIND = {
    "rtmp": "flash",
    "rtmpt": "flash",
    "rtmps": "flash",
    "rtmpts": "flash",
    "webrtc": "webrtc",
    "chat-only": "chat-only",
    "phone": "phone",
}

FEEDBACK_RATINGS = range(1, 6)


@dataclass(frozen=True, slots=True)
class StatsRow:
    started_hour: str
    duration_s: int
    together_s: int
    customer_client: str
    advisor_client: str
    video: bool
    audio: bool
    chat: bool
    documents: bool
    forms: bool
    transcoding: bool
    end_reason: str
    feedback: int | None = None  # 1-5 from the customer's end screen, or none

    @property
    def clients(self) -> set[str]:
        return {
            kind
            for side in (self.customer_client, self.advisor_client)
            for kind in side.split("+")
            if kind in CLIENT_KINDS
        }

    def describe(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = STATS_COLUMNS
assert tuple(f.name for f in fields(StatsRow)) == COLUMNS  # one table, one row type


def hour_of(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(ts))


def client_kind(kinds_seen: set[str]) -> str:
    """How a participant took part: its media front-ends, or ``chat-only`` when only
    the events socket was there, or ``none`` when it never came."""
    clients = {_CLIENT_OF_KIND[k] for k in kinds_seen if k in _CLIENT_OF_KIND}
    if not clients and kinds_seen:
        clients = {"chat-only"}
    if len(clients) > 1:
        clients.discard("chat-only")
    return "+".join(sorted(clients)) or "none"


def row_for(
    consultation: Consultation, now: float | None = None, feedback: int | None = None
) -> StatsRow:
    """The anonymous row of an ended (or ending) consultation: counters only."""
    ended = consultation.ended_at or (time.time() if now is None else now)
    streams = consultation.streams.values()
    features = consultation.features
    return StatsRow(
        started_hour=hour_of(consultation.created_at),
        duration_s=max(0, round(ended - consultation.created_at)),
        together_s=max(0, round(consultation.together_seconds)),
        customer_client=client_kind(consultation.participants[Role.CUSTOMER].kinds_seen),
        advisor_client=client_kind(consultation.participants[Role.ADVISOR].kinds_seen),
        video=any(s.stats.video_units for s in streams),
        audio=any(s.stats.audio_units for s in streams),
        chat="chat" in features,
        documents="documents" in features,
        forms="forms" in features,
        transcoding=any(s.stats.transcodes for s in streams) or "transcoding" in features,
        end_reason=consultation.end_reason or "ended",
        feedback=feedback,
    )


# -- aggregates --------------------------------------------------------------------------

DURATION_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 5 min", 5 * 60),
    ("5-15 min", 15 * 60),
    ("15-30 min", 30 * 60),
    ("30-60 min", 60 * 60),
    ("over 60 min", float("inf")),
)


def aggregate(rows: list[StatsRow]) -> dict[str, Any]:
    durations = [r.duration_s for r in rows]
    together = [r.together_s for r in rows]
    buckets = {label: 0 for label, _ in DURATION_BUCKETS}
    for d in durations:
        for label, upper in DURATION_BUCKETS:
            if d < upper:
                buckets[label] += 1
                break
    per_day = Counter(r.started_hour[:10] for r in rows)
    clients = Counter(kind for r in rows for kind in r.clients)
    customer_clients = Counter(r.customer_client for r in rows)
    ratings = [r.feedback for r in rows if r.feedback is not None]
    return {
        "count": len(rows),
        "per_day": dict(sorted(per_day.items())),
        "duration_s": {
            "total": sum(durations),
            "mean": round(pystats.fmean(durations), 1) if durations else 0,
            "median": pystats.median(durations) if durations else 0,
            "max": max(durations, default=0),
            "buckets": buckets,
        },
        "together_s": {
            "total": sum(together),
            "mean": round(pystats.fmean(together), 1) if together else 0,
        },
        "clients": {kind: clients.get(kind, 0) for kind in CLIENT_KINDS},
        "customer_clients": dict(sorted(customer_clients.items())),
        "features": {f: sum(1 for r in rows if getattr(r, f)) for f in FEATURES},
        "end_reasons": dict(sorted(Counter(r.end_reason for r in rows).items())),
        "feedback": {
            "count": len(ratings),
            "mean": round(pystats.fmean(ratings), 2) if ratings else None,
            "ratings": {str(n): ratings.count(n) for n in FEEDBACK_RATINGS},
        },
    }


def to_csv(rows: list[StatsRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [int(v) if isinstance(v, bool) else v for v in (getattr(row, c) for c in COLUMNS)]
        )
    return out.getvalue()


# -- the database --------------------------------------------------------------------------


class Statistics:
    """The statistics database; every call runs on its one worker thread, so the event
    loop never waits for a commit and writes stay in order. The rows go to the store's
    statistics backend (gateway/store/): ``stats.sqlite`` at ``path`` by default, the
    cluster's PostgreSQL when ``backend`` is given (every node's rows in one table)."""

    def __init__(self, path: Path, backend: StatsStore | None = None) -> None:
        self.path = path
        self.backend: StatsStore = backend if backend is not None else SqliteStats(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats")
        self._unwritten: list[StatsRow] = []  # rows a full disk refused, oldest first
        # Open (create, reserve room) now, not at the first row: the disk may be full by
        # the time a consultation ends.
        opener = getattr(self.backend, "open", None)
        if opener is not None:
            self._executor.submit(opener).add_done_callback(_log_open_failure)

    # -- worker-thread side --------------------------------------------------------------
    def _insert(self, row: StatsRow) -> int | None:
        self._unwritten.append(row)
        try:
            # the rows a full disk (or a lost database) refused before go first, in order
            rowid = self.backend.insert_rows([r.describe() for r in self._unwritten])
        except Exception:
            # kept for the next write (bounded); a few rows outlive a full disk
            del self._unwritten[:-_MAX_UNWRITTEN]
            raise
        self._unwritten.clear()
        return rowid

    def _rate(self, row: Future[int | None], rating: int) -> bool:
        # Runs after the row's insert (one worker thread, first in first out).
        rowid = row.result() if row.done() and row.exception() is None else None
        if rowid is None:
            return False
        return self.backend.rate(rowid, rating)

    def _select(self, since: str | None, until: str | None) -> list[StatsRow]:
        return [StatsRow(**cells) for cells in self.backend.select(since, until)]

    def _close(self) -> None:
        if self._unwritten:
            with contextlib.suppress(Exception):
                self.backend.insert_rows([r.describe() for r in self._unwritten])
        self.backend.close()

    # -- any thread ---------------------------------------------------------------------------
    def record(self, row: StatsRow) -> Future[int | None]:
        """Queue the row; returns at once (the write happens on the worker thread). The
        future's result identifies the row for :meth:`rate` and nothing else."""
        future = self._executor.submit(self._insert, row)
        future.add_done_callback(_log_failure)
        return future

    def rate(self, row: Future[int | None], rating: int) -> Future[bool]:
        """Add the customer's rating to a written row (once: a row that has one keeps it)."""
        if rating not in FEEDBACK_RATINGS:
            raise ValueError(f"a rating is 1 to 5, not {rating!r}")
        return self._executor.submit(self._rate, row, rating)

    async def rows(self, since: str | None = None, until: str | None = None) -> list[StatsRow]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._select, since, until)

    def close(self) -> None:
        """Finish queued writes and close the database (blocks; call from a thread)."""
        with contextlib.suppress(RuntimeError):  # already shut down
            self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)


_MAX_UNWRITTEN = 1000


def _log_open_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not open the statistics database: %s", exc)


def _log_failure(future: Future[int | None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not write a statistics row: %s", exc)

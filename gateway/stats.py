"""Anonymous statistics: one row per consultation, written when it ends.

The terms of use allow logging "duration, time and features used" anonymously and
never sharing them. A row therefore holds only: the start rounded down to the hour
(UTC), the duration, how long both sides were there together, how each side was
connected (``flash``, ``webrtc``, ``chat-only``), which features were used (video,
audio, chat, documents, forms, transcoding) and why it ended. No consultation id, token,
PIN, address, name, browser string or chat text is ever passed to this module: a row is
built from counters (:func:`row_for`), not from the consultation's identity.

Storage is SQLite (stdlib ``sqlite3``) at ``<data-dir>/stats.sqlite``, schema versioned
with ``PRAGMA user_version``. All database work runs on one worker thread that owns the
connection, so the event loop never waits for a commit and writes stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import sqlite3
import statistics as pystats
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gateway.consultation import Consultation, Role

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

FEATURES = ("video", "audio", "chat", "documents", "forms", "transcoding")
CLIENT_KINDS = ("flash", "webrtc", "chat-only")

# connection kind (gateway.consultation.Connection.kind) -> client kind in statistics
_CLIENT_OF_KIND = {
    "rtmp": "flash",
    "rtmpt": "flash",
    "rtmps": "flash",
    "rtmpts": "flash",
    "webrtc": "webrtc",
    "chat-only": "chat-only",
}

_SCHEMA_V1 = """
CREATE TABLE consultations (
    started_hour    TEXT    NOT NULL,  -- ISO 8601 UTC, rounded down: 2026-11-26T09:00Z
    duration_s      INTEGER NOT NULL,  -- creation to end
    together_s      INTEGER NOT NULL,  -- both participants connected at once
    customer_client TEXT    NOT NULL,  -- flash | webrtc | chat-only | none (joined with +)
    advisor_client  TEXT    NOT NULL,
    video           INTEGER NOT NULL,  -- 0/1: features used
    audio           INTEGER NOT NULL,
    chat            INTEGER NOT NULL,
    documents       INTEGER NOT NULL,
    forms           INTEGER NOT NULL,
    transcoding     INTEGER NOT NULL,
    end_reason      TEXT    NOT NULL   -- ended | expired | abandoned | unjoined | shutdown
);
"""

# The customer's rating on the end screen (1-5 stars, NULL: none given); see Feedback.
_SCHEMA_V2 = "ALTER TABLE consultations ADD COLUMN feedback INTEGER"

# user_version -> statements that bring the schema from that version to the next
_MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1, 1: _SCHEMA_V2}
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


COLUMNS = tuple(f.name for f in fields(StatsRow))


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
    """The statistics database; every call runs on its one worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats")
        self._db: sqlite3.Connection | None = None
        self._unwritten: list[StatsRow] = []  # rows a full disk refused, oldest first
        # Open (create, reserve room) now, not at the first row: the disk may be full by
        # the time a consultation ends.
        self._executor.submit(self._connect).add_done_callback(_log_open_failure)

    # -- worker-thread side --------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this gateway's "
                f"{SCHEMA_VERSION}; not touching it"
            )
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        # A full disk must not cost the row of a consultation that just ended (issue 11,
        # item 7): the journal file stays allocated between writes (PERSIST), and free
        # pages are kept in reserve inside the file, so an insert needs no new blocks.
        db.execute("PRAGMA journal_mode=PERSIST")
        self._db = db
        _top_up_reserve(db)
        return db

    def _insert(self, row: StatsRow) -> int | None:
        db = self._connect()
        self._unwritten.append(row)
        placeholders = ", ".join("?" for _ in COLUMNS)
        rowid: int | None = None
        while self._unwritten:
            values = [
                int(v) if isinstance(v, bool) else v
                for v in (getattr(self._unwritten[0], c) for c in COLUMNS)
            ]
            try:
                cursor = db.execute(
                    f"INSERT INTO consultations ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                    values,
                )
            except sqlite3.OperationalError:
                # kept for the next write (bounded); a few rows outlive a full disk
                del self._unwritten[:-_MAX_UNWRITTEN]
                raise
            rowid = cursor.lastrowid  # the last one is this call's row
            self._unwritten.pop(0)
        _top_up_reserve(db)
        return rowid

    def _rate(self, row: Future[int | None], rating: int) -> bool:
        # Runs after the row's insert (one worker thread, first in first out).
        rowid = row.result() if row.done() and row.exception() is None else None
        if rowid is None:
            return False
        cursor = self._connect().execute(
            "UPDATE consultations SET feedback = ? WHERE rowid = ? AND feedback IS NULL",
            (rating, rowid),
        )
        return cursor.rowcount == 1

    def _select(self, since: str | None, until: str | None) -> list[StatsRow]:
        db = self._connect()
        query = f"SELECT {', '.join(COLUMNS)} FROM consultations"
        where, args = [], []
        if since:
            where.append("started_hour >= ?")
            args.append(since)
        if until:
            where.append("started_hour < ?")
            args.append(until)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_hour, rowid"
        rows = []
        bools = {"video", "audio", "chat", "documents", "forms", "transcoding"}
        for record in db.execute(query, args):
            values = zip(COLUMNS, record, strict=True)
            cells: dict[str, Any] = {c: (bool(v) if c in bools else v) for c, v in values}
            rows.append(StatsRow(**cells))
        return rows

    def _close(self) -> None:
        if self._unwritten and self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._insert(self._unwritten.pop())
        if self._db is not None:
            self._db.close()
            self._db = None

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


# Free pages kept inside the database file: 64 pages of 4 KiB hold thousands of rows.
_RESERVE_PAGES = 64
_MAX_UNWRITTEN = 1000


def _top_up_reserve(db: sqlite3.Connection) -> None:
    """Keep ``_RESERVE_PAGES`` free pages in the file (a table filled and dropped: its
    pages stay in the free list, auto_vacuum being off). Does nothing on a full disk."""
    if db.execute("PRAGMA freelist_count").fetchone()[0] >= _RESERVE_PAGES // 4:
        return
    page = db.execute("PRAGMA page_size").fetchone()[0]
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _reserve (b BLOB)")
        db.execute("INSERT INTO _reserve VALUES (zeroblob(?))", (page * _RESERVE_PAGES,))
        db.execute("DROP TABLE _reserve")
    except sqlite3.OperationalError as exc:
        log.warning("statistics: no room for the reserve of free pages (%s)", exc)
        with contextlib.suppress(sqlite3.Error):
            db.execute("DROP TABLE IF EXISTS _reserve")


def _log_open_failure(future: Future[sqlite3.Connection]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not open the statistics database: %s", exc)


def _log_failure(future: Future[int | None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not write a statistics row: %s", exc)

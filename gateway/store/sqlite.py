"""The SQLite backend: a single node's embedded default (the files and schemas the
gateway has always used).

- ``advisors.sqlite``: accounts (and this backend's sign-in sessions and lock-outs,
  which the gateway keeps in memory unless the store is shared; see ``Backends.shared``).
  Created ``0600`` in a ``0700``-or-stricter data dir: it holds hashes, still worth
  guessing against offline. Every call opens its own short connection, so the object
  may be used from any thread and beside the command line tool.
- ``stats.sqlite``: the statistics, schema versioned with ``PRAGMA user_version``; one
  connection, used from the statistics' one worker thread (gateway/stats.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.store.base import (
    STATS_COLUMNS,
    AccountExists,
    AccountRecord,
    SessionRecord,
    lockout_step,
    stats_row,
    stats_values,
)

log = logging.getLogger(__name__)

_ACCOUNT_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS advisor (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    hash TEXT NOT NULL,
    generation TEXT NOT NULL,
    created TEXT NOT NULL,
    changed TEXT NOT NULL,
    display_name TEXT
)""",
    """
CREATE TABLE IF NOT EXISTS advisor_session (
    key TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    account TEXT,
    generation TEXT
)""",
    """
CREATE TABLE IF NOT EXISTS login_failure (
    key TEXT PRIMARY KEY,
    failures TEXT NOT NULL,
    locked_until REAL NOT NULL
)""",
)
# Files made before display names existed (issue 10, item 11) get the column on first
# open; SQLite's ADD COLUMN keeps every row (NULL: no display name).
_ACCOUNT_MIGRATIONS = (("display_name", "ALTER TABLE advisor ADD COLUMN display_name TEXT"),)
_ACCOUNT_FIELDS = "name, hash, generation, created, changed, display_name"
_UPDATABLE = frozenset({"hash", "generation", "changed", "display_name"})


class SqliteAccounts:
    """Accounts, sign-in sessions and lock-outs in ``advisors.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            if not create:
                # nothing to read: empty tables without creating the file
                db = sqlite3.connect(":memory:")
                for statement in _ACCOUNT_SCHEMA:
                    db.execute(statement)
                try:
                    yield db
                finally:
                    db.close()
                return
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            for statement in _ACCOUNT_SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(advisor)")}
            for column, statement in _ACCOUNT_MIGRATIONS:
                if column not in columns:
                    with db:
                        db.execute(statement)
            with db:
                yield db
        finally:
            db.close()

    # -- accounts -------------------------------------------------------------------------
    def add_account(self, record: AccountRecord) -> None:
        with self._db(create=True) as db:
            try:
                db.execute(
                    f"INSERT INTO advisor ({_ACCOUNT_FIELDS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.name,
                        record.hash,
                        record.generation,
                        record.created,
                        record.changed,
                        record.display_name,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AccountExists(record.name) from None

    def account(self, name: str) -> AccountRecord | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {_ACCOUNT_FIELDS} FROM advisor WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else AccountRecord(*row)

    def accounts(self) -> list[AccountRecord]:
        with self._db() as db:
            rows = db.execute(f"SELECT {_ACCOUNT_FIELDS} FROM advisor ORDER BY name").fetchall()
        return [AccountRecord(*row) for row in rows]

    def update_account(self, name: str, **values: Any) -> bool:
        if not values or not set(values) <= _UPDATABLE:
            raise ValueError(f"not updatable: {sorted(set(values) - _UPDATABLE)}")
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._db(create=True) as db:
            cur = db.execute(
                f"UPDATE advisor SET {assignments} WHERE name = ?", (*values.values(), name)
            )
            return cur.rowcount > 0

    def replace_hash(self, name: str, old: str, new: str) -> None:
        with self._db(create=True) as db:
            db.execute("UPDATE advisor SET hash = ? WHERE name = ? AND hash = ?", (new, name, old))

    def remove_account(self, name: str) -> bool:
        with self._db(create=True) as db:
            cur = db.execute("DELETE FROM advisor WHERE name = ?", (name,))
            return cur.rowcount > 0

    # -- sign-in sessions ---------------------------------------------------------------------
    def put_session(self, key: str, record: SessionRecord, now: float) -> None:
        with self._db(create=True) as db:
            # expired sessions go as new ones come (bounded table without a timer)
            db.execute("DELETE FROM advisor_session WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO advisor_session (key, expires, account, generation)"
                " VALUES (?, ?, ?, ?)",
                (key, record.expires, record.account, record.generation),
            )

    def get_session(self, key: str, now: float) -> SessionRecord | None:
        with self._db() as db:
            row = db.execute(
                "SELECT expires, account, generation FROM advisor_session"
                " WHERE key = ? AND expires > ?",
                (key, now),
            ).fetchone()
        return None if row is None else SessionRecord(*row)

    def delete_session(self, key: str) -> None:
        with self._db(create=True) as db:
            db.execute("DELETE FROM advisor_session WHERE key = ?", (key,))

    # -- lock-outs ------------------------------------------------------------------------------
    def fail(self, key: str, now: float, window: float, max_failures: int, lockout: float) -> float:
        with self._db(create=True) as db:
            db.execute("BEGIN IMMEDIATE")  # read-modify-write of one key, serialised
            row = db.execute(
                "SELECT failures, locked_until FROM login_failure WHERE key = ?", (key,)
            ).fetchone()
            failures, locked_until = (json.loads(row[0]), row[1]) if row else ([], 0.0)
            kept, locked_until, caused = lockout_step(
                failures, locked_until, now, window, max_failures, lockout
            )
            db.execute(
                "INSERT OR REPLACE INTO login_failure (key, failures, locked_until)"
                " VALUES (?, ?, ?)",
                (key, json.dumps(kept), locked_until),
            )
            # forget keys with nothing in any window and no lock (bounded table)
            db.execute(
                "DELETE FROM login_failure WHERE locked_until <= ? AND key != ?"
                " AND failures = '[]'",
                (now, key),
            )
        return caused

    def retry_after(self, key: str, now: float) -> float:
        with self._db() as db:
            row = db.execute(
                "SELECT locked_until FROM login_failure WHERE key = ?", (key,)
            ).fetchone()
        return max(0.0, row[0] - now) if row else 0.0

    def clear(self, key: str, now: float) -> None:
        with self._db(create=True) as db:
            db.execute("DELETE FROM login_failure WHERE key = ? AND locked_until <= ?", (key, now))


# -- statistics --------------------------------------------------------------------------------

STATS_SCHEMA_VERSION = 2
_STATS_V1 = """
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
_STATS_V2 = "ALTER TABLE consultations ADD COLUMN feedback INTEGER"
# user_version -> statements that bring the schema from that version to the next
_STATS_MIGRATIONS: dict[int, str] = {0: _STATS_V1, 1: _STATS_V2}
# Free pages kept inside the database file: 64 pages of 4 KiB hold thousands of rows.
_RESERVE_PAGES = 64


class SqliteStats:
    """The statistics file; one connection, used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > STATS_SCHEMA_VERSION:
            db.close()
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this gateway's "
                f"{STATS_SCHEMA_VERSION}; not touching it"
            )
        while version < STATS_SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _STATS_MIGRATIONS[version].split(";"):
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

    def insert_rows(self, rows: list[dict[str, Any]]) -> int:
        db = self.open()
        placeholders = ", ".join("?" for _ in STATS_COLUMNS)
        sql = f"INSERT INTO consultations ({', '.join(STATS_COLUMNS)}) VALUES ({placeholders})"
        rowid = 0
        db.execute("BEGIN")
        try:
            for row in rows:
                rowid = db.execute(sql, stats_values(row)).lastrowid or 0
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        _top_up_reserve(db)
        return rowid

    def rate(self, row_id: int, rating: int) -> bool:
        cursor = self.open().execute(
            "UPDATE consultations SET feedback = ? WHERE rowid = ? AND feedback IS NULL",
            (rating, row_id),
        )
        return cursor.rowcount == 1

    def select(self, since: str | None, until: str | None) -> list[dict[str, Any]]:
        query, args = _select_sql(since, until, "?")
        return [
            stats_row(r) for r in self.open().execute(query + " ORDER BY started_hour, rowid", args)
        ]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _select_sql(since: str | None, until: str | None, mark: str) -> tuple[str, list[str]]:
    query = f"SELECT {', '.join(STATS_COLUMNS)} FROM consultations"
    where, args = [], []
    if since:
        where.append(f"started_hour >= {mark}")
        args.append(since)
    if until:
        where.append(f"started_hour < {mark}")
        args.append(until)
    if where:
        query += " WHERE " + " AND ".join(where)
    return query, args


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

"""The PostgreSQL backend (``--database postgresql://…``): one database shared by every
node of a cluster (docs/cluster.md).

psycopg 3 with its connection pool (``psycopg_pool``). The store's methods block and are
called from worker threads (gateway/store/__init__.py), so the pool is the synchronous
one; psycopg's async API is not needed for that. Each method is one short transaction;
a read-modify-write (a lock-out) locks its row (``SELECT … FOR UPDATE``), so two nodes
counting failures of one account at the same moment lose none (PostgreSQL docs,
"Explicit Locking", row-level locks).

Account names compare without case, as SQLite's ``COLLATE NOCASE`` did: a unique index
on ``lower(name)`` and every lookup through ``lower()``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

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

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vb_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS advisor (
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    generation TEXT NOT NULL,
    created TEXT NOT NULL,
    changed TEXT NOT NULL,
    display_name TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS advisor_name ON advisor (lower(name));
CREATE TABLE IF NOT EXISTS advisor_session (
    key TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL,
    account TEXT,
    generation TEXT
);
CREATE INDEX IF NOT EXISTS advisor_session_expires ON advisor_session (expires);
CREATE TABLE IF NOT EXISTS login_failure (
    key TEXT PRIMARY KEY,
    failures TEXT NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS consultations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_hour    TEXT    NOT NULL,
    duration_s      INTEGER NOT NULL,
    together_s      INTEGER NOT NULL,
    customer_client TEXT    NOT NULL,
    advisor_client  TEXT    NOT NULL,
    video           SMALLINT NOT NULL,
    audio           SMALLINT NOT NULL,
    chat            SMALLINT NOT NULL,
    documents       SMALLINT NOT NULL,
    forms           SMALLINT NOT NULL,
    transcoding     SMALLINT NOT NULL,
    end_reason      TEXT    NOT NULL,
    feedback        SMALLINT
);
CREATE INDEX IF NOT EXISTS consultations_hour ON consultations (started_hour);
"""
_ACCOUNT_FIELDS = "name, hash, generation, created, changed, display_name"
_UPDATABLE = frozenset({"hash", "generation", "changed", "display_name"})
# an advisory lock number for the schema set-up: nodes starting together create it once
_SCHEMA_LOCK = 0x5642_0016


class PostgresStore:
    """Accounts, sign-in sessions, lock-outs and statistics in one PostgreSQL database."""

    def __init__(self, url: str, *, max_size: int = 4) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url, min_size=1, max_size=max_size, open=True, timeout=10.0, name="vb-store"
        )
        self._migrate()

    def _migrate(self) -> None:
        with self.pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            exists = db.execute("SELECT to_regclass('vb_schema')").fetchone()
            version = 0
            if exists and exists[0] is not None:
                row = db.execute("SELECT max(version) FROM vb_schema").fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database has schema version {version}, newer than this "
                    f"gateway's {SCHEMA_VERSION}; not touching it"
                )
            if version < SCHEMA_VERSION:
                db.execute(_SCHEMA)
                db.execute("INSERT INTO vb_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self.pool.close()

    # -- accounts ---------------------------------------------------------------------------
    def add_account(self, record: AccountRecord) -> None:
        try:
            with self.pool.connection() as db:
                db.execute(
                    f"INSERT INTO advisor ({_ACCOUNT_FIELDS}) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        record.name,
                        record.hash,
                        record.generation,
                        record.created,
                        record.changed,
                        record.display_name,
                    ),
                )
        except psycopg.errors.UniqueViolation:
            raise AccountExists(record.name) from None

    def account(self, name: str) -> AccountRecord | None:
        with self.pool.connection() as db:
            row = db.execute(
                f"SELECT {_ACCOUNT_FIELDS} FROM advisor WHERE lower(name) = lower(%s)", (name,)
            ).fetchone()
        return None if row is None else AccountRecord(*row)

    def accounts(self) -> list[AccountRecord]:
        with self.pool.connection() as db:
            rows = db.execute(
                f"SELECT {_ACCOUNT_FIELDS} FROM advisor ORDER BY lower(name)"
            ).fetchall()
        return [AccountRecord(*row) for row in rows]

    def update_account(self, name: str, **values: Any) -> bool:
        if not values or not set(values) <= _UPDATABLE:
            raise ValueError(f"not updatable: {sorted(set(values) - _UPDATABLE)}")
        assignments = ", ".join(f"{column} = %s" for column in values)
        with self.pool.connection() as db:
            cur = db.execute(
                f"UPDATE advisor SET {assignments} WHERE lower(name) = lower(%s)",
                (*values.values(), name),
            )
            return cur.rowcount > 0

    def replace_hash(self, name: str, old: str, new: str) -> None:
        with self.pool.connection() as db:
            db.execute(
                "UPDATE advisor SET hash = %s WHERE lower(name) = lower(%s) AND hash = %s",
                (new, name, old),
            )

    def remove_account(self, name: str) -> bool:
        with self.pool.connection() as db:
            cur = db.execute("DELETE FROM advisor WHERE lower(name) = lower(%s)", (name,))
            return cur.rowcount > 0

    # -- sign-in sessions ---------------------------------------------------------------------
    def put_session(self, key: str, record: SessionRecord, now: float) -> None:
        with self.pool.connection() as db, db.transaction():
            db.execute("DELETE FROM advisor_session WHERE expires <= %s", (now,))
            db.execute(
                "INSERT INTO advisor_session (key, expires, account, generation)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                " expires = EXCLUDED.expires, account = EXCLUDED.account,"
                " generation = EXCLUDED.generation",
                (key, record.expires, record.account, record.generation),
            )

    def get_session(self, key: str, now: float) -> SessionRecord | None:
        with self.pool.connection() as db:
            row = db.execute(
                "SELECT expires, account, generation FROM advisor_session"
                " WHERE key = %s AND expires > %s",
                (key, now),
            ).fetchone()
        return None if row is None else SessionRecord(*row)

    def delete_session(self, key: str) -> None:
        with self.pool.connection() as db:
            db.execute("DELETE FROM advisor_session WHERE key = %s", (key,))

    # -- lock-outs ------------------------------------------------------------------------------
    def fail(self, key: str, now: float, window: float, max_failures: int, lockout: float) -> float:
        with self.pool.connection() as db, db.transaction():
            # the row exists before it is locked, so concurrent first failures serialise too
            db.execute(
                "INSERT INTO login_failure (key, failures, locked_until) VALUES (%s, '[]', 0)"
                " ON CONFLICT (key) DO NOTHING",
                (key,),
            )
            row = db.execute(
                "SELECT failures, locked_until FROM login_failure WHERE key = %s FOR UPDATE",
                (key,),
            ).fetchone()
            assert row is not None
            kept, locked_until, caused = lockout_step(
                json.loads(row[0]), row[1], now, window, max_failures, lockout
            )
            db.execute(
                "UPDATE login_failure SET failures = %s, locked_until = %s WHERE key = %s",
                (json.dumps(kept), locked_until, key),
            )
            db.execute(
                "DELETE FROM login_failure WHERE locked_until <= %s AND key <> %s"
                " AND failures = '[]'",
                (now, key),
            )
        return caused

    def retry_after(self, key: str, now: float) -> float:
        with self.pool.connection() as db:
            row = db.execute(
                "SELECT locked_until FROM login_failure WHERE key = %s", (key,)
            ).fetchone()
        return max(0.0, row[0] - now) if row else 0.0

    def clear(self, key: str, now: float) -> None:
        with self.pool.connection() as db:
            db.execute(
                "DELETE FROM login_failure WHERE key = %s AND locked_until <= %s", (key, now)
            )

    # -- statistics -------------------------------------------------------------------------------
    def insert_rows(self, rows: list[dict[str, Any]]) -> int:
        placeholders = ", ".join("%s" for _ in STATS_COLUMNS)
        sql = (
            f"INSERT INTO consultations ({', '.join(STATS_COLUMNS)}) VALUES ({placeholders})"
            " RETURNING id"
        )
        row_id = 0
        with self.pool.connection() as db, db.transaction():
            for row in rows:
                found = db.execute(sql, stats_values(row)).fetchone()
                row_id = int(found[0]) if found else 0
        return row_id

    def rate(self, row_id: int, rating: int) -> bool:
        with self.pool.connection() as db:
            cur = db.execute(
                "UPDATE consultations SET feedback = %s WHERE id = %s AND feedback IS NULL",
                (rating, row_id),
            )
            return cur.rowcount == 1

    def select(self, since: str | None, until: str | None) -> list[dict[str, Any]]:
        query = f"SELECT {', '.join(STATS_COLUMNS)} FROM consultations"
        where, args = [], []
        if since:
            where.append("started_hour >= %s")
            args.append(since)
        if until:
            where.append("started_hour < %s")
            args.append(until)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self.pool.connection() as db:
            records = db.execute(query + " ORDER BY started_hour, id", args).fetchall()
        return [stats_row(r) for r in records]

"""The data-access layer: advisor accounts, sign-in sessions, lock-outs and the anonymous
statistics, behind one set of protocols with two backends (docs/cluster.md).

- **SQLite** (``gateway/store/sqlite.py``), the embedded default of a single node: the
  accounts in ``<data-dir>/advisors.sqlite``, the statistics in ``stats.sqlite``, as
  before this package existed (same files, same schemas).
- **PostgreSQL** (``gateway/store/postgres.py``, ``--database postgresql://…``), shared
  by every node of a cluster: an account, a sign-in, a lock-out or a statistics row made
  on one node is seen by all.

Every method blocks (a file or a network round trip): the gateway calls them from a
worker thread (``asyncio.to_thread``, the statistics' own thread) or from the command
line, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.base import (
    AccountExists,
    AccountRecord,
    AccountStore,
    Backends,
    LockoutStore,
    SessionRecord,
    SessionStore,
    StatsStore,
)

__all__ = [
    "AccountExists",
    "AccountRecord",
    "AccountStore",
    "Backends",
    "LockoutStore",
    "SessionRecord",
    "SessionStore",
    "StatsStore",
    "is_postgres_url",
    "open_backends",
]


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def open_backends(database: str | None, data_dir: Path) -> Backends:
    """The backends for ``--database``: PostgreSQL for a ``postgresql://`` URL, else the
    SQLite files under ``data_dir``."""
    if database:
        if not is_postgres_url(database):
            raise ValueError(
                f"--database expects a postgresql:// URL, not {database.split('://')[0]}://…"
            )
        from gateway.store.postgres import PostgresStore

        pg = PostgresStore(database)
        return Backends(
            accounts=pg, sessions=pg, lockouts=pg, stats=pg, shared=True, close=pg.close
        )
    from gateway.store.sqlite import SqliteAccounts, SqliteStats

    accounts = SqliteAccounts(data_dir / "advisors.sqlite")
    stats = SqliteStats(data_dir / "stats.sqlite")
    return Backends(
        accounts=accounts,
        sessions=accounts,
        lockouts=accounts,
        stats=stats,
        shared=False,
        close=stats.close,
    )

"""The store's protocols and records (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class AccountExists(Exception):
    """An account with this name (compared without case) exists already."""


@dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str
    hash: str
    generation: str
    created: str
    changed: str
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A sign-in session, stored under a hash of its id (the id itself is a bearer
    credential and never stored, as tokens are never logged)."""

    expires: float
    account: str | None
    generation: str | None


class AccountStore(Protocol):
    def add_account(self, record: AccountRecord) -> None: ...  # AccountExists
    def account(self, name: str) -> AccountRecord | None: ...
    def accounts(self) -> list[AccountRecord]: ...
    def update_account(self, name: str, **values: Any) -> bool: ...
    def replace_hash(self, name: str, old: str, new: str) -> None: ...
    def remove_account(self, name: str) -> bool: ...


class SessionStore(Protocol):
    def put_session(self, key: str, record: SessionRecord, now: float) -> None: ...
    def get_session(self, key: str, now: float) -> SessionRecord | None: ...
    def delete_session(self, key: str) -> None: ...


class LockoutStore(Protocol):
    def fail(self, key: str, now: float, window: float, max_failures: int, lockout: float) -> float:
        """Count a failure of ``key``; the lock-out it caused in seconds (0: none)."""
        ...

    def retry_after(self, key: str, now: float) -> float: ...
    def clear(self, key: str, now: float) -> None: ...


class StatsStore(Protocol):
    def insert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Insert the rows in order, in one transaction; the id of the last one."""
        ...

    def rate(self, row_id: int, rating: int) -> bool: ...
    def select(self, since: str | None, until: str | None) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Backends:
    accounts: AccountStore
    sessions: SessionStore
    lockouts: LockoutStore
    stats: StatsStore
    # True when other nodes see the same data (PostgreSQL): sign-in sessions and
    # lock-outs are then kept in the store instead of only in this process.
    shared: bool = False
    close: Callable[[], None] = field(default=lambda: None)


# The statistics table's columns, in order (gateway/stats.py's StatsRow has the same
# fields; a test pins that). Booleans are stored as 0/1 in both backends.
STATS_COLUMNS = (
    "started_hour",
    "duration_s",
    "together_s",
    "customer_client",
    "advisor_client",
    "video",
    "audio",
    "chat",
    "documents",
    "forms",
    "transcoding",
    "end_reason",
    "feedback",
)
STATS_BOOLS = frozenset({"video", "audio", "chat", "documents", "forms", "transcoding"})


def stats_values(row: dict[str, Any]) -> list[Any]:
    return [int(row[c]) if c in STATS_BOOLS else row[c] for c in STATS_COLUMNS]


def stats_row(record: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    return {
        c: (bool(v) if c in STATS_BOOLS else v) for c, v in zip(STATS_COLUMNS, record, strict=True)
    }


def lockout_step(
    failures: list[float],
    locked_until: float,
    now: float,
    window: float,
    max_failures: int,
    lockout: float,
) -> tuple[list[float], float, float]:
    """One failure in the sliding window (web/throttle.py's rule, shared by both
    backends): the failures kept, the new lock end, and the lock-out it caused."""
    kept = [t for t in failures if t > now - window]
    kept.append(now)
    if len(kept) >= max_failures:
        return [], now + lockout, lockout
    return kept, locked_until, 0.0

"""The data-access layer (issue 16, item 1): the same tests against both backends, the
embedded SQLite files and a real PostgreSQL 15 (Debian's, started on loopback)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from bench.testkit.servers import PostgresServer
from gateway.stats import StatsRow
from gateway.store import AccountExists, AccountRecord, Backends, SessionRecord, open_backends
from gateway.store.base import STATS_COLUMNS

pytestmark = pytest.mark.e2e  # PostgreSQL is a process

_NAMES = itertools.count()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backends]:
    if request.param == "sqlite":
        store = open_backends(None, tmp_path)
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        store = open_backends(server.create_database(f"t{next(_NAMES)}"), tmp_path)
    try:
        yield store
    finally:
        store.close()
    if request.param == "postgresql":
        assert not list(tmp_path.iterdir()), "the PostgreSQL backend wrote local files"


def record(name: str, **changes: str | None) -> AccountRecord:
    values: dict[str, str | None] = {
        "name": name,
        "hash": "$argon2id$x",
        "generation": "g1",
        "created": "2026-12-02T07:00:00Z",
        "changed": "2026-12-02T07:00:00Z",
        "display_name": None,
    }
    values.update(changes)
    return AccountRecord(**values)  # type: ignore[arg-type]


def test_stats_columns_are_the_rows_fields() -> None:
    assert tuple(f.name for f in fields(StatsRow)) == STATS_COLUMNS


def test_account_names_compare_without_case(backends: Backends) -> None:
    accounts = backends.accounts
    accounts.add_account(record("Schmidt", display_name="Frau Schmidt"))
    with pytest.raises(AccountExists):
        accounts.add_account(record("schmidt"))
    found = accounts.account("SCHMIDT")
    assert found is not None
    assert (found.name, found.display_name) == ("Schmidt", "Frau Schmidt")
    assert accounts.account("meier") is None


def test_account_update_rehash_and_remove(backends: Backends) -> None:
    accounts = backends.accounts
    accounts.add_account(record("alice"))
    accounts.add_account(record("bob"))
    assert accounts.update_account("ALICE", hash="h2", generation="g2", changed="later")
    assert not accounts.update_account("nobody", display_name="x")
    alice = accounts.account("alice")
    assert alice is not None and (alice.hash, alice.generation) == ("h2", "g2")
    # a rehash only replaces the hash it read (a passwd in between wins)
    accounts.replace_hash("alice", "stale", "h3")
    assert accounts.account("alice").hash == "h2"  # type: ignore[union-attr]
    accounts.replace_hash("alice", "h2", "h3")
    assert accounts.account("alice").hash == "h3"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        accounts.update_account("alice", created="1970")
    assert [a.name for a in accounts.accounts()] == ["alice", "bob"]
    assert accounts.remove_account("Bob")
    assert not accounts.remove_account("bob")
    assert [a.name for a in accounts.accounts()] == ["alice"]


def test_sessions_expire_and_end(backends: Backends) -> None:
    sessions = backends.sessions
    sessions.put_session("k1", SessionRecord(1000.0, "alice", "g1"), 0.0)
    sessions.put_session("k2", SessionRecord(1000.0, None, None), 0.0)
    assert sessions.get_session("k1", 999.0) == SessionRecord(1000.0, "alice", "g1")
    assert sessions.get_session("k2", 10.0) == SessionRecord(1000.0, None, None)
    assert sessions.get_session("k1", 1000.0) is None  # expired
    assert sessions.get_session("unknown", 0.0) is None
    sessions.delete_session("k2")
    assert sessions.get_session("k2", 10.0) is None


def test_lockout_after_max_failures_in_window(backends: Backends) -> None:
    lockouts = backends.lockouts
    args = {"window": 60.0, "max_failures": 3, "lockout": 300.0}
    assert lockouts.fail("account:alice", 0.0, **args) == 0.0
    assert lockouts.fail("account:alice", 10.0, **args) == 0.0
    # a failure outside the window does not count: the first one is forgotten
    assert lockouts.fail("account:alice", 65.0, **args) == 0.0
    assert lockouts.retry_after("account:alice", 65.0) == 0.0
    assert lockouts.fail("account:alice", 66.0, **args) == 300.0
    assert lockouts.retry_after("account:alice", 100.0) == pytest.approx(266.0)
    lockouts.clear("account:alice", 100.0)  # a success during the lock does not lift it
    assert lockouts.retry_after("account:alice", 100.0) == pytest.approx(266.0)
    assert lockouts.retry_after("account:bob", 100.0) == 0.0
    lockouts.clear("account:alice", 400.0)
    assert lockouts.retry_after("account:alice", 400.0) == 0.0


def test_concurrent_failures_are_all_counted(backends: Backends) -> None:
    """Two nodes (threads here) counting failures of one account at the same moment lose
    none: the lock comes at exactly the tenth failure."""
    lockouts = backends.lockouts
    caused: list[float] = []
    lock = threading.Lock()

    def fail_five() -> None:
        for _ in range(5):
            result = lockouts.fail("account:x", 1.0, window=60.0, max_failures=10, lockout=30.0)
            with lock:
                caused.append(result)

    threads = [threading.Thread(target=fail_five) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(caused) == [0.0] * 9 + [30.0]


def _row(hour: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "started_hour": hour,
        "duration_s": 300,
        "together_s": 240,
        "customer_client": "flash",
        "advisor_client": "webrtc",
        "video": True,
        "audio": True,
        "chat": False,
        "documents": False,
        "forms": False,
        "transcoding": True,
        "end_reason": "ended",
        "feedback": None,
    }
    row.update(changes)
    return row


def test_statistics_rows_rating_and_range(backends: Backends) -> None:
    stats = backends.stats
    first = stats.insert_rows([_row("2026-12-01T09:00Z")])
    last = stats.insert_rows(
        [_row("2026-12-02T09:00Z", chat=True), _row("2026-12-02T10:00Z", end_reason="expired")]
    )
    assert first != last
    assert stats.rate(first, 5)
    assert not stats.rate(first, 1)  # a rated row keeps its rating
    rows = stats.select(None, None)
    assert [r["started_hour"] for r in rows] == [
        "2026-12-01T09:00Z",
        "2026-12-02T09:00Z",
        "2026-12-02T10:00Z",
    ]
    assert rows[0]["feedback"] == 5 and rows[0]["video"] is True and rows[0]["chat"] is False
    assert rows[1]["chat"] is True
    assert StatsRow(**rows[2]).end_reason == "expired"  # type: ignore[arg-type]
    assert len(stats.select("2026-12-02", None)) == 2
    assert len(stats.select(None, "2026-12-02")) == 1
    assert stats.select("2026-12-03", None) == []

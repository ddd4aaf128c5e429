"""web/guard.py without sockets: counting by address (IPv6 by /64), the rate-limited
log line, and the body deadline's arithmetic with a moved clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiohttp.web_protocol import RequestHandler

from web.guard import ConnectionGuard, HttpLimits, RateLimitedLog


class FakeTransport:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.aborted = False
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return (self.peer, 1234) if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True

    def is_reading(self) -> bool:
        return self.reading


class FakeContent:
    def __init__(self) -> None:
        self.eof = False

    def is_eof(self) -> bool:
        return self.eof


class FakeRequest:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.content = FakeContent()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admit(guard: ConnectionGuard, transport: FakeTransport | str) -> Any:
    if isinstance(transport, str):
        transport = FakeTransport(transport)
    return guard.admit(cast(asyncio.BaseTransport, transport))


def make_guard(clock: Clock | None = None, **limits: float) -> ConnectionGuard:
    values: dict[str, Any] = {
        "max_connections": 10,
        "max_connections_per_address": 3,
        "body_timeout": 10.0,
        "body_min_rate": 1024.0,
    }
    values.update(limits)
    handler = cast(Callable[[], RequestHandler], object)
    return ConnectionGuard(HttpLimits(**values), handler, clock=clock or Clock())


def test_ipv6_addresses_of_one_64_share_the_per_address_cap() -> None:
    guard = make_guard()
    admitted = [admit(guard, f"2001:db8:1:2::{i}") for i in range(1, 6)]
    assert [c is not None for c in admitted] == [True, True, True, False, False]
    # another /64 is another address
    assert admit(guard, "2001:db8:1:3::1") is not None
    # IPv4-mapped IPv6 counts as the IPv4 address
    for _ in range(3):
        assert admit(guard, "::ffff:192.0.2.7") is not None
    assert admit(guard, "192.0.2.7") is None


def test_released_connections_free_their_slots() -> None:
    guard = make_guard(max_connections=2)
    first = admit(guard, "192.0.2.1")
    second = admit(guard, "192.0.2.2")
    assert first is not None and second is not None
    assert admit(guard, "192.0.2.3") is None
    guard.release(first)
    assert admit(guard, "192.0.2.3") is not None
    assert guard.total == 2 and "192.0.2.1" not in guard.per_address


def test_rate_limited_log_reports_a_flood_as_one_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    report = RateLimitedLog(logging.getLogger("test.guard"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.guard"):
        assert report.warning("cap", "refused %s", "x")
        for _ in range(50):
            assert not report.warning("cap", "refused %s", "x")
        assert report.warning("other", "another kind")
        clock.now += 10.0
        assert report.warning("cap", "refused %s", "x")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refused x",
        "another kind",
        "refused x (and 50 more like it since the last report)",
    ]


def test_body_deadline_cuts_a_trickle_and_spares_a_steady_upload() -> None:
    clock = Clock()
    guard = make_guard(clock)
    slow_t, steady_t, stalled_t = (FakeTransport(f"192.0.2.{i}") for i in (1, 2, 3))
    conns = [admit(guard, t) for t in (slow_t, steady_t, stalled_t)]
    assert all(c is not None for c in conns)
    for conn, transport in zip(conns, (slow_t, steady_t, stalled_t), strict=True):
        assert conn is not None
        conn.request = FakeRequest(transport)
        conn.body_since = clock.now
    slow, steady, stalled = conns
    assert slow is not None and steady is not None and stalled is not None
    stalled_t.reading = False  # the handler stopped reading: not the client's fault
    clock.now += 10.0  # within the grace period nothing is cut
    slow.bytes_in = 50
    steady.bytes_in = 12 * 1024
    assert guard.sweep() == 0
    clock.now += 2.0  # 12 s: the trickle (50 bytes) is far below 1 KiB/s
    assert guard.sweep() == 1
    assert slow_t.aborted and not steady_t.aborted and not stalled_t.aborted
    # a finished body has no deadline any more
    steady.request.content.eof = True
    clock.now += 100.0
    assert guard.sweep() == 0

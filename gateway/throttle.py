"""Failure counting against guessing: advisor passwords, customer PINs, phone codes.

In the core (not web/) since the telephone leg (gateway/phone/) limits wrong phone codes
with the same rule as the web PIN; web/throttle.py re-exports it.

:class:`FailureLimiter` counts failures per key (an address, an account name) in a
sliding window; at ``max_failures`` the key is locked for ``lockout`` seconds. A success
clears the key's failures (a customer who mistyped once and then got it right starts
afresh). The clock is passed in, so tests move time instead of waiting.

Memory is bounded: keys whose failures are all outside the window and that are not
locked are forgotten, and past ``max_keys`` the oldest keys go first (an attacker
rotating through addresses evicts its own entries, not the lock of one it targets: a
locked key is evicted only after every unlocked one).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FailureLimiter"]


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class FailureLimiter:
    def __init__(
        self,
        max_failures: int,
        window: float,
        lockout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self.max_keys = max_keys
        self._entries: dict[str, _Entry] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        left = entry.locked_until - self.clock()
        return left if left > 0 else 0.0

    def fail(self, key: str) -> float:
        """Count a failure; the lock-out in seconds it caused (0: none yet)."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = self._entries[key] = _Entry()
        failures = entry.failures
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        failures.append(now)
        if len(failures) >= self.max_failures:
            failures.clear()
            entry.locked_until = now + self.lockout
            return self.lockout
        return 0.0

    def remaining(self, key: str) -> int:
        """Failures ``key`` may still make before it is locked."""
        entry = self._entries.get(key)
        if entry is None:
            return self.max_failures
        now = self.clock()
        recent = sum(1 for t in entry.failures if t > now - self.window)
        return max(0, self.max_failures - recent)

    def succeed(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.locked_until <= self.clock():
            del self._entries[key]

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self.max_keys:
            return
        cutoff = now - self.window
        stale = [
            k
            for k, e in self._entries.items()
            if e.locked_until <= now and (not e.failures or e.failures[-1] <= cutoff)
        ]
        for key in stale:
            del self._entries[key]
        if len(self._entries) < self.max_keys:
            return
        # oldest unlocked first, then (only if all are locked) the earliest-ending locks
        ordered = sorted(
            self._entries.items(),
            key=lambda kv: (
                kv[1].locked_until > now,
                kv[1].locked_until,
                kv[1].failures[-1] if kv[1].failures else 0.0,
            ),
        )
        for key, _ in ordered[: len(self._entries) - self.max_keys + 1]:
            del self._entries[key]

"""The customer's anonymous rating of a consultation (the end screen, docs/web.md).

One rating (1–5) per consultation, from its customer, counted in the consultation's
statistics row (``gateway/stats.py``, column ``feedback``) and nowhere else: no text, no
time of its own, nothing that names anyone.

A rating may come before the end (the customer left, the consultation runs on): it is
held in memory and written with the row. After the end the customer's token is dead, so
the desk keeps, for ``window`` seconds, a SHA-256 digest of it beside the row's handle;
the page's cookie (the same token) then proves it is that consultation's customer. The
digest and the handle live in memory only and go when the window closes.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import time
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.consultation import Consultation, Role
from gateway.stats import FEEDBACK_RATINGS, Statistics


class Rated(enum.Enum):
    STORED = "stored"
    ALREADY = "already"  # this consultation has its rating
    UNKNOWN = "unknown"  # not this consultation's customer, or the window has closed


@dataclass(slots=True)
class _Ended:
    token_digest: bytes
    row: Future[int | None]
    closes_at: float
    rated: bool


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class FeedbackDesk:
    def __init__(
        self, statistics: Statistics, *, window: float = 3600.0, max_ended: int = 10_000
    ) -> None:
        self.statistics = statistics
        self.window = window
        self.max_ended = max_ended
        self._before_end: dict[str, int] = {}
        self._ended: dict[str, _Ended] = {}

    @staticmethod
    def valid(rating: object) -> bool:
        is_int = isinstance(rating, int) and not isinstance(rating, bool)
        return is_int and rating in FEEDBACK_RATINGS

    # -- before the end: the customer's grant was checked by the caller -----------------
    def rate_running(self, consultation: Consultation, rating: int) -> Rated:
        if consultation.id in self._before_end:
            return Rated.ALREADY
        self._before_end[consultation.id] = rating
        return Rated.STORED

    # -- at the end ------------------------------------------------------------------------
    def take(self, consultation_id: str) -> int | None:
        """The rating given before the end, for the row that is about to be written."""
        return self._before_end.pop(consultation_id, None)

    def row_written(
        self,
        consultation: Consultation,
        row: Future[int | None],
        rated: bool,
        now: float | None = None,
    ) -> None:
        """Open the window for a rating after the end (``rated``: one came before)."""
        now = time.time() if now is None else now
        self._purge(now)
        if len(self._ended) >= self.max_ended:
            self._ended.pop(next(iter(self._ended)))  # the oldest (insertion order)
        token = consultation.participants[Role.CUSTOMER].token
        self._ended[consultation.id] = _Ended(_digest(token), row, now + self.window, rated)

    # -- after the end: the cookie proves who asks ----------------------------------------
    async def rate_ended(
        self, consultation_id: str, token: str | None, rating: int, now: float | None = None
    ) -> Rated:
        now = time.time() if now is None else now
        self._purge(now)
        slot = self._ended.get(consultation_id)
        if slot is None or not token or not hmac.compare_digest(slot.token_digest, _digest(token)):
            return Rated.UNKNOWN
        if slot.rated:
            return Rated.ALREADY
        slot.rated = True
        stored = await asyncio.wrap_future(self.statistics.rate(slot.row, rating))
        return Rated.STORED if stored else Rated.ALREADY

    def _purge(self, now: float) -> None:
        for cid in [cid for cid, slot in self._ended.items() if slot.closes_at <= now]:
            del self._ended[cid]

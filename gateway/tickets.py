"""One-time tickets: URLs a client opens without a credential.

Flash's ``navigateToURL`` cannot send a bearer token, so a document download or a form
page handed to the SWF carries a ticket instead: random, bound to one consultation and
one item (a document, a form), expiring, and used up when redeemed. Tickets live in
memory only and go with their consultation.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_TICKET_LENGTH = 64  # what we mint is 32 characters; longer input is not looked up


@dataclass(slots=True)
class _Ticket:
    consultation_id: str
    item_id: str
    expires: float


class TicketBook:
    """Tickets in minting order (so expiry and overflow drop from the front).

    ``per_consultation`` bounds one consultation's share: a participant minting in a
    loop only pushes out its own consultation's oldest tickets. ``max_tickets`` bounds
    the whole book.
    """

    def __init__(
        self, ttl: float, *, per_consultation: int | None = None, max_tickets: int = 4096
    ) -> None:
        self.ttl = ttl
        self.per_consultation = per_consultation
        self.max_tickets = max_tickets
        self._tickets: OrderedDict[str, _Ticket] = OrderedDict()

    def mint(self, consultation_id: str, item_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._purge(now)
        if self.per_consultation is not None:
            mine = [k for k, t in self._tickets.items() if t.consultation_id == consultation_id]
            for key in mine[: max(0, len(mine) - self.per_consultation + 1)]:
                del self._tickets[key]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _Ticket(consultation_id, item_id, now + self.ttl)
        while len(self._tickets) > self.max_tickets:
            self._tickets.popitem(last=False)
        return ticket

    def redeem(
        self,
        ticket: str,
        consultation_id: str,
        item_id: str,
        now: float | None = None,
        *,
        consume: bool = True,
    ) -> bool:
        """Whether the ticket is valid for this item. It is used up either way (a ticket
        presented for another item is a guess, not a second chance); ``consume=False``
        only looks (a ``HEAD`` request must not spend a download)."""
        now = time.time() if now is None else now
        if len(ticket) > MAX_TICKET_LENGTH:
            return False
        entry = self._tickets.pop(ticket, None) if consume else self._tickets.get(ticket)
        if entry is None or entry.expires <= now:
            return False
        return entry.consultation_id == consultation_id and entry.item_id == item_id

    def holds(self, consultation_id: str) -> int:
        """How many tickets of this consultation are kept."""
        return sum(1 for t in self._tickets.values() if t.consultation_id == consultation_id)

    def forget(self, consultation_id: str) -> None:
        """The consultation ended: its tickets go with it."""
        for key in [k for k, t in self._tickets.items() if t.consultation_id == consultation_id]:
            del self._tickets[key]

    def _purge(self, now: float) -> None:
        while self._tickets:
            first = next(iter(self._tickets.values()))
            if first.expires > now:
                break
            self._tickets.popitem(last=False)

"""Guessing the customer PIN: limits per consultation and per address.

- Per consultation (``Consultation.pin_failed``, the domain): after ``pin_max_wrong``
  (default 5) wrong PINs the customer link is locked. A 6-digit PIN has 10^6 values, so
  an attacker who knows the link guesses right with a chance of 5·10^-6. Counting per
  consultation, not per address, means rotating addresses does not help. The lock is
  shown on the advisor's pages at once (an ``access`` event, the overview's polling),
  and the advisor issues a new PIN *and link* in one click
  (``Directory.new_customer_access``): whoever locked the old link does not know the
  new one. A timed back-off instead of the lock was considered and left out: it would
  give a guesser who knows the link fresh attempts for as long as the consultation
  lives, and it would still let them keep the customer out (they can re-trigger it),
  while a new link ends both.
- Per address: ``pin_max_wrong_per_address`` (default 10) wrong PINs within
  ``pin_address_window`` seconds, across all consultations, lock the address out of
  every PIN form for ``pin_address_lockout`` seconds. This slows an attacker who holds
  many links (each with five guesses) and keeps one noisy address from burning the
  attempts of many consultations.

The customer's cookie (set after the right PIN) stays valid until the consultation
ends, so a dropped connection or a reloaded page comes back without the PIN.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from gateway.consultation import Consultation, Role
from web.throttle import FailureLimiter, address_key


class PinOutcome(Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"  # this consultation's PIN is dead
    ADDRESS_LOCKED = "address_locked"  # this address must wait (retry_after seconds)


@dataclass(frozen=True, slots=True)
class PinResult:
    outcome: PinOutcome
    remaining: int
    retry_after: float = 0.0


class PinGuard:
    def __init__(self, *, per_address: FailureLimiter | None = None) -> None:
        self.per_address = per_address

    def locked(self, consultation: Consultation) -> bool:
        return consultation.pin_locked

    def address_retry_after(self, address: str | None) -> float:
        if self.per_address is None or not address:
            return 0.0
        return self.per_address.retry_after(address_key(address))

    def attempt(
        self, consultation: Consultation, pin: str, address: str | None = None
    ) -> PinResult:
        if self.locked(consultation):
            return PinResult(PinOutcome.LOCKED, 0)
        wait = self.address_retry_after(address)
        if wait:
            return PinResult(PinOutcome.ADDRESS_LOCKED, 0, wait)
        expected = consultation.participants[Role.CUSTOMER].pin or ""
        # constant-time: the comparison must not tell how many leading digits were right
        if expected and hmac.compare_digest(expected.encode(), pin.encode()):
            return PinResult(PinOutcome.OK, consultation.pin_max_wrong - consultation.wrong_pins)
        remaining = consultation.pin_failed()
        if consultation.pin_locked:
            return PinResult(PinOutcome.LOCKED, 0)
        if self.per_address is not None and address:
            locked_for = self.per_address.fail(address_key(address))
            if locked_for:
                return PinResult(PinOutcome.ADDRESS_LOCKED, 0, locked_for)
        return PinResult(PinOutcome.WRONG, remaining)

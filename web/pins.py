"""Guessing the customer PIN: limits per consultation and per address.

- Per consultation: after ``pin_max_wrong`` (default 5) wrong PINs the customer link is
  dead for good and the advisor creates a new consultation. A 6-digit PIN has 10^6
  values, so an attacker who knows the link guesses right with a chance of 5·10^-6.
  Counting per consultation, not per address, means rotating addresses does not help.
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

MAX_WRONG_PINS = 5


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
    def __init__(
        self, max_wrong: int = MAX_WRONG_PINS, *, per_address: FailureLimiter | None = None
    ) -> None:
        self.max_wrong = max_wrong
        self.per_address = per_address
        self._wrong: dict[str, int] = {}

    def locked(self, consultation: Consultation) -> bool:
        return self._wrong.get(consultation.id, 0) >= self.max_wrong

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
            return PinResult(PinOutcome.OK, self.max_wrong - self._wrong.get(consultation.id, 0))
        wrong = self._wrong.get(consultation.id, 0) + 1
        self._wrong[consultation.id] = wrong
        if wrong >= self.max_wrong:
            return PinResult(PinOutcome.LOCKED, 0)
        if self.per_address is not None and address:
            locked_for = self.per_address.fail(address_key(address))
            if locked_for:
                return PinResult(PinOutcome.ADDRESS_LOCKED, 0, locked_for)
        return PinResult(PinOutcome.WRONG, self.max_wrong - wrong)

    def forget(self, consultation: Consultation) -> None:
        """``Directory.on_end`` hook: nothing about an ended consultation is kept."""
        self._wrong.pop(consultation.id, None)

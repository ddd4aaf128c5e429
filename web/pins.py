"""PIN attempts per consultation: after five wrong PINs the customer link is dead.

A 6-digit PIN has 10^6 values; five guesses give an attacker who knows the link a
chance of 5·10^-6, after which the advisor has to create a new consultation (and link).
Counting per consultation, not per address, means rotating addresses does not help.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from gateway.consultation import Consultation, Role

MAX_WRONG_PINS = 5


class PinOutcome(Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class PinResult:
    outcome: PinOutcome
    remaining: int


class PinGuard:
    def __init__(self, max_wrong: int = MAX_WRONG_PINS) -> None:
        self.max_wrong = max_wrong
        self._wrong: dict[str, int] = {}

    def locked(self, consultation: Consultation) -> bool:
        return self._wrong.get(consultation.id, 0) >= self.max_wrong

    def attempt(self, consultation: Consultation, pin: str) -> PinResult:
        if self.locked(consultation):
            return PinResult(PinOutcome.LOCKED, 0)
        expected = consultation.participants[Role.CUSTOMER].pin or ""
        # constant-time: the comparison must not tell how many leading digits were right
        if expected and hmac.compare_digest(expected.encode(), pin.encode()):
            return PinResult(PinOutcome.OK, self.max_wrong - self._wrong.get(consultation.id, 0))
        wrong = self._wrong.get(consultation.id, 0) + 1
        self._wrong[consultation.id] = wrong
        if wrong >= self.max_wrong:
            return PinResult(PinOutcome.LOCKED, 0)
        return PinResult(PinOutcome.WRONG, self.max_wrong - wrong)

    def forget(self, consultation: Consultation) -> None:
        """``Directory.on_end`` hook: nothing about an ended consultation is kept."""
        self._wrong.pop(consultation.id, None)

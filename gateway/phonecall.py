"""What the core knows of a telephone leg (docs/phone.md): the phone code, the call.

The SIP front-end (``gateway/phone/``) lives beside RTMP and WebRTC and is wired by the
composition root; the core only keeps what pages and events need: a consultation's
phone code (unique among the open consultations, dying with its consultation:
:class:`gateway.consultation.Directory` hands them out), and while a call carries the
customer's audio, a :class:`PhoneCall` with the caller's number *masked* (a phone number
is personal data: it is never stored or logged in full) and a way to hang up.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field

_NOT_DIGITS = re.compile(r"[^0-9+]")


def new_phone_code(digits: int, taken: Container[str]) -> str:
    """A random code of ``digits`` decimal digits not in ``taken``, without a leading
    zero (a code must read the same whatever a keypad or a form does with one)."""
    if digits < 8:
        raise ValueError("a phone code has at least 8 digits")
    low = 10 ** (digits - 1)
    while True:
        code = str(low + secrets.randbelow(9 * low))
        if code not in taken:
            return code


def group_code(code: str | None) -> str:
    """``1234567890`` → ``1234 5678 90``: easier to read out and type on a keypad."""
    if not code:
        return ""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def mask_number(number: str | None) -> str:
    """A caller's number as pages and logs may show it: the prefix up to the country code
    and the last two digits, e.g. ``+49 … 34`` (docs/phone.md). Unknown → ``unbekannt``
    is left to the page; here ``…``."""
    if not number:
        return "…"
    # a SIP URI or display form: keep the user part's digits and a leading +
    user = number.split("@", 1)[0].removeprefix("sip:").removeprefix("sips:").removeprefix("tel:")
    cleaned = _NOT_DIGITS.sub("", user)
    digits = cleaned.lstrip("+")
    if len(digits) < 4:
        return "…"
    if cleaned.startswith("+"):
        head = "+" + digits[:2]
    elif digits.startswith("00"):
        head = "+" + digits[2:4]
    elif digits.startswith("0"):
        head = "0"
    else:
        head = ""
    return f"{head} … {digits[-2:]}".strip()


@dataclass(eq=False)
class PhoneCall:
    """A telephone leg that carries the customer's audio in a consultation."""

    masked_number: str
    codec: str
    direction: str  # "in" (dial-in with the code) or "out" (the advisor's dial-out)
    hang_up: Callable[[], None]
    since: float = field(default_factory=time.time)

    def duration(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.since)

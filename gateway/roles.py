"""The two participants of a consultation."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADVISOR = "advisor"
    CUSTOMER = "customer"

    @property
    def other(self) -> Role:
        return Role.CUSTOMER if self is Role.ADVISOR else Role.ADVISOR

"""How many examples a hypothesis test runs.

``make test`` (and CI) runs every property test with the example count written at the
test. ``make unit`` is the quick loop while coding: it sets ``VB_FUZZ=quick`` and every
count is divided by ten (at least 20), so the fuzzers still run each property, on fewer
inputs. Counts are written as ``max_examples=examples(400)`` so the full number stays
visible where the test is.
"""

from __future__ import annotations

import os

from hypothesis import settings

QUICK = os.environ.get("VB_FUZZ", "") == "quick"

# Tests without their own count take hypothesis's default (100); the quick profile
# scales that the same way.
settings.register_profile("quick", max_examples=20)
if QUICK:
    settings.load_profile("quick")


def examples(full: int) -> int:
    """The example count for a property test whose full run uses ``full`` examples."""
    return max(20, full // 10) if QUICK else full

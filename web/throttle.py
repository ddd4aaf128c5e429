"""The failure limiter now lives in the core (gateway/throttle.py: the telephone leg's
phone codes use it too); re-exported for web/ modules and their tests."""

from gateway.addresses import address_key
from gateway.throttle import FailureLimiter

__all__ = ["FailureLimiter", "address_key"]

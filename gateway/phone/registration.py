"""The gateway as an extension of the PBX (``--sip-register``, docs/phone.md).

aiosipua's :class:`~aiosipua.Registration` sends REGISTER, answers the registrar's digest
challenge and refreshes at 90 % of the time granted. Around it, what an operator needs of
a PBX extension: a refused, lapsed or unanswered registration is tried again (30 s,
doubling to 5 min), each outcome is logged, and a stop removes the binding
(``Expires: 0``) so the PBX no longer routes calls here.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiosipua import Registration, RegistrationState, SipDigestAuth, SipUAC

log = logging.getLogger(__name__)

REGISTER_EXPIRES = 300  # s asked of the registrar; refreshed at 90 %
REGISTER_RETRY_MIN = 30.0  # s after a refused or lapsed registration, doubling ...
REGISTER_RETRY_MAX = 300.0  # ... up to this
REGISTER_ANSWER_TIMEOUT = 32.0  # s: RFC 3261's Timer F (64 * T1) for an unanswered REGISTER


class PbxRegistration:
    """One extension at one registrar, kept registered until :meth:`stop`."""

    def __init__(
        self,
        uac: SipUAC,
        aor: str,
        user: str,
        registrar: tuple[str, int],
        password: str | None,
        user_agent: str,
    ) -> None:
        auth = SipDigestAuth(user, password) if password else None
        self.registrar = registrar
        self.reg = Registration(
            uac, aor, registrar, expires=REGISTER_EXPIRES, auth=auth, user_agent=user_agent
        )
        self.reg.on_registered = self._registered
        self.reg.on_failed = lambda r, status, reason: self._retry(f"refused ({status} {reason})")
        self.reg.on_expired = lambda r: self._retry("expired without a refresh")
        self._delay = REGISTER_RETRY_MIN
        self._timer: asyncio.TimerHandle | None = None

    @property
    def state(self) -> str:
        """unregistered, registering, registered, failed or expired (for /ops)."""
        return self.reg.state.value

    def start(self) -> None:
        self.reg.register()
        # a registrar that never answers (aiosipua reports no transaction timeout to a
        # registration): after SIP's 32 s transaction time it counts as failed
        self._timer = asyncio.get_running_loop().call_later(
            REGISTER_ANSWER_TIMEOUT, self._unanswered
        )

    async def stop(self, timeout: float = 2.0) -> None:
        if self._timer is not None:
            self._timer.cancel()
        reg = self.reg
        if reg.state is not RegistrationState.REGISTERED:
            return
        reg.unregister()
        deadline = time.monotonic() + timeout
        while reg.state is not RegistrationState.UNREGISTERED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _registered(self, reg: Registration) -> None:
        self._delay = REGISTER_RETRY_MIN
        log.info("SIP: registered at %s:%d for %d s", *self.registrar, reg.granted_expires)

    def _unanswered(self) -> None:
        if self.reg.state is RegistrationState.REGISTERING:
            self._retry("not answered")

    def _retry(self, what: str) -> None:
        log.warning(
            "SIP: registration at %s:%d %s; next try in %.0f s", *self.registrar, what, self._delay
        )
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._delay, self.start)
        self._delay = min(self._delay * 2, REGISTER_RETRY_MAX)

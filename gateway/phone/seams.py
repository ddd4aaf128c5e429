"""aiosipua's private places the telephone leg relies on, in one module (as
``webrtc/seams.py`` keeps aiortc's). aiosipua is pinned to its minor version
(pyproject.toml) and ``tests/test_phone_units.py`` fails loudly when an upgrade moves one.

* ``SipUAS._handlers``: the method table; INFO is not in it (405), and DTMF by SIP INFO
  is the fallback RFC 4733 asks for with PBXs that do not relay telephone-events.
* ``SipUAS._calls``: the calls by Call-ID; a call we end with BYE stays there (only a
  received BYE removes it), so the leg removes it. A retransmitted INVITE (same Call-ID,
  before or after our 200) is taken by aiosipua 0.7.1 for a new call that replaces the
  first in this table; we put the first back and answer nothing new.
* ``SipTransport._dispatch``: parse and hand on; replaced so a request from outside
  ``--sip-allow`` is never parsed, and a parse failure logs one line, not a traceback;
  the replacement calls ``aiosipua.transport._stamp_via_received`` as the original does
  (RFC 3261 section 18.2.1 ``received``, RFC 3581 ``rport``).
* ``SipUAS._send_error``: a stateless error response (481 for an INFO outside a dialog).
* ``UdpSipTransport._udp_transport``: the socket; aiosipua's own UDP protocol asserts an
  ``asyncio.DatagramTransport``, which uvloop's is not, so ours sets it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiosipua import IncomingCall, SipRequest, SipUAS
from aiosipua.transport import _stamp_via_received


def add_method(
    uas: SipUAS, method: str, handler: Callable[[SipRequest, tuple[str, int]], Any]
) -> None:
    uas._handlers[method] = handler


def forget_call(uas: SipUAS, call_id: str) -> None:
    uas._calls.pop(call_id, None)


def restore_call(uas: SipUAS, call: IncomingCall) -> None:
    """Put ``call`` back as its Call-ID's call (after a retransmitted INVITE replaced it)."""
    uas._calls[call.call_id] = call


def call_count(uas: SipUAS) -> int:
    return len(uas._calls)


def send_error(uas: SipUAS, request: SipRequest, status: int, reason: str) -> None:
    uas._send_error(request, status, reason)


def stamp_via_received(request: SipRequest, addr: tuple[str, int]) -> None:
    _stamp_via_received(request, addr)

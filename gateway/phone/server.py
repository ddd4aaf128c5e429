"""The telephone front-end: a SIP user agent for the bank's PBX (docs/phone.md).

SIP over UDP and TCP on ``--sip-port`` with aiosipua (why this stack: docs/phone.md).
Only addresses in ``--sip-allow`` (the PBX, the trunk) are served: a request from anyone
else is not even parsed; it gets a 403 while the refusal budget lasts
(``sip_refusals_per_second``) and nothing after that (port 5060 is scanned constantly;
a scanner learns nothing and costs nothing). Over TCP such a peer is disconnected.

Each INVITE with an SDP offer of G.711 A-law/µ-law or G.722 is answered at once and
becomes a :class:`gateway.phone.leg.PhoneLeg`; DTMF comes as RFC 4733 telephone-events
or, as a fallback, SIP INFO. Wrong codes are counted per caller (the calling number,
kept in memory only) and over all calls, with the web PIN's limiter
(:class:`gateway.throttle.FailureLimiter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiosipua import (
    IncomingCall,
    OutgoingCall,
    SdpMessage,
    SdpNegotiationError,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUAC,
    SipUAS,
    TcpSipTransport,
    UdpSipTransport,
    build_sdp,
    negotiate_sdp,
)

from gateway.consultation import Consultation
from gateway.events import PhoneState
from gateway.phone import seams
from gateway.phone.leg import PhoneLeg
from gateway.phone.prompts import Prompts
from gateway.phone.registration import PbxRegistration
from gateway.phone.rtp import CODECS, PREFERENCE, parse_info_digit
from gateway.phonecall import mask_number
from gateway.service import Gateway
from gateway.throttle import FailureLimiter

log = logging.getLogger(__name__)
# aiosipua logs every INVITE's URIs at INFO ("Sent INVITE sip:me → sip:+49…"): a phone
# number must never reach a log unmasked, so only its warnings and errors are kept
logging.getLogger("aiosipua").setLevel(logging.WARNING)
# the access log (gateway/accesslog.py): time, masked number, outcome; never the number
access_log = logging.getLogger("gateway.access")

MAX_DATAGRAM = 16 * 1024  # a SIP message over UDP stays under the path MTU anyway
USER_AGENT = "Video-Beratung"


def accept_comfort_noise(offer: SdpMessage, answer: SdpMessage) -> int | None:
    """RFC 3389 comfort noise, if the offer has it at 8 kHz: in the answer too (same
    payload type), so the phone may describe its pauses instead of sending them; its
    payload type, or None. aiosipua's negotiation answers the chosen codec alone."""
    if offer.audio is None or answer.audio is None:
        return None
    pt = next(
        (
            c.payload_type
            for c in offer.audio.codecs
            if c.encoding_name.upper() == "CN" and c.clock_rate == 8000
        ),
        None,
    )
    if pt is not None and str(pt) not in answer.audio.formats:
        answer.audio.formats.append(str(pt))
        answer.audio.attributes.setdefault("rtpmap", []).append(f"{pt} CN/8000")
    return pt


class RefusalBudget:
    """A token bucket: how many refusals (403) outsiders get per second, all together."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate * 2)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.refused = 0  # answered with 403
        self.ignored = 0  # over the budget: not answered

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused += 1
            return True
        self.ignored += 1
        return False


@dataclass
class SipGate:
    """Who may talk to the SIP port, and what the rest cost."""

    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    budget: RefusalBudget
    parse_errors: int = 0
    _last_parse_log: float = field(default=0.0)

    def allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    def parse_failed(self, addr: tuple[str, int], exc: Exception) -> None:
        self.parse_errors += 1
        now = time.monotonic()
        if now - self._last_parse_log >= 10.0:  # one line per 10 s at most
            self._last_parse_log = now
            log.info(
                "SIP: unparsable message from the PBX (%s; %d so far)",
                type(exc).__name__,
                self.parse_errors,
            )


def _forbidden(raw: bytes) -> bytes | None:
    """A 403 for a request (its Via, From, To, Call-ID, CSeq copied), or None."""
    try:
        msg = SipMessage.parse(raw)
    except Exception:
        return None
    if not isinstance(msg, SipRequest) or msg.method.upper() == "ACK":
        return None
    resp = SipResponse(status_code=403, reason_phrase="Forbidden")
    for name in ("via", "from", "to", "call-id", "cseq"):
        for value in msg.headers.get(name)[:8]:
            resp.headers.append(name.title() if name != "call-id" else "Call-ID", value)
    return bytes(resp)


class _UdpProtocol(asyncio.DatagramProtocol):
    """aiosipua's own protocol asserts ``isinstance(transport, asyncio.DatagramTransport)``,
    which uvloop's UDP transport is not (docs/phone.md): ours only hands datagrams on."""

    def __init__(self, owner: GatedUdpTransport) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner._udp_transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for a peer gone away: its call ends by timeout or BYE


class GatedUdpTransport(UdpSipTransport):
    gate: SipGate
    dispatch_errors: int = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport  # type: ignore[assignment]

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        _gated_dispatch(self, data, addr)


class GatedTcpTransport(TcpSipTransport):
    gate: SipGate
    dispatch_errors: int = 0

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        if not peer or not self.gate.allowed(str(peer[0])):
            self.gate.budget.ignored += 1
            writer.close()  # an outsider gets no SIP over TCP at all
            return
        await super()._handle_connection(reader, writer)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        _gated_dispatch(self, data, addr)


def _gated_dispatch(transport: Any, data: bytes, addr: tuple[str, int]) -> None:
    gate: SipGate = transport.gate
    if not gate.allowed(addr[0]):
        if len(data) <= MAX_DATAGRAM and gate.budget.take():
            answer = _forbidden(data)
            # to the source address, never to the Via: a forged Via must not make us
            # reflect traffic at someone else
            if answer is not None and isinstance(transport, UdpSipTransport):
                udp = transport._udp_transport
                if udp is not None:
                    udp.sendto(answer, addr)
        return
    if len(data) > MAX_DATAGRAM:
        gate.parse_failed(addr, ValueError("oversized"))
        return
    try:
        msg = SipMessage.parse(data)
        if isinstance(msg, SipRequest):
            seams.stamp_via_received(msg, addr)
    except Exception as exc:  # hostile input: one line, no traceback
        gate.parse_failed(addr, exc)
        return
    if transport.on_message is None:
        return
    try:
        transport.on_message(msg, addr)
    except Exception as exc:  # a request the stack could not handle (bad SDP, …)
        transport.dispatch_errors += 1
        gate.parse_failed(addr, exc)


class PhoneFrontEnd:
    """SIP on UDP and TCP, the phone legs, the code limits."""

    def __init__(self, gateway: Gateway, *, host: str, port: int) -> None:
        cfg = gateway.config
        limits = cfg.limits
        self.gateway = gateway
        self.host = host
        self.port = port
        # the address in Contact and SDP: the bound one, unless that is a wildcard
        self.media_host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.gate = SipGate(
            [ipaddress.ip_network(c, strict=False) for c in cfg.sip_allow],
            RefusalBudget(limits.sip_refusals_per_second),
        )
        window, lockout = limits.phone_wrong_window, limits.phone_wrong_lockout
        self.per_caller = FailureLimiter(limits.phone_wrong_per_caller, window, lockout)
        self.overall = FailureLimiter(limits.phone_wrong_global, window, lockout)
        self.prompts: Prompts | None = None
        self.legs: dict[str, PhoneLeg] = {}
        self.outcomes: dict[str, int] = {}
        self._uas: list[SipUAS] = []
        self.uac: SipUAC | None = None
        # dial-out goes through --sip-trunk; its answers come from there, so it is allowed
        self.trunk: tuple[str, int] | None = None
        if cfg.sip_trunk:
            from gateway.config import split_host_port

            self.trunk = split_host_port(cfg.sip_trunk, "--sip-trunk")
            with contextlib.suppress(ValueError):
                self.gate.allow.append(ipaddress.ip_network(self.trunk[0]))
        # the gateway as an extension of the PBX (--sip-register): the registrar may call
        self.registration: PbxRegistration | None = None
        self._register: tuple[str, str, tuple[str, int]] | None = None
        if cfg.sip_register:
            from gateway.config import sip_registration

            self._register = sip_registration(cfg.sip_register)
            with contextlib.suppress(ValueError):
                self.gate.allow.append(ipaddress.ip_network(self._register[2][0]))
        self._password = cfg.sip_password
        self._tasks: set[asyncio.Task[Any]] = set()
        # INVITEs being answered or answered, by Call-ID (retransmissions are not calls)
        self._invites: dict[str, IncomingCall] = {}

    async def start(self) -> None:
        self.prompts = await Prompts.synthesize()
        advertised = (self.media_host, self.port)
        for cls in (GatedUdpTransport, GatedTcpTransport):
            transport = cls(local_addr=(self.host, self.port))
            transport.gate = self.gate
            uac = None
            if cls is GatedUdpTransport and (self.trunk is not None or self._register):
                uac = self.uac = SipUAC(transport, advertised_addr=advertised)
            uas = SipUAS(transport, user_agent=USER_AGENT, advertised_addr=advertised, uac=uac)
            uas.on_invite = partial(self._on_invite, uas)
            uas.on_reinvite = partial(self._on_reinvite, uas)
            uas.on_bye = self._on_bye
            uas.on_ack_timeout = self._on_gone
            seams.add_method(uas, "INFO", partial(self._on_info, uas))
            await uas.start()
            self._uas.append(uas)
        log.info(
            "SIP on %s:%d (UDP, TCP) for %d allowed network(s)",
            self.host,
            self.port,
            len(self.gate.allow),
        )
        if self._register is not None and self.uac is not None:
            self.registration = PbxRegistration(
                self.uac, *self._register, self._password, USER_AGENT
            )
            self.registration.start()

    async def stop(self) -> None:
        for leg in list(self.legs.values()):
            leg.end("shutdown", send_bye=True)
        if self.registration is not None:
            await self.registration.stop()  # the PBX stops routing calls here
        for uas in self._uas:
            with contextlib.suppress(Exception):
                await uas.stop()
        self._uas.clear()

    # -- calls ------------------------------------------------------------------------------
    def _caller_key(self, call: IncomingCall) -> str:
        """The calling number as a limiter key: the From URI's user part (its host and
        port are the PBX's, or change per call), hashed, so not even memory holds it.
        Callers without a number (``anonymous``) share one key."""
        user = (call.caller or "").split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
        return "caller:" + hashlib.sha256(user.encode()).hexdigest()[:24]

    def _on_invite(self, uas: SipUAS, call: IncomingCall) -> None:
        first = self._invites.get(call.call_id)
        if first is not None:
            # A retransmitted INVITE (RFC 3261 17.2.1: the server transaction absorbs it).
            # aiosipua took it for a new call and replaced the first in its table: put the
            # first back, so the ACK and BYE match the dialog we answered with.
            seams.restore_call(uas, first)
            return
        self._invites[call.call_id] = call
        task = asyncio.get_running_loop().create_task(self._answer(uas, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, uas: SipUAS, call: IncomingCall) -> None:
        try:
            await self._answer_call(uas, call)
        finally:
            if call.call_id not in self.legs:  # refused: a later INVITE is a new call
                self._invites.pop(call.call_id, None)

    async def _answer_call(self, uas: SipUAS, call: IncomingCall) -> None:
        masked = mask_number(call.caller)
        if not self.gateway.accepting or self.prompts is None:
            call.reject(503, "Service Unavailable")
            return
        if (
            self.overall.retry_after("all") > 0
            or self.per_caller.retry_after(self._caller_key(call)) > 0
        ):
            call.reject(603, "Decline")
            self._log_call(masked, "in", "locked")
            return
        offer = call.sdp_offer
        supported = [CODECS[name][1] for name in PREFERENCE]
        if offer is None or offer.audio is None:
            call.reject(488, "Not Acceptable Here")
            self._log_call(masked, "in", "no-sdp")
            return
        dtmf_pt = next(
            (
                c.payload_type
                for c in offer.audio.codecs
                if c.encoding_name.lower() == "telephone-event"
            ),
            None,
        )
        try:
            answer, chosen = negotiate_sdp(
                offer,
                self.media_host,
                0,
                supported_codecs=supported,
                dtmf_payload_type=dtmf_pt or 0,
            )
        except SdpNegotiationError:
            call.reject(488, "Not Acceptable Here")
            self._log_call(masked, "in", "no-codec")
            return
        remote = offer.rtp_address
        if remote is None:
            call.reject(488, "Not Acceptable Here")
            return
        name = next(n for n, v in CODECS.items() if v[1] == chosen)
        leg = self._leg(
            masked,
            codec=CODECS[name][0],
            payload_type=chosen,
            dtmf_payload_type=dtmf_pt,
            remote_rtp=remote,
            rtp_sources=(call.source_addr[0],),
            check_code=partial(self._check_code, self._caller_key(call)),
            hang_up_sip=call.hangup,
            on_end=partial(self._leg_ended, uas, call.call_id),
        )
        if leg.codec not in self.prompts.ready:  # encoded once per codec, off the loop
            await asyncio.to_thread(self.prompts.encode_for, leg.codec)
        try:
            port = await leg.open(self.host)
        except OSError as exc:
            log.warning("phone: no RTP port (%s)", exc)
            call.reject(503, "Service Unavailable")
            return
        audio = answer.audio
        assert audio is not None  # negotiate_sdp answered the offer's audio section
        audio.port = port
        leg.cn_payload_type = accept_comfort_noise(offer, answer)
        self.legs[call.call_id] = leg
        call.accept(answer)
        leg.start()

    def _check_code(self, caller: str, leg: PhoneLeg, code: str) -> tuple[str, Consultation | None]:
        if self.overall.retry_after("all") > 0 or self.per_caller.retry_after(caller) > 0:
            return "locked", None
        consultation = self.gateway.directory.by_phone_code(code)
        if consultation is None:
            locked = self.per_caller.fail(caller) > 0
            locked = self.overall.fail("all") > 0 or locked
            if locked:
                log.warning("phone: wrong codes: dial-in locked for a caller or for all")
            return ("locked" if locked else "wrong"), None
        self.per_caller.succeed(caller)
        return "ok", consultation

    def _on_reinvite(self, uas: SipUAS, call: IncomingCall) -> None:
        """A re-INVITE (hold, a new media address, a session refresh): answer with the
        same codec and port, follow a new address; ``sendonly``/``inactive`` (hold)
        simply means no RTP arrives for a while, so the timeout waits for it."""
        leg = self.legs.get(call.call_id)
        if leg is None or call.sdp_answer is None:
            call.reject(481, "Call/Transaction Does Not Exist")
            return
        offer = call.sdp_offer
        if offer is not None and offer.rtp_address is not None:
            leg.remote_rtp = offer.rtp_address
            on_hold = offer.audio is not None and offer.audio.direction in ("sendonly", "inactive")
            if on_hold:
                leg.last_rtp = time.monotonic() + 3600.0  # held: silence is expected
            else:
                leg.last_rtp = time.monotonic()
        call.accept(call.sdp_answer)

    def _on_bye(self, call: IncomingCall, request: SipRequest) -> None:
        leg = self.legs.get(call.call_id)
        if leg is not None:
            leg.end("hangup", send_bye=False)

    def _on_gone(self, call: IncomingCall) -> None:
        leg = self.legs.get(call.call_id)
        if leg is not None:
            leg.end("no-ack", send_bye=False)

    def _on_info(self, uas: SipUAS, request: SipRequest, addr: tuple[str, int]) -> None:
        """DTMF by SIP INFO (the fallback): 200 for a known dialog, the digit to its leg."""
        call = uas.get_call(request.call_id or "")
        leg = self.legs.get(request.call_id or "")
        if call is None or leg is None:
            seams.send_error(uas, request, 481, "Call/Transaction Does Not Exist")
            return
        resp = call.dialog.create_response(request, 200, "OK")
        resp.headers.set_single("User-Agent", USER_AGENT)
        uas.transport.send_reply(resp)
        digit = parse_info_digit(request.content_type, request.text)
        if digit is not None:
            leg.digit(digit)

    def _leg_ended(self, uas: SipUAS, call_id: str, leg: PhoneLeg, outcome: str) -> None:
        self.legs.pop(call_id, None)
        self._invites.pop(call_id, None)
        seams.forget_call(uas, call_id)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self._log_call(leg.masked_number, leg.direction, outcome)

    def _log_call(self, masked: str, direction: str, outcome: str) -> None:
        access_log.info('%s "PHONE %s" %s', masked, direction.upper(), outcome)

    # -- dial-out -----------------------------------------------------------------------------
    def dial(self, consultation: Consultation, number: str) -> None:
        """The advisor's dial-out (``Gateway.phone_dialer``): call ``number`` through the
        trunk; the callee hears the announcement and joins with 1. The number lives only
        in this call's SIP dialog (never stored; masked in logs and events)."""
        task = asyncio.get_running_loop().create_task(self._dial(consultation, number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leg(self, masked: str, **call: Any) -> PhoneLeg:
        """A leg with what every call shares: prompts, the transcode pool, the limits;
        ``call`` has what this call decides (codec, addresses, what a code does)."""
        assert self.prompts is not None
        limits = self.gateway.config.limits
        return PhoneLeg(
            prompts=self.prompts,
            pool=self.gateway.transcoders,
            masked_number=masked,
            code_digits=limits.phone_code_digits,
            tries=limits.phone_code_tries,
            rtp_timeout=limits.phone_rtp_timeout,
            code_timeout=limits.phone_code_timeout,
            **call,
        )

    async def _dial(self, consultation: Consultation, number: str) -> None:
        assert self.uac is not None and self.trunk is not None and self.prompts is not None
        uas = self._uas[0]
        masked = mask_number(number)
        call: OutgoingCall | None = None

        def hang_up() -> None:
            if call is not None and self.uac is not None:
                call.hangup(self.uac)

        leg = self._leg(
            masked,
            codec="alaw",
            payload_type=CODECS["PCMA"][1],
            dtmf_payload_type=101,
            remote_rtp=self.trunk,
            rtp_sources=(self.trunk[0],),
            check_code=lambda leg, code: ("wrong", None),
            hang_up_sip=hang_up,
            on_end=lambda leg, outcome: None,
            direction="out",
            consultation=consultation,
        )
        port = await leg.open(self.host)
        # G.711 A-law (Germany) with telephone-event: what every German trunk takes
        offer = build_sdp(self.media_host, port, 8, "PCMA", 8000, dtmf_payload_type=101)
        call = self.uac.send_invite(
            f"sip:videoberatung@{self.media_host}:{self.port}",
            f"sip:{number}@{self.trunk[0]}:{self.trunk[1]}",
            self.trunk,
            offer,
            user_agent=USER_AGENT,
        )
        try:
            await call.wait_answered(timeout=60.0)
        except (TimeoutError, RuntimeError) as exc:
            with contextlib.suppress(Exception):
                call.cancel(self.uac)
            leg.end("no-answer", send_bye=False)
            outcome = "rejected" if isinstance(exc, RuntimeError) else "no-answer"
            self._log_call(masked, "out", outcome)
            if not consultation.ended:
                consultation.emit(PhoneState(active=False, outcome=outcome))
            return
        answer = call.sdp_answer
        if answer is None or answer.rtp_address is None or consultation.ended:
            leg.end("ended", send_bye=True)
            self._log_call(masked, "out", "no-sdp")
            return
        leg.remote_rtp = answer.rtp_address
        leg.rtp_sources.add(answer.rtp_address[0])
        if answer.audio is not None:
            events = [
                c.payload_type
                for c in answer.audio.codecs
                if c.encoding_name.lower() == "telephone-event"
            ]
            leg.dtmf_payload_type = events[0] if events else None
        leg.on_end = partial(self._leg_ended, uas, call.call_id)
        self.legs[call.call_id] = leg
        leg.start()

    def describe(self) -> dict[str, Any]:
        """For /ops: the legs (codec, state, how long), no numbers beyond the masked."""
        now = time.monotonic()
        return {
            "legs": [
                {
                    "codec": leg.codec,
                    "state": leg.state,
                    "direction": leg.direction,
                    "seconds": round(now - leg.started, 1),
                }
                for leg in self.legs.values()
            ],
            "outcomes": dict(self.outcomes),
            "refused": self.gate.budget.refused,
            "ignored": self.gate.budget.ignored,
            "parse_errors": self.gate.parse_errors,
            # --sip-register: unregistered, registering, registered, failed, expired
            "registration": self.registration.state if self.registration else None,
        }

"""One telephone call: its RTP, the prompts and the code, then the customer's audio.

A leg moves through explicit states (the h11 habit, docs/phone.md):

``greeting``/``code`` (the caller hears the welcome and types the phone code) →
``joined`` (the call carries the customer's audio) → ``closing`` (a last prompt plays)
→ ``ended``. A dial-out leg starts in ``confirm`` (the callee presses 1 to join).

While joined, the leg takes the customer's audio in the consultation
(:meth:`gateway.media.PublishedStream.take_audio`: the page's microphone is dropped) and
receives the advisor's through :func:`gateway.routing.connect` with the codec it
negotiated; the transcoder pool turns Opus (or a Flash codec) into G.711/G.722 and back.
RTP is paced here in 20 ms packets, from a small buffer (the jitter of the transcoder's
output is absorbed, not passed on; a buffer past :data:`MAX_BUFFER_MS` is cut, counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.consultation import Connection, Consultation, Participant, Role
from gateway.events import PhoneState
from gateway.latency import METER
from gateway.media import AUDIO, AudioParams, MediaUnit, PublishedStream
from gateway.phone.rtp import (
    CODECS,
    FRAME_BYTES,
    PTIME_MS,
    RTP_CLOCK,
    DigitCollector,
    Packetiser,
    RtpPacket,
    parse_rtp,
    sender_report,
)
from gateway.phonecall import PhoneCall
from gateway.routing import Route, SinkCaps, TranscoderSource, connect

if TYPE_CHECKING:
    from gateway.phone.prompts import Prompts

log = logging.getLogger(__name__)

# The advisor's audio waiting to be sent: more than this is latency nobody wants
# (the transcoder delivers in bursts under load, and a burst never drains, as input and
# output run at the same rate); the oldest is cut back to TRIM_TO_MS. bench/phone.py
# measured p95 200 ms added latency with 200/60 ms, under 100 ms with 100/40 ms.
MAX_BUFFER_MS = 100
TRIM_TO_MS = 40
TICK = PTIME_MS / 1000
# How far ahead of the 20 ms schedule the consultation's audio may be sent (_send_ahead);
# what arrives beyond that waits in ``outgoing`` for its slot.
SEND_AHEAD = 0.06
SLOT_SLACK = 0.001  # a pacer woken this early for its slot sends it
STANDING_S = 0.5  # a whole packet waiting this long without a break is a standing queue
RTCP_INTERVAL = 5.0  # RFC 3550 section 6.2: about 5 s for a two-party session
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def phone_caps(codec: str) -> SinkCaps:
    """A telephone leg takes its own codec's audio as is, and no video."""
    return SinkCaps(frozenset(), frozenset({codec}), None, codec)


@dataclass
class LegOutcome:
    outcome: str  # joined, hangup, timeout, wrong-code, locked, ended, busy, refused
    joined: bool


class PhoneSink:
    """The advisor's audio for one leg (a :class:`gateway.media.Receiver`)."""

    def __init__(self, leg: PhoneLeg) -> None:
        self.leg = leg

    def deliver(self, unit: MediaUnit) -> bool:
        if unit.kind == AUDIO and not unit.config and unit.codec == self.leg.codec:
            self.leg.queue_audio(unit)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        pass

    def stream_stopped(self, stream: PublishedStream) -> None:
        self.leg.outgoing.clear()


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: PhoneLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.leg.rtp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the far end's port is closed (a phone that hung up
        # without BYE); the RTP timeout ends the leg.
        pass


@dataclass
class _Noise:
    """Comfort noise being played into the consultation (RFC 3389)."""

    frames: list[bytes]
    timestamp: int  # the next frame's RTP timestamp (the phone's clock)
    due: float  # loop time the next frame is due
    count: int = 0


class PhoneLeg:
    """One call. ``hang_up_sip`` sends the BYE; ``check_code`` decides a code."""

    def __init__(
        self,
        *,
        codec: str,
        payload_type: int,
        dtmf_payload_type: int | None,
        remote_rtp: tuple[str, int],
        rtp_sources: tuple[str, ...] = (),
        prompts: Prompts,
        pool: TranscoderSource | None,
        masked_number: str,
        code_digits: int,
        tries: int,
        rtp_timeout: float,
        code_timeout: float,
        check_code: Callable[[PhoneLeg, str], tuple[str, Consultation | None]],
        hang_up_sip: Callable[[], object],
        on_end: Callable[[PhoneLeg, str], None],
        direction: str = "in",
        consultation: Consultation | None = None,
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.remote_rtp = remote_rtp
        # RTP is also taken from these addresses (the SIP peer's: a PBX whose SDP names
        # an address its media does not come from, RFC 4961 symmetric RTP / latching)
        self.rtp_sources: set[str] = set(rtp_sources)
        self.prompts = prompts
        self.pool = pool
        self.masked_number = masked_number
        self.code_digits = code_digits
        self.tries_left = tries
        self.rtp_timeout = rtp_timeout
        self.code_timeout = code_timeout
        self.check_code = check_code
        self.hang_up_sip = hang_up_sip
        self.on_end = on_end
        self.direction = direction
        self.lang = "de"
        self.state = "confirm" if direction == "out" else "greeting"
        self.digits = ""
        self.outcome = ""
        self.consultation: Consultation | None = consultation
        self._collector = DigitCollector()
        self._packetiser = Packetiser(payload_type)
        self._prompt: deque[bytes] = deque()
        self._after_prompt: Callable[[], None] | None = None
        self.outgoing = bytearray()
        self._outgoing_arrived: deque[tuple[int, float, str]] = deque()  # (end, arrived, origin)
        self._transport: asyncio.DatagramTransport | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._next_at = 0.0  # loop time of the next unfilled 20 ms slot (_pace)
        self._waiting_since: float | None = None  # a whole packet waits since (loop time)
        # RFC 3389: the payload type of comfort noise if the call negotiated it, and the
        # noise the consultation hears while the phone describes rather than sends
        self.cn_payload_type: int | None = None
        self._noise: _Noise | None = None
        self._route: Route | None = None
        self._connection: Connection | None = None
        self._owns_stream = False
        self._announced_for: Participant | None = None
        self._stream: PublishedStream | None = None
        self._rtp_base: tuple[int, float] | None = None  # (first RTP ts, its session ms)
        self.last_rtp = time.monotonic()
        self.started = time.monotonic()
        self.joined_at: float | None = None
        self.rx_packets = 0
        self.rx_foreign = 0
        self.trimmed_ms = 0
        self.last_digit_at: float | None = None
        self.first_audio_after_join: float | None = None
        rate = CODECS[next(k for k, v in CODECS.items() if v[0] == codec)][2]
        self._params = AudioParams(rate, 1)

    # -- life -------------------------------------------------------------------------
    async def open(self, host: str) -> int:
        """Bind the RTP socket; its port (for the SDP answer)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), local_addr=(host, 0)
        )
        self._transport = transport
        return int(transport.get_extra_info("sockname")[1])

    def start(self) -> None:
        """The call is answered: greet (or ask the dial-out callee to press 1)."""
        self.last_rtp = time.monotonic()
        self.play("dialout" if self.direction == "out" else "welcome")
        self._pacer = asyncio.get_running_loop().create_task(self._pace(), name="phone-rtp")

    def play(self, name: str, then: Callable[[], None] | None = None) -> None:
        """Replace whatever plays with prompt ``name`` (in the caller's language)."""
        clip = self.prompts.clip(name, self.lang, self.codec)
        self._prompt = deque(
            clip[i : i + FRAME_BYTES].ljust(FRAME_BYTES, clip[-1:] or b"\0")
            for i in range(0, len(clip), FRAME_BYTES)
        )
        self._after_prompt = then

    async def _pace(self) -> None:
        """One 20 ms packet per slot on an absolute schedule (no drift), RTCP now and
        then, and the end of the leg when the far end went silent for ``rtp_timeout``.

        A slot the consultation's audio already filled (:meth:`_send_ahead`: sent the
        moment it was transcoded) is not sent again; a slot nothing filled gets the
        prompt or comfort silence, so the phone hears an unbroken stream either way."""
        loop = asyncio.get_running_loop()
        self._next_at = loop.time()
        next_rtcp = self._next_at + RTCP_INTERVAL
        try:
            while self.state != "ended":
                now = loop.time()
                if now - self._next_at > 0.2:  # the loop stalled: start afresh, do not burst
                    self._next_at = now
                self._fill_noise(now)
                if now >= self._next_at - SLOT_SLACK:  # due, and not filled ahead
                    self._send_frame()
                    self._next_at += TICK
                if now >= next_rtcp:
                    next_rtcp = now + RTCP_INTERVAL
                    self._send(sender_report(self._packetiser, time.time() + NTP_EPOCH_OFFSET))
                mono = time.monotonic()
                if mono - self.last_rtp > self.rtp_timeout:
                    self.end("timeout", send_bye=True)
                    return
                if self.state in ("greeting", "code") and mono - self.started > self.code_timeout:
                    self.finish("goodbye", "wrong-code")
                await asyncio.sleep(max(0.0, self._next_at - loop.time()))
        except asyncio.CancelledError:
            pass

    def _send_ahead(self, now: float) -> None:
        """Send the consultation's audio as soon as a whole packet of it is there rather
        than at the next slot: a slot waited for adds up to 20 ms, and a standing queue
        behind a start-up burst kept 60-90 ms (bench/phone.py, p95 93 ms). Up to
        :data:`SEND_AHEAD` of slots are filled early; the phone's own jitter buffer plays
        them on their RTP timestamps, which stay 20 ms apart."""
        if self._prompt or self.state != "joined" or self._pacer is None:
            return
        while len(self.outgoing) >= FRAME_BYTES and self._next_at - now < SEND_AHEAD:
            self._send_frame()
            self._next_at += TICK
        if len(self.outgoing) < FRAME_BYTES:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > STANDING_S:
            # A standing queue: input and output run at the same rate, so what a burst
            # (the start, a stall) put here never drains by itself. Drop it, and count
            # the schedule from now: the packets sent ahead were simply early.
            self._drop(len(self.outgoing) - len(self.outgoing) % FRAME_BYTES)
            self._next_at = now
            self._waiting_since = None

    def _drop(self, cut: int) -> None:
        """Drop the oldest ``cut`` bytes of the consultation's audio (counted)."""
        del self.outgoing[:cut]
        self.trimmed_ms += cut // 8
        self._outgoing_arrived = deque(
            (end - cut, at, origin) for end, at, origin in self._outgoing_arrived if end > cut
        )

    def _send_frame(self) -> None:
        if self._prompt:
            frame = self._prompt.popleft()
            if not self._prompt and self._after_prompt is not None:
                after, self._after_prompt = self._after_prompt, None
                after()
        elif self.state == "joined" and self.outgoing:
            # A part of a packet when its slot is due (the resampler's first output is
            # short of whole packets) goes out padded with silence: a standing part
            # would hold every later packet's tail back by a slot.
            frame = bytes(self.outgoing[:FRAME_BYTES])
            del self.outgoing[:FRAME_BYTES]
            if len(frame) < FRAME_BYTES:
                frame += self.prompts.silence(self.codec)[len(frame) :]
            self._observe_latency()
        else:
            frame = self.prompts.silence(self.codec)
        self._send(self._packetiser.packet(frame))

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, self.remote_rtp)

    # -- incoming RTP ---------------------------------------------------------------------
    def rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.remote_rtp[0] and addr[0] not in self.rtp_sources:
            self.rx_foreign += 1  # only the negotiated peer (or its PBX) may talk here
            return
        packet = parse_rtp(data)
        if packet is None:
            return  # RTCP or garbage; both keep nobody alive
        self.last_rtp = time.monotonic()
        self.rx_packets += 1
        if addr != self.remote_rtp:  # symmetric RTP (RFC 4961): answer where it comes from
            self.remote_rtp = addr
        if self.dtmf_payload_type is not None and packet.payload_type == self.dtmf_payload_type:
            digit = self._collector.feed(packet)
            if digit is not None:
                self.digit(digit)
        elif packet.payload_type == self.cn_payload_type and self.state == "joined":
            self._comfort_noise(packet)
        elif packet.payload_type == self.payload_type and self.state == "joined":
            self._noise = None  # speech again: the phone's noise description ends
            self._publish(packet)

    # -- comfort noise (RFC 3389) -----------------------------------------------------------
    def _comfort_noise(self, packet: RtpPacket) -> None:
        """The phone stopped sending in a pause and described its background noise (the
        level byte, -dBov): the consultation hears that noise, not a hole, until speech
        comes again (RFC 3389 section 4). A new description only changes the level."""
        level = packet.payload[0] & 0x7F if packet.payload else 127
        frames = self.prompts.noise(self.codec, level)
        if self._noise is None:
            now = asyncio.get_running_loop().time()
            self._noise = _Noise(frames, packet.timestamp, now)
        else:
            self._noise.frames = frames
        self._fill_noise(asyncio.get_running_loop().time())

    def _fill_noise(self, now: float) -> None:
        """Publish the noise frames due by ``now`` (called per packet and by the pacer)."""
        noise = self._noise
        if noise is None:
            return
        if now - noise.due > 0.2:  # the loop stalled: go on from now, do not burst
            noise.due = now
        while noise.due <= now:
            frame = noise.frames[noise.count % len(noise.frames)]
            self._publish(RtpPacket(self.payload_type, 0, noise.timestamp, 0, frame))
            noise.timestamp = (noise.timestamp + RTP_CLOCK * PTIME_MS // 1000) & 0xFFFFFFFF
            noise.due += TICK
            noise.count += 1

    def _publish(self, packet: RtpPacket) -> None:
        if self._stream is None:
            return
        now_ms = time.monotonic() * 1000
        if self._rtp_base is None:
            self._rtp_base = (packet.timestamp, now_ms)
        first_ts, base_ms = self._rtp_base
        progress = ((packet.timestamp - first_ts) & 0xFFFFFFFF) * 1000 / RTP_CLOCK
        if progress > 2**31 * 1000 / RTP_CLOCK:  # a packet from before the first one
            return
        unit = MediaUnit(
            AUDIO,
            self.codec,
            int(base_ms + progress) & 0xFFFFFFFF,
            packet.payload,
            audio=self._params,
            arrived=time.perf_counter(),
            origin="phone",
        )
        self._stream.push_taken_audio(self, unit)

    # -- digits -----------------------------------------------------------------------------
    def digit(self, digit: str) -> None:
        """One key press (RFC 4733 event or SIP INFO)."""
        self.last_digit_at = time.perf_counter()
        if self.state == "confirm":
            if digit == "1":
                self.join()
            return
        if self.state not in ("greeting", "code"):
            return
        if digit == "*":
            self.lang = "en" if self.lang == "de" else "de"
            self.digits = ""
            self.play("welcome")
            return
        self.state = "code"
        self._prompt.clear()  # a key press interrupts the announcement
        self._after_prompt = None
        if digit == "#":
            if self.digits:
                self._submit()
            return
        if digit.isdigit():
            self.digits += digit
            if len(self.digits) >= self.code_digits:
                self._submit()

    def _submit(self) -> None:
        code, self.digits = self.digits, ""
        verdict, consultation = self.check_code(self, code)
        if verdict == "ok" and consultation is not None:
            if consultation.phone is not None:
                self.finish("busy", "busy")
                return
            self.consultation = consultation
            self.join()
            return
        if verdict == "locked":
            self.finish("goodbye", "locked")
            return
        self.tries_left -= 1
        if self.tries_left <= 0:
            self.finish("goodbye", "wrong-code")
        else:
            self.play("wrong")

    # -- in the consultation ----------------------------------------------------------------
    def join(self) -> None:
        consultation = self.consultation
        if consultation is None or consultation.ended:
            self.finish("ended", "ended")
            return
        self.state = "joined"
        self.joined_at = time.monotonic()
        stream = consultation.streams[Role.CUSTOMER]
        self._stream = stream
        stream.take_audio(self)
        if not stream.live:
            # nobody publishes for the customer yet (a Flash page only watching, a page
            # in chat): the call is the customer's publisher; a page that publishes later
            # takes the stream over and the call keeps its audio. A phone has a
            # microphone and no camera: the customer's media state says so (not "both
            # on", which a stream without a device announcement would mean).
            participant = consultation.participants[Role.CUSTOMER]
            if not participant.announced:
                participant.announced = True
                participant.camera, participant.microphone = False, True
                self._announced_for = participant
            stream.start("phone", owner=self, on_preempt=lambda: None)
            self._owns_stream = True
        self._connection = Connection("phone", close=self.hang_up, codecs_in={AUDIO: self.codec})
        consultation.attach(Role.CUSTOMER, self._connection)
        consultation.features.add("phone")
        consultation.phone = PhoneCall(self.masked_number, self.codec, self.direction, self.hang_up)
        self._route = connect(
            consultation, Role.CUSTOMER, PhoneSink(self), phone_caps(self.codec), self.pool
        )  # type: ignore[arg-type]
        consultation.emit(consultation.phone_state())
        self.play("chime")

    def queue_audio(self, unit: MediaUnit) -> None:
        if self.state != "joined":
            return
        if self.first_audio_after_join is None:
            self.first_audio_after_join = time.perf_counter()
        if not self.outgoing and len(unit.payload) % FRAME_BYTES:
            # Into an empty buffer (the start, after a gap) a part of a packet goes at
            # the end of one, behind a little silence: packets then end where units
            # end, and a unit's last byte leaves with it rather than a slot later (the
            # resampler's first output is a few samples short).
            self.outgoing += self.prompts.silence(self.codec)[len(unit.payload) % FRAME_BYTES :]
        self.outgoing += unit.payload
        if unit.arrived:
            self._outgoing_arrived.append((len(self.outgoing), unit.arrived, unit.origin))
        self._send_ahead(asyncio.get_running_loop().time())
        limit = MAX_BUFFER_MS * 8  # bytes: 8 per ms for every codec here (64 kbit/s)
        if len(self.outgoing) > limit:
            cut = len(self.outgoing) - TRIM_TO_MS * 8
            self._drop(cut - cut % FRAME_BYTES)

    def _observe_latency(self) -> None:
        """The gateway's own added latency (gateway/latency.py): from the source frame's
        arrival to its last byte leaving in RTP."""
        sent = FRAME_BYTES
        arrived = self._outgoing_arrived
        now = time.perf_counter()
        while arrived and arrived[0][0] <= sent:
            _, at, origin = arrived.popleft()
            METER.observe(origin, "phone", True, now - at, kind=AUDIO)
        self._outgoing_arrived = deque((end - sent, at, origin) for end, at, origin in arrived)

    def leave_room(self, outcome: str) -> None:
        """Give the customer's audio back to the page and tell both pages."""
        consultation = self.consultation
        if self._route is not None:
            self._route.close()
            self._route = None
        if self._announced_for is not None:  # the phone's device state goes with it
            self._announced_for.announced = False
            self._announced_for.microphone = False
            self._announced_for = None
        if self._stream is not None:
            self._stream.release_audio(self)
            if self._owns_stream:
                self._stream.stop(owner=self)
            self._stream = None
        self.outgoing.clear()
        if consultation is not None and self._connection is not None:
            connection, self._connection = self._connection, None
            if consultation.phone is not None and consultation.phone.hang_up == self.hang_up:
                consultation.phone = None
            if not consultation.ended:
                consultation.detach(Role.CUSTOMER, connection)
                consultation.emit(PhoneState(active=False, outcome=outcome))

    def hang_up(self) -> None:
        """The advisor hung up, or the consultation ends: a goodbye, then BYE."""
        if self.state in ("closing", "ended"):
            return
        self.finish(
            "ended", "ended" if self.consultation and self.consultation.ended else "hangup-advisor"
        )

    def finish(self, prompt: str, outcome: str) -> None:
        """Play a last prompt, then hang up."""
        if self.state in ("closing", "ended"):
            return
        self.outcome = outcome
        self.leave_room(outcome)
        self.state = "closing"
        self.play(prompt, then=lambda: self.end(outcome, send_bye=True))

    def end(self, outcome: str, *, send_bye: bool) -> None:
        """The leg is over (BYE received or sent, RTP timeout)."""
        if self.state == "ended":
            return
        self.outcome = self.outcome or outcome
        self.leave_room(outcome)
        self.state = "ended"
        if send_bye:
            try:
                self.hang_up_sip()
            except Exception as exc:  # the dialog may already be gone
                log.info("phone: BYE not sent (%s)", type(exc).__name__)
        if self._transport is not None:
            self._transport.close()
        if self._pacer is not None and self._pacer is not asyncio.current_task():
            self._pacer.cancel()
        self.on_end(self, self.outcome)

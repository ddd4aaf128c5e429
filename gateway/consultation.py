"""Consultations, participants and their tokens: the session core.

Everything here lives in memory only: chat text and tokens never touch disk (terms of
use: no recording). Front-ends (RTMP, WebRTC, the web pages) attach *connections* to a
participant and subscribe to the consultation's events; they never talk to each other.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.events import (
    AccessChanged,
    Admission,
    ChatMessage,
    ConsultationEvent,
    MediaState,
    PhoneState,
    Presence,
    ScreenShare,
    SessionEnded,
    WireEvent,
)
from gateway.media import PublishedStream
from gateway.phonecall import PhoneCall, new_phone_code
from gateway.roles import Role

__all__ = ["CAMERA", "SCREEN", "Role"]  # Role re-exported: the roles' home was here

# The streams of a consultation (docs/web.md "Screen sharing"): each participant's camera
# and microphone under its role name, and the advisor's shared screen.
CAMERA = "camera"
SCREEN = "screen"

log = logging.getLogger(__name__)


class ChatRejected(ValueError):
    """A chat message that cannot be delivered (empty, too long, session over)."""


# The advisor principal of the static ``--advisor-token`` and of the one-time login
# printed at start (one operator, no account). Account names start with a letter or digit
# (gateway.advisors), so this key can never be an account's.
OPERATOR = ":operator"

LABEL_MAX_CHARS = 60
# an appointment may lie this far ahead at most (the consultation's links live until
# its end, so a link for next month would be a long-lived secret)
APPOINTMENT_MAX_AHEAD = 7 * 24 * 3600.0
# "nobody came": the customer has not joined this long after the appointment
NO_SHOW_AFTER = 15 * 60.0


class RoomDetailsRejected(ValueError):
    """A label or appointment that cannot be kept; the message is for the advisor."""


def clean_label(label: object) -> str | None:
    """The advisor's short label for a consultation (NFC, one line, at most
    ``LABEL_MAX_CHARS``), None for none. Kept in memory only (docs/privacy.md)."""
    if label is None:
        return None
    if not isinstance(label, str):
        raise RoomDetailsRejected("The label must be a string.")
    label = " ".join(unicodedata.normalize("NFC", label).split())
    if any(unicodedata.category(ch).startswith("C") for ch in label):
        raise RoomDetailsRejected("The label must not contain control characters.")
    if len(label) > LABEL_MAX_CHARS:
        raise RoomDetailsRejected(f"The label may have at most {LABEL_MAX_CHARS} characters.")
    return label or None


def group_pin(pin: str | None) -> str:
    """The PIN as people read it: ``691 443`` (what the pages show and copy; the PIN
    form accepts it typed that way)."""
    if not pin:
        return ""
    return f"{pin[:3]} {pin[3:]}" if len(pin) == 6 else pin


# What people type between the digit groups: spaces of every kind (NFKC turns the wide and
# no-break ones into U+0020), hyphens and dashes, dots, slashes.
_PIN_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212./_]+")
_PIN_DIGITS = re.compile(r"[0-9]{6}", re.ASCII)


def normalize_pin(typed: str) -> str | None:
    """The six ASCII digits of a PIN as typed (``691 443``, ``691-443``, full-width
    ``６９１４４３``: Unicode NFKC, UAX #15), or None when it is not a PIN at all (a typo,
    not a guess: never counted as a wrong PIN)."""
    if len(typed) > 64:
        return None
    pin = _PIN_SEPARATORS.sub("", unicodedata.normalize("NFKC", typed))
    return pin if _PIN_DIGITS.fullmatch(pin) else None


EventListener = Callable[[ConsultationEvent], None]


@dataclass(eq=False)
class Connection:
    """One front-end attachment of a participant (an RTMP socket, a WebRTC peer, a WS)."""

    kind: str  # rtmp, rtmpt, rtmps, rtmpts, webrtc, chat-only, events
    close: Callable[[], None]
    codecs_in: dict[str, str] = field(default_factory=dict)
    codecs_out: dict[str, str] = field(default_factory=dict)
    since: float = field(default_factory=time.time)


@dataclass(eq=False)
class Participant:
    role: Role
    token: str
    pin: str | None = None
    connections: list[Connection] = field(default_factory=list)
    camera: bool = False
    microphone: bool = False
    announced: bool = False  # the client said which devices are on (media event/call)
    # let in by the advisor (the waiting room, docs/web.md); False: waits, no media routed
    admitted: bool = True
    joined_at: float | None = None
    # every connection kind this participant used (statistics: flash/webrtc/chat-only)
    kinds_seen: set[str] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        # ``via`` speaks INTERFACE.md's words (rtmp/rtmpt/rtmps/webrtc/chat-only): RTMPTS is
        # what Flash calls rtmps://, so it is "rtmps" there; ``connections`` say rtmpts.
        media_kinds = sorted(
            {VIA.get(c.kind, c.kind) for c in self.connections if c.kind != "events"}
        )
        if not media_kinds and self.connections:
            media_kinds = ["chat-only"]  # only the events socket: text chat without media
        return {
            "role": str(self.role),
            "present": bool(self.connections),
            "via": media_kinds,
            "camera": self.camera,
            "microphone": self.microphone,
            "admitted": self.admitted,
            "connections": [
                {
                    "kind": c.kind,
                    "codecs_in": c.codecs_in,
                    "codecs_out": c.codecs_out,
                    "since": _iso(c.since),
                }
                for c in self.connections
            ],
        }


VIA = {"rtmpts": "rtmps"}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Consultation:
    """One private meeting of an advisor and a customer."""

    def __init__(
        self,
        consultation_id: str,
        *,
        ttl: float,
        gop_cache_bytes: int,
        chat_max_chars: int = 2000,
        chat_history: int = 500,
        now: float | None = None,
        owner: str = OPERATOR,
        owner_display_name: str | None = None,
        label: str | None = None,
        appointment: float | None = None,
        pin_max_wrong: int = 5,
        waiting_room: bool = False,
    ) -> None:
        self.id = consultation_id
        self.created_at = time.time() if now is None else now
        # An appointment later than now starts the consultation's lifetime there: links
        # made in the morning for the afternoon must not expire before it.
        self.expires_at = max(self.created_at, appointment or 0.0) + ttl
        # The advisor principal it belongs to (an account name, or OPERATOR): only they
        # act as its advisor with advisor credentials (participant tokens stay bound).
        self.owner = owner
        # The owner's display name ("Frau Schmidt", gateway.advisors) as the customer
        # sees it on the PIN page, in the room and in the Flash client; None: the neutral
        # wording. Memory only, never in the statistics or the logs (docs/privacy.md).
        self.owner_display_name = owner_display_name
        # Shown to the advisor only; memory only, forgotten at the end (docs/privacy.md).
        self.label = label
        self.appointment = appointment
        # The customer's way in: the link id in /k/{link} and /flash/{link} (the
        # consultation id until a new link is issued) and the PIN attempts on it.
        self.customer_link = consultation_id
        self.pin_max_wrong = pin_max_wrong
        self.wrong_pins = 0
        self.ended = False
        self.chat_max_chars = chat_max_chars
        self.participants: dict[Role, Participant] = {
            Role.ADVISOR: Participant(Role.ADVISOR, _new_token()),
            Role.CUSTOMER: Participant(Role.CUSTOMER, _new_token(), pin=_new_pin()),
        }
        # The waiting room (docs/web.md): the customer waits until the advisor lets them
        # in; off for consultations created through the API without asking for it.
        self.waiting_room = waiting_room
        self.participants[Role.CUSTOMER].admitted = not waiting_room
        self.streams: dict[Role, PublishedStream] = {
            role: PublishedStream(f"{consultation_id}/{role}", gop_cache_bytes=gop_cache_bytes)
            for role in Role
        }
        for role, stream in self.streams.items():
            stream.on_change = self._stream_changed_callback(role)
        if waiting_room:
            # shut until the advisor lets the customer in, whatever front-end publishes
            # (one that never announces its devices too: a phone leg, an encoder)
            self.streams[Role.CUSTOMER].set_gates(False, False)
        # The advisor's shared screen (docs/web.md "Screen sharing"): a second published
        # stream, routed and transcoded like the camera, without the camera/microphone
        # gates (the advisor starts and stops it with its own button).
        self.screen = PublishedStream(
            f"{consultation_id}/{SCREEN}", gop_cache_bytes=gop_cache_bytes
        )
        self.screen.on_change = lambda stream: self.emit(self.screen_state())
        # Chat lives in memory for the session only, bounded.
        self.chat_log: deque[ChatMessage] = deque(maxlen=chat_history)
        self._listeners: dict[int, EventListener] = {}
        self.features: set[str] = set()
        self.client_kinds: set[str] = set()
        self.end_reason: str | None = None
        self.ended_at: float | None = None
        # Presence over time: since when nobody is connected (None while someone is, and
        # before anyone came), and how long both sides were there together.
        self.empty_since: float | None = None
        self.together_since: float | None = None
        self.together_seconds = 0.0
        # The telephone leg (gateway/phonecall.py, docs/phone.md): the dial-in code (set by
        # the Directory when phone codes are on) and the call carrying the customer's audio.
        self.phone_code: str | None = None
        self.phone: PhoneCall | None = None

    # -- events -----------------------------------------------------------------------
    def listen(self, listener: EventListener) -> Callable[[], None]:
        """Every typed event, unfiltered (front-ends use gateway.channel, which filters
        and addresses them for one participant)."""
        key = id(listener)
        self._listeners[key] = listener

        def unsubscribe() -> None:
            self._listeners.pop(key, None)

        return unsubscribe

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Every event in its wire form, unfiltered and without per-recipient URLs
        (diagnostics and tests)."""
        return self.listen(lambda event: listener(event.wire()))

    def emit(self, event: ConsultationEvent | dict[str, Any]) -> None:
        if isinstance(event, dict):
            event = WireEvent.of(event)
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # one broken listener must not silence the others
                log.exception("event listener failed")

    def _stream_changed_callback(self, role: Role) -> Callable[[PublishedStream], None]:
        def changed(stream: PublishedStream) -> None:
            participant = self.participants[role]
            if not participant.announced:
                # A client that never announces its devices (an encoder such as ffmpeg)
                # switched them on by publishing; its state follows the stream.
                participant.camera = participant.microphone = stream.live
            self.emit(self.media_state(role))

        return changed

    def phone_state(self) -> PhoneState:
        """The telephone leg now (the ``phone`` event; docs/phone.md)."""
        call = self.phone
        if call is None:
            return PhoneState(active=False)
        return PhoneState(
            active=True, number=call.masked_number, since=call.since, codec=call.codec
        )

    def media_state(self, role: Role) -> MediaState:
        """``role``'s devices and publishing now (the ``media`` event)."""
        participant, stream = self.participants[role], self.streams[role]
        return MediaState(
            sender=role,
            role=role,
            publishing=stream.live,
            via=stream.kind if stream.live else None,
            camera=participant.camera,
            microphone=participant.microphone,
        )

    # -- the waiting room -------------------------------------------------------------------
    def admitted(self, role: Role) -> bool:
        return self.participants[role].admitted

    def admission(self, role: Role = Role.CUSTOMER) -> Admission:
        """``role``'s admission now (the ``admission`` event)."""
        return Admission(role=role, admitted=self.participants[role].admitted)

    def admit(self, role: Role = Role.CUSTOMER) -> bool:
        """Let ``role`` in: media is routed from now on. False if it was in already."""
        participant = self.participants[role]
        if participant.admitted or self.ended:
            return False
        participant.admitted = True
        if participant.announced:
            self.streams[role].set_gates(participant.camera, participant.microphone)
        else:  # a client that never says which devices are on sends what it publishes
            self.streams[role].set_gates(True, True)
        self.emit(self.admission(role))
        return True

    def send_to_waiting_room(self, role: Role = Role.CUSTOMER) -> None:
        """``role`` waits again (a new PIN and link may reach someone else)."""
        participant = self.participants[role]
        if not self.waiting_room or not participant.admitted:
            return
        participant.admitted = False
        self.streams[role].set_gates(False, False)
        self.emit(self.admission(role))

    def screen_state(self) -> ScreenShare:
        """Whether the advisor shares the screen now (the ``screen`` event)."""
        live = self.screen.live
        return ScreenShare(
            sender=Role.ADVISOR,
            role=Role.ADVISOR,
            sharing=live,
            via=self.screen.kind if live else None,
        )

    def source(self, receiver: Role, stream: str = CAMERA) -> PublishedStream:
        """What ``receiver`` watches: the other participant's camera, or (``SCREEN``,
        the customer only) the advisor's shared screen. ValueError for anything else."""
        if stream == CAMERA:
            return self.streams[receiver.other]
        if stream == SCREEN and receiver is Role.CUSTOMER:
            return self.screen
        raise ValueError(f"{receiver} cannot receive the stream {stream!r}")

    def published(self, publisher: Role, stream: str = CAMERA) -> PublishedStream:
        """Where ``publisher`` sends: its camera/microphone, or (``SCREEN``, the advisor
        only) the shared screen. ValueError for anything else."""
        if stream == CAMERA:
            return self.streams[publisher]
        if stream == SCREEN and publisher is Role.ADVISOR:
            return self.screen
        raise ValueError(f"{publisher} cannot publish the stream {stream!r}")

    # -- participants -------------------------------------------------------------------
    def attach(self, role: Role, connection: Connection) -> None:
        participant = self.participants[role]
        if not participant.admitted and connection.kind.startswith("rtmp"):
            # The Flash client has no waiting-room screen: a Flash customer is let in
            # directly (docs/flash.md). The browser page and the events socket wait.
            self.admit(role)
        first = not participant.connections
        participant.connections.append(connection)
        if participant.joined_at is None:
            participant.joined_at = time.time()
        participant.kinds_seen.add(connection.kind)
        if connection.kind != "events":
            self.client_kinds.add(connection.kind)
        self._presence_changed()
        if first:
            self.emit(Presence(sender=role, role=role, present=True))

    def detach(self, role: Role, connection: Connection) -> None:
        participant = self.participants[role]
        if connection in participant.connections:
            participant.connections.remove(connection)
            self._presence_changed()
            if not participant.connections:
                self.emit(Presence(sender=role, role=role, present=False))

    def _presence_changed(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        present = [bool(p.connections) for p in self.participants.values()]
        if all(present):
            if self.together_since is None:
                self.together_since = now
        elif self.together_since is not None:
            self.together_seconds += now - self.together_since
            self.together_since = None
        if any(present):
            self.empty_since = None
        elif self.empty_since is None:
            self.empty_since = now

    def set_media_state(self, role: Role, camera: bool, microphone: bool) -> None:
        participant = self.participants[role]
        participant.announced = True
        participant.camera = bool(camera)
        participant.microphone = bool(microphone)
        stream = self.streams[role]
        # nothing of a participant still in the waiting room is routed (docs/web.md)
        open_ = participant.admitted
        stream.set_gates(open_ and participant.camera, open_ and participant.microphone)
        self.emit(self.media_state(role))

    # -- the customer's way in ----------------------------------------------------------------
    @property
    def pin_locked(self) -> bool:
        """Too many wrong PINs: the link is dead until the advisor issues a new PIN."""
        return self.wrong_pins >= self.pin_max_wrong

    def pin_failed(self) -> int:
        """Count a wrong PIN; the attempts left. Reaching the limit tells the advisor at
        once (an ``access`` event: the advisor pages show the lock)."""
        self.wrong_pins += 1
        if self.wrong_pins == self.pin_max_wrong:
            self.emit(AccessChanged(locked=True))
        return max(0, self.pin_max_wrong - self.wrong_pins)

    def owned_by(self, advisor: str | None) -> bool:
        return advisor is not None and hmac.compare_digest(self.owner.encode(), advisor.encode())

    def customer_state(self, now: float | None = None) -> str:
        """What the advisor's overview shows: ``locked`` (too many wrong PINs),
        ``lobby`` (the customer is in the waiting room, to be let in), ``together`` (both
        here), ``waiting`` (the customer waits for the advisor), ``noshow`` (never came,
        ``NO_SHOW_AFTER`` past the appointment) or ``absent``."""
        customer = self.participants[Role.CUSTOMER]
        if customer.connections and not customer.admitted:
            return "lobby"
        if customer.connections:
            return "together" if self.participants[Role.ADVISOR].connections else "waiting"
        if self.pin_locked:
            return "locked"
        now = time.time() if now is None else now
        if (
            customer.joined_at is None
            and self.appointment is not None
            and now >= self.appointment + NO_SHOW_AFTER
        ):
            return "noshow"
        return "absent"

    # -- chat -----------------------------------------------------------------------------
    def chat(self, role: Role, text: Any, origin: object | None = None) -> ChatMessage:
        """Send ``text`` as ``role`` (``origin``: the participant connection it came
        through, whose Flash client shows it already)."""
        if self.ended:
            raise ChatRejected("the consultation has ended")
        if not isinstance(text, str):
            raise ChatRejected("chat text must be a string")
        text = text.strip()
        if not text:
            raise ChatRejected("empty message")
        if len(text) > self.chat_max_chars:
            raise ChatRejected(f"message longer than {self.chat_max_chars} characters")
        event = ChatMessage(sender=role, text=text, ts=time.time(), origin=origin)
        self.chat_log.append(event)
        self.features.add("chat")
        self.emit(event)
        return event

    # -- lifecycle ------------------------------------------------------------------------
    def end(self, reason: str = "ended") -> None:
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self.ended_at = time.time()
        if self.together_since is not None:
            self.together_seconds += self.ended_at - self.together_since
            self.together_since = None
        self.emit(SessionEnded(reason=reason))
        if self.phone is not None:  # the call is told (a goodbye, then BYE) and ended
            try:
                self.phone.hang_up()
            except Exception:
                log.exception("ending the phone call failed")
        for stream in self.streams.values():
            stream.stop()
        self.screen.stop()
        for participant in self.participants.values():
            for connection in list(participant.connections):
                try:
                    connection.close()
                except Exception:
                    log.exception("closing a connection failed")
            participant.connections.clear()
        self.chat_log.clear()
        self._listeners.clear()
        # what the advisor wrote about the customer is gone with the consultation
        self.label = None
        self.appointment = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "duration": round(time.time() - self.created_at, 1),
            "ended": self.ended,
            "participants": {str(r): p.describe() for r, p in self.participants.items()},
            "streams": {
                str(r): {
                    "live": s.live,
                    "via": s.kind or None,
                    "video_codec": s.video_codec,
                    "audio_codec": s.audio_codec,
                    "receivers": len(s.receivers),
                    # how each receiver gets it: "spark>vp8" (transcoded) or passthrough
                    "routes": [
                        describe()
                        for r in s.receivers
                        if callable(describe := getattr(r.receiver, "describe", None))
                    ],
                    "dropped": s.stats.dropped,
                }
                for r, s in self.streams.items()
            },
            # the telephone leg carrying the customer's audio (docs/phone.md), masked
            "phone": None
            if self.phone is None
            else {
                "number": self.phone.masked_number,
                "codec": self.phone.codec,
                "direction": self.phone.direction,
                "since": _iso(self.phone.since),
            },
            # the advisor's shared screen (docs/web.md "Screen sharing")
            "screen": {
                "live": self.screen.live,
                "via": self.screen.kind or None,
                "video_codec": self.screen.video_codec,
                "receivers": len(self.screen.receivers),
                "routes": [
                    describe()
                    for r in self.screen.receivers
                    if callable(describe := getattr(r.receiver, "describe", None))
                ],
            },
        }


def _new_token() -> str:
    return secrets.token_urlsafe(24)


def _new_pin() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


@dataclass(frozen=True, slots=True)
class Grant:
    consultation: Consultation
    role: Role


class Directory:
    """All consultations of this node, and token → (consultation, role) lookup."""

    def __init__(
        self,
        *,
        ttl: float = 4 * 3600.0,
        gop_cache_bytes: int = 8 * 1024 * 1024,
        chat_max_chars: int = 2000,
        chat_history: int = 500,
        grace: float = 300.0,
        unjoined_ttl: float = 4 * 3600.0,
        pin_max_wrong: int = 5,
        phone_code_digits: int = 0,
    ) -> None:
        self.ttl = ttl
        # digits of each consultation's phone code (0: no telephone leg, no codes)
        self.phone_code_digits = phone_code_digits
        # open consultations by phone code (unique among them; a code dies with its own)
        self._phone_codes: dict[str, Consultation] = {}
        # seconds after its start (creation, or a later appointment) a consultation the
        # customer never joined is removed ("unjoined"); the advisor is told (notices)
        self.unjoined_ttl = unjoined_ttl
        self.pin_max_wrong = pin_max_wrong
        # seconds a consultation stays open after everyone left (a dropped connection
        # may come back); ended as "abandoned" after that
        self.grace = grace
        self.gop_cache_bytes = gop_cache_bytes
        self.chat_max_chars = chat_max_chars
        self.chat_history = chat_history
        self.consultations: dict[str, Consultation] = {}
        self._tokens: dict[str, Grant] = {}
        # customer link id (/k/{link}) -> its consultation (the current link only)
        self._links: dict[str, Consultation] = {}
        self.on_end: list[Callable[[Consultation], None]] = []
        # advisor -> when their unjoined consultations were removed (created, removed):
        # what the overview tells them; no label, no appointment (gone with the end)
        self.removed_unjoined: dict[str, deque[tuple[float, float]]] = {}

    def create(
        self,
        owner: str = OPERATOR,
        *,
        owner_display_name: str | None = None,
        label: object = None,
        appointment: float | None = None,
        now: float | None = None,
        waiting_room: bool = False,
    ) -> Consultation:
        """A new consultation of ``owner`` (with a waiting room: the customer is let in by
        the advisor). Raises :class:`RoomDetailsRejected` for a
        label or appointment it cannot keep."""
        now = time.time() if now is None else now
        label = clean_label(label)
        if appointment is not None and not (
            now - self.ttl < appointment <= now + APPOINTMENT_MAX_AHEAD
        ):
            raise RoomDetailsRejected(
                "The appointment must lie within the next "
                f"{APPOINTMENT_MAX_AHEAD / 86400:.0f} days."
            )
        consultation = Consultation(
            secrets.token_urlsafe(9),
            ttl=self.ttl,
            gop_cache_bytes=self.gop_cache_bytes,
            chat_max_chars=self.chat_max_chars,
            chat_history=self.chat_history,
            now=now,
            owner=owner,
            owner_display_name=owner_display_name,
            label=label,
            appointment=appointment,
            pin_max_wrong=self.pin_max_wrong,
            waiting_room=waiting_room,
        )
        self.consultations[consultation.id] = consultation
        self._links[consultation.customer_link] = consultation
        for role, participant in consultation.participants.items():
            self._tokens[participant.token] = Grant(consultation, role)
        if self.phone_code_digits:
            code = new_phone_code(self.phone_code_digits, self._phone_codes)
            consultation.phone_code = code
            self._phone_codes[code] = consultation
        return consultation

    def by_phone_code(self, code: str) -> Consultation | None:
        """The open consultation whose phone code is ``code`` (constant time per
        candidate is not needed: the code is the key and guessing is limited)."""
        consultation = self._phone_codes.get(code)
        if consultation is None or consultation.ended:
            return None
        return consultation

    def get(self, consultation_id: str) -> Consultation | None:
        return self.consultations.get(consultation_id)

    def by_link(self, link: str) -> Consultation | None:
        """The consultation whose *current* customer link is ``link`` (a replaced link
        finds nothing)."""
        return self._links.get(link)

    def owned_by(self, advisor: str) -> list[Consultation]:
        """``advisor``'s running consultations by time (the appointment, else creation)."""
        mine = [c for c in self.consultations.values() if not c.ended and c.owned_by(advisor)]
        return sorted(mine, key=lambda c: (c.appointment or c.created_at, c.created_at))

    def hand_over(self, consultation: Consultation, to: str) -> None:
        """Give ``consultation`` to another advisor (the old owner loses access)."""
        consultation.owner = to
        consultation.owner_display_name = None  # the old owner's name no longer fits

    def new_customer_access(self, consultation: Consultation) -> None:
        """A new PIN, customer token and link for ``consultation`` (after a lock, or a
        link that went astray): the old ones are dead at once, the customer's open
        connections (made with the old token) are closed, the wrong-PIN count starts
        afresh, and the advisor pages are told (an ``access`` event)."""
        customer = consultation.participants[Role.CUSTOMER]
        self._tokens.pop(customer.token, None)
        self._links.pop(consultation.customer_link, None)
        customer.token = _new_token()
        customer.pin = _new_pin()
        consultation.customer_link = secrets.token_urlsafe(9)
        consultation.wrong_pins = 0
        self._tokens[customer.token] = Grant(consultation, Role.CUSTOMER)
        self._links[consultation.customer_link] = consultation
        for connection in list(customer.connections):
            try:
                connection.close()
            except Exception:
                log.exception("closing a connection failed")
        # whoever holds the new PIN is let in anew
        consultation.send_to_waiting_room(Role.CUSTOMER)
        consultation.emit(AccessChanged(locked=False, renewed=True))

    def authorize(self, token: str | None, now: float | None = None) -> Grant | None:
        """The grant for a participant token, or None (unknown, expired or ended)."""
        if not token or len(token) > 200:
            return None
        grant = self._tokens.get(token)
        if grant is None:
            return None
        # constant-time compare of the stored token guards against timing on the dict hit
        expected = grant.consultation.participants[grant.role].token
        if not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        now = time.time() if now is None else now
        if grant.consultation.ended or now >= grant.consultation.expires_at:
            return None
        return grant

    def end(self, consultation_id: str, reason: str = "ended") -> bool:
        consultation = self.consultations.pop(consultation_id, None)
        if consultation is None:
            return False
        for participant in consultation.participants.values():
            self._tokens.pop(participant.token, None)
        self._links.pop(consultation.customer_link, None)
        if consultation.phone_code is not None:
            self._phone_codes.pop(consultation.phone_code, None)
        if reason == "unjoined":
            notes = self.removed_unjoined.setdefault(consultation.owner, deque(maxlen=20))
            notes.append((consultation.created_at, time.time()))
        consultation.end(reason)
        for callback in self.on_end:
            try:
                callback(consultation)
            except Exception:
                log.exception("end-of-consultation hook failed")
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """End consultations past their TTL ("expired") or empty for longer than the
        grace period after someone had joined ("abandoned"), and those the customer
        never joined ``unjoined_ttl`` after their start ("unjoined"); their ids."""
        now = time.time() if now is None else now
        ended = []
        for consultation in list(self.consultations.values()):
            start = max(consultation.created_at, consultation.appointment or 0.0)
            if (
                consultation.participants[Role.CUSTOMER].joined_at is None
                and now - start >= self.unjoined_ttl
            ):
                reason = "unjoined"
            elif now >= consultation.expires_at:
                reason = "expired"
            elif (
                consultation.empty_since is not None
                and now - consultation.empty_since >= self.grace
            ):
                reason = "abandoned"
            else:
                continue
            self.end(consultation.id, reason)
            ended.append(consultation.id)
        return ended

    def removal_notes(self, advisor: str, now: float | None = None) -> list[tuple[float, float]]:
        """``(created, removed)`` of ``advisor``'s unjoined consultations removed in the
        last 24 hours (the overview tells the advisor)."""
        now = time.time() if now is None else now
        notes = self.removed_unjoined.get(advisor)
        if not notes:
            return []
        while notes and notes[0][1] < now - 86400:
            notes.popleft()
        return list(notes)

    def end_all(self, reason: str = "shutdown") -> None:
        for cid in list(self.consultations):
            self.end(cid, reason)

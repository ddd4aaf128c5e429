"""Typed consultation events (as ``rtmp/events.py``'s are for the RTMP core).

Every event says who sent it (``sender``, None for the gateway itself) and who may see it
(``audience``, None for both participants). Front-ends get them through a
:class:`gateway.channel.ParticipantChannel`, already filtered for their participant and
with URLs of their own; they only encode: ``wire()`` is the JSON object of the events
WebSocket (INTERFACE.md, docs/web.md: keep its ``type`` and fields), which the Flash
client gets as ``onSessionEvent`` (``onChat`` for chat).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.roles import Role

if TYPE_CHECKING:  # the form desk loads the PDF renderer; events only refer to it
    from gateway.documents import Document
    from gateway.forms.desk import FormInstance


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsultationEvent:
    sender: Role | None = None  # None: the gateway
    audience: Role | None = None  # None: both participants

    def meant_for(self, role: Role) -> bool:
        return self.audience is None or self.audience is role

    def wire(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage(ConsultationEvent):
    sender: Role
    text: str
    ts: float
    # the participant connection it came through (its Flash client shows it already)
    origin: object | None = None

    def wire(self) -> dict[str, Any]:
        return {"type": "chat", "from": str(self.sender), "text": self.text, "ts": self.ts}


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence(ConsultationEvent):
    role: Role
    present: bool

    def wire(self) -> dict[str, Any]:
        return {"type": "participant", "role": str(self.role), "present": self.present}


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaState(ConsultationEvent):
    """A participant's camera/microphone and whether (and how) it publishes."""

    role: Role
    publishing: bool
    via: str | None
    camera: bool
    microphone: bool

    def wire(self) -> dict[str, Any]:
        return {
            "type": "media",
            "role": str(self.role),
            "publishing": self.publishing,
            "via": self.via,
            "camera": self.camera,
            "microphone": self.microphone,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission(ConsultationEvent):
    """The waiting room (docs/web.md): whether ``role`` (the customer) is let in yet.
    ``waiting`` False and ``admitted`` True: in the consultation; ``admitted`` False: the
    customer waits until the advisor lets them in ("Einlassen"); media is routed only
    after that."""

    role: Role
    admitted: bool

    def wire(self) -> dict[str, Any]:
        return {"type": "admission", "role": str(self.role), "admitted": self.admitted}


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing(ConsultationEvent):
    """``sender`` is typing a chat message ("… schreibt"), for the other participant
    only; the events socket lets at most one through per ``TYPING_INTERVAL``."""

    def wire(self) -> dict[str, Any]:
        return {"type": "typing", "role": str(self.sender)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ScreenShare(ConsultationEvent):
    """Whether the advisor shares the screen (``Consultation.screen``, docs/web.md
    "Screen sharing"): the customer's page then receives the ``screen`` stream."""

    role: Role
    sharing: bool
    via: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"type": "screen", "role": str(self.role), "sharing": self.sharing, "via": self.via}


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessChanged(ConsultationEvent):
    """The customer's way in was locked (too many wrong PINs) or renewed: the advisor's
    business only."""

    audience: Role | None = Role.ADVISOR
    locked: bool
    renewed: bool = False

    def wire(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "access", "to": str(self.audience), "locked": self.locked}
        if self.renewed:
            event["renewed"] = True
        return event


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(ConsultationEvent):
    """Something the participants are told, e.g. ``capacity``: ``kind`` of ``role``'s
    incoming media cannot be delivered for want of transcoding capacity."""

    code: str
    role: Role
    kind: str

    def wire(self) -> dict[str, Any]:
        return {"type": "notice", "code": self.code, "role": str(self.role), "kind": self.kind}


@dataclass(frozen=True, slots=True, kw_only=True)
class Quality(ConsultationEvent):
    """How a participant's media reaches the gateway (``sending`` False: nothing comes)."""

    role: Role
    sending: bool
    stalled: bool = False
    kbps: int = 0
    loss_pct: float = 0.0
    rtt_ms: int | None = None
    quality: str = ""

    def wire(self) -> dict[str, Any]:
        if not self.sending:
            return {"type": "quality", "role": str(self.role), "sending": False}
        return {
            "type": "quality",
            "role": str(self.role),
            "sending": True,
            "stalled": self.stalled,
            "kbps": self.kbps,
            "loss_pct": self.loss_pct,
            "rtt_ms": self.rtt_ms,
            "quality": self.quality,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentShared(ConsultationEvent):
    """A document shared in the consultation; ``url`` is the recipient's own one-time
    download link (set by the channel: a ticket cannot be shared between recipients)."""

    document: Document
    url: str | None = None

    def wire(self) -> dict[str, Any]:
        event = {"type": "document", **self.document.describe()}
        if self.url is not None:
            event["url"] = self.url
        return event

    def addressed(self, url: str | None) -> DocumentShared:
        return replace(self, url=url)


@dataclass(frozen=True, slots=True, kw_only=True)
class FormChanged(ConsultationEvent):
    """A form sent to the customer, or its new state; ``url`` is the recipient's own
    (the customer's fill page with a one-time ticket, the advisor's read-only view).
    ``addressed`` tells a form the channel has addressed from one it has not: the wire
    form then always carries ``url`` (None where the recipient has none)."""

    form: FormInstance
    url: str | None = None
    addressed_to: Role | None = None

    def wire(self) -> dict[str, Any]:
        event = self.form.event()
        if self.addressed_to is not None or self.url is not None:
            event["url"] = self.url
        return event

    def addressed(self, role: Role, url: str | None) -> FormChanged:
        return replace(self, url=url, addressed_to=role)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneState(ConsultationEvent):
    """A telephone leg carries the customer's audio (``active``) or no longer does
    (docs/phone.md): the customer page stops publishing its microphone and playing the
    advisor's audio while it is active; the advisor sees the masked number and since
    when. ``outcome`` says how a call ended (``hangup``, ``timeout``, ``ended``)."""

    active: bool
    number: str = ""  # masked (gateway/phonecall.py mask_number), never the full number
    since: float | None = None
    codec: str = ""
    outcome: str = ""

    def wire(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "phone", "active": self.active}
        if self.active:
            event.update(number=self.number, since=self.since, codec=self.codec)
        elif self.outcome:
            event["outcome"] = self.outcome
        return event


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(ConsultationEvent):
    reason: str

    def wire(self) -> dict[str, Any]:
        return {"type": "session_ended", "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class WireEvent(ConsultationEvent):
    """An event given in its wire form by a caller not typed yet (a test, an emitter
    in flight on another branch); ``to`` addresses one role, as on the wire."""

    payload: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return dict(self.payload)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> WireEvent:
        to = payload.get("to")
        audience = Role(to) if to in (Role.ADVISOR, Role.CUSTOMER) else None
        return cls(payload=dict(payload), audience=audience)

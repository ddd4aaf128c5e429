"""The participant channel (gateway/channel.py): typed events, filtered by audience and
addressed to each recipient, the one port the events WebSocket and RTMP subscribe
through (issue 13, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.channel import ParticipantChannel
from gateway.consultation import Directory, Role
from gateway.documents import Document
from gateway.events import (
    AccessChanged,
    ChatMessage,
    ConsultationEvent,
    DocumentShared,
    MediaState,
    Notice,
    Presence,
    Quality,
    SessionEnded,
)


class CountingLinks:
    """A Links that numbers its URLs, so that each recipient's can be told apart."""

    def __init__(self) -> None:
        self.minted = 0

    def _next(self, kind: str, *parts: str) -> str:
        self.minted += 1
        return f"https://gw.test/{kind}/{'/'.join(parts)}?ticket={self.minted}"

    def document_url(self, consultation_id: str, document_id: str) -> str | None:
        return self._next("doc", consultation_id, document_id)

    def form_url(self, consultation_id: str, form_id: str, role: Role) -> str | None:
        return self._next("form", consultation_id, form_id, str(role))

    def upload_url(self, consultation_id: str, role: Role) -> str | None:
        return self._next("upload", consultation_id, str(role))


class Shelf:
    """A DocumentStore's listing part."""

    def __init__(self, *documents: Document) -> None:
        self.documents = {d.id: d for d in documents}

    def list(self, consultation_id: str) -> list[Document]:
        return list(self.documents.values())

    def get(self, consultation_id: str, document_id: str) -> Document | None:
        return self.documents.get(document_id)


def _document(sender: str = "customer") -> Document:
    return Document(
        id="ab12",
        name="Gehaltsnachweis.pdf",
        size=3,
        sha256="00" * 32,
        content_type="application/pdf",
        sender=sender,
        uploaded_at=0.0,
        path=Path("/nonexistent"),
    )


def _channels(
    shelf: Shelf | None = None, links: CountingLinks | None = None
) -> tuple[Any, dict[Role, ParticipantChannel], dict[Role, list[ConsultationEvent]]]:
    consultation = Directory().create()
    channels, seen = {}, {}
    for role in Role:
        channels[role] = ParticipantChannel(
            consultation, role, documents=shelf, forms=None, links=links
        )
        seen[role] = []
        channels[role].open(seen[role].append)
    return consultation, channels, seen


def test_access_events_reach_the_advisor_only() -> None:
    consultation, _, seen = _channels()
    for _ in range(consultation.pin_max_wrong):
        consultation.pin_failed()
    assert [e for e in seen[Role.ADVISOR] if isinstance(e, AccessChanged)] == [
        AccessChanged(locked=True)
    ]
    assert not [e for e in seen[Role.CUSTOMER] if isinstance(e, AccessChanged)]
    # a wire-form event addressed with "to" is filtered the same way
    consultation.emit({"type": "access", "to": "advisor", "locked": False})
    assert seen[Role.ADVISOR][-1].wire() == {"type": "access", "to": "advisor", "locked": False}
    assert not [e for e in seen[Role.CUSTOMER] if e.wire()["type"] == "access"]


def test_every_recipient_gets_a_document_url_of_its_own() -> None:
    links = CountingLinks()
    doc = _document()
    consultation, channels, seen = _channels(Shelf(doc), links)
    minted = links.minted  # the two snapshots' URLs
    consultation.emit(DocumentShared(sender=Role.CUSTOMER, document=doc))
    urls = {role: seen[role][-1].wire()["url"] for role in Role}
    assert urls[Role.ADVISOR] != urls[Role.CUSTOMER], "a one-time ticket is not shared"
    assert links.minted == minted + 2
    # the snapshot of a client coming later: the document again, with a fresh URL
    snapshot = channels[Role.ADVISOR].snapshot()
    (listed,) = [e for e in snapshot if isinstance(e, DocumentShared)]
    assert listed.sender is Role.CUSTOMER
    assert listed.wire()["url"] not in urls.values()


def test_snapshot_is_history_then_presence_then_media_in_the_wire_format() -> None:
    consultation, channels, _ = _channels()
    consultation.chat(Role.CUSTOMER, "Guten Tag")
    wire = [e.wire() for e in channels[Role.ADVISOR].snapshot()]
    chat = wire[0]
    assert chat == {"type": "chat", "from": "customer", "text": "Guten Tag", "ts": chat["ts"]}
    assert [(e["type"], e.get("role")) for e in wire[1:]] == [
        ("participant", "advisor"),
        ("participant", "customer"),
        ("media", "advisor"),
        ("media", "customer"),
    ]


def test_chat_carries_its_sender_and_origin() -> None:
    consultation, _, seen = _channels()
    origin = object()
    consultation.chat(Role.ADVISOR, "  Hallo  ", origin=origin)
    for role in Role:
        (chat,) = [e for e in seen[role] if isinstance(e, ChatMessage)]
        assert chat.sender is Role.ADVISOR and chat.text == "Hallo" and chat.origin is origin


def test_a_closed_channel_hears_nothing() -> None:
    consultation, channels, seen = _channels()
    channels[Role.CUSTOMER].close()
    consultation.chat(Role.ADVISOR, "noch da?")
    assert not any(isinstance(e, ChatMessage) for e in seen[Role.CUSTOMER])
    assert any(isinstance(e, ChatMessage) for e in seen[Role.ADVISOR])


def test_wire_forms_are_byte_compatible() -> None:
    """The JSON the events WebSocket sends (INTERFACE.md, docs/web.md), key order
    included."""

    def dumps(event: ConsultationEvent) -> str:
        return json.dumps(event.wire(), ensure_ascii=False, separators=(",", ":"))

    a, c = Role.ADVISOR, Role.CUSTOMER
    assert dumps(ChatMessage(sender=c, text="Grüße", ts=1.5)) == (
        '{"type":"chat","from":"customer","text":"Grüße","ts":1.5}'
    )
    assert dumps(Presence(role=a, present=True)) == (
        '{"type":"participant","role":"advisor","present":true}'
    )
    assert dumps(
        MediaState(role=c, publishing=True, via="webrtc", camera=True, microphone=False)
    ) == (
        '{"type":"media","role":"customer","publishing":true,"via":"webrtc",'
        '"camera":true,"microphone":false}'
    )
    assert dumps(AccessChanged(locked=False, renewed=True)) == (
        '{"type":"access","to":"advisor","locked":false,"renewed":true}'
    )
    assert dumps(AccessChanged(locked=True)) == '{"type":"access","to":"advisor","locked":true}'
    assert dumps(Notice(code="capacity", role=a, kind="video")) == (
        '{"type":"notice","code":"capacity","role":"advisor","kind":"video"}'
    )
    assert dumps(Quality(role=c, sending=False)) == (
        '{"type":"quality","role":"customer","sending":false}'
    )
    assert dumps(SessionEnded(reason="ended")) == '{"type":"session_ended","reason":"ended"}'
    doc = DocumentShared(sender=c, document=_document()).addressed("https://gw.test/d")
    assert dumps(doc) == (
        '{"type":"document","id":"ab12","name":"Gehaltsnachweis.pdf","size":3,'
        f'"sha256":"{"00" * 32}","content_type":"application/pdf","from":"customer",'
        '"kind":"upload","uploaded_at":"1970-01-01T00:00:00Z","url":"https://gw.test/d"}'
    )


def test_a_form_reaches_each_role_with_its_own_link(tmp_path: Path) -> None:
    """Built by the web layer (WebLinks), injected: the advisor's read-only view, the
    customer's fill page with a one-time ticket."""
    from gateway.config import Config
    from gateway.events import FormChanged
    from gateway.service import Gateway
    from web.links import WebLinks

    gateway = Gateway.from_config(Config(data_dir=tmp_path, public_url="https://gw.test"))
    gateway.open_storage()
    gateway.links = WebLinks(gateway)
    consultation = gateway.directory.create()
    seen: dict[Role, list[ConsultationEvent]] = {role: [] for role in Role}
    for role in Role:
        gateway.channel(consultation, role).open(seen[role].append)
    assert gateway.forms is not None
    form = gateway.forms.send(consultation.id, gateway.forms.library.list()[0].id)
    consultation.emit(FormChanged(sender=Role.ADVISOR, form=form))
    advisor = seen[Role.ADVISOR][-1].wire()
    customer = seen[Role.CUSTOMER][-1].wire()
    cid = consultation.id
    assert advisor["url"] == f"https://gw.test/advisor/{cid}/forms/{form.id}"
    assert customer["url"].startswith(f"https://gw.test/k/{cid}/forms/{form.id}?ticket=")
    assert {k: v for k, v in advisor.items() if k != "url"} == form.event()

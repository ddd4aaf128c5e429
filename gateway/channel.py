"""One participant's channel: the port every front-end subscribes through.

The events WebSocket (web/events.py), the Flash client (rtmp/session.py: ``onChat``,
``onSessionEvent`` and its ``documents()``/``forms()`` calls) and any later front-end (the
telephone leg) open a :class:`ParticipantChannel` for their participant and get the
snapshot a fresh client needs, then the live events: typed
(:mod:`gateway.events`), filtered by their audience and with URLs of the recipient's own
(one-time download and form tickets cannot be shared). A front-end only encodes them.

The URLs point into the web layer, which builds them (:class:`Links`, passed in by the
composition root): the core knows no paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.consultation import Consultation
from gateway.events import (
    ConsultationEvent,
    DocumentShared,
    FormChanged,
    Presence,
)
from gateway.roles import Role

if TYPE_CHECKING:
    from gateway.documents import DocumentStore
    from gateway.forms.desk import FormDesk


class Links(Protocol):
    """Absolute, per-recipient URLs into the web layer (web/links.py ``WebLinks``)."""

    def document_url(self, consultation_id: str, document_id: str) -> str | None:
        """A one-time download URL (no token needed: Flash's navigateToURL)."""

    def form_url(self, consultation_id: str, form_id: str, role: Role) -> str | None:
        """Where ``role`` opens a form (the customer's with a one-time ticket)."""

    def upload_url(self, consultation_id: str, role: Role) -> str | None:
        """A one-time upload URL (Flash's FileReference.upload() sends no header)."""


Deliver = Callable[[ConsultationEvent], None]


class ParticipantChannel:
    """``role``'s view of ``consultation``: :meth:`open` returns the snapshot and
    subscribes ``deliver`` to the live events, with nothing missed in between (both
    happen synchronously); :meth:`subscribe` the live events alone."""

    def __init__(
        self,
        consultation: Consultation,
        role: Role,
        *,
        documents: DocumentStore | None,
        forms: FormDesk | None,
        links: Links | None,
    ) -> None:
        self.consultation = consultation
        self.role = role
        self._documents = documents
        self._forms = forms
        self._links = links
        self._unsubscribe: Callable[[], None] | None = None

    # -- the stream of events -------------------------------------------------------------
    def open(self, deliver: Deliver) -> list[ConsultationEvent]:
        """Subscribe ``deliver`` and return the snapshot (chat history, shared documents
        and forms, both participants' presence and media)."""
        snapshot = self.snapshot()
        self.subscribe(deliver)
        return snapshot

    def subscribe(self, deliver: Deliver) -> None:
        """The live events only (a client that asks for listings itself, as the Flash
        client does: no one-time URLs minted for a snapshot nobody reads)."""
        self.close()

        def filtered(event: ConsultationEvent) -> None:
            if event.meant_for(self.role):
                deliver(self.address(event))

        self._unsubscribe = self.consultation.listen(filtered)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def snapshot(self) -> list[ConsultationEvent]:
        consultation = self.consultation
        events: list[ConsultationEvent] = [
            e for e in consultation.chat_log if e.meant_for(self.role)
        ]
        events += self.documents()
        events += self.forms()
        events += [
            Presence(role=role, present=bool(participant.connections))
            for role, participant in consultation.participants.items()
        ]
        events += [consultation.media_state(role) for role in consultation.participants]
        if consultation.phone is not None:  # only with a call: other snapshots stay as they were
            events.append(consultation.phone_state())
        if consultation.waiting_room:
            # whether the customer is still in the waiting room (docs/web.md); only where
            # there is one, so the snapshot of every other consultation stays as it was
            events.append(consultation.admission(Role.CUSTOMER))
        if consultation.screen.live:
            events.append(consultation.screen_state())
        return events

    def address(self, event: ConsultationEvent) -> ConsultationEvent:
        """``event`` as this participant gets it: documents and forms with a URL of its
        own."""
        if isinstance(event, DocumentShared):
            return event.addressed(self.document_url(event.document.id))
        if isinstance(event, FormChanged):
            return event.addressed(self.role, self.form_url(event.form.id))
        return event

    # -- listings and URLs (the Flash client's calls; the web pages' tickets) -------------
    def documents(self) -> list[DocumentShared]:
        """The consultation's documents, each with a fresh one-time URL."""
        if self._documents is None:
            return []
        return [
            DocumentShared(sender=Role(doc.sender), document=doc).addressed(
                self.document_url(doc.id)
            )
            for doc in self._documents.list(self.consultation.id)
        ]

    def forms(self) -> list[FormChanged]:
        """The consultation's forms in their current state, each with its URL."""
        if self._forms is None:
            return []
        return [
            FormChanged(sender=Role.ADVISOR, form=form).addressed(self.role, self.form_url(form.id))
            for form in self._forms.forms_of(self.consultation.id)
        ]

    def has_document(self, document_id: object) -> bool:
        return (
            isinstance(document_id, str)
            and self._documents is not None
            and self._documents.get(self.consultation.id, document_id) is not None
        )

    def has_form(self, form_id: object) -> bool:
        return (
            isinstance(form_id, str)
            and self._forms is not None
            and self._forms.get(self.consultation.id, form_id) is not None
        )

    def document_url(self, document_id: str) -> str | None:
        if self._links is None or self._documents is None:
            return None
        return self._links.document_url(self.consultation.id, document_id)

    def form_url(self, form_id: str) -> str | None:
        if self._links is None:
            return None
        return self._links.form_url(self.consultation.id, form_id, self.role)

    def upload_url(self) -> str | None:
        if self._links is None or self._documents is None:
            return None
        return self._links.upload_url(self.consultation.id, self.role)

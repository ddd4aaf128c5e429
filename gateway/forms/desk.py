"""Forms sent in consultations: which template went to whom, its state, and the
one-time links that open it without a header.

A form lives in memory only, as its consultation does; once filled it becomes two
documents (HTML and PDF) in the consultation's document folder, which is deleted at
the end like every upload. What the customer typed is never kept anywhere else and
never logged.

One-time links: Flash's ``navigateToURL`` (and an API client's browser) opens the
form's URL in a browser that has neither the customer's token nor, necessarily, the
customer page's cookie. The ``url`` of a customer's ``form`` event therefore carries a
ticket: used once within ``ticket_ttl`` it sets a cookie that opens this one form (not
the consultation) and redirects to the same URL without it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.documents import Document, DocumentError, DocumentStore
from gateway.forms.document import FilledForm, render_html, render_pdf
from gateway.forms.template import FormLibrary, Template
from gateway.tickets import TicketBook


class FormError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(eq=False)
class FormInstance:
    id: str
    consultation_id: str
    template: Template
    sent_at: float = field(default_factory=time.time)
    state: str = "sent"  # "sent" → ("submitting") → "submitted"
    submitted_at: float | None = None
    # the secret of the cookie a ticket sets (opens this form only), and the CSRF token
    # its page embeds; both random, both in memory only
    access: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    documents: list[Document] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        """The ``form`` event (without ``url``: each recipient gets its own)."""
        return {
            "type": "form",
            "id": self.id,
            "template": self.template.id,
            "title": self.template.title.de,
            "title_en": self.template.title.en or self.template.title.de,
            "state": "submitted" if self.state == "submitted" else "sent",
            "sent_at": _iso(self.sent_at),
            "submitted_at": _iso(self.submitted_at) if self.submitted_at else None,
            "documents": [
                {"id": d.id, "name": d.name, "content_type": d.content_type} for d in self.documents
            ],
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class FormDesk:
    """Every consultation's forms on this node."""

    def __init__(
        self,
        library: FormLibrary,
        documents: DocumentStore,
        *,
        ticket_ttl: float = 1800.0,
        max_forms: int = 20,
        max_tickets: int = 4096,
    ) -> None:
        self.library = library
        self.documents = documents
        self.max_forms = max_forms
        self._forms: dict[str, dict[str, FormInstance]] = {}
        self.tickets = TicketBook(ticket_ttl, max_tickets=max_tickets)

    @property
    def ticket_ttl(self) -> float:
        return self.tickets.ttl

    # -- sending -------------------------------------------------------------------------
    def send(self, consultation_id: str, template_id: str) -> FormInstance:
        template = self.library.get(template_id)
        if template is None:
            raise FormError(404, f"No form template {template_id!r}; see GET /api/forms.")
        forms = self._forms.setdefault(consultation_id, {})
        if len(forms) >= self.max_forms:
            raise FormError(409, f"This consultation already has {self.max_forms} forms.")
        instance = FormInstance(secrets.token_urlsafe(9), consultation_id, template)
        forms[instance.id] = instance
        return instance

    def get(self, consultation_id: str, form_id: str) -> FormInstance | None:
        return self._forms.get(consultation_id, {}).get(form_id)

    def forms_of(self, consultation_id: str) -> list[FormInstance]:
        return sorted(self._forms.get(consultation_id, {}).values(), key=lambda f: f.sent_at)

    def used_by(self, consultation_id: str) -> bool:
        return bool(self._forms.get(consultation_id))

    # -- submitting ----------------------------------------------------------------------
    def begin_submit(self, instance: FormInstance) -> None:
        """Claim the form for one submission (cheap; on the loop): a second POST while
        the first is being written, or after it, is refused."""
        if instance.state != "sent":
            raise FormError(409, "This form has already been submitted.")
        instance.state = "submitting"

    def abort_submit(self, instance: FormInstance) -> None:
        if instance.state == "submitting":
            instance.state = "sent"

    def store_submission(
        self, instance: FormInstance, values: dict[str, Any], now: float | None = None
    ) -> list[Document]:
        """Render the filled form and store it as HTML and PDF (blocking: a thread)."""
        submitted = time.time() if now is None else now
        filled = FilledForm(
            instance.template, values, instance.id, datetime.fromtimestamp(submitted, UTC)
        )
        stem = filled.file_stem()
        made: list[Document] = []
        try:
            for suffix, content_type, render in (
                ("html", "text/html; charset=utf-8", render_html),
                ("pdf", "application/pdf", render_pdf),
            ):
                data = render(filled)
                made.append(
                    self.documents.add_generated(
                        instance.consultation_id,
                        f"{stem}.{suffix}",
                        data,
                        content_type,
                        sender="customer",
                        kind="form",
                    )
                )
        except DocumentError as exc:
            raise FormError(exc.status, exc.detail) from None
        return made

    def finish_submit(self, instance: FormInstance, documents: list[Document]) -> None:
        instance.documents = documents
        instance.state = "submitted"
        instance.submitted_at = time.time()

    # -- one-time links -------------------------------------------------------------------
    def mint_ticket(self, consultation_id: str, form_id: str, now: float | None = None) -> str:
        return self.tickets.mint(consultation_id, form_id, now)

    def redeem_ticket(
        self, ticket: str, consultation_id: str, form_id: str, now: float | None = None
    ) -> FormInstance | None:
        """The form when the ticket is valid for it; the ticket is used up either way."""
        if not self.tickets.redeem(ticket, consultation_id, form_id, now):
            return None
        return self.get(consultation_id, form_id)

    # -- the end ------------------------------------------------------------------------
    def remove_session(self, consultation_id: str) -> None:
        """Forget a consultation's forms and links (its documents go with the folder)."""
        self._forms.pop(consultation_id, None)
        self.tickets.forget(consultation_id)

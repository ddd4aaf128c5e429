"""Forms over HTTP (INTERFACE.md "Forms", docs/forms.md).

API (JSON, problem+json errors):

* ``GET /api/forms`` (advisor) – the templates that can be sent.
* ``POST /api/sessions/{id}/forms`` ``{"template": id}`` (advisor) → ``201`` with the
  form (``id``, ``template``, ``title``, ``state``, ``url``); every participant gets a
  ``form`` event, the customer's with the URL to fill it.
* ``GET /api/sessions/{id}/forms`` / ``…/forms/{form}`` (either participant) – state.
* ``POST /api/sessions/{id}/forms/{form}/ticket`` – a fresh one-time URL for the caller.

Pages (server-rendered, no script needed):

* ``/k/{id}/forms/{form}`` – the customer fills the form (phone-sized first). Opened
  with the customer page's cookie, or once with ``?ticket=`` from a ``form`` event (Flash's
  ``navigateToURL``, an API client's browser), which sets a cookie for this one form only
  and redirects to the URL without the ticket. The POST carries a per-form CSRF token,
  is checked against the template, shown again with the problems next to the fields
  (422), or stored as HTML + PDF documents and answered with a redirect (303).
* ``/k/{id}/forms/{form}/documents/{doc}`` – the customer's copy of the filled form.
* ``/advisor/{id}/forms/{form}`` – the advisor's read-only view (state, documents).

What the customer typed is never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.consultation import Consultation, Role
from gateway.documents import Document
from gateway.events import DocumentShared, FormChanged
from gateway.forms import Checked, FormDesk, FormError, FormInstance, Problem, check_form
from gateway.forms.template import Field, Template
from web.auth import (
    CUSTOMER_COOKIE,
    gateway_of,
    identify,
    require,
    require_participant,
    same_origin,
)
from web.documents import _file_response
from web.i18n import negotiate, remember
from web.jsonbody import read_json
from web.problems import ProblemError
from web.templates import View, esc

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

FORM_COOKIE = "vb_form"


def _desk(request: web.Request) -> FormDesk:
    desk = gateway_of(request).forms
    if desk is None:
        raise ProblemError(503, "Forms are not enabled on this gateway.")
    return desk


def _form(request: web.Request, consultation: Consultation) -> FormInstance:
    form = _desk(request).get(consultation.id, request.match_info["form"])
    if form is None:
        raise ProblemError(404, "No such form in this consultation.")
    return form


def _public(
    request: web.Request, consultation: Consultation, form: FormInstance, role: Role
) -> dict[str, Any]:
    channel = gateway_of(request).channel(consultation, role)
    return channel.address(FormChanged(sender=Role.ADVISOR, form=form)).wire()


def _form_path(consultation_id: str, form_id: str) -> str:
    return f"/k/{quote(consultation_id, safe='')}/forms/{quote(form_id, safe='')}"


# -- API ----------------------------------------------------------------------------------------


@routes.get("/api/forms", allow_head=False)
async def list_templates(request: web.Request) -> web.Response:
    principal = require(request)
    # an advisor credential, or an advisor's participant token (the templates are the
    # same for every consultation; customers have no use for the list)
    if not principal.advisor and (
        principal.grant is None or principal.grant.role is not Role.ADVISOR
    ):
        raise ProblemError(403, "Only an advisor may list the form templates.")
    return web.json_response([t.describe() for t in _desk(request).library.list()])


@routes.post("/api/sessions/{id}/forms")
async def send_form(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    if role is not Role.ADVISOR:
        raise ProblemError(403, "Only the advisor sends forms.")
    body = await read_json(request)
    template_id = body.get("template") if isinstance(body, dict) else None
    if not isinstance(template_id, str) or not template_id:
        raise ProblemError(400, 'Send JSON: {"template": "<template id>"}.')
    try:
        form = _desk(request).send(consultation.id, template_id)
    except FormError as exc:
        raise ProblemError(exc.status, exc.detail) from None
    consultation.features.add("forms")
    log.info("consultation %s: form %s (%s) sent", consultation.id, form.id, form.template.id)
    consultation.emit(FormChanged(sender=role, form=form))
    return web.json_response(
        _public(request, consultation, form, role),
        status=201,
        headers={
            "Location": f"/api/sessions/{quote(consultation.id, safe='')}/forms/"
            f"{quote(form.id, safe='')}"
        },
    )


@routes.get("/api/sessions/{id}/forms", allow_head=False)
async def list_forms(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    forms = _desk(request).forms_of(consultation.id)
    return web.json_response([_public(request, consultation, f, role) for f in forms])


@routes.get("/api/sessions/{id}/forms/{form}", allow_head=False)
async def get_form(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    return web.json_response(_public(request, consultation, _form(request, consultation), role))


@routes.post("/api/sessions/{id}/forms/{form}/ticket")
async def form_ticket(request: web.Request) -> web.Response:
    consultation, role = require_participant(request)
    form = _form(request, consultation)
    url = gateway_of(request).channel(consultation, role).form_url(form.id)
    return web.json_response(
        {"url": url, "expires_in": _desk(request).ticket_ttl if role is Role.CUSTOMER else None},
        status=201,
    )


# -- the customer's page ------------------------------------------------------------------------


def _view(request: web.Request) -> View:
    return View(negotiate(request), gateway_of(request).config.bank)


def _page(request: web.Request, html: str, status: int = 200) -> web.Response:
    response = web.Response(status=status, text=html, content_type="text/html")
    remember(request, response)
    return response


def _message(request: web.Request, title_key: str, text_key: str, status: int) -> web.Response:
    v = _view(request)
    main = '<section class="card form-card">' + v.tr(text_key, "p") + "</section>"
    return _page(request, v.document(title_key, main, body_class="page-form"), status)


def _form_access(request: web.Request) -> tuple[Consultation, FormInstance] | None:
    """The consultation and form when the caller may fill it: the customer page's cookie
    (any form of its consultation) or the form's own cookie (set by a ticket)."""
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended or gateway.forms is None:
        return None
    form = gateway.forms.get(consultation.id, request.match_info["form"])
    if form is None:
        return None
    grant = gateway.authorize(request.cookies.get(CUSTOMER_COOKIE))
    if grant is not None and grant.consultation is consultation and grant.role is Role.CUSTOMER:
        return consultation, form
    own = request.cookies.get(FORM_COOKIE, "")
    if own and hmac.compare_digest(own.encode(), form.access.encode()):
        return consultation, form
    return None


def _denied(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return _message(request, "gone.title", "gone.text", 404)
    return _message(request, "form.denied.title", "form.denied.text", 403)


@routes.get("/k/{id}/forms/{form}")
async def fill_page(request: web.Request) -> web.Response:
    ticket = request.query.get("ticket")
    if ticket is not None:
        return _redeem(request, ticket)
    access = _form_access(request)
    if access is None:
        return _denied(request)
    consultation, form = access
    v = _view(request)
    if form.state == "submitted":
        return _page(request, done_page(v, consultation.id, form))
    return _page(request, fill_form_page(v, consultation.id, form))


def _redeem(request: web.Request, ticket: str) -> web.Response:
    """A ticket becomes this form's cookie; the ticket leaves the address bar (and the
    history) at once. A used or expired ticket is no obstacle for a browser that may
    open the form anyway (the customer page's cookie, or an earlier ticket's)."""
    gateway = gateway_of(request)
    cid, fid = request.match_info["id"], request.match_info["form"]
    form = gateway.forms.redeem_ticket(ticket, cid, fid) if gateway.forms else None
    consultation = gateway.directory.get(cid)
    clean = _form_path(cid, fid)
    if form is None or consultation is None or consultation.ended:
        if _form_access(request) is not None:
            return web.Response(status=303, headers={"Location": clean})
        return _message(request, "form.expired.title", "form.expired.text", 403)
    response = web.Response(status=303, headers={"Location": clean})
    ttl = max(1, int(consultation.expires_at - consultation.created_at))
    response.set_cookie(
        FORM_COOKIE,
        form.access,
        path=clean,
        max_age=ttl,
        httponly=True,
        # Lax, not Strict: navigateToURL opens a new window whose first request has no
        # initiator; a later cross-site POST still goes without it (Lax).
        samesite="Lax",
        secure=gateway.config.tls,
    )
    return response


@routes.post("/k/{id}/forms/{form}")
async def submit_form(request: web.Request) -> web.Response:
    # The cookie alone must not be enough: our own origin (or "null" under no-referrer,
    # see web.auth.same_origin) and the form's CSRF token from the page.
    if not same_origin(request, required=False, null_ok=True):
        return _message(request, "foreign.title", "foreign.text", 403)
    access = _form_access(request)
    if access is None:
        return _denied(request)
    consultation, form = access
    data = await request.post()
    sent = {k: v for k, v in data.items() if isinstance(v, str)}
    token = sent.pop("csrf", "")
    if not hmac.compare_digest(token.encode(), form.csrf.encode()):
        return _message(request, "form.stale.title", "form.stale.text", 403)
    v = _view(request)
    if form.state != "sent":
        return _page(request, done_page(v, consultation.id, form), 409)
    checked = check_form(form.template, sent)
    if not checked.ok:
        return _page(request, fill_form_page(v, consultation.id, form, checked), 422)
    desk = _desk(request)
    try:
        desk.begin_submit(form)
    except FormError:
        return _page(request, done_page(v, consultation.id, form), 409)
    try:
        documents = await asyncio.to_thread(desk.store_submission, form, checked.values)
    except FormError as exc:
        desk.abort_submit(form)
        raise ProblemError(exc.status, exc.detail) from None
    except BaseException:
        desk.abort_submit(form)
        raise
    if consultation.ended:
        # It ended while the documents were written: the store may have made the folder
        # again after the end had removed it; the end's promise is that nothing stays.
        store = gateway_of(request).documents
        if store is not None:
            store.remove_session(consultation.id)
        return _message(request, "gone.title", "gone.text", 404)
    desk.finish_submit(form, documents)
    log.info("consultation %s: form %s (%s) submitted", consultation.id, form.id, form.template.id)
    for doc in documents:
        consultation.emit(DocumentShared(sender=Role(doc.sender), document=doc))
    consultation.emit(FormChanged(sender=Role.CUSTOMER, form=form))
    return web.Response(status=303, headers={"Location": _form_path(consultation.id, form.id)})


@routes.get("/k/{id}/forms/{form}/documents/{doc}")
async def customer_copy(request: web.Request) -> web.StreamResponse:
    access = _form_access(request)
    if access is None:
        return _denied(request)
    _, form = access
    for doc in form.documents:
        if doc.id == request.match_info["doc"]:
            return _file_response(doc)
    raise ProblemError(404, "No such document of this form.")


# -- the advisor's view ---------------------------------------------------------------------------


@routes.get("/advisor/{id}/forms/{form}")
async def advisor_view(request: web.Request) -> web.Response:
    principal = identify(request)
    if principal is None or not principal.advisor:
        return _message(request, "login.needed.title", "login.needed.text", 403)
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended or gateway.forms is None:
        return _message(request, "gone.title", "gone.text", 404)
    if principal.role_in(consultation) is None:  # another advisor's consultation
        return _message(request, "owner.title", "owner.text", 403)
    form = gateway.forms.get(consultation.id, request.match_info["form"])
    if form is None:
        return _message(request, "form.missing.title", "form.missing.text", 404)
    v = _view(request)
    return _page(request, preview_page(v, consultation.id, form))


# -- HTML ------------------------------------------------------------------------------------


def _problem_text(v: View, problem: Problem) -> str:
    if problem.text is not None:
        return problem.text.get(v.lang)
    return v.t(problem.key, **dict(problem.params))


# Autofill hints (WHATWG HTML §4.10.18.7, "autofill detail tokens") for the field names
# our templates use for contact data, so a phone fills them in one tap; a template's
# field keeps its name, and names not listed here get no hint.
_AUTOFILL = {
    "name": "name",
    "anrede": "honorific-prefix",
    "vorname": "given-name",
    "nachname": "family-name",
    "strasse": "street-address",
    "plz": "postal-code",
    "ort": "address-level2",
    "land": "country-name",
    "geburtsdatum": "bday",
    "arbeitgeber": "organization",
    "email": "email",
    "telefon": "tel",
}


def _input(v: View, f: Field, value: str, described: str, invalid: bool, disabled: bool) -> str:
    ident = f"f-{f.name}"
    common = f'id="{ident}" name="{esc(f.name)}"'
    if described:
        common += f' aria-describedby="{described}"'
    if invalid:
        common += ' aria-invalid="true"'
    if f.required:
        common += ' required aria-required="true"'
    if disabled:
        common += " disabled"
    hint = _AUTOFILL.get(f.name)
    if hint and f.type not in ("email", "phone", "iban", "signature-name"):
        common += f' autocomplete="{hint}"'  # those four set their own below
    maxlength = f' maxlength="{f.effective_max_length}"'
    if f.type == "multiline":
        return f'<textarea {common} rows="5"{maxlength}>{esc(value)}</textarea>'
    if f.type == "select":
        options = [f'<option value="">{esc(v.t("form.choose"))}</option>']
        for o in f.options:
            sel = " selected" if o.value == value else ""
            options.append(
                f'<option value="{esc(o.value)}"{sel}>{esc(o.label.get(v.lang))}</option>'
            )
        return f"<select {common}>{''.join(options)}</select>"
    if f.type == "date":
        # <input type=date> sends YYYY-MM-DD; where a browser shows a text box instead,
        # TT.MM.JJJJ is accepted as well (gateway.forms.fields.parse_date).
        return f'<input type="date" {common} value="{esc(value)}">'
    attrs = {
        "text": 'type="text"',
        "email": 'type="email" inputmode="email" autocomplete="email" spellcheck="false"',
        "phone": 'type="tel" inputmode="tel" autocomplete="tel"',
        "number": 'type="text" inputmode="decimal"',
        "iban": 'type="text" autocapitalize="characters" autocomplete="off" spellcheck="false"',
        "signature-name": 'type="text" autocomplete="name" class="signature"',
    }[f.type]
    return f'<input {attrs} {common}{maxlength} value="{esc(value)}">'


def _field_html(
    v: View,
    f: Field,
    sent: Mapping[str, str],
    problems: Mapping[str, Problem],
    disabled: bool = False,
) -> str:
    ident = f"f-{f.name}"
    problem = problems.get(f.name)
    label = esc(f.label.get(v.lang))
    mark = (
        f' <span class="req" aria-hidden="true">*</span>'
        f'<span class="visually-hidden"> ({esc(v.t("form.required"))})</span>'
        if f.required
        else ""
    )
    help_html = f'<p class="help" id="{ident}-help">{esc(f.help.get(v.lang))}</p>' if f.help else ""
    error_html = (
        f'<p class="field-error" id="{ident}-error">{esc(_problem_text(v, problem))}</p>'
        if problem
        else ""
    )
    described = " ".join(
        x for x in (f"{ident}-help" if f.help else "", f"{ident}-error" if problem else "") if x
    )
    cls = "field" + (" invalid" if problem else "") + f" type-{f.type}"
    value = sent.get(f.name, "")
    if f.type == "checkbox":
        checked = " checked" if value else ""
        attrs = f'id="{ident}" name="{esc(f.name)}" value="on"{checked}'
        if described:
            attrs += f' aria-describedby="{described}"'
        if problem:
            attrs += ' aria-invalid="true"'
        if disabled:
            attrs += " disabled"
        return (
            f'<div class="{cls}"><label class="check" for="{ident}">'
            f'<input type="checkbox" {attrs}><span>{label}{mark}</span></label>'
            f"{help_html}{error_html}</div>"
        )
    if f.type == "choice":
        radios = []
        for i, o in enumerate(f.options):
            rid = f"{ident}-{i}"
            chk = " checked" if o.value == value else ""
            dis = " disabled" if disabled else ""
            req = " required" if f.required and i == 0 else ""
            radios.append(
                f'<label class="check" for="{rid}"><input type="radio" id="{rid}" '
                f'name="{esc(f.name)}" value="{esc(o.value)}"{chk}{dis}{req}>'
                f"<span>{esc(o.label.get(v.lang))}</span></label>"
            )
        aria = f' aria-describedby="{described}"' if described else ""
        invalid = ' aria-invalid="true"' if problem else ""
        return (
            f'<fieldset class="{cls}" id="{ident}"{aria}{invalid}><legend>{label}{mark}</legend>'
            f"{help_html}{''.join(radios)}{error_html}</fieldset>"
        )
    return (
        f'<div class="{cls}"><label for="{ident}">{label}{mark}</label>{help_html}'
        f"{_input(v, f, value, described, problem is not None, disabled)}{error_html}</div>"
    )


def _body(
    v: View,
    template: Template,
    sent: Mapping[str, str],
    problems: Mapping[str, Problem],
    disabled: bool = False,
) -> str:
    parts = [f"<p>{esc(d.get(v.lang))}</p>" for d in template.description]
    for section in template.sections:
        inner = "".join(_field_html(v, f, sent, problems, disabled) for f in section.fields)
        desc = "".join(f'<p class="help">{esc(d.get(v.lang))}</p>' for d in section.description)
        if section.heading is not None:
            parts.append(
                f'<section class="form-section"><h2>{esc(section.heading.get(v.lang))}</h2>'
                f"{desc}{inner}</section>"
            )
        else:
            parts.append(f'<div class="form-section">{desc}{inner}</div>')
    return "".join(parts)


def fill_form_page(
    v: View, consultation_id: str, form: FormInstance, checked: Checked | None = None
) -> str:
    t = form.template
    problems = checked.problems if checked else {}
    sent = checked.sent if checked else {}
    summary = ""
    if problems:
        links = "".join(
            f'<li><a href="#f-{esc(f.name)}">{esc(f.label.get(v.lang))}</a></li>'
            for f in t.fields
            if f.name in problems
        )
        summary = (
            '<div class="error-summary" role="alert" tabindex="-1" id="error-summary">'
            + v.tr("form.errors.summary", "p", n=len(problems))
            + f"<ul>{links}</ul></div>"
        )
    action = _form_path(consultation_id, form.id)
    main = (
        '<section class="card form-card">'
        + summary
        + v.tr("form.intro", "p", 'class="form-intro"')
        + f'<form method="post" action="{esc(action)}" class="vb-form" novalidate '
        'accept-charset="utf-8">'
        + f'<input type="hidden" name="csrf" value="{esc(form.csrf)}">'
        + _body(v, t, sent, problems)
        + v.tr("form.privacy", "p", 'class="privacy"')
        + '<p class="form-actions"><button type="submit" class="primary">'
        + v.tr("form.submit")
        + "</button></p></form></section>"
    )
    return v.document(
        "form.page.title",
        main,
        title_params={"title": t.title.get(v.lang)},
        body_class="page-form",
    )


def _document_links(v: View, docs: list[Document], href: str) -> str:
    items = []
    for doc in docs:
        key = "form.done.pdf" if doc.content_type == "application/pdf" else "form.done.html"
        items.append(
            f'<li><a class="button secondary" href="{esc(href + quote(doc.id, safe=""))}" '
            f'download="{esc(doc.name)}">' + v.tr(key) + "</a></li>"
        )
    return f'<ul class="form-docs">{"".join(items)}</ul>' if items else ""


def _back_to_call(v: View, consultation_id: str) -> str:
    """The form opened in a tab of its own; the call runs on in the first one. The link
    is the room's own address: should that tab be gone, this one joins again."""
    cid = quote(consultation_id, safe="")
    return (
        '<div class="form-back">'
        + v.tr("form.back_hint", "p")
        + f'<p><a class="button primary" href="/k/{esc(cid)}" id="back-to-call">'
        + v.tr("form.back")
        + "</a></p></div>"
    )


def done_page(v: View, consultation_id: str, form: FormInstance) -> str:
    href = _form_path(consultation_id, form.id) + "/documents/"
    main = (
        '<section class="card form-card form-done">'
        + v.tr("form.done.text", "p", 'class="done" role="status"')
        + v.tr("form.done.copy", "p")
        + _document_links(v, form.documents, href)
        + _back_to_call(v, consultation_id)
        + "</section>"
    )
    return v.document(
        "form.page.title",
        main,
        title_params={"title": form.template.title.get(v.lang)},
        body_class="page-form",
    )


def preview_page(v: View, consultation_id: str, form: FormInstance) -> str:
    cid = quote(consultation_id, safe="")
    state = "form.state.submitted" if form.state == "submitted" else "form.state.sent"
    docs = _document_links(v, form.documents, f"/api/sessions/{cid}/documents/")
    main = (
        '<section class="card form-card">'
        + v.tr(state, "p", 'class="form-state" role="status"')
        + docs
        + v.tr("form.preview.note", "p", 'class="privacy"')
        + '<form class="vb-form preview" aria-disabled="true">'
        + _body(v, form.template, {}, {}, disabled=True)
        + "</form></section>"
    )
    nav = f'<a class="nav-link" href="/advisor/{esc(cid)}">' + v.tr("room.back") + "</a>"
    return v.document(
        "form.page.title",
        main,
        title_params={"title": form.template.title.get(v.lang)},
        body_class="page-form",
        nav=nav,
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)

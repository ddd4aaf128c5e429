"""Minimal HTML pages (German): advisor login and overview, the customer's PIN entry
and chat, the Flash placeholder. No inline script or style (the CSP forbids both), no
third-party assets; JavaScript in ``web/static`` reads its parameters from ``data-*``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from gateway.consultation import Consultation, Role
from gateway.service import AdvisorAuth
from web.auth import (
    ADVISOR_COOKIE,
    CUSTOMER_COOKIE,
    check_csrf,
    csrf_token,
    gateway_of,
    identify,
    same_origin,
)
from web.keys import GATEWAY_KEY
from web.links import events_path, participant_links
from web.pins import PinGuard, PinOutcome

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PIN_GUARD_KEY = web.AppKey("pin_guard", PinGuard)

routes = web.RouteTableDef()

_PIN = re.compile(r"\d{6}")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(
    title: str,
    main: str,
    *,
    status: int = 200,
    scripts: tuple[str, ...] = (),
    meta: Mapping[str, str] | None = None,
) -> web.Response:
    metas = "".join(f'<meta name="{esc(k)}" content="{esc(v)}">' for k, v in (meta or {}).items())
    tags = "".join(f'<script src="/static/{esc(s)}" defer></script>' for s in scripts)
    page = (
        '<!doctype html>\n<html lang="de"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} – Video-Beratung</title>"
        f'<link rel="stylesheet" href="/static/style.css">{metas}{tags}</head>'
        f"<body><main><h1>{esc(title)}</h1>\n{main}\n</main></body></html>\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def _set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    path: str,
    max_age: int,
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=gateway_of(request).config.tls,
    )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _chat_box(consultation: Consultation, role: Role, events: str) -> str:
    other = "Kunde/Kundin" if role is Role.ADVISOR else "Ihr Berater/Ihre Beraterin"
    return (
        f'<section id="chat" data-events="{esc(events)}" data-role="{esc(role)}" '
        f'data-other="{esc(other)}">'
        f'<p class="presence">{esc(other)}: <span class="other-state">unbekannt</span></p>'
        '<p class="status" role="status">Verbindung wird aufgebaut …</p>'
        '<ol class="chat-log" aria-live="polite"></ol>'
        '<form class="chat-form"><label for="chat-text">Nachricht</label> '
        '<input id="chat-text" name="text" maxlength="2000" autocomplete="off" required> '
        '<button type="submit">Senden</button></form>'
        "</section>"
    )


# -- advisor -------------------------------------------------------------------------------


def _advisor_session(request: web.Request) -> str | None:
    sid = request.cookies.get(ADVISOR_COOKIE)
    if sid and gateway_of(request).advisor_auth.check_session(sid):
        return sid
    return None


def _not_logged_in() -> web.Response:
    return render(
        "Nicht angemeldet",
        "<p>Bitte melden Sie sich mit dem Anmeldelink an, den der Dienst beim Start ausgibt.</p>",
        status=403,
    )


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _see_other("/advisor")


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.Response:
    # Browsers ask on every page; answering keeps 404 noise out of consoles and logs.
    return web.Response(status=204)


@routes.get("/login")
async def login(request: web.Request) -> web.Response:
    sid = gateway_of(request).advisor_auth.redeem_login(request.query.get("token"))
    if sid is None:
        return render(
            "Anmeldung fehlgeschlagen",
            "<p>Dieser Anmeldelink ist ungültig oder wurde bereits verwendet. "
            "Ein Anmeldelink gilt nur einmal.</p>",
            status=403,
        )
    log.info("advisor logged in")
    response = _see_other("/advisor")
    _set_cookie(
        request, response, ADVISOR_COOKIE, sid, path="/", max_age=int(AdvisorAuth.SESSION_TTL)
    )
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    principal = identify(request)
    if principal is not None and principal.cookie_session is not None:
        form = await request.post()
        token = form.get("csrf")
        check_csrf(request, principal, token if isinstance(token, str) else None)
        gateway_of(request).advisor_auth.end_session(principal.cookie_session)
    response = render("Abgemeldet", "<p>Sie sind abgemeldet.</p>")
    response.del_cookie(ADVISOR_COOKIE, path="/")
    return response


@routes.get("/advisor")
async def advisor_home(request: web.Request) -> web.Response:
    sid = _advisor_session(request)
    if sid is None:
        return _not_logged_in()
    gateway = gateway_of(request)
    csrf = csrf_token(request.app, sid)
    rows = []
    for consultation in gateway.directory.consultations.values():
        if consultation.ended:
            continue
        links = participant_links(gateway.config, consultation, Role.CUSTOMER)
        present = "anwesend" if consultation.participants[Role.CUSTOMER].connections else "–"
        rows.append(
            f'<tr><td><a href="/advisor/{esc(consultation.id)}">{esc(consultation.id)}</a></td>'
            f'<td><a href="{esc(links["page_url"])}">{esc(links["page_url"])}</a></td>'
            f"<td>{esc(links['pin'])}</td><td>{present}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Beratung</th><th>Link für den Kunden</th><th>PIN</th>"
        "<th>Kunde</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p>Keine laufenden Beratungen.</p>"
    )
    main = (
        '<p><button type="button" id="create-session">Neue Beratung anlegen</button></p>'
        '<div id="created" hidden></div>'
        "<h2>Laufende Beratungen</h2>" + table + '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button type="submit">Abmelden</button></form>'
    )
    return render("Video-Beratung", main, scripts=("advisor.js",), meta={"csrf-token": csrf})


@routes.get("/advisor/{id}")
async def advisor_consultation(request: web.Request) -> web.Response:
    sid = _advisor_session(request)
    if sid is None:
        return _not_logged_in()
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return _gone()
    links = participant_links(gateway.config, consultation, Role.CUSTOMER)
    main = (
        "<dl>"
        f'<dt>Link für den Kunden</dt><dd><a href="{esc(links["page_url"])}">'
        f"{esc(links['page_url'])}</a></dd>"
        f'<dt>PIN</dt><dd class="pin">{esc(links["pin"])}</dd>'
        f'<dt>Flash-Zugang</dt><dd><a href="{esc(links["flash_page_url"])}">'
        f"{esc(links['flash_page_url'])}</a></dd>"
        "</dl>"
        + _chat_box(consultation, Role.ADVISOR, events_path(consultation.id))
        + f'<p><button type="button" id="end-session" data-id="{esc(consultation.id)}">'
        "Beratung beenden</button></p>"
        '<p><a href="/advisor">Zur Übersicht</a></p>'
    )
    return render(
        "Beratung",
        main,
        scripts=("chat.js", "advisor.js"),
        meta={"csrf-token": csrf_token(request.app, sid)},
    )


# -- customer ------------------------------------------------------------------------------


def _gone() -> web.Response:
    return render(
        "Beratung nicht verfügbar",
        "<p>Diese Beratung gibt es nicht (mehr). Bitte wenden Sie sich an Ihre Beraterin "
        "oder Ihren Berater.</p>",
        status=404,
    )


def _locked() -> web.Response:
    return render(
        "Zugang gesperrt",
        "<p>Die PIN wurde zu oft falsch eingegeben. Dieser Link ist aus Sicherheitsgründen "
        "gesperrt; bitte lassen Sie sich von Ihrer Beraterin oder Ihrem Berater einen "
        "neuen Link geben.</p>",
        status=403,
    )


def _pin_form(consultation: Consultation, message: str = "", status: int = 200) -> web.Response:
    note = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    main = (
        "<p>Bitte geben Sie die 6-stellige PIN ein, die Sie von Ihrer Beraterin oder Ihrem "
        "Berater erhalten haben.</p>"
        + note
        + f'<form method="post" action="/k/{esc(consultation.id)}">'
        '<label for="pin">PIN</label> '
        '<input id="pin" name="pin" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" '
        'autocomplete="one-time-code" required autofocus> '
        '<button type="submit">Weiter</button></form>'
        "<p>Kamera und Mikrofon bleiben aus, bis Sie sie selbst einschalten.</p>"
    )
    return render("Ihre Video-Beratung", main, status=status)


def _customer_grant_ok(request: web.Request, consultation: Consultation) -> bool:
    grant = gateway_of(request).authorize(request.cookies.get(CUSTOMER_COOKIE))
    return grant is not None and grant.consultation is consultation


@routes.get("/k/{id}")
async def customer_page(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return _gone()
    if _customer_grant_ok(request, consultation):
        main = (
            "<p>Sie sind mit Ihrer Beratung verbunden. Kamera und Mikrofon sind aus; "
            "Sie können jederzeit gehen.</p>"
            + _chat_box(consultation, Role.CUSTOMER, f"/k/{consultation.id}/events")
            + '<p><button type="button" id="leave">Beratung verlassen</button></p>'
        )
        return render("Ihre Video-Beratung", main, scripts=("chat.js",))
    if request.app[PIN_GUARD_KEY].locked(consultation):
        return _locked()
    return _pin_form(consultation)


@routes.post("/k/{id}")
async def customer_pin(request: web.Request) -> web.Response:
    # Login CSRF into a consultation would need the PIN anyway; this only stops other
    # sites from burning the PIN attempts of a link they know.
    if not same_origin(request, required=False, null_ok=True):
        return render("Anfrage abgelehnt", "<p>Anfrage von fremder Seite.</p>", status=403)
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return _gone()
    guard = request.app[PIN_GUARD_KEY]
    if guard.locked(consultation):
        return _locked()
    form = await request.post()
    raw = form.get("pin")
    pin = raw.replace(" ", "").strip() if isinstance(raw, str) else ""
    if not _PIN.fullmatch(pin):
        # not counted: a malformed entry is a typo, not a guess
        return _pin_form(consultation, "Bitte geben Sie die 6-stellige PIN ein.", status=400)
    result = guard.attempt(consultation, pin)
    if result.outcome is PinOutcome.LOCKED:
        log.warning("consultation %s: PIN locked after repeated wrong entries", consultation.id)
        return _locked()
    if result.outcome is PinOutcome.WRONG:
        times = "Versuch" if result.remaining == 1 else "Versuche"
        return _pin_form(
            consultation,
            f"Die PIN ist nicht richtig. Noch {result.remaining} {times}.",
            status=403,
        )
    response = _see_other(f"/k/{consultation.id}")
    # HttpOnly and scoped to this consultation's pages: the page's script never sees
    # the token, and no other path of the site receives it.
    ttl = max(1, int(consultation.expires_at - consultation.created_at))
    token = consultation.participants[Role.CUSTOMER].token
    _set_cookie(
        request, response, CUSTOMER_COOKIE, token, path=f"/k/{consultation.id}", max_age=ttl
    )
    return response


@routes.get("/flash/{id}")
async def flash_page(request: web.Request) -> web.Response:
    consultation = gateway_of(request).directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return _gone()
    main = (
        "<p>Der Zugang mit dem Flash Player folgt in einer späteren Version. Bis dahin "
        f'nehmen Sie bitte <a href="/k/{esc(consultation.id)}">über Ihren Browser</a> '
        "an der Beratung teil.</p>"
    )
    return render("Video-Beratung mit Flash", main)


async def _pin_guard_ctx(app: web.Application) -> AsyncIterator[None]:
    # Forget PIN failures of ended consultations; unhook on cleanup since the gateway
    # (and its directory) may outlive this application, as in tests.
    directory = app[GATEWAY_KEY].directory
    guard = app[PIN_GUARD_KEY]
    directory.on_end.append(guard.forget)
    yield
    directory.on_end.remove(guard.forget)


def setup(app: web.Application) -> None:
    app[PIN_GUARD_KEY] = PinGuard()
    app.cleanup_ctx.append(_pin_guard_ctx)
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC_DIR, name="static")

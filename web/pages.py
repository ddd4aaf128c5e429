"""HTML pages: advisor login, overview and consultation page, the customer's PIN entry
and consultation page, the Flash page with its SWF and ``/crossdomain.xml``.

German by default, English on request (``web/i18n.py``); the markup is in
``web/templates.py``. No inline script or style (the CSP forbids both), no third-party
assets; JavaScript in ``web/static`` reads its parameters from ``data-*`` and ``<meta>``.

The consultation pages carry the participant's token in ``<meta name="vb-token">`` for
the WHIP/WHEP requests (``Authorization: Bearer``; fetch() cannot use the HttpOnly
cookies, and the WebRTC endpoints take bearer tokens only). The pages are served only to
the authenticated participant (advisor login, or the customer after the PIN) and with
``Cache-Control: no-store``; the token never appears in a URL.
"""

from __future__ import annotations

import logging
import math
import time
from http.cookies import Morsel
from pathlib import Path

from aiohttp import web

from gateway.config import Config
from gateway.consultation import Consultation, Role, normalize_pin
from web.auth import CUSTOMER_COOKIE, gateway_of, same_origin
from web.documents import page_limits
from web.i18n import negotiate, remember
from web.keys import GATEWAY_KEY
from web.pins import PinGuard, PinOutcome
from web.swf import SWF_PATH, SWF_URL_PATH, crossdomain_policy, flash_vars, shipped_hash
from web.templates import (
    BRAND_CSS_PATH,
    BRAND_FLASH_CSS_PATH,
    BRAND_LOGO_PATH,
    FLASH_STYLESHEET,
    View,
    brand_css,
    customer_room,
    esc,
    flash_missing_notice,
    flash_room,
)
from web.throttle import FailureLimiter

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PIN_GUARD_KEY = web.AppKey("pin_guard", PinGuard)

routes = web.RouteTableDef()


def view(request: web.Request) -> View:
    return View(negotiate(request), gateway_of(request).config.bank)


def html_response(request: web.Request, page: str, *, status: int = 200) -> web.Response:
    response = web.Response(status=status, text=page, content_type="text/html")
    remember(request, response)
    return response


def message_page(
    request: web.Request, title_key: str, *text_keys: str, status: int = 200
) -> web.Response:
    """A page with a title and one paragraph per string (errors, notices)."""
    v = view(request)
    main = "".join(v.tr(key, "p") for key in text_keys)
    return html_response(request, v.document(title_key, main), status=status)


def set_cookie(
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


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _see_other("/advisor")


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.Response:
    # Browsers ask on every page; answering keeps 404 noise out of consoles and logs.
    return web.Response(status=204)


# -- customer ------------------------------------------------------------------------------


def _open(consultation: Consultation | None) -> Consultation | None:
    # the sweeper may not have ended an expired one yet: its link is dead from the
    # second it expires, as its tokens are
    if consultation is None or consultation.ended or time.time() >= consultation.expires_at:
        return None
    return consultation


def open_consultation(request: web.Request) -> Consultation | None:
    """The consultation named in the path, None once it ended or expired."""
    return _open(gateway_of(request).directory.get(request.match_info["id"]))


def linked_consultation(request: web.Request) -> Consultation | None:
    """The consultation whose current customer link is the path's id (the PIN form):
    after the advisor issued a new PIN and link, the old link finds nothing."""
    return _open(gateway_of(request).directory.by_link(request.match_info["id"]))


def _replaced(request: web.Request) -> web.Response:
    return message_page(request, "link.replaced.title", "link.replaced.text", status=403)


def _gone(request: web.Request) -> web.Response:
    return message_page(request, "gone.title", "gone.text", status=404)


def _locked(request: web.Request) -> web.Response:
    return message_page(request, "locked.title", "locked.text", status=403)


def _address_locked(request: web.Request, retry_after: float) -> web.Response:
    """429 (RFC 6585) for an address that entered too many wrong PINs; nothing counted."""
    v = view(request)
    minutes = max(1, math.ceil(retry_after / 60))
    main = v.tr("pin.address_locked.text", "p", 'role="alert"', minutes=minutes)
    response = html_response(request, v.document("pin.address_locked.title", main), status=429)
    response.headers["Retry-After"] = str(math.ceil(retry_after))
    return response


def _pin_form(
    request: web.Request,
    consultation: Consultation,
    message: str = "",
    status: int = 200,
    *,
    action: str | None = None,
    flash: bool = False,
    **params: int,
) -> web.Response:
    v = view(request)
    action = action or f"/k/{consultation.id}"
    note = v.tr(message, "p", 'class="error" role="alert"', **params) if message else ""
    # whom the customer is about to meet, when the advisor's account has a display name
    # (gateway.advisors); the operator's consultations have none
    shown = consultation.owner_display_name
    with_advisor = (
        v.tr("pin.with_advisor", "p", 'class="with-advisor"', name=shown) if shown else ""
    )
    main = (
        # the Flash page says first whether this browser can show Flash at all (issue 10)
        (flash_missing_notice(v, consultation.id) if flash else "")
        + '<section class="card pin-card">'
        + with_advisor
        + v.tr("pin.intro", "p")
        + note
        + f'<form method="post" action="{esc(action)}" class="pin-form">'
        + v.tr("pin.label", "label", 'for="pin"')
        # Typed as shown ("691 443", "691-443"): no pattern and room for separators; the
        # server normalises (NFKC, separators out) and says so when it is not a PIN.
        + '<input id="pin" name="pin" inputmode="numeric" maxlength="20" '
        'autocomplete="one-time-code" aria-describedby="pin-hint" required autofocus>'
        + v.tr("pin.hint", "p", 'id="pin-hint" class="hint"')
        + '<button type="submit" class="primary">'
        + v.tr("pin.submit")
        + "</button></form>"
        + v.tr("pin.privacy", "p", 'class="privacy"')
        + "</section>"
    )
    scripts, stylesheet = (("flash.js",), FLASH_STYLESHEET) if flash else ((), "style.css")
    document = v.document(
        "pin.title", main, body_class="page-pin", scripts=scripts, stylesheet=stylesheet
    )
    return html_response(request, document, status=status)


def _phone(config: Config, consultation: Consultation) -> dict[str, str] | None:
    """The dial-in number and code the customer's pages show (docs/phone.md), or None."""
    if not consultation.phone_code:
        return None
    return {"number": config.phone_number, "code": consultation.phone_code}


def _customer_grant_ok(request: web.Request, consultation: Consultation) -> bool:
    grant = gateway_of(request).authorize(request.cookies.get(CUSTOMER_COOKIE))
    return grant is not None and grant.consultation is consultation


@routes.get("/k/{id}")
async def customer_page(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    room = open_consultation(request)
    if room is not None and _customer_grant_ok(request, room):
        page = customer_room(
            view(request),
            room.id,
            token=room.participants[Role.CUSTOMER].token,
            ice_urls=gateway.config.ice_urls(),
            documents=page_limits(gateway),
            bank=gateway.config.bank,
            advisor_name=room.owner_display_name,
            waiting_room=room.waiting_room,
            phone=_phone(gateway.config, room),
            # the device check on the first entry only: a reload, "Wieder teilnehmen",
            # a second tab or the way back from a form go straight in
            device_check=room.participants[Role.CUSTOMER].joined_at is None,
        )
        return html_response(request, page)
    consultation = linked_consultation(request)
    if consultation is None:
        return _replaced(request) if room is not None else _gone(request)
    if _customer_grant_ok(request, consultation):
        return _see_other(f"/k/{consultation.id}")  # the link of a customer already in
    if request.app[PIN_GUARD_KEY].locked(consultation):
        return _locked(request)
    return _pin_form(request, consultation, action=f"/k/{request.match_info['id']}")


@routes.post("/k/{id}")
async def customer_pin(request: web.Request) -> web.Response:
    return await _redeem_pin(request, page="/k/{id}")


async def _redeem_pin(request: web.Request, page: str) -> web.Response:
    """The PIN form's POST for the customer page and the Flash page (``page``, with
    ``{id}``): a correct PIN sets the customer cookie for both pages of the consultation
    and redirects to ``page``."""
    # Login CSRF into a consultation would need the PIN anyway; this only stops other
    # sites from burning the PIN attempts of a link they know.
    if not same_origin(request, required=False, null_ok=True):
        return message_page(request, "foreign.title", "foreign.text", status=403)
    gateway = gateway_of(request)
    consultation = linked_consultation(request)
    if consultation is None:
        return _replaced(request) if open_consultation(request) is not None else _gone(request)
    # the form posts to the link (/k/{link}); the room is at /k/{consultation id}
    form_action = page.format(id=request.match_info["id"])
    action = page.format(id=consultation.id)
    flash = action.startswith("/flash/")
    guard = request.app[PIN_GUARD_KEY]
    if guard.locked(consultation):
        return _locked(request)
    form = await request.post()
    raw = form.get("pin")
    pin = normalize_pin(raw) if isinstance(raw, str) else None
    if pin is None:
        # not counted: a malformed entry is a typo, not a guess
        return _pin_form(
            request, consultation, "pin.malformed", status=400, action=form_action, flash=flash
        )
    result = guard.attempt(consultation, pin, request.remote)
    if result.outcome is PinOutcome.ADDRESS_LOCKED:
        return _address_locked(request, result.retry_after)
    if result.outcome is PinOutcome.LOCKED:
        log.warning("consultation %s: PIN locked after repeated wrong entries", consultation.id)
        return _locked(request)
    if result.outcome is PinOutcome.WRONG:
        key = "pin.wrong.one" if result.remaining == 1 else "pin.wrong.other"
        return _pin_form(
            request,
            consultation,
            key,
            status=403,
            action=form_action,
            flash=flash,
            n=result.remaining,
        )
    response = _see_other(action)
    # HttpOnly and scoped to this consultation's pages (the events socket uses it); the
    # page itself carries the token for WHIP/WHEP (see the module docstring). The Flash
    # page gets its own copy (its path is outside /k/), so its link to the browser page
    # works without a second PIN.
    ttl = max(1, int(consultation.expires_at - consultation.created_at))
    token = consultation.participants[Role.CUSTOMER].token
    set_cookie(request, response, CUSTOMER_COOKIE, token, path=f"/k/{consultation.id}", max_age=ttl)
    if action.startswith("/flash/"):
        # A second cookie of the same name: aiohttp keeps one per name, so by hand.
        morsel: Morsel[str] = Morsel()
        morsel.set(CUSTOMER_COOKIE, token, token)
        morsel["path"] = action
        morsel["max-age"] = str(ttl)
        morsel["httponly"] = "1"  # flags: any non-empty value sets them
        morsel["samesite"] = "Strict"
        morsel["secure"] = "1" if gateway.config.tls else ""
        response.headers.add("Set-Cookie", morsel.OutputString())
    return response


@routes.get("/flash/{id}")
async def flash_page(request: web.Request) -> web.Response:
    """The legacy Flash page: the PIN first (as the customer page), then the SWF client
    with the customer token in its FlashVars. Served only after the PIN and with
    ``Cache-Control: no-store``, like the customer page that carries the same token."""
    gateway = gateway_of(request)
    room = open_consultation(request)
    if room is not None and _customer_grant_ok(request, room):
        v = view(request)
        flashvars = flash_vars(
            gateway.config,
            token=room.participants[Role.CUSTOMER].token,
            lang=v.lang,
            advisor_name=room.owner_display_name,
            phone_code=room.phone_code,
        )
        swf = f"{SWF_URL_PATH}?v={(shipped_hash() or 'dev')[:12]}"
        page = flash_room(
            v, room.id, swf_url=swf, flashvars=flashvars, phone=_phone(gateway.config, room)
        )
        return html_response(request, page)
    consultation = linked_consultation(request)
    if consultation is None:
        return _replaced(request) if room is not None else _gone(request)
    if request.app[PIN_GUARD_KEY].locked(consultation):
        return _locked(request)
    return _pin_form(request, consultation, action=f"/flash/{request.match_info['id']}", flash=True)


@routes.post("/flash/{id}")
async def flash_pin(request: web.Request) -> web.Response:
    return await _redeem_pin(request, page="/flash/{id}")


@routes.get(SWF_URL_PATH)
async def flash_swf(request: web.Request) -> web.FileResponse:
    # Registered before the static route: the classic Flash type, which Flash Player
    # and Ruffle expect (mimetypes says application/vnd.adobe.flash.movie).
    return web.FileResponse(SWF_PATH, headers={"Content-Type": "application/x-shockwave-flash"})


# -- the bank's look (docs/web.md "The bank's look") ----------------------------------------


@routes.get(BRAND_CSS_PATH)
async def brand_stylesheet(request: web.Request) -> web.Response:
    return _brand_css(request, flash=False)


@routes.get(BRAND_FLASH_CSS_PATH)
async def brand_flash_stylesheet(request: web.Request) -> web.Response:
    return _brand_css(request, flash=True)


def _brand_css(request: web.Request, *, flash: bool) -> web.Response:
    css = brand_css(gateway_of(request).config.bank, flash=flash)
    # the look changes only with a restart: a browser may keep it for an hour
    return web.Response(
        text=css, content_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@routes.get(BRAND_LOGO_PATH)
async def brand_logo(request: web.Request) -> web.StreamResponse:
    """The bank's logo from the configured local file: the pages never load it from the
    bank's web site (no third-party request). An SVG gets a CSP of its own so that no
    script in it runs, even when opened directly."""
    bank = gateway_of(request).config.bank
    media_type = bank.logo_type()
    if media_type is None:
        raise web.HTTPNotFound()
    headers = {"Content-Type": media_type, "Cache-Control": "public, max-age=3600"}
    if media_type == "image/svg+xml":
        headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        )
    return web.FileResponse(bank.logo, headers=headers)


@routes.get("/crossdomain.xml")
async def crossdomain(request: web.Request) -> web.Response:
    """Flash Player's policy file: only the gateway's own origin (no wildcard), and no
    other policy file on this host may widen it (``master-only``)."""
    return web.Response(
        text=crossdomain_policy(gateway_of(request).config),
        content_type="text/x-cross-domain-policy",
    )


def setup(app: web.Application) -> None:
    limits = app[GATEWAY_KEY].config.limits
    app[PIN_GUARD_KEY] = PinGuard(
        per_address=FailureLimiter(
            limits.pin_max_wrong_per_address,
            limits.pin_address_window,
            limits.pin_address_lockout,
        ),
    )
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC_DIR, name="static")

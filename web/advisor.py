"""The advisor's side of the pages: sign-in, sign-out, the start page, the consultation
page, and ending a consultation from the start page.

Sign-in, three ways (docs/privacy.md, "Advisor accounts"):

- name and password (``python -m gateway advisor add NAME``) on ``/login``, limited per
  address and per account (``login_*`` limits: lock-out after repeated failures);
- the one-time link the service prints at start (``/login?token=…``);
- ``Authorization: Bearer <--advisor-token>`` for scripts (no page, no cookie).

The cookie ``vb_advisor`` is HttpOnly, SameSite=Strict, Secure under TLS. Every
state-changing form carries the CSRF token (an HMAC of the cookie session, see
``web.auth``); the sign-in form, which has no session yet, carries an HMAC of a
short-lived pre-login cookie ``vb_login`` instead, so another site cannot sign a
browser in to an account of its choosing (login CSRF).

A consultation belongs to the advisor who created it (``Consultation.owner``: the
account, or the operator for the static token and the one-time login, who are one
principal). Only its owner sees it on the start page and opens its room; everyone else
gets 403 there and in the API (``web.auth.known_role``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import time

from aiohttp import web

from gateway.consultation import Consultation, Role, group_pin
from gateway.service import AdvisorAuth, AdvisorSession
from gateway.store import LockoutStore
from web.auth import ADVISOR_COOKIE, check_csrf, csrf_token, gateway_of, identify, same_origin
from web.cluster import end_elsewhere, remote_row, rooms_elsewhere
from web.documents import page_limits
from web.keys import CSRF_SECRET_KEY, GATEWAY_KEY
from web.links import iso_utc, participant_links
from web.pages import html_response, message_page, set_cookie, view
from web.problems import problem_response
from web.templates import View, advisor_room, esc
from web.throttle import FailureLimiter, address_key

log = logging.getLogger(__name__)

LOGIN_COOKIE = "vb_login"
LOGIN_FORM_TTL = 3600
_NEXT = re.compile(r"/(advisor|ops)(/[A-Za-z0-9_\-]{1,64})?")


class LoginGuard:
    """Failure counting for the sign-in form: per address and per account name.

    Also two bounds the counts alone would not give: one password check at a time per
    account and per address (parallel requests would otherwise all be checked before
    the first failure is counted), and at most ``MAX_VERIFYING`` argon2 checks at once
    in the whole process (each takes 64 MiB and tens of milliseconds of a core).
    """

    MAX_VERIFYING = 2

    def __init__(self, per_address: FailureLimiter, per_account: FailureLimiter) -> None:
        self.per_address = per_address
        self.per_account = per_account
        self.in_flight: set[str] = set()
        self._verifying: asyncio.Semaphore | None = None

    @property
    def verifying(self) -> asyncio.Semaphore:
        if self._verifying is None:  # created on the serving loop
            self._verifying = asyncio.Semaphore(self.MAX_VERIFYING)
        return self._verifying

    def retry_after(self, address: str, account: str) -> float:
        return max(
            self.per_address.retry_after(address), self.per_account.retry_after(account.lower())
        )

    def failed(self, address: str, account: str) -> float:
        return max(self.per_address.fail(address), self.per_account.fail(account.lower()))

    def succeeded(self, account: str) -> None:
        # The address keeps its count: a valid account of its own must not let an
        # address reset its budget between guesses at other accounts.
        self.per_account.succeed(account.lower())

    # -- with the cluster's shared lock-outs (gateway/store/, docs/cluster.md) --------------
    # Each node counts as before; with a shared store the per-account count is kept there
    # too, so N nodes do not give a guesser N times the budget for one account.
    shared: LockoutStore | None = None

    async def shared_retry_after(self, address: str, account: str) -> float:
        wait = self.retry_after(address, account)
        if self.shared is not None and account:
            key = "account:" + account.lower()
            wait = max(wait, await asyncio.to_thread(self.shared.retry_after, key, time.time()))
        return wait

    async def shared_failed(self, address: str, account: str) -> float:
        locked = self.failed(address, account)
        if self.shared is not None and account:
            limiter, key = self.per_account, "account:" + account.lower()
            locked = max(
                locked,
                await asyncio.to_thread(
                    self.shared.fail,
                    key,
                    time.time(),
                    limiter.window,
                    limiter.max_failures,
                    limiter.lockout,
                ),
            )
        return locked

    async def shared_succeeded(self, account: str) -> None:
        self.succeeded(account)
        if self.shared is not None and account:
            key = "account:" + account.lower()
            await asyncio.to_thread(self.shared.clear, key, time.time())


LOGIN_GUARD_KEY = web.AppKey("login_guard", LoginGuard)

routes = web.RouteTableDef()


def advisor_session(request: web.Request) -> tuple[str, AdvisorSession] | None:
    """The signed-in advisor's cookie session id and session, or None."""
    sid = request.cookies.get(ADVISOR_COOKIE)
    if not sid:
        return None
    entry = gateway_of(request).advisor_auth.session(sid)
    return None if entry is None else (sid, entry)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _safe_next(value: object) -> str:
    return value if isinstance(value, str) and _NEXT.fullmatch(value) else "/advisor"


def _login_csrf(request: web.Request, nonce: str) -> str:
    digest = hmac.new(
        request.app[CSRF_SECRET_KEY], b"login:" + nonce.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def login_page(
    request: web.Request,
    *,
    status: int = 200,
    message: str = "",
    next_path: str = "/advisor",
    name: str = "",
    retry_after: float = 0.0,
    title_key: str = "login.title",
) -> web.Response:
    """The sign-in form (also the answer to an advisor page without a session)."""
    v = view(request)
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_\-]{20,64}", nonce):
        nonce = secrets.token_urlsafe(24)
    params = {"minutes": max(1, math.ceil(retry_after / 60))} if retry_after else {}
    note = v.tr(message, "p", 'class="error" role="alert"', **params) if message else ""
    main = (
        '<section class="card login-card">'
        + note
        + '<form method="post" action="/login" class="login-form">'
        + f'<input type="hidden" name="csrf" value="{esc(_login_csrf(request, nonce))}">'
        + f'<input type="hidden" name="next" value="{esc(next_path)}">'
        + v.tr("login.name", "label", 'for="login-name"')
        + f'<input id="login-name" name="name" autocomplete="username" maxlength="64" '
        f'value="{esc(name)}" required{"" if name else " autofocus"}>'
        + v.tr("login.password", "label", 'for="login-password"')
        + '<input id="login-password" name="password" type="password" maxlength="1024" '
        f'autocomplete="current-password" required{" autofocus" if name else ""}>'
        + '<button type="submit" class="primary">'
        + v.tr("login.submit")
        + "</button></form></section>"
    )
    response = html_response(
        request, v.document(title_key, main, body_class="page-login"), status=status
    )
    # scoped to the form's target; SameSite=Strict: a cross-site POST arrives without it
    set_cookie(request, response, LOGIN_COOKIE, nonce, path="/login", max_age=LOGIN_FORM_TTL)
    if retry_after:
        response.headers["Retry-After"] = str(math.ceil(retry_after))
    return response


def _not_signed_in(request: web.Request) -> web.Response:
    # 403 with the form in it: the page the advisor wanted comes back after signing in
    return login_page(
        request,
        status=403,
        message="login.needed.text",
        next_path=_safe_next(request.path),
        title_key="login.needed.title",
    )


# -- sign-in and sign-out ----------------------------------------------------------------------


@routes.get("/login")
async def login(request: web.Request) -> web.Response:
    if "token" not in request.query:
        if advisor_session(request) is not None:
            return _see_other(_safe_next(request.query.get("next")))
        return login_page(request, next_path=_safe_next(request.query.get("next")))
    sid = gateway_of(request).advisor_auth.redeem_login(request.query.get("token"))
    if sid is None:
        # used, expired or mistyped: the sign-in form says so (no dead end)
        return login_page(
            request, status=403, message="login.link_invalid", title_key="login.failed.title"
        )
    await gateway_of(request).advisor_auth.publish(sid)  # every node knows it (cluster)
    log.info("advisor signed in with the one-time link")
    response = _see_other("/advisor")
    set_cookie(
        request, response, ADVISOR_COOKIE, sid, path="/", max_age=int(AdvisorAuth.SESSION_TTL)
    )
    return response


@routes.post("/login")
async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    name = form.get("name")
    password = form.get("password")
    name = name.strip()[:64] if isinstance(name, str) else ""
    password = password if isinstance(password, str) else ""
    next_path = _safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    sent = form.get("csrf")
    if (
        not same_origin(request, required=False, null_ok=True)
        or not nonce
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), _login_csrf(request, nonce).encode())
    ):
        return login_page(
            request, status=403, message="login.expired", next_path=next_path, name=name
        )
    auth = gateway_of(request).advisor_auth
    guard = request.app[LOGIN_GUARD_KEY]
    address = address_key(request.remote)
    wait = await guard.shared_retry_after(address, name)
    if wait:
        return login_page(
            request, status=429, message="login.locked", next_path=next_path, retry_after=wait
        )
    keys = {f"address:{address}", f"account:{name.lower()}"}
    if keys & guard.in_flight:
        # a check for this account or address is running: answer as locked, briefly
        return login_page(
            request, status=429, message="login.locked", next_path=next_path, retry_after=1
        )
    verified = None
    if auth.accounts is not None and name and password:
        guard.in_flight |= keys
        try:
            async with guard.verifying:
                # argon2 takes tens of milliseconds of CPU on purpose: not on the loop
                verified = await asyncio.to_thread(auth.accounts.verify, name, password)
        finally:
            guard.in_flight -= keys
    if verified is None:
        locked = await guard.shared_failed(address, name)
        if locked:
            log.warning("advisor sign-in locked for %d s after repeated failures", locked)
            return login_page(
                request, status=429, message="login.locked", next_path=next_path, retry_after=locked
            )
        return login_page(
            request, status=403, message="login.wrong", next_path=next_path, name=name
        )
    await guard.shared_succeeded(name)
    account, generation = verified
    sid = auth.new_session(account, generation)
    await auth.publish(sid)  # every node knows it (cluster)
    log.info("advisor %s signed in", account)
    response = _see_other(next_path)
    set_cookie(
        request, response, ADVISOR_COOKIE, sid, path="/", max_age=int(AdvisorAuth.SESSION_TTL)
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    principal = identify(request)
    if principal is not None and principal.cookie_session is not None:
        form = await request.post()
        token = form.get("csrf")
        check_csrf(request, principal, token if isinstance(token, str) else None)
        await gateway_of(request).advisor_auth.withdraw(principal.cookie_session)
    response = message_page(request, "logout.title", "logout.text")
    response.del_cookie(ADVISOR_COOKIE, path="/")
    return response


# -- the start page ------------------------------------------------------------------------------


def customer_state(consultation: Consultation) -> str:
    """What the overview shows of the customer: ``absent``, ``waiting`` (the customer is
    there, the advisor not yet), ``together``, ``locked`` or ``noshow``."""
    return consultation.customer_state()


_STATE_KEYS = {
    "absent": "overview.absent",
    "waiting": "overview.waiting",
    "lobby": "overview.lobby",
    "together": "overview.together",
    "locked": "overview.locked",
    "noshow": "overview.noshow",
}


def lobby_message(consultation: Consultation) -> dict[str, object] | None:
    """The last chat message of a customer in the waiting room (the overview shows it,
    docs/web.md); None otherwise. From memory, to the owner only."""
    if consultation.customer_state() != "lobby":
        return None
    for message in reversed(consultation.chat_log):
        if message.sender is Role.CUSTOMER:
            return {"text": message.text, "ts": message.ts}
    return None


def _lobby(v: View, consultation: Consultation, state: str) -> str:
    """The waiting room in a row: "Einlassen" and what the customer wrote meanwhile."""
    cid = esc(consultation.id)
    message = lobby_message(consultation)
    text = esc(message["text"]) if message else ""
    hidden = "" if state == "lobby" else " hidden"
    return (
        f'<button type="button" class="lobby-admit primary" data-id="{cid}"{hidden}>'
        + v.tr("lobby.admit")
        + "</button>"
        + f'<p class="lobby-message" id="msg-{cid}"{"" if message else " hidden"}>{text}</p>'
    )


def visible_consultations(request: web.Request, entry: AdvisorSession) -> list[Consultation]:
    """The signed-in advisor's own consultations, by time (the domain decides)."""
    return gateway_of(request).directory.owned_by(entry.principal)


def _copy_button(v: View, target: str) -> str:
    return (
        f'<button type="button" class="copy secondary" data-copy="{esc(target)}">'
        + v.tr("room.copy")
        + "</button>"
    )


def _time(ts: float | None) -> str:
    """A ``<time>`` the page's script shows in the advisor's own time zone; UTC before."""
    if ts is None:
        return ""
    iso = iso_utc(ts)
    return f'<time datetime="{iso}">{time.strftime("%d.%m. %H:%M UTC", time.gmtime(ts))}</time>'


def _row(request: web.Request, v: View, consultation: Consultation, csrf: str, new: bool) -> str:
    links = participant_links(gateway_of(request).config, consultation, Role.CUSTOMER)
    cid = esc(consultation.id)
    state = customer_state(consultation)
    mark = " " + v.tr("overview.new", "span", 'class="badge new"') if new else ""
    label = (
        f'<span class="room-label">{esc(consultation.label)}</span>'
        if consultation.label
        else v.tr("overview.no_label", "span", 'class="room-label none"')
    )
    when = (
        _time(consultation.appointment)
        if consultation.appointment is not None
        else v.tr("overview.created_at", "span", 'class="created"')
        + " "
        + _time(consultation.created_at)
    )
    return (
        f'<tr id="c-{cid}" data-id="{cid}" data-state="{state}"{" class=new" if new else ""}>'
        f'<td class="when">{when}</td>'
        f'<td><a href="/advisor/{cid}">{label}</a>{mark}</td>'
        f'<td><a class="link" id="link-{cid}" href="{esc(links["page_url"])}">'
        f"{esc(links['page_url'])}</a> {_copy_button(v, f'link-{cid}')}</td>"
        f'<td><span class="pin" id="pin-{cid}">{esc(group_pin(links["pin"]))}</span> '
        f"{_copy_button(v, f'pin-{cid}')}</td>"
        + "<td>"
        + v.tr(_STATE_KEYS[state], "span", 'class="customer-state"')
        + _lobby(v, consultation, state)
        + "</td>"
        + f'<td class="row-actions"><a class="button primary" href="/advisor/{cid}">'
        + v.tr("overview.join")
        + "</a>"
        + _invite_button(request, v, consultation)
        + f'<button type="button" class="new-pin secondary" data-id="{cid}"'
        f"{'' if state == 'locked' else ' hidden'}>" + v.tr("access.new_pin") + "</button>"
        f'<form method="post" action="/advisor/{cid}/end" class="end-form" '
        f'data-confirm="overview.end_confirm">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button type="submit" class="danger">'
        + v.tr("overview.end")
        + "</button></form></td></tr>"
    )


def _invite_button(request: web.Request, v: View, consultation: Consultation) -> str:
    """ "Einladung per E-Mail" (static/invite.js), only when a mail relay is configured."""
    if gateway_of(request).config.smtp is None:
        return ""
    return (
        f'<button type="button" class="invite secondary" data-id="{esc(consultation.id)}">'
        + v.tr("invite.button")
        + "</button>"
    )


def _invite_dialog(request: web.Request, v: View) -> str:
    """One dialog for every row: the customer's address, used for this message only."""
    if gateway_of(request).config.smtp is None:
        return ""
    return "".join(
        (
            '<dialog id="invite-dialog" aria-labelledby="invite-title">',
            '<form id="invite-form" class="invite-form" novalidate>',
            v.tr("invite.title", "h2", 'id="invite-title"'),
            v.tr("invite.label", "label", 'for="invite-email"'),
            '<input id="invite-email" name="email" type="email" autocomplete="off" '
            'maxlength="254" required aria-describedby="invite-hint">',
            v.tr("invite.hint", "p", 'id="invite-hint" class="hint"'),
            '<p id="invite-status" role="status" hidden></p>',
            '<div class="dialog-buttons">',
            '<button type="button" id="invite-cancel" class="secondary">',
            v.tr("invite.cancel"),
            '</button><button type="submit" id="invite-send" class="primary">',
            v.tr("invite.send"),
            "</button></div></form></dialog>",
        )
    )


def _create_form(v: View) -> str:
    """Label and appointment are optional; the script sends them with the creation."""
    return (
        '<form id="create-form" class="create-form">'
        + v.tr("overview.label", "label", 'for="create-label"')
        + '<input id="create-label" name="label" maxlength="60" autocomplete="off" '
        'aria-describedby="create-label-hint">'
        + v.tr("overview.label_hint", "p", 'id="create-label-hint" class="hint"')
        + v.tr("overview.appointment", "label", 'for="create-appointment"')
        + '<input id="create-appointment" name="appointment" type="datetime-local">'
        # the waiting room (docs/web.md): on unless the advisor unticks it
        + '<p class="check-line"><input type="checkbox" id="create-waiting-room" '
        'name="waiting_room" checked> '
        + v.tr("overview.waiting_room", "label", 'for="create-waiting-room"')
        + "</p>"
        '<p><button type="submit" id="create-session" class="primary">'
        + v.tr("overview.create")
        + "</button></p></form>"
    )


def _removal_notes(request: web.Request, v: View, entry: AdvisorSession) -> str:
    directory = gateway_of(request).directory
    notes = directory.removal_notes(entry.principal)
    if not notes:
        return ""
    hours = max(1, round(directory.unjoined_ttl / 3600))
    items = "".join(
        "<li>" + v.tr("overview.removed.item", "span") + " " + _time(created) + "</li>"
        for created, _ in notes
    )
    return (
        '<section class="card notice" role="status" id="removed">'
        + v.tr("overview.removed.text", "p", hours=hours)
        + f"<ul>{items}</ul></section>"
    )


@routes.get("/advisor")
async def advisor_home(request: web.Request) -> web.Response:
    signed_in = advisor_session(request)
    if signed_in is None:
        return _not_signed_in(request)
    sid, entry = signed_in
    v = view(request)
    csrf = csrf_token(request.app, sid)
    new_id = request.query.get("created", "")
    consultations = visible_consultations(request, entry)
    rows = [_row(request, v, c, csrf, c.id == new_id) for c in consultations]
    # cluster mode: the advisor's consultations on the other nodes (web/cluster.py)
    rows += [
        remote_row(v, node, room, csrf) for node, room in await rooms_elsewhere(request, entry)
    ]
    if rows:
        heads = "".join(
            v.tr(f"overview.col.{col}", "th")
            for col in ("when", "consultation", "link", "pin", "customer", "actions")
        )
        table = (
            f'<div class="table-wrap"><table id="consultations"><thead><tr>{heads}</tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table></div>"
        )
    else:
        table = v.tr("overview.none", "p")
    who = (
        v.tr("overview.signed_in", "p", 'class="signed-in"', name=entry.account)
        if entry.account
        else ""
    )
    notice = (
        v.tr("overview.ended", "p", 'class="notice" role="status"')
        if "ended" in request.query
        else ""
    )
    main = (
        who
        + notice
        + _removal_notes(request, v, entry)
        + '<section class="card">'
        + _create_form(v)
        + '<div id="created" hidden></div></section>'
        '<section class="card">' + v.tr("overview.running", "h2") + table + "</section>"
        '<form method="post" action="/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button type="submit" class="secondary">'
        + v.tr("logout.button")
        + "</button></form>"
        + _invite_dialog(request, v)
    )
    page = v.document(
        "overview.title",
        main,
        scripts=("i18n.js", "copy.js", "sounds.js", "advisor.js", "invite.js"),
        meta={"csrf-token": csrf},
        body_class="page-overview",
    )
    return html_response(request, page)


@routes.get("/advisor/state")
async def advisor_state(request: web.Request) -> web.Response:
    """What the start page polls: each of the advisor's consultations, its customer's
    state and the customer's current PIN and link (new after a lock)."""
    signed_in = advisor_session(request)
    if signed_in is None:
        return problem_response(403, "Not signed in (or the session has ended).")
    _, entry = signed_in
    config = gateway_of(request).config
    found = []
    for c in visible_consultations(request, entry):
        links = participant_links(config, c, Role.CUSTOMER)
        found.append(
            {
                "id": c.id,
                "customer": customer_state(c),
                "message": lobby_message(c),
                "pin": group_pin(links["pin"]),
                "page_url": links["page_url"],
            }
        )
    # cluster mode: those on other nodes (no link or PIN here: their node shows them)
    for node, room in await rooms_elsewhere(request, entry):
        found.append({"id": room["id"], "customer": room.get("customer"), "node": node.id})
    return web.json_response({"consultations": found})


@routes.post("/advisor/{id}/end")
async def advisor_end(request: web.Request) -> web.Response:
    principal = identify(request)
    if principal is None or principal.cookie_session is None:
        return _not_signed_in(request)
    form = await request.post()
    token = form.get("csrf")
    check_csrf(request, principal, token if isinstance(token, str) else None)
    signed_in = advisor_session(request)
    assert signed_in is not None
    cid = request.match_info["id"]
    consultation = gateway_of(request).directory.get(cid)
    if consultation is not None and consultation.owned_by(signed_in[1].principal):
        gateway_of(request).directory.end(cid, "ended")
        log.info("consultation %s ended by the advisor", cid)
    elif consultation is None:
        await end_elsewhere(request, cid, signed_in[1].principal)  # cluster: its node
    return _see_other("/advisor?ended")


@routes.get("/advisor/{id}")
async def advisor_consultation(request: web.Request) -> web.Response:
    signed_in = advisor_session(request)
    if signed_in is None:
        return _not_signed_in(request)
    sid, entry = signed_in
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return message_page(request, "gone.title", "gone.text", status=404)
    if not consultation.owned_by(entry.principal):
        log.warning("an advisor asked for another advisor's consultation %s", consultation.id)
        v = view(request)
        main = (
            v.tr("owner.text", "p")
            + '<p><a class="button primary" href="/advisor">'
            + v.tr("room.back")
            + "</a></p>"
        )
        return html_response(request, v.document("owner.title", main), status=403)
    links = participant_links(gateway.config, consultation, Role.CUSTOMER)
    links["pin"] = group_pin(links["pin"])
    links["locked"] = consultation.pin_locked
    page = advisor_room(
        view(request),
        consultation.id,
        links,
        token=consultation.participants[Role.ADVISOR].token,
        csrf=csrf_token(request.app, sid),
        ice_urls=gateway.config.ice_urls(),
        documents=page_limits(gateway),
        dial_out=gateway.phone_dialer is not None,
    )
    return html_response(request, page)


def setup(app: web.Application) -> None:
    limits = app[GATEWAY_KEY].config.limits
    app[LOGIN_GUARD_KEY] = LoginGuard(
        FailureLimiter(
            limits.login_max_failures_per_address, limits.login_failure_window, limits.login_lockout
        ),
        FailureLimiter(
            limits.login_max_failures_per_account, limits.login_failure_window, limits.login_lockout
        ),
    )
    store = app[GATEWAY_KEY].store
    if store is not None and store.shared:
        app[LOGIN_GUARD_KEY].shared = store.lockouts
    app.add_routes(routes)

"""Who is asking: advisor credentials, participant tokens, CSRF and origin checks.

Credentials, in the order they are looked at:

1. ``Authorization: Bearer <token>`` (RFC 6750 §2.1): the static advisor token, an
   advisor session id, or a participant token. A request that sends the header with a
   wrong token is refused (401) instead of falling back to a cookie, so a script never
   acts with credentials it did not mean to use.
2. ``?token=`` where a caller cannot set headers (browser WebSockets, RTMP URLs).
3. The advisor cookie ``vb_advisor`` set by ``/login``. Cookie-authenticated unsafe
   requests must carry ``X-CSRF-Token`` (an HMAC of the session id) and, when the
   browser sends ``Origin``, a same-origin one; bearer requests are exempt because a
   browser never attaches them on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from gateway.consultation import Consultation, Grant, Role
from gateway.service import Gateway
from web.keys import CSRF_SECRET_KEY, GATEWAY_KEY
from web.problems import ProblemError, unauthorized

ADVISOR_COOKIE = "vb_advisor"
CUSTOMER_COOKIE = "vb_customer"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an advisor, or one participant of one consultation."""

    advisor: bool = False
    grant: Grant | None = None
    # the advisor cookie session id when authenticated by cookie (CSRF applies)
    cookie_session: str | None = None
    # which advisor (an account name, or OPERATOR): they act as the advisor only in the
    # consultations they own (Consultation.owner)
    advisor_id: str | None = None

    @property
    def via_cookie(self) -> bool:
        return self.cookie_session is not None

    def role_in(self, consultation: Consultation) -> Role | None:
        """The role this caller plays in ``consultation``: an advisor acts as the advisor
        of the consultations they own; a participant token only in its own."""
        if self.advisor:
            return Role.ADVISOR if consultation.owned_by(self.advisor_id) else None
        if self.grant is not None and self.grant.consultation is consultation:
            return self.grant.role
        return None


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY_KEY]


def bearer_token(request: web.Request) -> str | None:
    """The bearer token, None without an Authorization header; 401 for other schemes."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    # RFC 9110 §11.1: the auth scheme is case-insensitive.
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Use 'Authorization: Bearer <token>'.")
    return token.strip()


def _from_token(gateway: Gateway, token: str) -> Principal | None:
    advisor = gateway.advisor_auth.advisor_for(token)
    if advisor is not None:
        return Principal(advisor=True, advisor_id=advisor)
    grant = gateway.authorize(token)
    if grant is not None:
        return Principal(grant=grant)
    return None


def identify(request: web.Request, *, query_token: bool = False) -> Principal | None:
    """The caller, or None when no credentials came. Wrong credentials → 401."""
    gateway = gateway_of(request)
    token = bearer_token(request)
    if token is None and query_token:
        token = request.query.get("token")
    if token is not None:
        principal = _from_token(gateway, token)
        if principal is None:
            raise unauthorized("The token is unknown, expired or ended.", invalid_token=True)
        return principal
    sid = request.cookies.get(ADVISOR_COOKIE)
    entry = gateway.advisor_auth.session(sid) if sid else None
    if sid and entry is not None:
        return Principal(advisor=True, cookie_session=sid, advisor_id=entry.principal)
    return None


def require(request: web.Request, *, query_token: bool = False) -> Principal:
    principal = identify(request, query_token=query_token)
    if principal is None:
        raise unauthorized("Credentials are required (Authorization: Bearer <token>).")
    if principal.via_cookie and request.method not in SAFE_METHODS:
        check_csrf(request, principal)
    return principal


def require_advisor(request: web.Request) -> Principal:
    principal = require(request)
    if not principal.advisor:
        raise ProblemError(403, "Only an advisor may do this.")
    return principal


def require_participant(request: web.Request) -> tuple[Consultation, Role]:
    """The consultation in the path (``{id}``) and the caller's role in it (bearer or
    cookie; an advisor acts as the advisor of their own consultations)."""
    principal = require(request)
    known = gateway_of(request).directory.get(request.match_info["id"])
    return known_role(principal, known)


def known_role(principal: Principal, known: Consultation | None) -> tuple[Consultation, Role]:
    """``principal``'s role in ``known`` (a consultation looked up by the id in a path),
    or the problem: another consultation's token is a 403 whether or not the id exists,
    so tokens cannot probe for ids; an advisor gets 404 for an unknown id and 403 for
    another advisor's consultation (ownership: ``Consultation.owner``)."""
    if not principal.advisor and (known is None or principal.role_in(known) is None):
        raise ProblemError(403, "This token belongs to another consultation.")
    if known is None or known.ended:
        raise ProblemError(404, "No such consultation (it may have ended).")
    role = principal.role_in(known)
    if role is None:
        raise ProblemError(403, "This consultation belongs to another advisor.")
    return known, role


# -- CSRF and origin -------------------------------------------------------------------


def csrf_token(app: web.Application, session_id: str) -> str:
    """The CSRF token bound to an advisor cookie session (HMAC, so nothing to store)."""
    digest = hmac.new(app[CSRF_SECRET_KEY], session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_csrf(request: web.Request, principal: Principal, form_token: str | None = None) -> None:
    """403 unless a cookie-authenticated unsafe request proves it came from our page."""
    if not same_origin(request, required=False, null_ok=True):
        raise ProblemError(403, "Cross-origin request refused.")
    assert principal.cookie_session is not None
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    expected = csrf_token(request.app, principal.cookie_session)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise ProblemError(403, f"Missing or wrong {CSRF_HEADER} header.")


def _allowed_hosts(request: web.Request) -> set[str]:
    hosts = {request.host.lower()}
    base = urlsplit(gateway_of(request).config.base_url())
    if base.netloc:
        hosts.add(base.netloc.lower())
    return hosts


def same_origin(request: web.Request, *, required: bool, null_ok: bool = False) -> bool:
    """Whether ``Origin`` (RFC 6454) names this server.

    Browsers send it on every WebSocket handshake and on POSTs; a missing header is
    acceptable only where ``required`` is false (non-browser clients). The port is part
    of the comparison (the host and port as the client addressed us or as configured in
    ``--public-url``).

    ``null_ok``: under our own ``Referrer-Policy: no-referrer`` the Fetch standard
    ("serializing a request origin") makes browsers send ``Origin: null`` on a plain
    form POST, even a same-origin one. Where another check stands behind (the CSRF
    token, the PIN itself) ``null`` is let through; a WebSocket handshake always
    carries the real origin, so there it is refused.
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return not required
    if origin == "null":
        return null_ok
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc in _allowed_hosts(request)

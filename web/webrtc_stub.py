"""Placeholders for WHIP (RFC 9725) and WHEP until the WebRTC front-end arrives.

The URLs are already handed out in ``POST /api/sessions``; until ``webrtc/`` registers
the real handlers they authenticate like the real ones will (bearer participant token of
that consultation, for that role) and then answer ``501``. The WebRTC front-end
replaces this module's ``setup`` in the composition root.
"""

from __future__ import annotations

from aiohttp import web

from gateway.consultation import Role
from web.auth import bearer_token, gateway_of
from web.problems import ProblemError, unauthorized


def _check(request: web.Request) -> None:
    try:
        role = Role(request.match_info["role"])
    except ValueError:
        raise ProblemError(404, "The role must be 'advisor' or 'customer'.") from None
    token = bearer_token(request)
    if token is None:
        raise unauthorized("A participant token is required (Authorization: Bearer).")
    grant = gateway_of(request).authorize(token)
    if grant is None:
        raise unauthorized("The token is unknown, expired or ended.", invalid_token=True)
    if grant.consultation.id != request.match_info["id"] or grant.role is not role:
        raise ProblemError(403, "This token is not for this consultation and role.")


async def _not_yet(request: web.Request) -> web.Response:
    _check(request)
    raise ProblemError(501, "WebRTC ingest arrives in a later release.")


def setup(app: web.Application) -> None:
    for kind in ("whip", "whep"):
        app.router.add_post(f"/{kind}/{{id}}/{{role}}", _not_yet, name=f"{kind}_stub")

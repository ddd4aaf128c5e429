"""``POST /api/sessions/{id}/invitation``: the advisor e-mails the customer's link
(gateway/invitations.py; docs/web.md "Invitations by e-mail").

Body ``{"email": "…", "lang": "de"|"en"}`` (``lang``: the advisor's page language, the
message's language). ``200 {"sent": true}`` once the relay took the message; ``400`` for
an address that is not one, ``503`` when no relay is configured, ``502`` when the relay
cannot be reached or refuses. The address is used for this one message: never stored,
never logged (masked at most).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web

from gateway.consultation import Role
from gateway.invitations import (
    Invitation,
    InvitationError,
    compose,
    mask_address,
    send,
    sender_address,
    valid_address,
)
from web.auth import gateway_of, known_role, require_advisor
from web.i18n import LANGUAGES, negotiate
from web.jsonbody import read_json
from web.links import participant_links
from web.problems import ProblemError

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/api/sessions/{id}/invitation")
async def invite(request: web.Request) -> web.Response:
    principal = require_advisor(request)
    gateway = gateway_of(request)
    consultation, _ = known_role(principal, gateway.directory.get(request.match_info["id"]))
    smtp = gateway.config.smtp_settings()
    if smtp is None:
        raise ProblemError(503, "No mail relay is configured (--smtp HOST:PORT).")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("email"), str):
        raise ProblemError(400, 'The body must be {"email": "…"}.')
    address = valid_address(body["email"])
    if address is None:
        raise ProblemError(400, "That is not an e-mail address.")
    lang = body.get("lang")
    if lang not in LANGUAGES:
        lang = negotiate(request)
    config = gateway.config
    host = urlsplit(config.base_url()).hostname or "localhost"
    links = participant_links(config, consultation, Role.CUSTOMER)
    invitation = Invitation(
        to=address,
        link=links["page_url"],
        lang=str(lang),
        consultation_id=consultation.id,
        host=host,
        appointment=consultation.appointment,
        advisor_name=consultation.owner_display_name,
    )
    message = compose(invitation, config.bank, sender_address(smtp, config.bank, host))
    try:
        await send(smtp, message)
    except InvitationError as exc:
        log.warning(
            "consultation %s: invitation to %s not sent: %s",
            consultation.id,
            mask_address(address),
            exc,
        )
        raise ProblemError(
            502, f"The mail relay did not take the message ({exc.reason})."
        ) from None
    log.info("consultation %s: invitation sent to %s", consultation.id, mask_address(address))
    return web.json_response({"sent": True})


def setup(app: web.Application) -> None:
    app.add_routes(routes)

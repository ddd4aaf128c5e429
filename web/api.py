"""JSON API: consultations (``/api/sessions``) and the health probes."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime

from aiohttp import web

from gateway.consultation import OPERATOR, Consultation, Role, RoomDetailsRejected, group_pin
from gateway.routing import CapacityRefused
from web.auth import gateway_of, known_role, require, require_advisor
from web.cluster import announce, place_elsewhere
from web.jsonbody import read_json
from web.links import participant_links, session_document
from web.problems import ProblemError, problem_response

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _consultation(request: web.Request) -> Consultation:
    consultation = gateway_of(request).directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        raise ProblemError(404, "No such consultation (it may have ended).")
    return consultation


def _appointment(value: object) -> float | None:
    """An RFC 3339 date-time with its offset (``2026-12-02T14:30:00+01:00`` or ``…Z``)."""
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) > 40:
            raise ValueError
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ProblemError(
            400, "The appointment must be an RFC 3339 date and time with its offset."
        ) from None
    if when.tzinfo is None:
        raise ProblemError(400, "The appointment needs its time zone offset (or Z).")
    return when.timestamp()


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    principal = require_advisor(request)
    gateway = gateway_of(request)
    # The body is optional: {"label": …, "appointment": …} (docs/web.md); read_json
    # bounds its size and nesting before parsing.
    options = await read_json(request, empty={})
    if not isinstance(options, dict):
        raise ProblemError(400, "The body must be empty or a JSON object.")
    appointment = _appointment(options.get("appointment"))
    # the waiting room (docs/web.md): asked for by the start page; without it the
    # customer's token works at once, as INTERFACE.md's clients expect
    waiting_room = options.get("waiting_room", False)
    if not isinstance(waiting_room, bool):
        raise ProblemError(400, "'waiting_room' must be true or false.")
    assert principal.advisor_id is not None
    # the account's display name for the customer's pages (the operator has none)
    accounts = gateway.advisor_auth.accounts
    shown = (
        await asyncio.to_thread(accounts.display_name, principal.advisor_id)
        if accounts is not None and principal.advisor_id != OPERATOR
        else None
    )
    # cluster mode: on the node with most headroom, which may be another (docs/cluster.md)
    placed = await place_elsewhere(request, principal.advisor_id, shown, options)
    if placed is not None:
        return placed
    if not gateway.accepting:
        raise ProblemError(503, "The gateway is shutting down and takes no new consultations.")
    if gateway.monitor is not None:
        try:
            gateway.monitor.check_new_consultation()
        except CapacityRefused:
            raise ProblemError(
                503,
                "The gateway's transcoding capacity is exhausted: no new consultation "
                "can start now without degrading the running ones. Try again shortly.",
                headers={"Retry-After": "30"},
            ) from None
    try:
        consultation = gateway.directory.create(
            principal.advisor_id,
            owner_display_name=shown,
            label=options.get("label"),
            appointment=appointment,
            waiting_room=waiting_room,
        )
    except RoomDetailsRejected as exc:
        raise ProblemError(400, str(exc)) from None
    await announce(request, consultation)  # cluster mode: in the directory first
    # never the label or the appointment: they are about the customer (docs/privacy.md)
    log.info("consultation %s created", consultation.id)
    return web.json_response(
        session_document(gateway.config, consultation),
        status=201,
        headers={"Location": f"/api/sessions/{consultation.id}"},
    )


@routes.get("/api/sessions/{id}", allow_head=False)
async def get_session(request: web.Request) -> web.Response:
    principal = require(request)
    # A participant sees only its own consultation, an advisor only the ones they own.
    known = gateway_of(request).directory.get(request.match_info["id"])
    consultation, _ = known_role(principal, known)
    return web.json_response(consultation.describe())


@routes.delete("/api/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    principal = require_advisor(request)
    directory = gateway_of(request).directory
    consultation, _ = known_role(principal, directory.get(request.match_info["id"]))
    directory.end(consultation.id, "ended")
    log.info("consultation %s ended by the advisor", consultation.id)
    return web.Response(status=204)


@routes.get("/api/sessions/{id}/access", allow_head=False)
async def get_customer_access(request: web.Request) -> web.Response:
    """The customer's PIN and link as the advisor hands them on, and the lock."""
    principal = require_advisor(request)
    directory = gateway_of(request).directory
    consultation, _ = known_role(principal, directory.get(request.match_info["id"]))
    return web.json_response(customer_access(request, consultation))


@routes.post("/api/sessions/{id}/access")
async def new_customer_access(request: web.Request) -> web.Response:
    """A new PIN, customer token and link (after a lock): the old ones die at once."""
    principal = require_advisor(request)
    directory = gateway_of(request).directory
    consultation, _ = known_role(principal, directory.get(request.match_info["id"]))
    directory.new_customer_access(consultation)
    log.info("consultation %s: new customer PIN and link issued", consultation.id)
    return web.json_response(customer_access(request, consultation))


@routes.post("/api/sessions/{id}/admission")
async def admit_customer(request: web.Request) -> web.Response:
    """The advisor lets the waiting customer in ("Einlassen", docs/web.md). Idempotent:
    a customer let in already stays in."""
    principal = require_advisor(request)
    directory = gateway_of(request).directory
    consultation, _ = known_role(principal, directory.get(request.match_info["id"]))
    if consultation.admit(Role.CUSTOMER):
        log.info("consultation %s: the customer was let in", consultation.id)
    return web.json_response({"admitted": consultation.admitted(Role.CUSTOMER)})


@routes.post("/api/sessions/{id}/phone/hangup")
async def hang_up_phone(request: web.Request) -> web.Response:
    """The advisor ends the telephone leg (docs/phone.md): the caller hears a goodbye, then
    BYE; the page's own audio comes back. 404 when no phone is connected."""
    principal = require_advisor(request)
    consultation, _ = known_role(
        principal, gateway_of(request).directory.get(request.match_info["id"])
    )
    if consultation.phone is None:
        raise ProblemError(404, "No telephone is connected to this consultation.")
    consultation.phone.hang_up()
    return web.Response(status=204)


_DIALABLE = re.compile(r"\+?[0-9]{3,20}")


@routes.post("/api/sessions/{id}/phone/call")
async def call_customer(request: web.Request) -> web.Response:
    """The advisor's dial-out (docs/phone.md): ``{"number": "+49 30 …"}``; 202, the call
    goes on (``phone`` events tell how). The number is used for this call only: never
    stored, never logged unmasked."""
    principal = require_advisor(request)
    gateway = gateway_of(request)
    consultation, _ = known_role(principal, gateway.directory.get(request.match_info["id"]))
    if gateway.phone_dialer is None:
        raise ProblemError(404, "Dial-out is not set up on this gateway (--sip-trunk).")
    body = await read_json(request)
    raw = body.get("number") if isinstance(body, dict) else None
    number = re.sub(r"[\s/()-]", "", raw) if isinstance(raw, str) else ""
    if not _DIALABLE.fullmatch(number):
        raise ProblemError(400, "The number must be 3 to 20 digits, optionally with a leading +.")
    if consultation.phone is not None:
        raise ProblemError(409, "A telephone is already connected to this consultation.")
    gateway.phone_dialer(consultation, number)
    return web.Response(status=202)


def customer_access(request: web.Request, consultation: Consultation) -> dict[str, object]:
    """What the advisor hands the customer, and whether the link is locked."""
    links = participant_links(gateway_of(request).config, consultation, Role.CUSTOMER)
    return {
        "locked": consultation.pin_locked,
        "pin": links["pin"],
        "pin_display": group_pin(links["pin"]),
        "page_url": links["page_url"],
        "flash_page_url": links["flash_page_url"],
    }


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    if not gateway.accepting:
        return problem_response(503, "The gateway is shutting down and takes no new consultations.")
    monitor = gateway.monitor
    if monitor is not None:
        admission = monitor.admission()
        if not admission["accepting_consultations"]:
            return problem_response(
                503,
                "The gateway's transcoding capacity is exhausted "
                f"(load {admission['load_cores']:.2f} of {admission['budget_cores']:.2f} "
                "cores budgeted).",
            )
        return web.json_response({"status": "ready", "admission": admission})
    return web.json_response({"status": "ready"})


def setup(app: web.Application) -> None:
    app.add_routes(routes)

"""JSON API: consultations (``/api/sessions``) and the health probes."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.consultation import Consultation
from gateway.routing import CapacityRefused
from web.advisor import remember_owner
from web.auth import gateway_of, require, require_advisor
from web.jsonbody import read_json
from web.links import session_document
from web.problems import ProblemError, problem_response

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _consultation(request: web.Request) -> Consultation:
    consultation = gateway_of(request).directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        raise ProblemError(404, "No such consultation (it may have ended).")
    return consultation


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    require_advisor(request)
    gateway = gateway_of(request)
    # The body is optional (reserved for options).
    options = await read_json(request, empty={})
    if not isinstance(options, dict):
        raise ProblemError(400, "The body must be empty or a JSON object.")
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
    consultation = gateway.directory.create()
    log.info("consultation %s created", consultation.id)
    remember_owner(request, consultation)
    return web.json_response(
        session_document(gateway.config, consultation),
        status=201,
        headers={"Location": f"/api/sessions/{consultation.id}"},
    )


@routes.get("/api/sessions/{id}", allow_head=False)
async def get_session(request: web.Request) -> web.Response:
    principal = require(request)
    gateway = gateway_of(request)
    consultation = gateway.directory.get(request.match_info["id"])
    # A participant sees only its own consultation; another id is a 403 whether or not
    # it exists, so a token cannot be used to probe for consultation ids.
    if not principal.advisor and (consultation is None or principal.role_in(consultation) is None):
        raise ProblemError(403, "This token belongs to another consultation.")
    if consultation is None or consultation.ended:
        raise ProblemError(404, "No such consultation (it may have ended).")
    return web.json_response(consultation.describe())


@routes.delete("/api/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    require_advisor(request)
    consultation_id = request.match_info["id"]
    if not gateway_of(request).directory.end(consultation_id, "ended"):
        raise ProblemError(404, "No such consultation (it may have ended).")
    log.info("consultation %s ended by the advisor", consultation_id)
    return web.Response(status=204)


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

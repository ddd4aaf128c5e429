"""``POST /k/{id}/feedback`` – the customer's rating from the end screen.

Body ``{"rating": 1..5}`` (JSON); authorised by the customer page's cookie, from our own
origin only. Before the end the live grant counts; after it the cookie still names the
consultation's customer for a while (``gateway/feedback.py``). ``201`` stored,
``409`` this consultation has its rating, ``403`` not its customer (or too late),
``400`` not a rating. Nothing about the request is stored beside the number.
"""

from __future__ import annotations

import json

from aiohttp import web

from gateway.consultation import Role
from gateway.feedback import FeedbackDesk, Rated
from web.auth import CUSTOMER_COOKIE, gateway_of, same_origin
from web.problems import ProblemError

routes = web.RouteTableDef()

MAX_BODY = 256


@routes.post("/k/{id}/feedback")
async def customer_feedback(request: web.Request) -> web.Response:
    if not same_origin(request, required=True):
        raise ProblemError(403, "Cross-origin request refused.")
    gateway = gateway_of(request)
    desk = gateway.feedback
    if desk is None:
        raise ProblemError(503, "Feedback is not enabled on this gateway.")
    rating = await _rating(request)
    cid = request.match_info["id"]
    cookie = request.cookies.get(CUSTOMER_COOKIE)
    grant = gateway.authorize(cookie)
    if grant is not None and grant.consultation.id == cid and not grant.consultation.ended:
        if grant.role is not Role.CUSTOMER:
            raise ProblemError(403, "Only the customer rates a consultation.")
        outcome = desk.rate_running(grant.consultation, rating)
    else:
        outcome = await desk.rate_ended(cid, cookie, rating)
    return _answer(outcome)


async def _rating(request: web.Request) -> int:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ProblemError(413, "A rating is a few bytes.")
    try:
        body = json.loads(await request.content.read(MAX_BODY + 1) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, 'Send {"rating": 1..5} as JSON.') from None
    rating = body.get("rating") if isinstance(body, dict) else None
    if not FeedbackDesk.valid(rating):
        raise ProblemError(400, "A rating is a whole number from 1 to 5.")
    assert isinstance(rating, int)
    return rating


def _answer(outcome: Rated) -> web.Response:
    if outcome is Rated.ALREADY:
        raise ProblemError(409, "This consultation has been rated already. Thank you!")
    if outcome is Rated.UNKNOWN:
        raise ProblemError(403, "Only the consultation's customer may rate it, soon after it.")
    return web.json_response({"stored": True}, status=201)


def setup(app: web.Application) -> None:
    app.add_routes(routes)

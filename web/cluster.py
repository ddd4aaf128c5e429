"""The web side of cluster mode (docs/cluster.md): sign-in sessions made on another node
(loaded from the shared store before a request's handler runs), and the doors that
redirect to the node a consultation lives on (gateway/cluster/)."""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from web.auth import ADVISOR_COOKIE
from web.keys import GATEWAY_KEY


def _session_ids(request: web.Request) -> list[str]:
    ids = []
    sid = request.cookies.get(ADVISOR_COOKIE)
    if sid:
        ids.append(sid)
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        ids.append(token.strip())
    return ids


@web.middleware
async def shared_sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the caller's advisor session from the shared store (a sign-in on another
    node) or re-check it; the handlers then look it up in memory as on a single node."""
    auth = request.app[GATEWAY_KEY].advisor_auth
    if auth.shared is not None:
        for sid in _session_ids(request):
            await auth.refresh(sid)
    return await handler(request)


def setup(app: web.Application) -> None:
    gateway = app[GATEWAY_KEY]
    if gateway.advisor_auth.shared is not None:
        app.middlewares.append(shared_sessions)

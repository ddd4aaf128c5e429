"""The aiohttp application of the gateway: API, events WebSocket, pages, static files.

Front-ends (the RTMPT tunnel, WHIP/WHEP) add their routes with their own
``setup(app)`` before the application starts, as the modules here do; the composition
root (``gateway.main.build_app``) passes them in::

    app = create_app(gateway, setups=[*DEFAULT_SETUPS, rtmpt.routes(shared), whip.routes(fe)])
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from aiohttp import web

from gateway.service import Gateway
from web import (
    advisor,
    api,
    cluster,
    documents,
    events,
    forms,
    invitations,
    ops,
    pages,
    stats,
)
from web.accesslog import RedactingAccessLogger
from web.feedback import setup as feedback_setup
from web.keys import CSRF_SECRET_KEY, GATEWAY_KEY
from web.links import WebLinks
from web.problems import problem_middleware
from web.security import security_headers

__all__ = ["GATEWAY_KEY", "RedactingAccessLogger", "create_app"]

# JSON bodies and the PIN form are small; document uploads will stream multipart.
CLIENT_MAX_SIZE = 1024 * 1024

Setup = Callable[[web.Application], None]
DEFAULT_SETUPS: tuple[Setup, ...] = (
    cluster.setup,  # first: its middleware runs before the handlers (docs/cluster.md)
    api.setup,
    advisor.setup,
    documents.setup,
    feedback_setup,
    forms.setup,
    invitations.setup,
    stats.setup,
    events.setup,
    ops.setup,
    pages.setup,
)


def create_app(
    gateway: Gateway,
    *,
    setups: Iterable[Setup] = DEFAULT_SETUPS,
    client_max_size: int = CLIENT_MAX_SIZE,
) -> web.Application:
    """The application, with every route module in ``setups`` registered.

    RTMPT (``web.rtmpt.routes``) and WHIP/WHEP (``web.whip.routes``) need the RTMP and
    WebRTC front-ends' shared state: the composition root (``gateway.main.build_app``)
    adds them.
    """
    app = web.Application(middlewares=[problem_middleware], client_max_size=client_max_size)
    app[GATEWAY_KEY] = gateway
    if gateway.links is None:
        # the documents' and forms' URLs point here: the channel addresses events with
        # them (gateway/channel.py), for the RTMP front-end as well
        gateway.links = WebLinks(gateway)
    app[CSRF_SECRET_KEY] = secrets.token_bytes(32)
    app.on_response_prepare.append(security_headers)
    for setup in setups:
        setup(app)
    return app

"""Security headers on every response, errors, static files and WebSocket upgrades
included.

They are set in ``on_response_prepare`` rather than in a middleware: that signal also
fires for responses a middleware never sees returned (``FileResponse`` of the static
route, a ``WebSocketResponse`` prepared inside its handler).
"""

from __future__ import annotations

import re

from aiohttp import web

from web.keys import GATEWAY_KEY
from web.links import ws_base

# What every answer carries instead of aiohttp's "Python/3.x aiohttp/3.y" banner: no
# version for a scanner to match against a list of vulnerabilities.
SERVER_NAME = "videoberatung"

# For answers made outside the application (aiohttp's own 400 for a request it cannot
# parse: no route, nothing of the request to trust): the strictest values of the same
# headers security_headers sets on every other response.
ERROR_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Server": SERVER_NAME,
}

# Host header values that may appear in a header we build (no ";", spaces or quotes).
_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def content_security_policy(request: web.Request) -> str:
    """CSP Level 3: only our own origin, no framing, no <base> tricks.

    ``connect-src 'self'`` covers same-origin ws:/wss: in CSP Level 3 browsers; older
    ones (and Safari before 15.4) need the WebSocket origin named, so the configured one
    and the one the browser actually used are listed explicitly.
    """
    gateway = request.app[GATEWAY_KEY]
    sockets = [ws_base(gateway.config)]
    host = request.host
    if _SAFE_HOST.fullmatch(host):
        scheme = "wss" if gateway.config.tls or request.secure else "ws"
        own = f"{scheme}://{host}"
        if own not in sockets:
            sockets.append(own)
    # Plugins only where they are embedded (the Flash page, our own SWF); nowhere else.
    objects = "'self'" if request.path.startswith("/flash/") else "'none'"
    return (
        "default-src 'self'; "
        f"connect-src 'self' {' '.join(sockets)}; "
        f"object-src {objects}; "
        "img-src 'self' data: blob:; media-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    # aiohttp adds its banner only when Server is missing
    headers["Server"] = SERVER_NAME
    headers.setdefault("Content-Security-Policy", content_security_policy(request))
    headers.setdefault("Referrer-Policy", "no-referrer")  # tokens live in URLs
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for old browsers
    headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self)")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        # API answers and pages carry tokens, PINs and chat: no cache may keep them.
        headers.setdefault("Cache-Control", "no-store")
    if request.app[GATEWAY_KEY].config.tls:
        # RFC 6797: only meaningful (and only honoured) over HTTPS.
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")

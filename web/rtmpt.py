"""RTMPT and RTMPTS routes: aiohttp glue around the sans-I/O tunnel in ``rtmp.rtmpt``.

Every rule (session table, sequence numbers, polling byte, pending output, expiry)
lives in :class:`rtmp.rtmpt.RtmptTunnels`; this module reads request bodies within the
size cap, passes path parameters and the time in, writes the answer out, and runs one
timer for all tunnels. Under ``--tls-cert``/``--tls-key`` the web port speaks HTTPS, so
the same routes serve RTMPTS, and the sessions say so (``via: rtmpts``).

The polls are exempt from CSRF checks (no cookie is involved: the unguessable tunnel id
is the credential, and publish/play still need the participant's token) and successful
``/send``/``/idle`` polls are left out of the access log (``web.accesslog``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import web

from gateway.service import Gateway
from rtmp.rtmpt import CONTENT_TYPE, IDLE_HOLD, Reply, RtmptTunnels, Tunnel
from rtmp.server import AdmissionControl
from rtmp.session import RtmpSession, RtmpShared
from web.keys import GATEWAY_KEY

TUNNELS_KEY = web.AppKey("rtmpt_tunnels", RtmptTunnels)
_TICKER_KEY = web.AppKey("rtmpt_ticker", asyncio.Task)

TICK_INTERVAL = 1.0


class BodyTooLarge(Exception):
    pass


def make_tunnels(gateway: Gateway, shared: RtmpShared) -> RtmptTunnels:
    limits = gateway.config.limits

    def factory(tunnel: Tunnel) -> RtmpSession:
        return RtmpSession(
            gateway,
            shared=shared,
            transport=tunnel.transport,
            peer=tunnel.peer,
            write=tunnel.write,
            close=tunnel.close_transport,
            buffer_size=tunnel.buffer_size,
        )

    return RtmptTunnels(
        factory,
        idle_timeout=limits.rtmpt_idle_timeout,
        max_pending=limits.rtmpt_max_pending,
        max_body=limits.rtmpt_max_body,
        admission=AdmissionControl(gateway),
    )


def _answer(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status, body=reply.body, headers={"Content-Type": CONTENT_TYPE}
    )


async def _read_body(request: web.Request, cap: int) -> bytes:
    """The request body, refused above ``cap`` bytes before more than that is read."""
    length = request.content_length
    if length is not None and length > cap:
        raise BodyTooLarge
    data = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > cap:
            raise BodyTooLarge


def _too_large(tunnels: RtmptTunnels) -> web.Response:
    return web.Response(
        status=413,
        body=f"RTMPT request body over {tunnels.max_body} bytes\n".encode(),
        headers={"Content-Type": CONTENT_TYPE, "Connection": "close"},
    )


def _transport(request: web.Request) -> str:
    return "rtmpts" if request.secure else "rtmpt"


async def ident(request: web.Request) -> web.Response:
    """Flash probes ``/fcs/ident2`` before opening; FMS answers 404, and so do we."""
    return _answer(Reply(404, b"no ident here\n"))


async def open_tunnel(request: web.Request) -> web.Response:
    tunnels = request.app[TUNNELS_KEY]
    gateway = request.app[GATEWAY_KEY]
    try:
        await _read_body(request, tunnels.max_body)
    except BodyTooLarge:
        return _too_large(tunnels)
    if not gateway.accepting:
        return _answer(Reply(503, b"the gateway is shutting down\n"))
    reply = tunnels.open(
        peer=request.remote or "?", transport=_transport(request), now=time.monotonic()
    )
    return _answer(reply)


async def send(request: web.Request) -> web.Response:
    tunnels = request.app[TUNNELS_KEY]
    try:
        body = await _read_body(request, tunnels.max_body)
    except BodyTooLarge:
        return _too_large(tunnels)
    info = request.match_info
    return _answer(tunnels.send(info["id"], info["seq"], body, time.monotonic()))


async def idle(request: web.Request) -> web.Response:
    tunnels = request.app[TUNNELS_KEY]
    try:
        await _read_body(request, tunnels.max_body)  # ffmpeg/librtmp send one \0 byte
    except BodyTooLarge:
        return _too_large(tunnels)
    info = request.match_info
    result = tunnels.idle_or_wait(info["id"], info["seq"], time.monotonic())
    if isinstance(result, Reply):
        return _answer(result)
    # Nothing pending: hold the poll until output arrives (or IDLE_HOLD passes).
    woken = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    result.waiter = wake
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken, IDLE_HOLD)
    finally:
        if result.waiter is wake:  # not woken; another held poll may have replaced it
            result.waiter = None
    return _answer(tunnels.collect(result))


async def close(request: web.Request) -> web.Response:
    tunnels = request.app[TUNNELS_KEY]
    try:
        await _read_body(request, tunnels.max_body)
    except BodyTooLarge:
        return _too_large(tunnels)
    info = request.match_info
    return _answer(tunnels.close(info["id"], info["seq"], time.monotonic()))


async def _tick_forever(tunnels: RtmptTunnels) -> None:
    while True:
        await asyncio.sleep(TICK_INTERVAL)
        tunnels.tick(time.monotonic())


async def _start(app: web.Application) -> None:
    app[_TICKER_KEY] = asyncio.create_task(_tick_forever(app[TUNNELS_KEY]), name="rtmpt-tick")


async def _stop(app: web.Application) -> None:
    ticker = app.get(_TICKER_KEY)
    if ticker is not None:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    app[TUNNELS_KEY].close_all()


def routes(shared: RtmpShared) -> Callable[[web.Application], None]:
    """The ``setup(app)`` registering the RTMPT tunnel; its sessions share ``shared`` with
    the gateway's RTMP servers (the composition root passes the same one)."""

    def setup(app: web.Application) -> None:
        app[TUNNELS_KEY] = make_tunnels(app[GATEWAY_KEY], shared)
        app.router.add_route("*", "/fcs/ident2", ident)
        app.router.add_post("/open/1", open_tunnel)
        app.router.add_post("/send/{id}/{seq}", send)
        app.router.add_post("/idle/{id}/{seq}", idle)
        app.router.add_post("/close/{id}/{seq}", close)
        app.on_startup.append(_start)
        app.on_shutdown.append(_stop)

    return setup

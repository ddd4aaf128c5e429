"""Customer entry (issue 5 item 2): link + 6-digit PIN, limits against guessing per
consultation and per address, the token's expiry with the consultation, and rejoining
after a dropped connection without the PIN."""

from __future__ import annotations

import asyncio
import calendar
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bench.testkit.gwproc import GatewayProcess
from gateway.config import Config
from gateway.main import build_app
from gateway.service import Gateway
from rtmp.client import RtmpClient
from web.pages import PIN_GUARD_KEY

Client = TestClient[web.Request, web.Application]
ADVISOR = "static-advisor-token-for-tests"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def wrong_pin(pin: str) -> str:
    return f"{(int(pin) + 1) % 1_000_000:06d}"


# -- in process: limits with a moved clock ----------------------------------------------------


@pytest.fixture
def gw() -> Gateway:
    config = Config(advisor_token=ADVISOR)
    config.limits.pin_max_wrong = 3
    config.limits.pin_max_wrong_per_address = 4
    config.limits.pin_address_window = 600
    config.limits.pin_address_lockout = 900
    return Gateway.from_config(config)


@pytest.fixture
async def client(aiohttp_client: Any, gw: Gateway) -> Client:
    return await aiohttp_client(build_app(gw))


async def create(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers={"Authorization": f"Bearer {ADVISOR}"})
    assert resp.status == 201
    return dict(await resp.json())


async def enter(client: Client, sid: str, pin: str) -> Any:
    return await client.post(f"/k/{sid}", data={"pin": pin}, allow_redirects=False)


async def test_the_consultation_limit_is_configurable_and_final(client: Client) -> None:
    body = await create(client)
    sid, pin = body["id"], body["customer"]["pin"]
    first = await enter(client, sid, wrong_pin(pin))
    assert first.status == 403 and "Noch 2 Versuche" in await first.text()
    assert (await enter(client, sid, "12a456")).status == 400, "a typo is not counted"
    assert (await enter(client, sid, wrong_pin(pin))).status == 403
    locked = await enter(client, sid, wrong_pin(pin))
    assert locked.status == 403 and "gesperrt" in await locked.text()
    right = await enter(client, sid, pin)
    assert right.status == 403 and "vb_customer" not in right.headers.get("Set-Cookie", "")
    assert "gesperrt" in await (await client.get(f"/k/{sid}")).text()


async def test_an_address_guessing_across_consultations_is_locked_out_for_a_while(
    client: Client,
) -> None:
    clock = Clock()
    client.app[PIN_GUARD_KEY].per_address.clock = clock  # type: ignore[union-attr]
    a, b, c = [await create(client) for _ in range(3)]
    for body in (a, a, b):
        assert (await enter(client, body["id"], wrong_pin(body["customer"]["pin"]))).status == 403
    locked = await enter(client, b["id"], wrong_pin(b["customer"]["pin"]))
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "900"
    text = await locked.text()
    assert "zu oft eine falsche PIN" in text and "15 Minuten" in text
    # while locked even a right PIN of a fresh consultation is not looked at
    assert (await enter(client, c["id"], c["customer"]["pin"])).status == 429
    clock.now += 901
    resp = await enter(client, c["id"], c["customer"]["pin"])
    assert resp.status == 303 and resp.headers["Location"] == f"/k/{c['id']}"


async def test_failures_outside_the_window_are_forgotten(client: Client) -> None:
    clock = Clock()
    client.app[PIN_GUARD_KEY].per_address.clock = clock  # type: ignore[union-attr]
    bodies = [await create(client) for _ in range(4)]
    for body in bodies[:3]:
        assert (await enter(client, body["id"], wrong_pin(body["customer"]["pin"]))).status == 403
    clock.now += 601
    last = bodies[3]
    assert (await enter(client, last["id"], wrong_pin(last["customer"]["pin"]))).status == 403


async def test_the_pin_cookie_is_scoped_http_only_and_lives_as_long_as_the_consultation(
    client: Client, gw: Gateway
) -> None:
    body = await create(client)
    resp = await enter(client, body["id"], body["customer"]["pin"])
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("vb_customer=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert f"Path=/k/{body['id']}" in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert abs(max_age - gw.config.session_ttl) <= 2
    # the cookie is the customer's token: valid for every page load until the end
    for _ in range(3):
        page = await client.get(f"/k/{body['id']}")
        assert page.status == 200 and 'id="room"' in await page.text()
    gw.directory.end(body["id"])
    gone = await client.get(f"/k/{body['id']}")
    assert gone.status == 404 and 'name="pin"' not in await gone.text()


async def test_token_expires_with_the_consultation(client: Client, gw: Gateway) -> None:
    body = await create(client)
    assert (await enter(client, body["id"], body["customer"]["pin"])).status == 303
    consultation = gw.directory.get(body["id"])
    assert consultation is not None
    token = body["customer"]["token"]
    assert gw.authorize(token) is not None
    ended = gw.directory.expire(now=consultation.expires_at + 1)
    assert ended == [body["id"]]
    assert gw.authorize(token) is None
    assert (await client.get(f"/k/{body['id']}")).status == 404
    resp = await client.get(
        f"/api/sessions/{body['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 401


# -- end to end: the real gateway -------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with the per-address PIN limit lowered (loopback tests raise it)."""
    proc = GatewayProcess(
        tmp_path_factory.mktemp("entry"),
        extra=["--limit", "pin_max_wrong_per_address=3"],
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def short_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Consultations that expire after 8 seconds."""
    proc = GatewayProcess(tmp_path_factory.mktemp("ttl"), extra=["--session-ttl", "8"]).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: keep cookies for an IP address host (127.0.0.1), as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def _create(gw: GatewayProcess) -> dict[str, Any]:
    return await asyncio.to_thread(gw.create_session)


async def test_limits_come_from_the_command_line(strict_gw: GatewayProcess) -> None:
    a = await _create(strict_gw)
    b = await _create(strict_gw)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for body in (a, b, a):
            async with http.post(
                body["customer"]["page_url"], data={"pin": wrong_pin(body["customer"]["pin"])}
            ) as resp:
                statuses.append(resp.status)
        assert statuses == [403, 403, 429]
        async with http.post(
            b["customer"]["page_url"], data={"pin": b["customer"]["pin"]}, allow_redirects=False
        ) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0


async def test_customer_rejoins_after_a_dropped_connection_until_the_end(
    gateway: GatewayProcess, browser: aiohttp.ClientSession
) -> None:
    body = await _create(gateway)
    page_url = body["customer"]["page_url"]
    async with browser.post(page_url, data={"pin": body["customer"]["pin"]}) as resp:
        assert resp.status == 200 and 'id="room"' in await resp.text()
    ws_url = "ws://" + urlsplit(page_url).netloc + urlsplit(page_url).path + "/events"
    origin = {"Origin": gateway.base}
    for _ in range(3):  # dropped Wi-Fi, reload, another tab: no PIN again
        ws = await browser.ws_connect(ws_url, headers=origin)
        first = await ws.receive_json(timeout=5)
        assert first["type"] in ("chat", "participant", "media"), first
        await ws.close()
        async with browser.get(page_url) as resp:
            assert resp.status == 200 and 'id="room"' in await resp.text()
    # the same token also brings a dropped RTMP connection back
    token = body["customer"]["token"]
    for _ in range(2):
        rtmp = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
        try:
            result = await rtmp.connect("consult", body["customer"]["rtmp"]["connect_url"], token)
            assert not result.error
        finally:
            await rtmp.close()
    # until the advisor ends the consultation
    status, _, _ = await asyncio.to_thread(gateway.request, "DELETE", f"/api/sessions/{body['id']}")
    assert status == 204
    async with browser.get(page_url) as resp:
        assert resp.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await browser.ws_connect(ws_url, headers=origin)
    rtmp = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
    try:
        result = await rtmp.connect("consult", body["customer"]["rtmp"]["connect_url"], token)
        assert result.error
    finally:
        await rtmp.close()


async def test_token_expiry_ends_entry_and_rejoin(
    short_gw: GatewayProcess, browser: aiohttp.ClientSession
) -> None:
    """``--session-ttl 8``: from the second it expires, the link, the cookie and the
    token stop working (before the sweeper has even ended the consultation)."""
    body = await _create(short_gw)
    page_url = body["customer"]["page_url"]
    async with browser.post(page_url, data={"pin": body["customer"]["pin"]}) as resp:
        assert resp.status == 200 and 'id="room"' in await resp.text()
    expires = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 6 <= expires - time.time() <= 9
    await asyncio.sleep(max(0.0, expires - time.time()) + 1.0)
    async with browser.get(page_url) as resp:
        assert resp.status == 404
    async with browser.post(page_url, data={"pin": body["customer"]["pin"]}) as resp:
        assert resp.status == 404
    status, _, _ = await asyncio.to_thread(
        short_gw.request, "GET", f"/api/sessions/{body['id']}", None, body["customer"]["token"]
    )
    assert status == 401

"""The web front-end: JSON API, events WebSocket, pages, security headers, access log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from gateway.config import Config
from gateway.consultation import Role, group_pin
from gateway.main import build_app
from gateway.service import Gateway
from web.accesslog import RedactingAccessLogger
from web.app import GATEWAY_KEY
from web.redact import redact_path, redact_target

ADVISOR_TOKEN = "static-advisor-token-for-tests"
GREETING = "Grüße aus Köln – 10 € 😀"

Client = TestClient[web.Request, web.Application]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def gw() -> Gateway:
    return Gateway.from_config(Config(advisor_token=ADVISOR_TOKEN))


@pytest.fixture
async def client(aiohttp_client: Any, gw: Gateway) -> Client:
    return await aiohttp_client(build_app(gw))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def local(url: str) -> str:
    """Path and query of an absolute URL handed out by the API (the test server's port
    differs from the configured one)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def origin(client: Client) -> dict[str, str]:
    return {"Origin": f"http://{client.host}:{client.port}"}


async def create(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body = json.loads(await resp.text())
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def next_event(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def wait_for(
    ws: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float = 3.0
) -> dict[str, Any]:
    """The first event matching ``predicate`` (earlier ones are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await next_event(ws, max(0.05, deadline - time.monotonic()))
        if predicate(event):
            return event


async def read_snapshot(ws: Any) -> list[dict[str, Any]]:
    """Chat history, then participant and media state of both roles (4 events)."""
    events: list[dict[str, Any]] = []
    while True:
        event = await next_event(ws)
        events.append(event)
        if event["type"] == "media" and event["role"] == "customer":
            return events


async def expect_close(ws: Any, code: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Text events up to the close frame, which must carry ``code``."""
    seen = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type is WSMsgType.TEXT:
            seen.append(json.loads(msg.data))
            continue
        assert msg.type is WSMsgType.CLOSE, msg
        assert msg.data == code
        return seen


async def login(client: Client, gw: Gateway) -> str:
    """Log in with the one-time link; returns the CSRF token of the advisor page."""
    token = gw.advisor_auth.login_token
    assert token
    resp = await client.get(f"/login?token={token}", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/advisor"
    page = await client.get("/advisor")
    assert page.status == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await page.text())
    assert match
    return match.group(1)


# -- POST /api/sessions -----------------------------------------------------------------


async def test_create_session_document(client: Client, gw: Gateway) -> None:
    before = time.time()
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 201
    assert resp.content_type == "application/json"
    body = await resp.json()
    sid = body["id"]
    assert resp.headers["Location"] == f"/api/sessions/{sid}"
    assert set(body) == {"id", "expires_at", "advisor", "customer"}
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - (before + gw.config.session_ttl)) < 5

    adv, cus = body["advisor"], body["customer"]
    assert set(adv) == {"token", "page_url", "whip_url", "whep_url", "events_url", "rtmp"}
    assert set(cus) == {
        "token", "pin", "page_url", "flash_page_url", "whip_url", "whep_url", "events_url",
        "rtmp",
    }  # fmt: skip
    assert adv["token"] != cus["token"]
    assert re.fullmatch(r"\d{6}", cus["pin"])
    consultation = gw.directory.get(sid)
    assert consultation is not None
    assert consultation.participants[Role.CUSTOMER].token == cus["token"]
    assert consultation.participants[Role.CUSTOMER].pin == cus["pin"]

    base = "http://127.0.0.1:8080"
    assert adv["page_url"] == f"{base}/advisor/{sid}"
    assert cus["page_url"] == f"{base}/k/{sid}"
    assert cus["flash_page_url"] == f"{base}/flash/{sid}"
    for role, doc in (("advisor", adv), ("customer", cus)):
        other = "customer" if role == "advisor" else "advisor"
        token = doc["token"]
        assert doc["whip_url"] == f"{base}/whip/{sid}/{role}"
        assert doc["whep_url"] == f"{base}/whep/{sid}/{role}"
        events = urlsplit(doc["events_url"])
        assert (events.scheme, events.netloc) == ("ws", "127.0.0.1:8080")
        assert events.path == f"/api/sessions/{sid}/events"
        assert parse_qs(events.query) == {"token": [token]}
        rtmp = doc["rtmp"]
        assert rtmp["connect_url"] == "rtmp://127.0.0.1:1935/consult"
        assert rtmp["publish_url"] == f"rtmp://127.0.0.1:1935/consult/{role}?token={token}"
        assert rtmp["play_url"] == f"rtmp://127.0.0.1:1935/consult/{other}?token={token}"
        for key in ("page_url", "whip_url", "whep_url", "events_url"):
            assert urlsplit(doc[key]).netloc, key  # absolute


async def test_create_session_urls_follow_public_url_and_tls(aiohttp_client: Any) -> None:
    config = Config(
        advisor_token=ADVISOR_TOKEN,
        public_url="https://beratung.example.de/",
        tls_cert=Path("cert.pem"),
        tls_key=Path("key.pem"),
    )
    client = await aiohttp_client(build_app(Gateway.from_config(config)))
    body = await create(client)
    sid, cus = body["id"], body["customer"]
    assert cus["page_url"] == f"https://beratung.example.de/k/{sid}"
    assert cus["events_url"].startswith(f"wss://beratung.example.de/api/sessions/{sid}/events?")
    # issue 18: under TLS the token travels only encrypted (native RTMPS)
    assert cus["rtmp"]["connect_url"] == "rtmps://beratung.example.de:1936/consult"


async def test_create_session_authentication(client: Client, gw: Gateway) -> None:
    resp = await client.post("/api/sessions")
    await assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")

    resp = await client.post("/api/sessions", headers=bearer("wrong"))
    await assert_problem(resp, 401)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]

    resp = await client.post("/api/sessions", headers={"Authorization": "Basic YTpi"})
    await assert_problem(resp, 401)

    customer = (await create(client))["customer"]["token"]
    resp = await client.post("/api/sessions", headers=bearer(customer))
    await assert_problem(resp, 403)
    assert len(gw.directory.consultations) == 1


async def test_create_session_rejects_bad_body_and_when_draining(
    client: Client, gw: Gateway
) -> None:
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN), data=b"[1, 2]")
    await assert_problem(resp, 400)
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN), json={})
    assert resp.status == 201

    gw.accepting = False
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN))
    await assert_problem(resp, 503)
    resp = await client.get("/readyz")
    await assert_problem(resp, 503)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_health_and_readiness(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200


# -- GET / DELETE /api/sessions/{id} -----------------------------------------------------


async def test_get_session_by_advisor_and_participants(client: Client) -> None:
    body = await create(client)
    sid = body["id"]
    for token in (ADVISOR_TOKEN, body["advisor"]["token"], body["customer"]["token"]):
        resp = await client.get(f"/api/sessions/{sid}", headers=bearer(token))
        assert resp.status == 200
        state = await resp.json()
        assert state["id"] == sid
        assert set(state["participants"]) == {"advisor", "customer"}
        assert state["participants"]["customer"]["present"] is False
        assert state["ended"] is False
        assert isinstance(state["duration"], float | int)


async def test_get_session_authorization(client: Client) -> None:
    first, second = await create(client), await create(client)
    sid = first["id"]
    await assert_problem(await client.get(f"/api/sessions/{sid}"), 401)
    await assert_problem(await client.get(f"/api/sessions/{sid}", headers=bearer("nope")), 401)
    # another consultation's participant token: refused, as is probing unknown ids with it
    other = bearer(second["customer"]["token"])
    await assert_problem(await client.get(f"/api/sessions/{sid}", headers=other), 403)
    await assert_problem(await client.get("/api/sessions/unknown", headers=other), 403)
    # the advisor learns that an id does not exist
    resp = await client.get("/api/sessions/unknown", headers=bearer(ADVISOR_TOKEN))
    await assert_problem(resp, 404)


async def test_delete_session(client: Client, gw: Gateway) -> None:
    body = await create(client)
    sid = body["id"]
    customer, advisor = body["customer"]["token"], body["advisor"]["token"]
    await assert_problem(await client.delete(f"/api/sessions/{sid}"), 401)
    resp = await client.delete(f"/api/sessions/{sid}", headers=bearer(customer))
    await assert_problem(resp, 403)
    # the advisor *participant* token is not an advisor credential
    resp = await client.delete(f"/api/sessions/{sid}", headers=bearer(advisor))
    await assert_problem(resp, 403)
    assert gw.directory.get(sid) is not None

    resp = await client.delete(f"/api/sessions/{sid}", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 204
    assert await resp.read() == b""
    assert gw.directory.get(sid) is None
    resp = await client.delete(f"/api/sessions/{sid}", headers=bearer(ADVISOR_TOKEN))
    await assert_problem(resp, 404)
    # the participants' tokens died with the consultation
    resp = await client.get(f"/api/sessions/{sid}", headers=bearer(customer))
    await assert_problem(resp, 401)


# -- errors are problem details ----------------------------------------------------------


async def test_unknown_route_and_method_are_problems(client: Client) -> None:
    body = await assert_problem(await client.get("/no/such/thing"), 404)
    assert body["title"] == "Not Found"
    resp = await client.put("/api/sessions", headers=bearer(ADVISOR_TOKEN))
    await assert_problem(resp, 405)
    assert "POST" in resp.headers["Allow"]


async def test_body_too_large_is_413_problem(aiohttp_client: Any, gw: Gateway) -> None:
    client = await aiohttp_client(build_app(gw, client_max_size=1024))
    resp = await client.post(
        "/api/sessions", headers=bearer(ADVISOR_TOKEN), data=b"{" + b" " * 4096 + b"}"
    )
    await assert_problem(resp, 413)
    assert not gw.directory.consultations


async def test_internal_error_leaks_nothing(
    aiohttp_client: Any, gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("database password is hunter2")

    app = build_app(gw)
    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="web.problems"):
        resp = await client.get("/boom")
    text = await resp.text()
    await assert_problem(resp, 500)
    assert "hunter2" not in text
    assert "Traceback" not in text and "RuntimeError" not in text
    assert any("hunter2" in (r.exc_text or "") for r in caplog.records)  # operators see it


# -- security headers ----------------------------------------------------------------------


async def test_security_headers_everywhere(client: Client) -> None:
    sid = (await create(client))["id"]
    for path in ("/healthz", "/no/such/page", f"/k/{sid}", "/static/chat.js", "/login"):
        resp = await client.get(path)
        headers = resp.headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp
        assert "base-uri 'none'" in csp
        assert re.search(r"connect-src 'self' ws://127\.0\.0\.1:8080", csp)
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Permissions-Policy"] == "camera=(self), microphone=(self)"
        assert "Strict-Transport-Security" not in headers
    resp = await client.get("/static/chat.js")
    assert resp.status == 200
    assert "javascript" in resp.content_type
    resp = await client.get("/healthz")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_tls_adds_hsts_and_secure_cookies(aiohttp_client: Any) -> None:
    config = Config(advisor_token=ADVISOR_TOKEN, tls_cert=Path("c"), tls_key=Path("k"))
    gw = Gateway.from_config(config)
    client = await aiohttp_client(build_app(gw))
    resp = await client.get("/healthz")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "wss://" in resp.headers["Content-Security-Policy"]
    resp = await client.get(f"/login?token={gw.advisor_auth.login_token}", allow_redirects=False)
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


# -- events WebSocket ----------------------------------------------------------------------


async def test_chat_both_ways_with_unicode(client: Client) -> None:
    body = await create(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    snapshot = await read_snapshot(customer)
    assert {"type": "participant", "role": "advisor", "present": True} in snapshot
    assert {"type": "participant", "role": "customer", "present": True} in snapshot

    before = time.time()
    await advisor.send_json({"type": "chat", "text": GREETING})
    for ws in (advisor, customer):
        event = await wait_for(ws, lambda e: e["type"] == "chat")
        assert event["from"] == "advisor"
        assert event["text"] == GREETING
        assert before - 1 <= event["ts"] <= time.time() + 1

    await customer.send_str(json.dumps({"type": "chat", "text": "Danke, gleichfalls! 👍"}))
    for ws in (advisor, customer):
        event = await wait_for(ws, lambda e: e["type"] == "chat")
        assert (event["from"], event["text"]) == ("customer", "Danke, gleichfalls! 👍")
    await advisor.close()
    await customer.close()


async def test_history_then_snapshot_on_connect(client: Client) -> None:
    body = await create(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    await advisor.send_json({"type": "chat", "text": "Willkommen"})
    await wait_for(advisor, lambda e: e["type"] == "chat")

    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    first = await next_event(customer)
    assert (first["type"], first["from"], first["text"]) == ("chat", "advisor", "Willkommen")
    rest = await read_snapshot(customer)
    assert [e["type"] for e in rest] == ["participant", "participant", "media", "media"]
    await advisor.close()
    await customer.close()


async def test_participant_events_on_join_and_leave(client: Client, gw: Gateway) -> None:
    body = await create(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    snapshot = await read_snapshot(advisor)
    assert {"type": "participant", "role": "customer", "present": False} in snapshot

    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    event = await wait_for(advisor, lambda e: e["type"] == "participant")
    assert event == {"type": "participant", "role": "customer", "present": True}
    resp = await client.get(f"/api/sessions/{body['id']}", headers=bearer(ADVISOR_TOKEN))
    state = (await resp.json())["participants"]["customer"]
    assert state["present"] is True
    assert [c["kind"] for c in state["connections"]] == ["events"]

    await customer.close()
    event = await wait_for(advisor, lambda e: e["type"] == "participant")
    assert event == {"type": "participant", "role": "customer", "present": False}
    await advisor.close()


async def test_media_state_is_announced(client: Client, gw: Gateway) -> None:
    body = await create(client)
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(customer)

    await customer.send_json({"type": "media", "camera": True, "microphone": False})
    event = await wait_for(advisor, lambda e: e["type"] == "media")
    assert (event["role"], event["camera"], event["microphone"]) == ("customer", True, False)
    consultation = gw.directory.get(body["id"])
    assert consultation is not None
    assert consultation.participants[Role.CUSTOMER].camera is True

    await customer.send_json({"type": "media", "camera": "yes", "microphone": False})
    error = await wait_for(customer, lambda e: e["type"] == "error")
    assert "camera" in error["detail"]
    await advisor.close()
    await customer.close()


async def test_bad_client_messages_get_errors_and_socket_stays(client: Client) -> None:
    body = await create(client)
    ws = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(ws)
    for bad in ("{nope", "[1, 2]", '{"type": "dance"}', '"chat"'):
        await ws.send_str(bad)
        event = await next_event(ws)
        assert event["type"] == "error" and event["detail"], bad
    await ws.send_bytes(b"\x00\x01")
    assert (await next_event(ws))["type"] == "error"

    await ws.send_json({"type": "chat", "text": "x" * 2001})
    error = await next_event(ws)
    assert error["type"] == "error" and "2000" in error["detail"]
    await ws.send_json({"type": "chat", "text": "   "})
    assert (await next_event(ws))["type"] == "error"

    await ws.send_json({"type": "chat", "text": "noch da"})
    event = await next_event(ws)
    assert (event["type"], event["text"]) == ("chat", "noch da")
    assert not ws.closed
    await ws.close()


async def test_oversized_frame_closes_socket(client: Client) -> None:
    body = await create(client)
    ws = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(ws)
    await ws.send_str(json.dumps({"type": "chat", "text": "x" * (65 * 1024)}))
    await expect_close(ws, 1009)  # RFC 6455 §7.4.1: message too big


async def test_slow_client_is_closed_not_buffered(client: Client, gw: Gateway) -> None:
    body = await create(client)
    ws = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(ws)
    consultation = gw.directory.get(body["id"])
    assert consultation is not None
    # 400 events without yielding to the loop: more than the socket's queue holds
    for n in range(400):
        consultation.emit({"type": "media", "role": "advisor", "n": n})
    seen = await expect_close(ws, 1008)
    assert len(seen) <= 256


async def test_delete_ends_both_sockets(client: Client) -> None:
    body = await create(client)
    sid = body["id"]
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    customer = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(customer)
    await wait_for(advisor, lambda e: e["type"] == "participant" and e["present"])

    resp = await client.delete(f"/api/sessions/{sid}", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 204
    for ws in (advisor, customer):
        seen = await expect_close(ws, 1000)
        assert seen[-1] == {"type": "session_ended", "reason": "ended"}
        assert ws.closed

    with pytest.raises(WSServerHandshakeError) as excinfo:
        await client.ws_connect(local(body["customer"]["events_url"]))
    assert excinfo.value.status == 401


async def test_events_authentication(client: Client) -> None:
    first, second = await create(client), await create(client)
    sid = first["id"]
    cases = [
        (f"/api/sessions/{sid}/events", {}, 401),
        (f"/api/sessions/{sid}/events?token=wrong", {}, 401),
        (f"/api/sessions/{sid}/events", bearer("wrong"), 401),
        (f"/api/sessions/{sid}/events?token={second['customer']['token']}", {}, 403),
        (f"/api/sessions/unknown/events?token={ADVISOR_TOKEN}", {}, 404),
    ]
    for path, headers, status in cases:
        with pytest.raises(WSServerHandshakeError) as excinfo:
            await client.ws_connect(path, headers=headers)
        assert excinfo.value.status == status, path

    # bearer header instead of ?token=; the static advisor token acts as the advisor
    ws = await client.ws_connect(
        f"/api/sessions/{sid}/events", headers=bearer(first["customer"]["token"])
    )
    await read_snapshot(ws)
    advisor = await client.ws_connect(f"/api/sessions/{sid}/events?token={ADVISOR_TOKEN}")
    await read_snapshot(advisor)
    await advisor.send_json({"type": "chat", "text": "Hallo"})
    event = await wait_for(ws, lambda e: e["type"] == "chat")
    assert event["from"] == "advisor"
    await ws.close()
    await advisor.close()


# -- advisor login, cookie sessions, CSRF ---------------------------------------------------


async def test_one_time_login(client: Client, gw: Gateway) -> None:
    token = gw.advisor_auth.login_token
    resp = await client.get(f"/login?token={token}", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/advisor"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("vb_advisor=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # no TLS configured

    again = await client.get(f"/login?token={token}", allow_redirects=False)
    assert again.status == 403
    assert again.content_type == "text/html"
    page = await again.text()
    assert 'lang="de"' in page and "bereits verwendet" in page
    resp = await client.get("/login?token=guess", allow_redirects=False)
    assert resp.status == 403


async def test_cookie_session_requires_csrf(client: Client, gw: Gateway) -> None:
    csrf = await login(client, gw)
    resp = await client.post("/api/sessions")
    await assert_problem(resp, 403)
    resp = await client.post("/api/sessions", headers={"X-CSRF-Token": "forged"})
    await assert_problem(resp, 403)
    resp = await client.post(
        "/api/sessions", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    await assert_problem(resp, 403)
    assert not gw.directory.consultations

    resp = await client.post("/api/sessions", headers={"X-CSRF-Token": csrf, **origin(client)})
    assert resp.status == 201
    sid = (await resp.json())["id"]
    # safe methods need no CSRF token
    assert (await client.get(f"/api/sessions/{sid}")).status == 200
    # a wrong bearer header is not rescued by the cookie
    await assert_problem(await client.get(f"/api/sessions/{sid}", headers=bearer("x")), 401)
    resp = await client.delete(f"/api/sessions/{sid}")
    await assert_problem(resp, 403)
    resp = await client.delete(f"/api/sessions/{sid}", headers={"X-CSRF-Token": csrf})
    assert resp.status == 204


async def test_advisor_pages_and_cookie_websocket(client: Client, gw: Gateway) -> None:
    assert (await client.get("/advisor")).status == 403  # not logged in
    await login(client, gw)
    body = await create(client)
    sid, pin = body["id"], body["customer"]["pin"]
    overview = await (await client.get("/advisor")).text()
    assert f"/advisor/{sid}" in overview and group_pin(pin) in overview  # shown grouped: "691 443"
    assert "<script" in overview and "/static/advisor.js" in overview
    resp = await client.get(f"/advisor/{sid}")
    page = await resp.text()
    assert resp.status == 200 and group_pin(pin) in page
    assert f'data-events="/api/sessions/{sid}/events"' in page

    # the cookie authenticates the advisor's WebSocket, from our own origin only
    for headers in ({}, {"Origin": "https://evil.example"}):
        with pytest.raises(WSServerHandshakeError) as excinfo:
            await client.ws_connect(f"/api/sessions/{sid}/events", headers=headers)
        assert excinfo.value.status == 403
    ws = await client.ws_connect(f"/api/sessions/{sid}/events", headers=origin(client))
    snapshot = await read_snapshot(ws)
    assert {"type": "participant", "role": "advisor", "present": True} in snapshot
    await ws.close()


async def test_logout_ends_cookie_session(client: Client, gw: Gateway) -> None:
    csrf = await login(client, gw)
    resp = await client.post("/logout", data={"csrf": "wrong"})
    assert resp.status == 403
    resp = await client.post("/logout", data={"csrf": csrf}, headers={"Origin": "null"})
    assert resp.status == 200
    assert "abgemeldet" in await resp.text()
    assert (await client.get("/advisor")).status == 403
    resp = await client.post("/api/sessions", headers={"X-CSRF-Token": csrf})
    await assert_problem(resp, 401)


# -- customer PIN page ---------------------------------------------------------------------


async def test_customer_pin_flow(client: Client, gw: Gateway) -> None:
    body = await create(client)
    sid, pin = body["id"], body["customer"]["pin"]
    path = local(body["customer"]["page_url"])
    resp = await client.get(path)
    assert resp.status == 200
    page = await resp.text()
    assert 'name="pin"' in page and "PIN" in page and 'lang="de"' in page

    wrong = f"{(int(pin) + 1) % 1_000_000:06d}"
    resp = await client.post(path, data={"pin": wrong}, allow_redirects=False)
    assert resp.status == 403
    assert "Noch 4 Versuche" in await resp.text()
    resp = await client.post(path, data={"pin": "12ab"}, allow_redirects=False)
    assert resp.status == 400  # malformed: not counted as a guess

    # another site may not post PINs (and burn the attempts) ...
    resp = await client.post(path, data={"pin": wrong}, headers={"Origin": "https://evil.example"})
    assert resp.status == 403 and "Anfrage abgelehnt" in await resp.text()
    resp = await client.post(path, data={"pin": wrong}, allow_redirects=False)
    assert "Noch 3 Versuche" in await resp.text()  # the foreign post was not counted
    # ... but "Origin: null" is what browsers send for our own form under no-referrer
    resp = await client.post(
        path, data={"pin": pin}, headers={"Origin": "null"}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == f"/k/{sid}"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"vb_customer={body['customer']['token']};")
    assert f"Path=/k/{sid}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie

    chat_page = await (await client.get(path)).text()
    assert f'data-events="/k/{sid}/events"' in chat_page
    # the token is in the page once, for the WHIP/WHEP bearer header (docs/web.md), and
    # never in a URL or data attribute
    token = body["customer"]["token"]
    assert chat_page.count(token) == 1
    assert f'<meta name="vb-token" content="{token}">' in chat_page
    # the cookie is scoped to this consultation's pages, the API does not see it
    await assert_problem(await client.get(f"/api/sessions/{sid}"), 401)

    with pytest.raises(WSServerHandshakeError) as excinfo:
        await client.ws_connect(f"/k/{sid}/events", headers={"Origin": "https://evil.example"})
    assert excinfo.value.status == 403
    advisor = await client.ws_connect(local(body["advisor"]["events_url"]))
    await read_snapshot(advisor)
    ws = await client.ws_connect(f"/k/{sid}/events", headers=origin(client))
    await read_snapshot(ws)
    await ws.send_json({"type": "chat", "text": GREETING})
    event = await wait_for(advisor, lambda e: e["type"] == "chat")
    assert (event["from"], event["text"]) == ("customer", GREETING)
    await ws.close()
    await advisor.close()


async def test_pin_locks_after_five_wrong(client: Client, gw: Gateway) -> None:
    body = await create(client)
    pin = body["customer"]["pin"]
    path = local(body["customer"]["page_url"])
    wrong = f"{(int(pin) + 1) % 1_000_000:06d}"
    for _ in range(4):
        resp = await client.post(path, data={"pin": wrong}, allow_redirects=False)
        assert resp.status == 403
        assert "gesperrt" not in await resp.text()
    resp = await client.post(path, data={"pin": wrong}, allow_redirects=False)
    assert resp.status == 403
    assert "gesperrt" in await resp.text()
    # the right PIN no longer helps, the link is dead
    resp = await client.post(path, data={"pin": pin}, allow_redirects=False)
    assert resp.status == 403
    assert "Set-Cookie" not in resp.headers
    resp = await client.get(path)
    assert resp.status == 403 and "gesperrt" in await resp.text()
    # another consultation is unaffected
    other = await create(client)
    resp = await client.post(
        local(other["customer"]["page_url"]),
        data={"pin": other["customer"]["pin"]},
        allow_redirects=False,
    )
    assert resp.status == 303


async def test_unknown_consultation_pages(client: Client) -> None:
    for path in ("/k/nope", "/flash/nope"):
        resp = await client.get(path)
        assert resp.status == 404
        assert "nicht (mehr)" in await resp.text()


# -- WHIP / WHEP ---------------------------------------------------------------------------


async def test_whip_whep_authenticate_then_read_the_offer(client: Client) -> None:
    body = await create(client)
    for key in ("whip_url", "whep_url"):
        path = local(body["customer"][key])
        sdp = {"Content-Type": "application/sdp"}
        resp = await client.post(path, data="v=0\r\n", headers=sdp)
        await assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = await client.post(path, data="v=0\r\n", headers={**sdp, **bearer("wrong")})
        await assert_problem(resp, 401)
        resp = await client.post(
            path, data="v=0\r\n", headers={**sdp, **bearer(body["advisor"]["token"])}
        )
        await assert_problem(resp, 403)
        resp = await client.post(
            path, data="v=0\r\n", headers={**sdp, **bearer(body["customer"]["token"])}
        )
        # past authorisation: the WebRTC front-end reads the offer and refuses "v=0"
        await assert_problem(resp, 400)


# -- access log ------------------------------------------------------------------------------


def test_redaction_rules() -> None:
    token = "Zq3_x-9kLmN0pQrStUvWxYz12345678"
    assert redact_path(f"/k/{token}") == "/k/…"
    assert redact_path(f"/api/sessions/abcDEF123_-x/events/{token}") == (
        "/api/sessions/abcDEF123_-x/events/…"
    )
    assert redact_path("/static/customer-page.js") == "/static/customer-page.js"
    assert redact_target("/login", "token=abc") == "/login?…"
    assert redact_target("/healthz", "") == "/healthz"


def test_access_logger_unit(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    access = RedactingAccessLogger(logger, "%r %{Authorization}i")
    secret = "SECRETsecret0123456789_abcdefgh"
    request = make_mocked_request(
        "GET",
        f"/k/{secret}/events?token={secret}&pin=123456",
        headers={
            "User-Agent": 'Mozilla/5.0 "evil"\r\nforged line',
            "Authorization": f"Bearer {secret}",
        },
    )
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=200, text="ok"), 0.012)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert secret not in line and "123456" not in line
    assert '"GET /k/…/events?… HTTP/1.1" 200 0 ' in line  # nothing sent yet
    assert "\n" not in line and "\r" not in line and "Mozilla/5.0" in line


async def test_access_log_through_app_never_shows_tokens(
    aiohttp_client: Any, gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    server = TestServer(build_app(gw))
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    login_token = gw.advisor_auth.login_token
    assert login_token
    body = await create(client)
    customer = body["customer"]["token"]
    secrets_ = [login_token, customer, ADVISOR_TOKEN, body["customer"]["pin"]]

    await client.get(f"/login?token={login_token}", allow_redirects=False)
    await client.get(f"/k/{customer}")
    await client.get(f"/api/sessions/{body['id']}?token=SECRET", headers=bearer(ADVISOR_TOKEN))
    ws = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(ws)
    await ws.close()
    secrets_.append("SECRET")

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
        if len(lines) >= 5:
            break
        await asyncio.sleep(0.02)
    assert len(lines) >= 5, lines
    for line in lines:
        for secret in secrets_:
            assert secret not in line, line
    assert any('"GET /login?… HTTP/1.1" 303' in line for line in lines)
    assert any('"GET /k/… HTTP/1.1" 404' in line for line in lines)
    assert any(f"/api/sessions/{body['id']}/events?…" in line for line in lines)


async def test_gateway_is_in_app_state(gw: Gateway) -> None:
    app = build_app(gw)
    assert app[GATEWAY_KEY] is gw


async def test_server_shutdown_closes_event_sockets(client: Client) -> None:
    body = await create(client)
    ws = await client.ws_connect(local(body["customer"]["events_url"]))
    await read_snapshot(ws)
    started = time.monotonic()
    # the close handshake needs this side to read, so both run together
    _, seen = await asyncio.gather(client.server.close(), expect_close(ws, 1001))
    assert seen == []
    assert time.monotonic() - started < 3

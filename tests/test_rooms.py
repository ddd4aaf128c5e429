"""Whose consultation is whose, what the advisor sees of it, and the customer's way in
(issue 10 items 2-5 and 12, issue 11 items 11-12): ownership in the domain, label and
appointment, unjoined consultations removed, the PIN lock with a new PIN and link in one
click, PINs typed as displayed, the one-time login link's expiry, Unicode advisor names.

The browser side of the same is in ``tests/test_rooms_chromium.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess, flash_client
from gateway import config as config_mod
from gateway.advisors import AdvisorAccounts
from gateway.config import Config
from gateway.consultation import (
    NO_SHOW_AFTER,
    OPERATOR,
    Connection,
    Directory,
    Role,
    RoomDetailsRejected,
    group_pin,
    normalize_pin,
)
from gateway.main import build_app, build_parser
from gateway.service import AdvisorAuth, Gateway
from rtmp.client import RtmpClient

Client = TestClient[web.Request, web.Application]
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "ein-langes-Passwort"
STATIC = "static-token-for-room-tests"
LABEL = "Frau Schmidt – Baufinanzierung"


@pytest.fixture
def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    gateway = Gateway.from_config(Config(advisor_token=STATIC, data_dir=tmp_path / "data"))
    # open_storage's own AdvisorAccounts (replaced below) makes its argon2 dummy hash only
    # on first use, so the object thrown away costs nothing.
    gateway.open_storage()
    accounts = AdvisorAccounts(tmp_path / "data", hasher=FAST)
    gateway.advisor_auth.accounts = accounts
    accounts.add("alice", PASSWORD)
    accounts.add("bob", PASSWORD)
    return gateway


def app_of(gw: Gateway) -> web.Application:
    """The service's own composition (real WHIP/WHEP handlers and WebRTC front-end): an
    offer of ``v=0`` that reaches the front-end is refused with 400, so 400 proves the
    caller got past authorisation; 403 means they did not."""
    return build_app(gw)


async def signed_in(aiohttp_client: Any, gw: Gateway, name: str) -> Client:
    client: Client = await aiohttp_client(app_of(gw))
    page = await client.get("/login")
    fields = dict(
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', await page.text())
    )
    resp = await client.post(
        "/login",
        data={**fields, "name": name, "password": PASSWORD},
        headers={"Origin": "null"},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    return client


async def csrf_of(client: Client) -> str:
    page = await (await client.get("/advisor")).text()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match
    return match.group(1)


async def create(client: Client, **options: Any) -> dict[str, Any]:
    resp = await client.post(
        "/api/sessions",
        data=json.dumps(options) if options else None,
        headers={"X-CSRF-Token": await csrf_of(client), "Origin": "null"},
    )
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


# -- ownership ---------------------------------------------------------------------------------


async def test_another_advisor_gets_403_everywhere_and_never_the_token(
    aiohttp_client: Any, gw: Gateway
) -> None:
    alice = await signed_in(aiohttp_client, gw, "alice")
    bob = await signed_in(aiohttp_client, gw, "bob")
    body = await create(alice)
    cid = body["id"]
    advisor_token = body["advisor"]["token"]
    consultation = gw.directory.get(cid)
    assert consultation is not None and consultation.owner == "alice"

    # the room page: a German 403 page without the token or the PIN
    page = await bob.get(f"/advisor/{cid}")
    text = await page.text()
    assert page.status == 403 and "Kein Zugriff" in text and "anderen Berater" in text
    assert advisor_token not in text and body["customer"]["token"] not in text
    assert group_pin(body["customer"]["pin"]) not in text
    assert (await alice.get(f"/advisor/{cid}")).status == 200

    # the API: state, customer access (PIN), documents, forms, end
    bob_csrf = await csrf_of(bob)
    unsafe = {"X-CSRF-Token": bob_csrf, "Origin": "null"}
    for method, path in (
        ("GET", f"/api/sessions/{cid}"),
        ("GET", f"/api/sessions/{cid}/access"),
        ("POST", f"/api/sessions/{cid}/access"),
        ("GET", f"/api/sessions/{cid}/documents"),
        ("GET", f"/api/sessions/{cid}/forms"),
        ("DELETE", f"/api/sessions/{cid}"),
    ):
        resp = await bob.request(method, path, headers=unsafe if method != "GET" else {})
        assert resp.status == 403, (method, path, resp.status)
        assert resp.content_type == "application/problem+json"
        assert advisor_token not in await resp.text()
        if method != "DELETE":  # alice may (ending it here would end the test)
            mine = await alice.request(
                method, path, headers={"X-CSRF-Token": await csrf_of(alice), "Origin": "null"}
            )
            assert mine.status == 200, (method, path, mine.status)
    # ending from bob's start page does nothing; his overview and poll do not list it
    await bob.post(f"/advisor/{cid}/end", data={"csrf": bob_csrf}, headers={"Origin": "null"})
    assert gw.directory.get(cid) is not None
    assert cid not in await (await bob.get("/advisor")).text()
    assert (await (await bob.get("/advisor/state")).json()) == {"consultations": []}

    # WHIP/WHEP with bob's cookie: 403 before the offer is read; alice gets through
    sdp = {"Content-Type": "application/sdp", **unsafe}
    for kind in ("whip", "whep"):
        resp = await bob.post(f"/{kind}/{cid}/advisor", data="v=0\r\n", headers=sdp)
        assert resp.status == 403, kind
        ok = await alice.post(
            f"/{kind}/{cid}/advisor",
            data="v=0\r\n",
            headers={
                "Content-Type": "application/sdp",
                "X-CSRF-Token": await csrf_of(alice),
                "Origin": "null",
            },
        )
        assert ok.status == 400, kind  # reached the WebRTC front-end ("v=0" refused)

    # the events socket with bob's cookie
    with pytest.raises(WSServerHandshakeError) as refused:
        await bob.ws_connect(
            f"/api/sessions/{cid}/events", headers={"Origin": f"http://{bob.host}:{bob.port}"}
        )
    assert refused.value.status == 403

    # the static token and the one-time login are one principal of their own: no access
    static = {"Authorization": f"Bearer {STATIC}"}
    assert (await bob.get(f"/api/sessions/{cid}", headers=static)).status == 403
    assert (await bob.delete(f"/api/sessions/{cid}", headers=static)).status == 403
    resp = await bob.post(
        f"/whip/{cid}/advisor",
        data="v=0\r\n",
        headers={**static, "Content-Type": "application/sdp"},
    )
    assert resp.status == 403
    # an advisor session id is no participant token (RTMP and the WebRTC endpoints
    # authorise by participant tokens, bound to their consultation)
    bob_sid = next(c.value for c in bob.session.cookie_jar if c.key == "vb_advisor")
    assert gw.authorize(bob_sid) is None
    assert gw.authorize(STATIC) is None

    # whoever holds the consultation's advisor token acts as its advisor (bound)
    token = {"Authorization": f"Bearer {advisor_token}"}
    assert (await bob.get(f"/api/sessions/{cid}", headers=token)).status == 200
    ws = await bob.ws_connect(f"/api/sessions/{cid}/events?token={advisor_token}")
    assert (await ws.receive(timeout=5)).type is WSMsgType.TEXT
    await ws.close()

    # hand-over: bob gets it, alice loses it
    assert consultation is not None
    gw.directory.hand_over(consultation, "bob")
    assert (await bob.get(f"/advisor/{cid}")).status == 200
    assert (await alice.get(f"/advisor/{cid}")).status == 403
    resp = await bob.delete(
        f"/api/sessions/{cid}", headers={"X-CSRF-Token": bob_csrf, "Origin": "null"}
    )
    assert resp.status == 204


async def test_the_operator_keeps_its_own_consultations(aiohttp_client: Any, gw: Gateway) -> None:
    client: Client = await aiohttp_client(app_of(gw))
    static = {"Authorization": f"Bearer {STATIC}"}
    body = await (await client.post("/api/sessions", headers=static)).json()
    consultation = gw.directory.get(body["id"])
    assert consultation is not None and consultation.owner == OPERATOR
    # the one-time login is the same operator: it opens the room the static token made
    login = gw.advisor_auth.login_token
    assert (await client.get(f"/login?token={login}", allow_redirects=False)).status == 303
    assert (await client.get(f"/advisor/{body['id']}")).status == 200
    assert body["id"] in await (await client.get("/advisor")).text()
    # an account does not see it
    alice = await signed_in(aiohttp_client, gw, "alice")
    assert (await alice.get(f"/advisor/{body['id']}")).status == 403


# -- label and appointment -----------------------------------------------------------------------


async def test_label_and_appointment_shown_to_the_advisor_only_and_never_kept(
    aiohttp_client: Any, gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await signed_in(aiohttp_client, gw, "alice")
    soon = time.time() + 3600
    later = await create(
        alice,
        label=LABEL,
        appointment=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon + 3600)),
    )
    earlier = await create(
        alice,
        label="Herr Özdemir",
        appointment=time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(soon + 3600)),
    )
    plain = await create(alice)
    # the response is INTERFACE.md's, unchanged (no label in it)
    assert set(later) == {"id", "expires_at", "advisor", "customer"}
    assert LABEL not in json.dumps(later)
    # an appointment later than now moves the end of the consultation's life with it
    c_later = gw.directory.get(later["id"])
    assert c_later is not None and c_later.expires_at == pytest.approx(
        soon + 3600 + gw.config.session_ttl, abs=2
    )

    page = await (await alice.get("/advisor")).text()
    assert LABEL in page and "Herr Özdemir" in page
    # by time: without an appointment by its creation (now), then the appointments
    # ("…+01:00" is an hour before the same clock time in "Z")
    order = re.findall(r'<tr id="c-([^"]+)"', page)
    assert order == [plain["id"], earlier["id"], later["id"]]
    assert '<time datetime="' in page

    # the customer never sees it: not on the PIN page, not in the room, not in the API
    customer_token = later["customer"]["token"]
    state = await alice.get(
        f"/api/sessions/{later['id']}", headers={"Authorization": f"Bearer {customer_token}"}
    )
    assert state.status == 200 and LABEL not in await state.text()
    pin_page = await (await alice.get(later["customer"]["page_url"].split("8080", 1)[-1])).text()
    assert LABEL not in pin_page

    # at the end it is gone: from memory, the statistics and the logs
    assert c_later is not None
    resp = await alice.delete(
        f"/api/sessions/{later['id']}",
        headers={"X-CSRF-Token": await csrf_of(alice), "Origin": "null"},
    )
    assert resp.status == 204
    assert c_later.label is None and c_later.appointment is None
    assert gw.statistics is not None
    rows = await gw.statistics.rows()
    assert rows and LABEL not in repr(rows) and "Schmidt" not in repr(rows)
    gw.statistics.close()  # written: now the files on disk can be searched
    assert LABEL not in caplog.text and "Schmidt" not in caplog.text
    for path in gw.config.data_dir.rglob("*"):
        if path.is_file():
            assert b"Schmidt" not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ({"label": "x" * 61}, "at most 60"),
        ({"label": "a\u0000b"}, "control"),
        ({"label": 7}, "string"),
        ({"appointment": "2026-12-02T14:30"}, "offset"),
        ({"appointment": "morgen"}, "RFC 3339"),
        ({"appointment": "2099-01-01T10:00:00Z"}, "within"),
    ],
)
async def test_bad_label_or_appointment_is_a_clear_400(
    aiohttp_client: Any, gw: Gateway, options: dict[str, Any], detail: str
) -> None:
    client: Client = await aiohttp_client(app_of(gw))
    resp = await client.post(
        "/api/sessions", data=json.dumps(options), headers={"Authorization": f"Bearer {STATIC}"}
    )
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert detail in (await resp.json())["detail"]
    assert not gw.directory.consultations


def test_label_is_one_clean_line() -> None:
    directory = Directory()
    c = directory.create("alice", label="  Termin \n  Müller  ")
    assert c.label == "Termin Müller"
    assert directory.create("alice", label="   ").label is None
    with pytest.raises(RoomDetailsRejected):
        directory.create("alice", label="\u202eevil")  # bidi override: a format character


def test_states_waiting_together_locked_and_nobody_came() -> None:
    directory = Directory(pin_max_wrong=2)
    now = time.time()
    c = directory.create("alice", appointment=now + 60, now=now)
    assert c.customer_state(now) == "absent"
    assert c.customer_state(now + 60 + NO_SHOW_AFTER) == "noshow"
    customer = Connection("events", close=lambda: None)
    c.attach(Role.CUSTOMER, customer)
    assert c.customer_state() == "waiting"
    c.attach(Role.ADVISOR, Connection("events", close=lambda: None))
    assert c.customer_state() == "together"
    c.detach(Role.CUSTOMER, customer)
    # came once: never "nobody came"
    assert c.customer_state(now + 60 + NO_SHOW_AFTER) == "absent"
    c.pin_failed()
    c.pin_failed()
    assert c.customer_state() == "locked"


def test_unjoined_consultations_are_removed_after_the_configured_time() -> None:
    directory = Directory(ttl=10 * 3600, unjoined_ttl=600, grace=300)
    now = time.time()
    unjoined = directory.create("alice", now=now)
    later = directory.create("alice", appointment=now + 3600, now=now)
    joined = directory.create("alice", now=now)
    joined.attach(Role.CUSTOMER, Connection("events", close=lambda: None))
    assert directory.expire(now + 599) == []
    assert directory.expire(now + 600) == [unjoined.id]
    assert unjoined.end_reason == "unjoined"
    # measured from the appointment, not from the creation
    assert directory.expire(now + 3600 + 599) == []
    assert directory.expire(now + 3600 + 600) == [later.id]
    assert directory.get(joined.id) is not None
    # the advisor is told (when they were made, nothing about whom)
    notes = directory.removal_notes("alice")
    assert [created for created, _ in notes] == [now, now]
    assert directory.removal_notes("bob") == []


def test_unjoined_ttl_is_a_flag_defaulting_to_four_hours() -> None:
    parser = build_parser()
    assert config_mod.load(parser.parse_args(["serve"]), {}).unjoined_ttl == 4 * 3600
    cfg = config_mod.load(parser.parse_args(["serve", "--unjoined-ttl", "900"]), {})
    assert cfg.unjoined_ttl == 900
    assert Gateway.from_config(cfg).directory.unjoined_ttl == 900


async def test_overview_tells_the_advisor_about_removed_consultations(
    aiohttp_client: Any, gw: Gateway
) -> None:
    alice = await signed_in(aiohttp_client, gw, "alice")
    body = await create(alice, label=LABEL)
    gw.directory.expire(time.time() + gw.directory.unjoined_ttl + 1)
    page = await (await alice.get("/advisor")).text()
    assert body["id"] not in page
    assert 'id="removed"' in page and "nach 4 Stunden automatisch beendet" in page
    assert LABEL not in page  # the label went with the consultation
    bob = await signed_in(aiohttp_client, gw, "bob")
    assert 'id="removed"' not in await (await bob.get("/advisor")).text()


# -- the PIN lock and a new PIN and link -----------------------------------------------------------


async def enter(client: Client, page_url: str, pin: str) -> Any:
    path = "/" + page_url.split("/", 3)[3]
    return await client.post(path, data={"pin": pin}, allow_redirects=False)


async def test_lock_is_shown_at_once_and_a_new_pin_and_link_replace_the_old(
    aiohttp_client: Any, gw: Gateway
) -> None:
    alice = await signed_in(aiohttp_client, gw, "alice")
    body = await create(alice)
    cid, old = body["id"], body["customer"]
    wrong = "000000" if old["pin"] != "000000" else "111111"
    origin = f"http://{alice.host}:{alice.port}"
    ws = await alice.ws_connect(f"/api/sessions/{cid}/events", headers={"Origin": origin})
    # the customer's socket (the one who is in already, say on another device)
    theirs = await alice.ws_connect(f"/api/sessions/{cid}/events?token={old['token']}")
    customer = alice  # the customer's requests (its cookie is scoped to /k/{id})
    for _ in range(gw.config.limits.pin_max_wrong):
        resp = await enter(customer, old["page_url"], wrong)
    assert resp.status == 403 and "gesperrt" in await resp.text()

    # live: the advisor's events socket says so, the poll and the room page show it
    seen = []
    while not any(e.get("type") == "access" for e in seen):
        msg = await ws.receive(timeout=5)
        seen.append(json.loads(msg.data))
    assert {"type": "access", "to": "advisor", "locked": True} in seen
    # the customer's socket does not get it: the advisor's chat comes next, nothing before
    await ws.send_json({"type": "chat", "text": "Ich schicke Ihnen einen neuen Link."})
    while True:
        event = json.loads((await theirs.receive(timeout=5)).data)
        assert event.get("type") != "access", event
        if event.get("type") == "chat" and event["from"] == "advisor":
            break
    # the overview's poll: a customer who is in (their socket) comes first; once
    # nobody is there the row says "locked" (and offers the new PIN)
    state = await (await alice.get("/advisor/state")).json()
    assert state["consultations"][0]["customer"] == "together"
    await theirs.close()
    state = await (await alice.get("/advisor/state")).json()
    assert state["consultations"][0]["customer"] == "locked"
    theirs = await alice.ws_connect(f"/api/sessions/{cid}/events?token={old['token']}")
    room = await (await alice.get(f"/advisor/{cid}")).text()
    assert 'id="access-locked" class="error" role="alert" data-t' in room  # not hidden
    # the right PIN does not open a locked link either
    assert (await enter(customer, old["page_url"], old["pin"])).status == 403

    # one click: a new PIN and link (cookie requests need the CSRF token)
    assert (await alice.post(f"/api/sessions/{cid}/access")).status == 403
    resp = await alice.post(
        f"/api/sessions/{cid}/access",
        headers={"X-CSRF-Token": await csrf_of(alice), "Origin": "null"},
    )
    assert resp.status == 200
    new = await resp.json()
    assert new["locked"] is False and new["pin_display"] == group_pin(new["pin"])
    assert new["page_url"] != old["page_url"]
    assert new["flash_page_url"].endswith(new["page_url"].rsplit("/", 1)[1])
    event = json.loads((await ws.receive(timeout=5)).data)
    while event.get("type") != "access":  # chat and presence come in between
        event = json.loads((await ws.receive(timeout=5)).data)
    assert event == {"type": "access", "to": "advisor", "locked": False, "renewed": True}
    await ws.close()
    # connections made with the old customer token were closed
    msg = await theirs.receive(timeout=5)
    while msg.type is WSMsgType.TEXT:
        msg = await theirs.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)

    # the old link and the old token are dead; the new link takes the new PIN
    gone = await customer.get("/" + old["page_url"].split("/", 3)[3])
    assert gone.status == 403 and "neuen Link" in await gone.text()
    assert (await enter(customer, old["page_url"], new["pin"])).status == 403
    assert gw.authorize(old["token"]) is None
    ok = await enter(customer, new["page_url"], group_pin(new["pin"]))
    assert ok.status == 303 and ok.headers["Location"] == f"/k/{cid}"
    room_page = await customer.get(f"/k/{cid}")
    assert room_page.status == 200 and 'id="room"' in await room_page.text()
    # the Flash page's new link works the same way
    flash = await enter(customer, new["flash_page_url"], new["pin"])
    assert flash.status == 303 and flash.headers["Location"] == f"/flash/{cid}"


async def test_new_access_closes_connections_made_with_the_old_token(gw: Gateway) -> None:
    c = gw.directory.create("alice")
    closed: list[str] = []
    c.attach(Role.CUSTOMER, Connection("webrtc", close=lambda: closed.append("x")))
    old = c.participants[Role.CUSTOMER].token
    gw.directory.new_customer_access(c)
    assert closed == ["x"] and gw.authorize(old) is None
    grant = gw.authorize(c.participants[Role.CUSTOMER].token)
    assert grant is not None and grant.role is Role.CUSTOMER


# -- PINs typed as displayed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "691443",
        "691 443",
        " 691 443 ",
        "691-443",
        "691\u00a0443",
        "691\u2009443",
        "６９１４４３",
        "６９１　４４３",
        "691.443",
        "691 – 443",
    ],
)
def test_pin_typed_as_shown_is_the_pin(typed: str) -> None:
    assert normalize_pin(typed) == "691443"


@pytest.mark.parametrize(
    "typed", ["69144", "6914430", "abc123", "٦٩١٤٤٣", "691 44x", "", "1" * 100]
)
def test_what_is_no_pin_is_malformed(typed: str) -> None:
    assert normalize_pin(typed) is None


def test_pin_is_shown_in_groups_of_three() -> None:
    assert group_pin("691443") == "691 443"
    assert normalize_pin(group_pin("012345")) == "012345"


async def test_pin_form_accepts_spaces_and_full_width_and_does_not_count_typos(
    aiohttp_client: Any, gw: Gateway
) -> None:
    client: Client = await aiohttp_client(app_of(gw))
    static = {"Authorization": f"Bearer {STATIC}"}
    body = await (await client.post("/api/sessions", headers=static)).json()
    consultation = gw.directory.get(body["id"])
    assert consultation is not None
    form = await (await client.get("/" + body["customer"]["page_url"].split("/", 3)[3])).text()
    assert 'maxlength="6"' not in form and "pattern=" not in form
    assert 'inputmode="numeric"' in form and 'aria-describedby="pin-hint"' in form
    for typo in ("12 34", "abcdef", "٦٩١٤٤٣", "1234567"):
        resp = await enter(client, body["customer"]["page_url"], typo)
        assert resp.status == 400 and "6-stellige PIN" in await resp.text()
    assert consultation.wrong_pins == 0  # typos are not guesses
    pin = body["customer"]["pin"]
    full_width = "".join(chr(ord(d) - ord("0") + 0xFF10) for d in pin)
    spaced = full_width[:3] + "\u3000" + full_width[3:]  # ideographic space, as an IME types
    resp = await enter(client, body["customer"]["page_url"], spaced)
    assert resp.status == 303


# -- the one-time login link and advisor names -----------------------------------------------------


async def test_one_time_link_expires_after_use_or_fifteen_minutes(aiohttp_client: Any) -> None:
    now = [1000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    gateway = Gateway.from_config(Config(advisor_token=STATIC))
    gateway.advisor_auth = AdvisorAuth(STATIC, clock=clock)
    client: Client = await aiohttp_client(build_app(gateway))
    token = gateway.advisor_auth.login_token
    now[0] += AdvisorAuth.LOGIN_LINK_TTL
    resp = await client.get(f"/login?token={token}", allow_redirects=False)
    text = await resp.text()
    # not a dead end: the sign-in form, with a German explanation
    assert resp.status == 403 and 'action="/login"' in text and 'name="password"' in text
    assert "abgelaufen oder wurde bereits verwendet" in text and "15 Minuten" in text
    assert not any(c.startswith("vb_advisor=") for c in resp.headers.getall("Set-Cookie", []))

    fresh = AdvisorAuth(STATIC, clock=clock)
    gateway.advisor_auth = fresh
    token = fresh.login_token
    now[0] += AdvisorAuth.LOGIN_LINK_TTL - 1
    assert (await client.get(f"/login?token={token}", allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    again = await client.get(f"/login?token={token}", allow_redirects=False)
    assert again.status == 403 and 'action="/login"' in await again.text()
    english = await client.get(f"/login?token={token}&lang=en", allow_redirects=False)
    assert "expired or was used already" in await english.text()


def test_ownership_of_an_advisor_named_with_umlauts() -> None:
    # hmac.compare_digest refuses non-ASCII str: the owner check compares bytes
    c = Directory().create("Müller")
    assert c.owned_by("Müller") and not c.owned_by("Muller") and not c.owned_by(None)


def test_advisor_names_with_unicode_letters(tmp_path: Path) -> None:
    accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    assert accounts.add("Müller", PASSWORD).name == "Müller"
    accounts.add("Łukasz.Żak", PASSWORD)
    # the same name typed decomposed (u + combining diaeresis) is the same account
    decomposed = "Mu\u0308ller"
    assert accounts.verify(decomposed, PASSWORD) == (
        "Müller",
        accounts.generation("Müller"),
    )
    with pytest.raises(ValueError, match="exists"):
        accounts.add(decomposed, PASSWORD)
    accounts.set_password(decomposed, PASSWORD + "!")
    for bad in ("_müller", "Mül ler", "Mül\u200bler", "-x", "x" * 65):
        with pytest.raises(ValueError):
            accounts.add(bad, PASSWORD)


# -- RTMP: participant tokens only; the lock is the advisor's business ---------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = GatewayProcess(tmp_path_factory.mktemp("rooms-rtmp")).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


async def test_rtmp_takes_no_advisor_credentials_and_flash_gets_no_access_events(
    gateway: GatewayProcess,
) -> None:
    body = await asyncio.to_thread(gateway.create_session)
    # the static advisor token is no participant token: RTMP rejects it at connect
    client = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
    try:
        result = await client.connect(
            "consult", f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult", ADVISOR_TOKEN
        )
        assert result.error and result.args[0]["code"] == "NetConnection.Connect.Rejected"
    finally:
        await client.close()

    # the consultation's own tokens work; a Flash customer who is in does not hear of a
    # lock (only the advisor's clients do)
    advisor = await flash_client(gateway, body["advisor"]["token"])
    customer = await flash_client(gateway, body["customer"]["token"])
    try:
        link = "/" + body["customer"]["page_url"].split("/", 3)[3]
        wrong = "000000" if body["customer"]["pin"] != "000000" else "111111"
        for _ in range(5):
            await asyncio.to_thread(
                gateway.request,
                "POST",
                link,
                b"pin=" + wrong.encode(),
                None,
                {"Content-Type": "application/x-www-form-urlencoded"},
            )

        def access_event(c: RtmpClient) -> Any:
            return next(
                (
                    call
                    for call in c.calls
                    if call.name == "onSessionEvent" and call.args[-1].get("type") == "access"
                ),
                None,
            )

        event = await advisor.wait_for(lambda: access_event(advisor))
        assert event.args[-1]["locked"] is True
        # the advisor's chat reaches the customer after the lock: nothing came before it
        assert not (await advisor.call("chat", "Neuer Link kommt")).error
        await customer.wait_for(lambda: any(c.name == "onChat" for c in customer.calls))
        assert access_event(customer) is None
    finally:
        await customer.close()
        await advisor.close()

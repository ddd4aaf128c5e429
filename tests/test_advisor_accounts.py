"""Advisor accounts (issue 5 item 1): the argon2id account table, the command line, the
sign-in form with its limits, the cookie session and CSRF, and the start page."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from gateway import advisor_cli
from gateway.advisors import AccountError, AdvisorAccounts
from gateway.config import Config
from gateway.consultation import Connection, Role, group_pin
from gateway.main import build_app
from gateway.service import Gateway
from web.advisor import LOGIN_GUARD_KEY
from web.throttle import FailureLimiter, address_key

Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "korrekt-Pferd-Batterie"
# cheap parameters for the tests that hash a lot; argon2id all the same
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the account table ----------------------------------------------------------------------


def test_accounts_hash_with_argon2id_in_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    accounts = AdvisorAccounts(data)
    assert accounts.accounts() == []
    assert not accounts.path.exists(), "reading creates nothing"
    accounts.add("alice", PASSWORD)
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 == 0
    with sqlite3.connect(accounts.path) as db:
        (digest,) = db.execute("SELECT hash FROM advisor").fetchone()
    assert digest.startswith("$argon2id$"), digest
    assert PASSWORD not in accounts.path.read_bytes().decode("latin-1")
    verified = accounts.verify("alice", PASSWORD)
    assert verified is not None and verified[0] == "alice"
    assert accounts.verify("ALICE", PASSWORD) is not None, "names are case-insensitive"
    assert accounts.verify("alice", PASSWORD + "x") is None
    assert accounts.verify("bob", PASSWORD) is None


def test_account_rules(tmp_path: Path) -> None:
    accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    accounts.add("a.berater@bank", PASSWORD)
    with pytest.raises(AccountError, match="exists"):
        accounts.add("A.Berater@Bank", PASSWORD)
    for bad in ("", "-x", "x y", "a" * 65, "name;drop"):
        with pytest.raises(AccountError):
            accounts.add(bad, PASSWORD)
    with pytest.raises(AccountError, match="at least"):
        accounts.add("short", "kurz")
    with pytest.raises(AccountError, match="No advisor"):
        accounts.set_password("nobody", PASSWORD)
    with pytest.raises(AccountError, match="No advisor"):
        accounts.remove("nobody")
    assert accounts.verify("x" * 2000, PASSWORD) is None
    assert accounts.verify("a.berater@bank", "p" * 5000) is None


def test_password_change_and_removal_change_the_generation(tmp_path: Path) -> None:
    accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    accounts.add("alice", PASSWORD)
    first = accounts.generation("alice")
    accounts.set_password("alice", "ein-neues-Passwort")
    assert accounts.generation("alice") not in (None, first)
    assert accounts.verify("alice", PASSWORD) is None
    assert accounts.verify("alice", "ein-neues-Passwort") is not None
    accounts.remove("alice")
    assert accounts.generation("alice") is None


def test_outdated_hash_parameters_are_upgraded_at_login(tmp_path: Path) -> None:
    AdvisorAccounts(tmp_path, hasher=FAST).add("alice", PASSWORD)
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    accounts = AdvisorAccounts(tmp_path, hasher=stronger)
    assert accounts.verify("alice", PASSWORD) is not None
    with sqlite3.connect(accounts.path) as db:
        (digest,) = db.execute("SELECT hash FROM advisor").fetchone()
    assert "m=2048,t=2" in digest


# -- the command line -------------------------------------------------------------------------


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "advisor", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_command_line_add_list_passwd_remove(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    done = cli("add", "alice", "--data-dir", data, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    done = cli("add", "alice", "--data-dir", data, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 1 and "exists" in done.stderr
    done = cli("add", "bob", "--data-dir", data, stdin="zu-kurz\n")
    assert done.returncode == 1 and "at least" in done.stderr
    # the data dir also comes from the TOML file, as for serve
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{data}"\n')
    done = cli("list", "--config", str(config))
    assert done.returncode == 0 and done.stdout.startswith("alice\t"), done
    accounts = AdvisorAccounts(Path(data))
    assert accounts.verify("alice", PASSWORD) is not None
    done = cli("passwd", "alice", "--data-dir", data, stdin="ein-neues-Passwort\n")
    assert done.returncode == 0, done.stderr
    assert accounts.verify("alice", "ein-neues-Passwort") is not None
    done = cli("remove", "alice", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    assert cli("list", "--data-dir", data).stdout == ""
    assert cli("remove", "alice", "--data-dir", data).returncode == 1


def test_password_prompt_asks_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter([PASSWORD, PASSWORD, PASSWORD, "anders-als-vorher"])
    monkeypatch.setattr(advisor_cli.getpass, "getpass", lambda prompt: next(answers))
    assert advisor_cli.read_password(False, Tty()) == PASSWORD
    with pytest.raises(AccountError, match="do not match"):
        advisor_cli.read_password(False, Tty())
    # --password-stdin reads a line even on a terminal
    assert advisor_cli.read_password(True, Tty("zeile-von-stdin\n")) == "zeile-von-stdin"


# -- sign-in over HTTP -------------------------------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    gateway = Gateway.from_config(Config(advisor_token="static-token-for-tests"))
    gateway.advisor_auth.accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    gateway.advisor_auth.accounts.add("alice", PASSWORD)
    gateway.advisor_auth.accounts.add("bob", PASSWORD)
    return gateway


@pytest.fixture
async def client(aiohttp_client: Any, gw: Gateway) -> Client:
    return await aiohttp_client(build_app(gw))


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))


async def sign_in(client: Client, name: str, password: str, *, next_path: str | None = None) -> Any:
    page = await client.get("/login")
    assert page.status == 200
    fields = form_fields(await page.text())
    if next_path:
        fields["next"] = next_path
    return await client.post(
        "/login",
        data={**fields, "name": name, "password": password},
        allow_redirects=False,
        headers={"Origin": "null"},  # what browsers send under Referrer-Policy: no-referrer
    )


async def csrf_of(client: Client, path: str = "/advisor") -> str:
    page = await client.get(path)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await page.text())
    assert match, await page.text()
    return match.group(1)


async def test_login_page_in_german_and_english(client: Client) -> None:
    page = await client.get("/login")
    text = await page.text()
    assert page.status == 200 and 'lang="de"' in text
    assert "Benutzername" in text and "Passwort" in text
    assert 'type="password"' in text and 'autocomplete="current-password"' in text
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("vb_login=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    english = await (await client.get("/login?lang=en")).text()
    assert "User name" in english and "Password" in english


async def test_sign_in_sets_a_strict_http_only_cookie(client: Client) -> None:
    resp = await sign_in(client, "alice", PASSWORD)
    assert resp.status == 303 and resp.headers["Location"] == "/advisor"
    cookies = resp.headers.getall("Set-Cookie")
    session = next(c for c in cookies if c.startswith("vb_advisor="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    assert "Secure" not in session  # no TLS here; see the TLS test
    overview = await client.get("/advisor")
    assert overview.status == 200
    assert "Angemeldet als alice" in await overview.text()


async def test_sign_in_under_tls_sets_a_secure_cookie(aiohttp_client: Any, tmp_path: Path) -> None:
    config = Config(tls_cert=Path("c"), tls_key=Path("k"))
    gateway = Gateway.from_config(config)
    gateway.advisor_auth.accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    gateway.advisor_auth.accounts.add("alice", PASSWORD)
    client = await aiohttp_client(build_app(gateway))
    page = await client.get("/login")
    login_cookie = page.headers["Set-Cookie"]
    assert "Secure" in login_cookie
    # the test client speaks plain HTTP, so its jar keeps the Secure cookie to itself
    nonce = login_cookie.split(";")[0].split("=", 1)[1]
    resp = await client.post(
        "/login",
        data={**form_fields(await page.text()), "name": "alice", "password": PASSWORD},
        headers={"Cookie": f"vb_login={nonce}"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    session = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("vb_advisor="))
    assert "Secure" in session and "HttpOnly" in session


async def test_sign_in_returns_to_the_page_asked_for(client: Client) -> None:
    body = await (
        await client.post(
            "/api/sessions", headers={"Authorization": "Bearer static-token-for-tests"}
        )
    ).json()
    wanted = f"/advisor/{body['id']}"
    page = await client.get(wanted)
    text = await page.text()
    assert page.status == 403 and 'action="/login"' in text
    assert form_fields(text)["next"] == wanted
    resp = await sign_in(client, "alice", PASSWORD, next_path=wanted)
    assert resp.headers["Location"] == wanted
    # no open redirect
    for evil in ("https://evil.example/", "//evil.example/advisor", "/advisor/../../x"):
        client.session.cookie_jar.clear()
        resp = await sign_in(client, "alice", PASSWORD, next_path=evil)
        assert resp.headers["Location"] == "/advisor", evil


async def test_wrong_password_and_unknown_name_look_the_same(client: Client) -> None:
    wrong = await sign_in(client, "alice", "falsches-Passwort")
    unknown = await sign_in(client, "mallory", "falsches-Passwort")
    assert wrong.status == unknown.status == 403
    assert "Benutzername oder Passwort ist falsch" in await wrong.text()
    assert "Benutzername oder Passwort ist falsch" in await unknown.text()
    assert not any(c.startswith("vb_advisor=") for c in wrong.headers.getall("Set-Cookie", []))
    assert (await client.get("/advisor")).status == 403


async def test_sign_in_form_is_protected_against_login_csrf(client: Client) -> None:
    # a foreign site posting the form: no pre-login cookie (SameSite=Strict), no token
    resp = await client.post(
        "/login", data={"name": "alice", "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 403 and "abgelaufen" in await resp.text()
    page = await client.get("/login")
    fields = form_fields(await page.text())
    resp = await client.post(
        "/login",
        data={**fields, "name": "alice", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 403
    resp = await client.post(
        "/login",
        data={**fields, "csrf": "forged", "name": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert (await client.get("/advisor")).status == 403


async def test_account_is_locked_after_repeated_failures_then_unlocked(
    client: Client, gw: Gateway
) -> None:
    clock = Clock()
    guard = client.app[LOGIN_GUARD_KEY]
    guard.per_account.clock = guard.per_address.clock = clock
    limits = gw.config.limits
    for _ in range(limits.login_max_failures_per_account - 1):
        assert (await sign_in(client, "alice", "falsches-Passwort")).status == 403
    locked = await sign_in(client, "alice", "falsches-Passwort")
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) == int(limits.login_lockout)
    assert "Zu viele fehlgeschlagene Anmeldungen" in await locked.text()
    # even the right password is refused while locked, and nothing is verified
    right = await sign_in(client, "Alice", PASSWORD)
    assert right.status == 429
    # another account from the same address still works (per-address limit is higher)
    assert (await sign_in(client, "bob", PASSWORD)).status == 303
    clock.now += limits.login_lockout + 1
    client.session.cookie_jar.clear()
    assert (await sign_in(client, "alice", PASSWORD)).status == 303


async def test_parallel_guesses_are_not_all_checked_before_the_lock(
    client: Client, gw: Gateway
) -> None:
    accounts = gw.advisor_auth.accounts
    assert accounts is not None
    checked = []
    verify = accounts.verify

    def counting(name: str, password: str) -> tuple[str, str] | None:
        checked.append(name)
        return verify(name, password)

    accounts.verify = counting  # type: ignore[method-assign]
    page = await client.get("/login")
    fields = form_fields(await page.text())

    async def guess(n: int) -> int:
        resp = await client.post(
            "/login",
            data={**fields, "name": "alice", "password": f"geraten-{n:04d}-xx"},
            allow_redirects=False,
        )
        return resp.status

    statuses = await asyncio.gather(*(guess(n) for n in range(30)))
    assert 303 not in statuses
    assert len(checked) <= gw.config.limits.login_max_failures_per_account, checked
    assert statuses.count(429) >= 30 - gw.config.limits.login_max_failures_per_account


async def test_address_is_locked_after_failures_across_accounts(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    config = Config()
    config.limits.login_max_failures_per_address = 3
    gateway = Gateway.from_config(config)
    gateway.advisor_auth.accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    gateway.advisor_auth.accounts.add("alice", PASSWORD)
    client = await aiohttp_client(build_app(gateway))
    for name in ("x1", "x2"):
        assert (await sign_in(client, name, "falsches-Passwort")).status == 403
    assert (await sign_in(client, "x3", "falsches-Passwort")).status == 429
    assert (await sign_in(client, "alice", PASSWORD)).status == 429


def test_addresses_are_counted_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key(None) == "-" and address_key("unix") == "unix"


def test_failure_limiter_window_and_bounded_memory() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, window=60, lockout=300, clock=clock, max_keys=100)
    assert limiter.fail("a") == 0 and limiter.fail("a") == 0
    clock.now += 61  # the first two fall out of the window
    assert limiter.fail("a") == 0 and limiter.remaining("a") == 2
    assert limiter.fail("a") == 0
    assert limiter.fail("a") == 300 and limiter.retry_after("a") == 300
    limiter.succeed("a")  # a success does not lift a running lock
    assert limiter.retry_after("a") == 300
    for i in range(1000):  # an attacker rotating keys evicts its own, not the lock
        limiter.fail(f"spray-{i}")
    assert len(limiter._entries) <= 100
    assert limiter.retry_after("a") > 0
    clock.now += 301
    assert limiter.retry_after("a") == 0


# -- the session, sign-out, CSRF ----------------------------------------------------------------


async def test_removed_account_or_changed_password_ends_the_session(
    client: Client, gw: Gateway
) -> None:
    assert (await sign_in(client, "alice", PASSWORD)).status == 303
    assert (await client.get("/advisor")).status == 200
    accounts = gw.advisor_auth.accounts
    assert accounts is not None
    accounts.set_password("alice", "ein-neues-Passwort")
    assert (await client.get("/advisor")).status == 403
    assert (await sign_in(client, "alice", "ein-neues-Passwort")).status == 303
    assert (await client.get("/advisor")).status == 200
    accounts.remove("alice")
    assert (await client.get("/advisor")).status == 403
    state = await client.get("/advisor/state")
    assert state.status == 403 and state.content_type == "application/problem+json"


async def test_logout_needs_the_csrf_token(client: Client) -> None:
    await sign_in(client, "alice", PASSWORD)
    csrf = await csrf_of(client)
    assert (await client.post("/logout", data={"csrf": "wrong"})).status == 403
    assert (await client.get("/advisor")).status == 200
    resp = await client.post("/logout", data={"csrf": csrf}, headers={"Origin": "null"})
    assert resp.status == 200
    assert (await client.get("/advisor")).status == 403


async def test_one_time_link_and_static_token_keep_working(client: Client, gw: Gateway) -> None:
    token = gw.advisor_auth.login_token
    resp = await client.get(f"/login?token={token}", allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/advisor")).status == 200
    resp = await client.post(
        "/api/sessions", headers={"Authorization": "Bearer static-token-for-tests"}
    )
    assert resp.status == 201


# -- the start page -----------------------------------------------------------------------------


async def create_with_cookie(client: Client) -> dict[str, Any]:
    csrf = await csrf_of(client)
    resp = await client.post("/api/sessions", headers={"X-CSRF-Token": csrf, "Origin": "null"})
    assert resp.status == 201, await resp.text()
    return json.loads(await resp.text())


async def test_start_page_lists_own_consultations_with_link_pin_and_state(
    aiohttp_client: Any, gw: Gateway
) -> None:
    alice = await aiohttp_client(build_app(gw))
    await sign_in(alice, "alice", PASSWORD)
    mine = await create_with_cookie(alice)
    alice.session.cookie_jar.clear()  # another advisor in the same browser
    await sign_in(alice, "bob", PASSWORD)
    theirs = await create_with_cookie(alice)
    alice.session.cookie_jar.clear()
    await sign_in(alice, "alice", PASSWORD)

    page = await (await alice.get(f"/advisor?created={mine['id']}")).text()
    # the PIN grouped as people read it (and as the PIN form accepts it typed)
    assert mine["customer"]["page_url"] in page and group_pin(mine["customer"]["pin"]) in page
    assert f'href="/advisor/{mine["id"]}"' in page  # join
    assert f'action="/advisor/{mine["id"]}/end"' in page  # end
    assert 'class="new"' in page or "class=new" in page
    assert theirs["id"] not in page, "another account's consultation is not shown"
    assert 'data-copy="pin-' in page and 'data-copy="link-' in page

    state = await (await alice.get("/advisor/state")).json()
    # the poll also carries the current PIN and link (they change with "new PIN")
    assert state == {
        "consultations": [
            {
                "id": mine["id"],
                "customer": "absent",
                # issue 17: a waiting customer's chat message shows on the overview
                "message": None,
                "pin": group_pin(mine["customer"]["pin"]),
                "page_url": mine["customer"]["page_url"],
            }
        ]
    }
    consultation = gw.directory.get(mine["id"])
    assert consultation is not None
    customer = Connection("events", close=lambda: None)
    consultation.attach(Role.CUSTOMER, customer)
    state = await (await alice.get("/advisor/state")).json()
    assert state["consultations"][0]["customer"] == "waiting"
    page = await (await alice.get("/advisor")).text()
    assert 'data-state="waiting"' in page and "wartet" in page
    consultation.attach(Role.ADVISOR, Connection("events", close=lambda: None))
    state = await (await alice.get("/advisor/state")).json()
    assert state["consultations"][0]["customer"] == "together"


async def test_ending_from_the_start_page_needs_csrf(client: Client, gw: Gateway) -> None:
    await sign_in(client, "alice", PASSWORD)
    body = await create_with_cookie(client)
    csrf = await csrf_of(client)
    resp = await client.post(f"/advisor/{body['id']}/end", data={"csrf": "forged"})
    assert resp.status == 403
    assert gw.directory.get(body["id"]) is not None
    resp = await client.post(
        f"/advisor/{body['id']}/end",
        data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert resp.status == 403
    resp = await client.post(
        f"/advisor/{body['id']}/end",
        data={"csrf": csrf},
        headers={"Origin": "null"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert gw.directory.get(body["id"]) is None
    page = await (await client.get("/advisor?ended")).text()
    assert "Die Beratung wurde beendet" in page and body["id"] not in page

"""The advisor's display name (issue 10, item 11): stored with the account, set on the
command line, carried by each consultation in memory, shown to the customer on the PIN
page, in the room and in the Flash client's FlashVars; the operator has none, and the
neutral wording stays."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.advisors import AccountError, AdvisorAccounts
from gateway.config import Config
from gateway.consultation import Role
from gateway.service import Gateway
from tests.test_advisor_accounts import FAST, PASSWORD, cli, create_with_cookie, sign_in
from web.app import create_app

Client = TestClient[web.Request, web.Application]
SHOWN = "Frau Schmidt"


def test_display_name_is_stored_checked_and_removable(tmp_path: Path) -> None:
    accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    account = accounts.add("schmidt", PASSWORD, "  Frau   Schmidt ")
    assert account.display_name == SHOWN  # spaces collapsed, as it will be read
    assert accounts.display_name("schmidt") == SHOWN
    accounts.add("bob", PASSWORD)
    assert accounts.display_name("bob") is None
    assert [a.display_name for a in accounts.accounts()] == [None, SHOWN]
    assert accounts.set_display_name("bob", "Herr Özdemir-Łukasz") == "Herr Özdemir-Łukasz"
    assert accounts.set_display_name("bob", "") is None
    assert accounts.display_name("bob") is None
    for bad in ("x" * 61, "Frau\nSchmidt", "Frau\u202eSchmidt"):
        with pytest.raises(AccountError):
            accounts.set_display_name("bob", bad)
    with pytest.raises(AccountError):
        accounts.set_display_name("nobody", SHOWN)
    # a display name is not a login: the password still decides, by login name
    assert accounts.verify("schmidt", PASSWORD) is not None
    assert accounts.verify(SHOWN, PASSWORD) is None


def test_an_accounts_file_from_before_display_names_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "advisors.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE advisor (name TEXT PRIMARY KEY COLLATE NOCASE, hash TEXT NOT NULL, "
        "generation TEXT NOT NULL, created TEXT NOT NULL, changed TEXT NOT NULL)"
    )
    digest = FAST.hash(PASSWORD)
    db.execute(
        "INSERT INTO advisor VALUES (?, ?, ?, ?, ?)",
        ("alt", digest, "g1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    )
    db.commit()
    db.close()
    accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    assert accounts.verify("alt", PASSWORD) == ("alt", "g1")  # the old row still signs in
    assert accounts.display_name("alt") is None
    accounts.set_display_name("alt", SHOWN)
    assert accounts.display_name("alt") == SHOWN
    accounts.add("neu", PASSWORD, "Herr Weber")
    assert {a.name: a.display_name for a in accounts.accounts()} == {
        "alt": SHOWN,
        "neu": "Herr Weber",
    }


def test_command_line_sets_shows_and_removes_the_display_name(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    done = cli("add", "schmidt", "--display-name", SHOWN, "--data-dir", data, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    listed = cli("list", "--data-dir", data).stdout
    assert listed.startswith("schmidt\t") and "shown as 'Frau Schmidt'" in listed
    done = cli("display-name", "schmidt", "Frau Dr. Schmidt", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    assert AdvisorAccounts(Path(data)).display_name("schmidt") == "Frau Dr. Schmidt"
    done = cli("display-name", "schmidt", "", "--data-dir", data)
    assert done.returncode == 0 and "no display name" in done.stdout
    assert "shown as" not in cli("list", "--data-dir", data).stdout
    done = cli("display-name", "schmidt", "a\tb" * 40, "--data-dir", data)
    assert done.returncode == 1 and "display name" in done.stderr
    done = cli("display-name", "nobody", SHOWN, "--data-dir", data)
    assert done.returncode == 1 and "No advisor" in done.stderr


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    gateway = Gateway.from_config(Config(advisor_token="static-token-for-tests"))
    gateway.advisor_auth.accounts = AdvisorAccounts(tmp_path, hasher=FAST)
    gateway.advisor_auth.accounts.add("schmidt", PASSWORD, SHOWN)
    gateway.advisor_auth.accounts.add("bob", PASSWORD)
    return gateway


def flashvars_of(page: str) -> dict[str, str]:
    values = re.findall(r'<param name="flashvars" value="([^"]*)">', page)
    assert values, page
    return dict(parse_qsl(values[0].replace("&amp;", "&")))


async def enter(client: Client, link: str, pin: str) -> None:
    resp = await client.post(link, data={"pin": pin}, allow_redirects=False)
    assert resp.status == 303, await resp.text()


async def test_the_customer_reads_the_display_name_on_pin_page_room_and_flash(
    aiohttp_client: Any, gw: Gateway
) -> None:
    advisor = await aiohttp_client(create_app(gw))
    await sign_in(advisor, "schmidt", PASSWORD)
    body = await create_with_cookie(advisor)
    consultation = gw.directory.get(body["id"])
    assert consultation is not None and consultation.owner_display_name == SHOWN
    # not in what the API hands out (INTERFACE.md's document stays as it is)
    assert SHOWN not in str(body)

    customer = await aiohttp_client(create_app(gw))
    pin_page = await (await customer.get(f"/k/{body['id']}")).text()
    assert "Ihre Video-Beratung mit Frau Schmidt" in pin_page
    await enter(customer, f"/k/{body['id']}", body["customer"]["pin"])
    room = await (await customer.get(f"/k/{body['id']}")).text()
    assert 'data-advisor-name="Frau Schmidt"' in room
    assert "Frau Schmidt ist noch nicht da." in room
    assert 'data-t="cust.named.remote_label"' in room

    await enter(customer, f"/flash/{body['id']}", body["customer"]["pin"])
    flash = await (await customer.get(f"/flash/{body['id']}")).text()
    assert flashvars_of(flash)["advisor"] == SHOWN


async def test_without_a_display_name_the_wording_stays_neutral(
    aiohttp_client: Any, gw: Gateway
) -> None:
    client = await aiohttp_client(create_app(gw))
    await sign_in(client, "bob", PASSWORD)
    from_account = await create_with_cookie(client)
    # the operator (static token, one-time login) has no display name
    resp = await client.post(
        "/api/sessions", headers={"Authorization": "Bearer static-token-for-tests"}
    )
    from_operator = await resp.json()
    for body in (from_account, from_operator):
        consultation = gw.directory.get(body["id"])
        assert consultation is not None and consultation.owner_display_name is None
        customer = await aiohttp_client(create_app(gw))
        pin_page = await (await customer.get(f"/k/{body['id']}")).text()
        assert "Ihre Video-Beratung mit" not in pin_page
        await enter(customer, f"/k/{body['id']}", body["customer"]["pin"])
        room = await (await customer.get(f"/k/{body['id']}")).text()
        assert "data-advisor-name" not in room
        assert "Ihre Ansprechperson ist noch nicht da." in room
        await enter(customer, f"/flash/{body['id']}", body["customer"]["pin"])
        flash = await (await customer.get(f"/flash/{body['id']}")).text()
        assert "advisor" not in flashvars_of(flash)
        assert consultation.participants[Role.CUSTOMER].token in flash

# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""Dial-out (docs/phone.md) as the advisor does it in Chromium: the advisor types the
customer's number on the advisor page and clicks "Anrufen"; the gateway calls through
``--sip-trunk`` (here baresip itself, answering automatically), the callee hears the
announcement and presses 1, and the advisor sees "Telefon verbunden" with the number
masked. The number is in no log and not in the page afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench.testkit.baresip import Baresip, write_tone
from bench.testkit.gwproc import GatewayProcess, free_port
from bench.testkit.sipp import wait_for_sip
from tests.conftest import require_tool
from tests.test_pages import (  # noqa: F401 - fixtures
    Opener,
    advisor_state,
    browser,
    opener,
    playwright,
    wait_until,
)
from tests.test_phone_chromium import Loop

pytestmark = pytest.mark.e2e
NUMBER = "+49 170 1234567"


@pytest.fixture(scope="module")
def callee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Loop, Baresip]]:
    require_tool("baresip")
    loop = Loop()
    workdir = tmp_path_factory.mktemp("callee")
    bs = Baresip(
        workdir,
        write_tone(workdir / "tone.wav", 440.0, 120.0),
        auto_answer=True,
        user="+491701234567",  # the customer's phone: its number is the request URI's user
    )
    loop.run(bs.start())
    try:
        yield loop, bs
    finally:
        loop.run(bs.stop())
        loop.close()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, callee: tuple[Loop, Baresip]
) -> Iterator[GatewayProcess]:
    _, bs = callee
    proc = GatewayProcess(
        tmp_path_factory.mktemp("dialout"),
        extra=[
            "--sip-port",
            str(free_port()),
            "--sip-allow",
            "127.0.0.1/32",
            "--sip-trunk",
            f"127.0.0.1:{bs.sip_port}",
        ],
    )
    proc.start(timeout=60)
    wait_for_sip(proc, 60)
    yield proc
    assert proc.stop() == 0, proc.log()


def test_advisor_calls_the_customer_who_presses_one(
    gw: GatewayProcess, opener: Opener, callee: tuple[Loop, Baresip], artifacts: Path
) -> None:
    loop, bs = callee
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    page = advisor.page
    page.fill("#phone-dial-number", NUMBER)
    page.click("#phone-dial button[type=submit]")
    expect(page.locator("#phone-dial-number")).to_have_value("")  # not kept in the page
    expect(page.locator("#phone-dial-status")).to_have_text("Der Anruf wird aufgebaut …")
    loop.run(bs.wait_event("CALL_ESTABLISHED", timeout=20))  # baresip answered by itself
    card = page.locator("#phone-call")
    page.wait_for_timeout(1000)
    expect(card).to_be_hidden()  # answered is not joined: the callee must press 1
    loop.run(bs.send_digits("1"))
    expect(card).to_be_visible(timeout=15_000)
    expect(page.locator("#phone-call-number")).to_have_text("+49 … 67")
    expect(page.locator("#phone-dial-status")).to_have_text("")
    # the status line names the phone as the customer's way in (not "nur Chat")
    expect(page.locator("#presence")).to_contain_text("Telefon", timeout=10_000)
    page.screenshot(path=str(artifacts / "phone-dialout-connected.png"), full_page=True)
    state = gw.get(f"/api/sessions/{body['id']}")
    assert state["phone"]["direction"] == "out"
    page.click("#phone-hangup")
    expect(card).to_be_hidden(timeout=15_000)
    log = gw.log()
    assert "1701234567" not in log and "170 1234567" not in log, "the number is never logged"
    loop.run(bs.wait_event("CALL_CLOSED", timeout=20))  # a goodbye, then BYE
    wait_until(page, lambda: '+49 … 67 "PHONE OUT" hangup-advisor' in gw.access_log())
    advisor.assert_clean()

# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""The telephone in the pages (docs/phone.md), in Chromium with what a person does: the
customer reads the phone code off the page and types it on the phone (baresip), the
customer page switches its microphone and sound off while the phone carries the audio,
the advisor sees "Telefon verbunden" with the masked number and its duration and hangs
up with "Auflegen"; then the page's microphone is back as it was."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import expect

from bench.testkit.baresip import Baresip, write_tone
from bench.testkit.gwproc import GatewayProcess, free_port
from bench.testkit.sipp import wait_for_sip
from tests.conftest import require_tool
from tests.test_documents_panel import axe_violations
from tests.test_pages import (  # noqa: F401 - fixtures
    Opener,
    advisor_state,
    browser,
    opener,
    playwright,
)

pytestmark = pytest.mark.e2e
T = TypeVar("T")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require_tool("baresip")
    sip_port = free_port()
    proc = GatewayProcess(
        tmp_path_factory.mktemp("phone-pages"),
        extra=[
            "--sip-port",
            str(sip_port),
            "--sip-allow",
            "127.0.0.1/32",
            "--phone-number",
            "030 1234 5678",
        ],
    )
    proc.sip_port = sip_port  # type: ignore[attr-defined]
    proc.start(timeout=60)
    wait_for_sip(proc, 60)
    yield proc
    assert proc.stop() == 0, proc.log()


class Loop:
    """An asyncio loop in a thread: baresip's control socket beside sync Playwright."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[tuple[Loop, Baresip]]:
    loop = Loop()
    workdir = tmp_path / "baresip"
    workdir.mkdir()
    bs = Baresip(workdir, write_tone(workdir / "tone.wav", 440.0, 120.0))
    loop.run(bs.start())
    try:
        yield loop, bs
    finally:
        loop.run(bs.stop())
        loop.close()


def test_customer_dials_in_with_the_code_from_the_page_and_the_advisor_hangs_up(
    gw: GatewayProcess, opener: Opener, phone: tuple[Loop, Baresip], artifacts: Path
) -> None:
    loop, bs = phone
    body, advisor, customer = opener.pair()
    cpage, apage = customer.page, advisor.page
    # the customer page shows the number and the code, grouped for reading
    expect(cpage.locator(".phone-join")).to_be_visible()
    expect(cpage.locator("#phone-number")).to_have_text("030 1234 5678")
    shown = cpage.locator("#phone-code").inner_text()
    assert shown.replace(" ", "") == body["customer"]["phone"]["code"]
    # the advisor's access card has it too (to read it out on request)
    expect(apage.locator("#advisor-phone-code")).to_have_text(shown)
    cpage.screenshot(path=str(artifacts / "phone-customer-before.png"), full_page=True)
    # the customer had switched the microphone on in the page
    cpage.click("#microphone")
    expect(cpage.locator("#microphone")).to_have_attribute("data-on", "true")

    # ... and now calls, typing the code shown on the page
    loop.run(bs.dial(f"sip:dialin@127.0.0.1:{gw.sip_port}"))  # type: ignore[attr-defined]
    loop.run(bs.wait_event("CALL_ESTABLISHED"))
    loop.run(bs.send_digits(shown.replace(" ", "")))

    card = apage.locator("#phone-call")
    expect(card).to_be_visible(timeout=15_000)
    expect(card).to_contain_text("Telefon verbunden")
    expect(apage.locator("#phone-call-number")).to_have_text("+49 … 34")
    first = apage.locator("#phone-call-duration").inner_text()
    expect(apage.locator("#phone-call-duration")).not_to_have_text(first, timeout=5_000)
    # the customer page: microphone off and not switchable, the advisor's sound muted
    expect(cpage.locator("#phone-status")).to_be_visible()
    expect(cpage.locator("#microphone")).to_have_attribute("data-on", "false")
    expect(cpage.locator("#microphone")).to_be_disabled()
    assert cpage.evaluate("document.getElementById('remote-video').muted") is True
    apage.screenshot(path=str(artifacts / "phone-advisor-connected.png"), full_page=True)
    cpage.screenshot(path=str(artifacts / "phone-customer-connected.png"), full_page=True)
    assert axe_violations(apage, "#phone-call") == []
    assert axe_violations(cpage, ".phone-join") == []

    apage.click("#phone-hangup")
    loop.run(bs.wait_event("CALL_CLOSED", timeout=20))  # a goodbye, then BYE
    expect(card).to_be_hidden(timeout=10_000)
    expect(cpage.locator("#phone-status")).to_be_hidden()
    expect(cpage.locator("#microphone")).to_be_enabled()
    expect(cpage.locator("#microphone")).to_have_attribute("data-on", "true")
    assert cpage.evaluate("document.getElementById('remote-video').muted") is False
    assert '+49 … 34 "PHONE IN" hangup-advisor' in gw.access_log()
    advisor.assert_clean()
    customer.assert_clean()

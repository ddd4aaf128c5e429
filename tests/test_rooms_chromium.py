"""Whose room is whose, labels, the locked link and PINs typed as shown, in Chromium
(issue 10 items 2-5 and 12, issue 11 item 12), with only what people click and type.

Advisors are accounts made with the command line (``advisor add "Müller"``: a name with
an umlaut) and sign in on the form; the customer types PINs on the PIN page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from bench.testkit.gwproc import GatewayProcess
from tests.test_pages import (
    CSP_PROBE,
    DESKTOP,
    PHONE,
    Watched,
    browser,
    playwright,
    skip_device_check,
)

__all__ = ["browser", "playwright"]  # the module-scoped fixtures of test_pages

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "ein-langes-Passwort-für-Tests"
MUELLER = "Müller"
TZ = "Europe/Berlin"
LABELS = ("Herr Weber", "Frau Schmidt", "Sperrtest", "PIN-Test", "Übersichtstest")


def add_advisor(data_dir: Path, name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "advisor", "add", name, "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"advisor '{name}' added" in done.stdout


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("rooms-gateway")
    add_advisor(root / "data", MUELLER)
    add_advisor(root / "data", "bob")
    proc = GatewayProcess(root).start()
    yield proc
    code = proc.stop()
    log = proc.log()  # the application log and the access log
    assert code == 0, log
    assert "Traceback" not in log, log
    # the labels typed on the start page never reach a log or a file on disk
    for label in LABELS:
        assert label not in log
        for path in (root / "data").rglob("*"):
            if path.is_file():
                assert label.encode() not in path.read_bytes(), path


def watched(context: BrowserContext, origin: str) -> Watched:
    page = context.new_page()
    w = Watched(page, origin)
    page.on(
        "console",
        lambda msg: (
            w.problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.on("pageerror", lambda err: w.problems.append(f"pageerror: {err}"))
    page.on("request", lambda req: w.urls.append(req.url))
    return w


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def new_context(browser: Browser, made: list[BrowserContext], **options: Any) -> BrowserContext:
    options.setdefault("locale", "de-DE")
    options.setdefault("timezone_id", TZ)
    context = browser.new_context(**options)
    context.add_init_script(CSP_PROBE)
    made.append(context)
    return context


def sign_in(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("form.login-form button[type=submit]")
    expect(page.locator("#create-session")).to_be_visible()


def create_on_start_page(page: Page, label: str, appointment: datetime | None = None) -> str:
    """Create a consultation with the start page's form; its id."""
    page.fill("#create-label", label)
    if appointment is not None:
        page.fill("#create-appointment", appointment.strftime("%Y-%m-%dT%H:%M"))
    before = page.url
    page.click("#create-session")
    page.wait_for_url(lambda url: "created=" in url and url != before)
    return page.url.rsplit("=", 1)[1]


def test_another_advisor_sees_a_german_403_and_labels_order_the_overview(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    mueller = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    page = mueller.page
    sign_in(page, gw.base, MUELLER)
    expect(page.locator(".signed-in")).to_contain_text("Müller")
    in_two_hours = datetime.now(ZoneInfo(TZ)) + timedelta(hours=2)
    late = create_on_start_page(page, "Herr Weber – Altersvorsorge", in_two_hours)
    early = create_on_start_page(
        page, "Frau Schmidt – Baufinanzierung", in_two_hours - timedelta(hours=1)
    )
    rows = page.locator("#consultations tbody tr")
    expect(rows).to_have_count(2)
    # by appointment time, each with its label and its time in the advisor's time zone
    expect(rows.nth(0)).to_have_attribute("id", f"c-{early}")
    expect(rows.nth(0)).to_contain_text("Frau Schmidt – Baufinanzierung")
    expect(rows.nth(0).locator("time")).to_contain_text(
        (in_two_hours - timedelta(hours=1)).strftime("%H:%M")
    )
    expect(rows.nth(1)).to_contain_text("Herr Weber – Altersvorsorge")
    expect(rows.nth(0).locator(".customer-state")).to_have_text("noch nicht da")
    # the PIN grouped as the customer reads and types it
    expect(rows.nth(0).locator(".pin")).to_have_text(re.compile(r"^\d{3} \d{3}$"))
    page.screenshot(path=str(artifacts / "rooms-overview-labels.png"), full_page=True)

    bob = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    sign_in(bob.page, gw.base, "bob")
    expect(bob.page.locator("#consultations")).to_have_count(0)  # sees none of them
    response = bob.page.goto(f"{gw.base}/advisor/{late}")
    assert response is not None and response.status == 403
    expect(bob.page.locator("h1")).to_have_text("Kein Zugriff")
    expect(bob.page.locator("main")).to_contain_text("gehört einer anderen Beraterin")
    html = bob.page.content()
    assert 'name="vb-token"' not in html and "Herr Weber" not in html
    bob.page.screenshot(path=str(artifacts / "rooms-403-other-advisor.png"), full_page=True)
    bob.page.click("text=Zur Übersicht")  # not a dead end
    expect(bob.page.locator("#create-session")).to_be_visible()
    mueller.assert_clean()
    bob.assert_clean(allow=r"403")


def test_locked_link_is_shown_live_and_a_new_pin_lets_the_customer_in(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    advisor_context = new_context(browser, contexts, viewport=DESKTOP)
    overview = watched(advisor_context, gw.base)
    sign_in(overview.page, gw.base, MUELLER)
    cid = create_on_start_page(overview.page, "Sperrtest")
    row = overview.page.locator(f"#c-{cid}")
    link = row.locator(f"#link-{cid}").inner_text()
    pin = row.locator(f"#pin-{cid}").inner_text()
    room = watched(advisor_context, gw.base)
    room.page.goto(f"{gw.base}/advisor/{cid}")
    expect(room.page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(room.page.locator("#access-locked")).to_be_hidden()
    expect(room.page.locator("#new-pin")).to_be_hidden()

    # someone with the link guesses until it locks
    customer = watched(
        new_context(
            browser, contexts, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
        ),
        gw.base,
    )
    cpage = customer.page
    cpage.goto(link)
    wrong = "000 000" if pin != "000 000" else "111 111"
    for _ in range(5):
        cpage.fill("#pin", wrong)
        cpage.click("form.pin-form button[type=submit]")
        cpage.wait_for_load_state()
    expect(cpage.locator("main")).to_contain_text("gesperrt")
    cpage.screenshot(path=str(artifacts / "rooms-customer-locked.png"))

    # both advisor pages show it at once, without a reload
    expect(room.page.locator("#access-locked")).to_be_visible()
    expect(room.page.locator("#access-locked")).to_contain_text("Gesperrt")
    expect(row.locator(".customer-state")).to_have_text(
        "gesperrt (PIN zu oft falsch)", timeout=8000
    )
    expect(row.locator("button.new-pin")).to_be_visible()
    room.page.screenshot(path=str(artifacts / "rooms-advisor-locked.png"), full_page=True)
    overview.page.screenshot(path=str(artifacts / "rooms-overview-locked.png"), full_page=True)

    # the same in English, for an advisor who reads it so
    english = watched(new_context(browser, contexts, viewport=DESKTOP, locale="en-GB"), gw.base)
    sign_in(english.page, gw.base, MUELLER)
    english.page.goto(f"{gw.base}/advisor?lang=en")
    expect(english.page.locator(f"#c-{cid} .customer-state")).to_have_text(
        "locked (too many wrong PINs)"
    )
    english.page.goto(f"{gw.base}/advisor/{cid}")
    expect(english.page.locator("#access-locked")).to_contain_text("Locked")
    expect(english.page.locator("#new-pin")).to_have_text("New PIN and new link")
    english.page.screenshot(path=str(artifacts / "rooms-advisor-locked-en.png"), full_page=True)
    english.assert_clean()

    # one click: a new PIN and link, shown in place
    room.page.click("#new-pin")
    expect(room.page.locator("#access-locked")).to_be_hidden()
    expect(room.page.locator("#customer-link")).not_to_have_text(link)
    new_link = room.page.locator("#customer-link").inner_text()
    new_pin = room.page.locator("#customer-pin").inner_text()
    assert re.fullmatch(r"\d{3} \d{3}", new_pin), new_pin
    room.page.screenshot(path=str(artifacts / "rooms-advisor-new-pin.png"), full_page=True)
    # the overview follows at its next poll
    expect(row.locator(f"#pin-{cid}")).to_have_text(new_pin, timeout=8000)
    expect(row.locator(".customer-state")).to_have_text("noch nicht da")

    # the old link is dead; the new one takes the new PIN typed as shown ("691 443")
    cpage.goto(link)
    expect(cpage.locator("main")).to_contain_text("neuen Link")
    cpage.goto(new_link)
    cpage.fill("#pin", new_pin)
    cpage.click("form.pin-form button[type=submit]")
    expect(cpage.locator("#room")).to_be_visible()
    skip_device_check(cpage)
    expect(cpage.locator("#status")).to_have_attribute("data-state", "connected")
    # the advisor's room sees the customer arrive (no longer "not here yet")
    expect(room.page.locator("#presence")).not_to_have_attribute(
        "data-t", "room.customer.absent", timeout=10000
    )
    cpage.screenshot(path=str(artifacts / "rooms-customer-in-with-new-pin.png"))
    for w in (overview, room, customer):
        w.assert_clean(allow=r"403|status of 4")


def test_pin_typed_with_a_space_or_a_hyphen_enters(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    advisor = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    sign_in(advisor.page, gw.base, MUELLER)
    cid = create_on_start_page(advisor.page, "PIN-Test")
    link = advisor.page.locator(f"#link-{cid}").inner_text()
    shown = advisor.page.locator(f"#pin-{cid}").inner_text()
    assert re.fullmatch(r"\d{3} \d{3}", shown)
    customer = watched(new_context(browser, contexts, viewport=PHONE, is_mobile=True), gw.base)
    page = customer.page
    page.goto(link)
    expect(page.locator("#pin-hint")).to_contain_text("123 456")
    # a typo is not a guess: the page says what a PIN is and counts nothing
    page.fill("#pin", shown[:5])
    page.click("form.pin-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("6-stellige PIN")
    page.fill("#pin", shown.replace(" ", "-"))
    assert page.input_value("#pin") == shown.replace(" ", "-")  # nothing cut off
    page.fill("#pin", shown)
    assert page.input_value("#pin") == shown
    page.screenshot(path=str(artifacts / "rooms-pin-with-space.png"))
    page.click("form.pin-form button[type=submit]")
    expect(page.locator("#room")).to_be_visible()
    advisor.assert_clean()
    customer.assert_clean(allow=r"status of 400")


def test_new_pin_from_the_overview(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    overview = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    sign_in(overview.page, gw.base, MUELLER)
    cid = create_on_start_page(overview.page, "Übersichtstest")
    row = overview.page.locator(f"#c-{cid}")
    link = row.locator(f"#link-{cid}").inner_text()
    pin = row.locator(f"#pin-{cid}").inner_text()
    expect(row.locator("button.new-pin")).to_be_hidden()
    customer = watched(new_context(browser, contexts, viewport=PHONE, is_mobile=True), gw.base)
    page = customer.page
    page.goto(link)
    wrong = "999-999" if pin != "999 999" else "888-888"
    for _ in range(5):
        page.fill("#pin", wrong)
        page.click("form.pin-form button[type=submit]")
        page.wait_for_load_state()
    expect(page.locator("main")).to_contain_text("gesperrt")
    # the overview's poll shows the lock and offers the way out
    expect(row).to_have_attribute("data-state", "locked", timeout=8000)
    row.locator("button.new-pin").click()
    expect(row).to_have_attribute("data-state", "absent")
    expect(row.locator("button.new-pin")).to_be_hidden()
    new_link = row.locator(f"#link-{cid}").inner_text()
    new_pin = row.locator(f"#pin-{cid}").inner_text()
    assert new_link != link and re.fullmatch(r"\d{3} \d{3}", new_pin)
    overview.page.screenshot(path=str(artifacts / "rooms-overview-new-pin.png"), full_page=True)
    page.goto(new_link)
    page.fill("#pin", new_pin.replace(" ", "-"))  # typed with a hyphen this time
    page.click("form.pin-form button[type=submit]")
    expect(page.locator("#room")).to_be_visible()
    skip_device_check(page)
    # created on the start page: with a waiting room
    expect(row).to_have_attribute("data-state", "lobby", timeout=8000)
    overview.assert_clean()
    customer.assert_clean(allow=r"status of 403")

# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""Invitations by e-mail (issue 17 item 5, docs/web.md "Invitations by e-mail"): the
advisor types the customer's address on the overview, the gateway sends the link and the
appointment (.ics) through a real SMTP server (aiosmtpd on loopback, started here); what
arrived is parsed with ``email`` and ``icalendar``. The PIN is never in it, the address
is never stored or logged, and a relay that is down gives a plain German error with the
typed address kept.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.sync_api import Page, expect

from bench.testkit.gwproc import GatewayProcess, free_port
from gateway.config import Bank
from gateway.invitations import (
    Invitation,
    calendar_entry,
    compose,
    mask_address,
    valid_address,
)
from tests.test_brand import COLOR, write_brand_toml
from tests.test_pages import (  # noqa: F401  (fixtures used by name)
    DESKTOP,
    PHONE,
    Opener,
    advisor_state,
    browser,
    opener,
    playwright,
)
from tests.test_ux import AXE, _axe

CUSTOMER = "erika.mustermann@kunde.example"
LINK = "https://beratung.musterbank.example/k/abc123"


# -- a real SMTP server on loopback -------------------------------------------------------


class Inbox:
    """aiosmtpd's handler: every message it accepted, as bytes."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((envelope, envelope.content))
        self.arrived.set()
        return "250 Message accepted for delivery"

    def wait(self, count: int = 1, timeout: float = 15.0) -> EmailMessage:
        """The ``count``-th message, once it arrived."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError("no message arrived at the SMTP server")
            self.arrived.wait(0.1)
            self.arrived.clear()
        parsed = email.message_from_bytes(self.messages[count - 1][1], policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def start_smtp(port: int, inbox: Inbox) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def calendar_of(message: EmailMessage) -> icalendar.Calendar:
    parts = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1, [p.get_content_type() for p in message.walk()]
    data = parts[0].get_payload(decode=True)
    assert isinstance(data, bytes)
    return icalendar.Calendar.from_ical(data)


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


# -- the message itself ---------------------------------------------------------------------


def test_message_has_link_and_appointment_but_no_pin() -> None:
    appointment = datetime(2026, 12, 3, 13, 0, tzinfo=UTC).timestamp()  # 14:00 in Berlin
    bank = Bank(name="Musterbank Köln", phone="+49 221 123456-0", imprint="https://m.example/i")
    invitation = Invitation(
        to=CUSTOMER,
        link=LINK,
        lang="de",
        consultation_id="c0ffee",
        host="beratung.musterbank.example",
        appointment=appointment,
        advisor_name="Frau Schmidt",
    )
    message = compose(invitation, bank, "no-reply@beratung.musterbank.example")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    text = text_of(parsed)
    assert LINK in text
    assert "Frau Schmidt lädt Sie zu einer Video-Beratung ein" in text
    assert "Donnerstag, 3. Dezember 2026, 14:00 Uhr" in text
    assert "telefonisch" in text and "PIN" in text
    assert "Impressum: https://m.example/i" in text
    assert parsed["Subject"] == "Einladung zur Video-Beratung am 03.12.2026 um 14:00 Uhr"
    cal = calendar_of(parsed)
    assert cal["METHOD"] == "PUBLISH"
    event = next(iter(cal.walk("VEVENT")))
    assert event.decoded("DTSTART") == datetime(2026, 12, 3, 13, 0, tzinfo=UTC)
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(hours=1)
    assert str(event["UID"]) == "c0ffee@beratung.musterbank.example"
    assert str(event["LOCATION"]) == LINK
    # RFC 5545 §3.1: lines end in CRLF and are folded at 75 octets
    ics = calendar_entry(invitation, bank)
    assert ics is not None and b"\r\n" in ics
    assert all(len(line) <= 75 for line in ics.split(b"\r\n"))


def test_without_appointment_no_calendar_entry() -> None:
    invitation = Invitation(to=CUSTOMER, link=LINK, lang="en", consultation_id="x", host="h")
    message = compose(invitation, Bank(), "no-reply@h")
    assert not [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert message["Subject"] == "Invitation to a video consultation"
    assert "tell you by phone" in text_of(message)


@pytest.mark.parametrize(
    ("typed", "ok"),
    [
        (" erika@kunde.example ", "erika@kunde.example"),
        ("erika@kunde", None),
        ("erika", None),
        ("erika@kunde.example\r\nBcc: all@evil.example", None),
        ("a@b.example, c@d.example", None),
        ("x" * 65 + "@kunde.example", None),
        ("erika..m@kunde.example", None),
    ],
)
def test_address_check(typed: str, ok: str | None) -> None:
    assert valid_address(typed) == ok


def test_masked_address_is_not_the_address() -> None:
    masked = mask_address(CUSTOMER)
    assert masked == "e***@k***.example"
    assert "erika" not in masked and "kunde" not in masked


# -- end to end: the advisor clicks and types ----------------------------------------------------


@pytest.fixture(scope="module")
def smtp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def inbox(smtp_port: int) -> Iterator[Inbox]:
    box = Inbox()
    controller = start_smtp(smtp_port, box)
    box.controller = controller  # type: ignore[attr-defined]
    yield box
    box.controller.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, smtp_port: int) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("invite-gateway")
    toml = write_brand_toml(folder)
    proc = GatewayProcess(
        folder, extra=["--config", str(toml), "--smtp", f"127.0.0.1:{smtp_port}"]
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    # never stored, never logged: not in the log, not anywhere in the data directory
    assert CUSTOMER not in proc.log()
    for path in (folder / "data").rglob("*"):
        if path.is_file():
            assert CUSTOMER.encode() not in path.read_bytes(), path


def create_with_appointment(page: Page, base: str, label: str) -> tuple[str, str, datetime]:
    """Through the overview's form, as the advisor does: label and appointment tomorrow
    10:30 (the browser's local time; the test browser runs in UTC unless told)."""
    page.goto(f"{base}/advisor")
    when = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=10, minute=30, second=0, microsecond=0
    )
    page.fill("#create-label", label)
    page.fill("#create-appointment", when.strftime("%Y-%m-%dT%H:%M"))
    page.click("#create-session")
    page.wait_for_url(re.compile(r"created="))
    row = page.locator("#consultations tr.new")
    expect(row).to_have_count(1)
    link = row.locator("a.link").get_attribute("href")
    pin = re.sub(r"\D", "", row.locator(".pin").inner_text())
    assert link and pin
    return link, pin, when


def open_invite(page: Page) -> None:
    page.locator("#consultations tr.new button.invite").click()
    expect(page.locator("#invite-dialog")).to_be_visible()


@pytest.mark.parametrize(("lang", "locale"), [("de", "de-DE"), ("en", "en-GB")])
def test_advisor_sends_invitation_that_arrives_with_link_and_ics_without_pin(
    gw: GatewayProcess,
    opener: Opener,
    inbox: Inbox,
    artifacts: Path,
    lang: str,
    locale: str,
) -> None:
    before = len(inbox.messages)
    context = opener.context(
        storage_state=opener.advisor_state, viewport=DESKTOP, locale=locale, timezone_id="UTC"
    )
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    link, pin, when = create_with_appointment(page, gw.base, f"Baufinanzierung {lang}")
    open_invite(page)
    page.fill("#invite-email", CUSTOMER)
    assert _axe(page) == [], "overview with the invitation dialog"
    page.click("#invite-send")
    sent = "verschickt" if lang == "de" else "has been sent"
    expect(page.locator("#invite-status")).to_contain_text(sent)
    expect(page.locator("#invite-status")).to_contain_text("PIN")
    page.screenshot(path=str(artifacts / f"invite-sent-{lang}.png"))
    assert page.locator("#invite-email").input_value() == ""

    message = inbox.wait(before + 1)
    envelope, raw = inbox.messages[before]
    assert envelope.rcpt_tos == [CUSTOMER]
    assert message["To"] == CUSTOMER
    assert "Musterbank Köln" in str(message["From"])
    text = text_of(message)
    assert link in text
    # the PIN is nowhere in the message: not in the text, the HTML, the .ics, the headers
    assert pin not in raw.decode("ascii", errors="replace")
    assert pin not in json.dumps(
        [
            p.get_payload(decode=True).decode("utf-8", "replace")
            for p in message.walk()
            if not p.is_multipart()
        ]  # type: ignore[union-attr]
    )
    if lang == "de":
        assert message["Subject"].startswith("Einladung zur Video-Beratung am")
        assert "Ihre Ansprechperson teilt sie Ihnen telefonisch mit" in text
        assert "Domplatz 1, 50667 Köln" in text
    else:
        assert message["Subject"].startswith("Invitation to a video consultation on")
        assert "your advisor will tell you by phone" in text
    # the bank's look in the HTML part
    html = message.get_body(preferencelist=("html",))
    assert html is not None and COLOR in str(html.get_content())
    event = next(iter(calendar_of(message).walk("VEVENT")))
    assert event.decoded("DTSTART") == when
    assert event.decoded("DTEND") == when + timedelta(minutes=60)
    assert str(event["URL"]) == link
    assert pin not in event.to_ical().decode()
    (artifacts / f"invite-mail-{lang}.eml").write_bytes(raw)
    # the address was not logged, not even in the access log
    assert CUSTOMER not in gw.log() and CUSTOMER not in gw.access_log()
    assert mask_address(CUSTOMER) in gw.log()


def test_a_wrong_address_is_said_plainly(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    page = opener.context(storage_state=opener.advisor_state, viewport=PHONE).new_page()
    create_with_appointment(page, gw.base, "Adresse falsch")
    open_invite(page)
    page.fill("#invite-email", "erika(at)kunde")
    page.click("#invite-send")
    expect(page.locator("#invite-status")).to_have_text(
        "Bitte geben Sie eine gültige E-Mail-Adresse ein, zum Beispiel name@beispiel.de."
    )
    assert page.locator("#invite-email").get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(artifacts / "invite-phone-invalid.png"))


@pytest.mark.gateway_log_allows(r"invitation to e\*\*\*@k\*\*\*\.example not sent")
def test_relay_down_gives_a_plain_german_error_and_keeps_the_address(
    gw: GatewayProcess, opener: Opener, inbox: Inbox, smtp_port: int, artifacts: Path
) -> None:
    page = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP).new_page()
    create_with_appointment(page, gw.base, "Mailserver aus")
    open_invite(page)
    page.fill("#invite-email", CUSTOMER)
    inbox.controller.stop()  # type: ignore[attr-defined]
    try:
        page.click("#invite-send")
        status = page.locator("#invite-status")
        expect(status).to_contain_text("Die Einladung konnte nicht gesendet werden")
        expect(status).to_contain_text("Ihre Eingabe bleibt erhalten")
        page.screenshot(path=str(artifacts / "invite-relay-down.png"))
        # nothing lost: the address is still there, and the same click sends it once the
        # relay is back
        assert page.locator("#invite-email").input_value() == CUSTOMER
        assert "Traceback" not in gw.log()
    finally:
        inbox.controller = start_smtp(smtp_port, inbox)  # type: ignore[attr-defined]
    before = len(inbox.messages)
    page.click("#invite-send")
    expect(page.locator("#invite-status")).to_contain_text("verschickt")
    inbox.wait(before + 1)


def test_api_refuses_without_advisor_and_for_bad_bodies(gw: GatewayProcess) -> None:
    body = gw.create_session()
    path = f"/api/sessions/{body['id']}/invitation"
    customer_token = body["customer"]["token"]
    data = json.dumps({"email": CUSTOMER}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, _ = gw.request("POST", path, data, token=customer_token, headers=headers)
    assert status == 403
    status, hdrs, _ = gw.request("POST", path, b'{"email": 5}', headers=headers)
    assert status == 400 and hdrs["Content-Type"].startswith("application/problem+json")
    status, _, _ = gw.request("POST", "/api/sessions/nope/invitation", data, headers=headers)
    assert status == 404


def test_without_relay_there_is_no_invite_button(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path).start()
    try:
        body = proc.create_session()
        data = json.dumps({"email": CUSTOMER}).encode()
        status, _, problem = proc.request(
            "POST",
            f"/api/sessions/{body['id']}/invitation",
            data,
            headers={"Content-Type": "application/json"},
        )
        assert status == 503, problem
    finally:
        assert proc.stop() == 0

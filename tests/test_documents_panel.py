"""The documents panel and the customer's end screen, as people use them: Chromium
(Playwright), clicks and typing only, against the real gateway.

This module's gateway has small document limits (1 MiB per file, 2.5 MiB per
consultation) and a bank contact, both set by flags: the page must state the limits the
gateway enforces, not numbers of its own, and show the configured contact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from bench.testkit.gwproc import GatewayProcess
from tests import test_pages as pages
from tests.test_pages import DESKTOP, Opener, Watched

pytestmark = pytest.mark.e2e

# the page fixtures of test_pages, with this module's own gateway (below)
playwright = pages.playwright
browser = pages.browser
advisor_state = pages.advisor_state
opener = pages.opener

MIB = 1024 * 1024
AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
PHONE_TALL = {"width": 390, "height": 844}
PHONE_OPTIONS = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
BANK = {
    "name": "Musterbank Köln",
    "phone": "+49 221 123456-0",
    "email": "service@musterbank.example",
    "hours": "Mo–Fr 8–18 Uhr",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    extra = [
        "--limit",
        f"document_max_bytes={MIB}",
        "--limit",
        f"document_quota_bytes={int(2.5 * MIB)}",
    ]
    for name, value in BANK.items():
        extra += [f"--bank-{name}", value]
    proc = GatewayProcess(tmp_path_factory.mktemp("docs-gateway"), extra=extra).start()
    yield proc
    code = proc.stop()
    log = proc.log()
    assert code == 0, log
    assert "Traceback" not in log, log


def pdf_bytes(size: int) -> bytes:
    """Bytes that start like a PDF (the gateway checks the content, not the name)."""
    head = b"%PDF-1.4\n"
    tail = b"\n%%EOF\n"
    return head + os.urandom(max(0, size - len(head) - len(tail))) + tail


def pdf(path: Path, size: int) -> Path:
    path.write_bytes(pdf_bytes(size))
    return path


def png(path: Path, size: int) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8))
    return path


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def axe_violations(page: Page, selector: str) -> list[str]:
    """axe-core's WCAG findings inside ``selector`` (evaluated through the DevTools
    protocol, which the page's CSP does not govern)."""
    if not AXE.exists():
        pytest.fail("axe-core is missing (cd tests/node && npm ci)")
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text())
    found: list[str] = page.evaluate(
        """async (selector) => (await axe.run(selector)).violations.map(
             (v) => v.id + ": " + v.nodes.map((n) => n.target.join(" ")).join(", "))""",
        selector,
    )
    return found


def phone_pair(gw: GatewayProcess, opener: Opener) -> tuple[dict[str, Any], Watched, Watched]:
    """A new consultation: the advisor on a desktop, the customer on a 390×844 phone."""
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    return body, advisor, opener.customer(body, viewport=PHONE_TALL, **PHONE_OPTIONS)


def upload(page: Page, path: Path) -> None:
    """What a person's file chooser does: the visible "upload" button's file input."""
    chooser = page.locator("#documents-file")
    expect(chooser).to_be_visible()
    chooser.set_input_files(str(path))


def download(page: Page, name: str) -> Path:
    item = page.locator("#documents-list li", has_text=name)
    with page.expect_download() as info:
        item.locator("a.doc-download").click()
    dl = info.value
    assert dl.suggested_filename == name
    return Path(dl.path())


def test_documents_go_both_ways_with_limits_and_plain_errors(
    gw: GatewayProcess, opener: Opener, tmp_path: Path, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body, viewport=DESKTOP)
    a, c = advisor.page, customer.page

    # the limits stand there before anything is chosen: the gateway's, from its flags
    limits = c.locator("#documents-limits")
    expect(limits).to_contain_text("bis 1 MB je Datei, zusammen bis 2,5 MB und 50 Dateien")
    expect(limits).to_contain_text("PDF")
    expect(a.locator("#documents-limits")).to_contain_text("bis 1 MB je Datei")
    expect(c.locator(".documents-empty")).to_have_text("Noch keine Dokumente.")

    # the customer shares a PDF; it appears on both sides at once
    statement = pdf(tmp_path / "Kontoauszug März.pdf", 300_000)
    upload(c, statement)
    mine = c.locator("#documents-list li", has_text="Kontoauszug März.pdf")
    expect(mine).to_contain_text("von: Sie")
    theirs = a.locator("#documents-list li", has_text="Kontoauszug März.pdf")
    expect(theirs).to_contain_text("von: Kunde")
    expect(theirs).to_contain_text("293 KB")
    expect(c.locator("#documents-progress")).to_be_hidden()
    assert sha256(download(a, "Kontoauszug März.pdf")) == sha256(statement)

    # the advisor shares an image; the customer downloads it
    picture = png(tmp_path / "Grundriss.png", 50_000)
    upload(a, picture)
    expect(c.locator("#documents-list li", has_text="Grundriss.png")).to_contain_text(
        "von: Ansprechperson"
    )
    assert sha256(download(c, "Grundriss.png")) == sha256(picture)

    # too large: said before a byte is sent, with the configured limit
    big = pdf(tmp_path / "Scan gross.pdf", int(1.5 * MIB))
    upload(c, big)
    error = c.locator("#documents-error")
    expect(error).to_have_text(
        "„Scan gross.pdf“ ist zu groß. Eine Datei darf höchstens 1 MB haben."
    )
    # a type the gateway does not take: its 415, in plain German
    note = tmp_path / "notiz.txt"
    note.write_text("Bitte zurückrufen\n" * 50)
    upload(c, note)
    expect(error).to_contain_text("„notiz.txt“ kann nicht geteilt werden: Erlaubt sind nur PDF")
    # the connection drops during the upload
    c.route("**/documents", lambda route: route.abort("connectionreset"))
    upload(c, pdf(tmp_path / "Vertrag.pdf", 20_000))
    expect(error).to_have_text(
        "„Vertrag.pdf“ wurde nicht übertragen: Die Verbindung ist unterbrochen. "
        "Bitte versuchen Sie es noch einmal."
    )
    c.unroute("**/documents")
    # the consultation's share is used up: its 507 (about 2.1 of 2.5 MiB stored, + 0.9)
    for part in ("Teil 1.pdf", "Teil 2.pdf"):
        upload(c, pdf(tmp_path / part, int(0.9 * MIB)))
        expect(c.locator("#documents-list li", has_text=part)).to_be_visible()
        expect(error).to_be_hidden()
    upload(c, pdf(tmp_path / "Teil 3.pdf", int(0.9 * MIB)))
    expect(error).to_contain_text(
        "„Teil 3.pdf“ passt nicht mehr hinein: Der Platz für Dokumente in dieser Beratung "
        "ist aufgebraucht"
    )
    expect(a.locator("#documents-list li")).to_have_count(4)
    c.screenshot(path=artifacts / "documents-customer-desktop-de.png", full_page=True)

    # dropping a file on the advisor's card (a synthetic drag: Playwright has no OS one)
    dropped = a.evaluate_handle(
        """() => {
          const dt = new DataTransfer();
          dt.items.add(new File(["%PDF-1.4\\nSkizze\\n%%EOF\\n"], "Skizze.pdf",
                                {type: "application/pdf"}));
          return dt;
        }"""
    )
    a.dispatch_event("#documents", "dragenter", {"dataTransfer": dropped})
    expect(a.locator("#documents")).to_have_class(re.compile(r"\bdragging\b"))
    expect(a.locator(".drop-hint")).to_have_text("Zum Hochladen loslassen")
    a.dispatch_event("#documents", "drop", {"dataTransfer": dropped})
    expect(a.locator("#documents")).not_to_have_class(re.compile(r"\bdragging\b"))
    expect(c.locator("#documents-list li", has_text="Skizze.pdf")).to_contain_text(
        "von: Ansprechperson"
    )
    a.screenshot(path=artifacts / "documents-advisor-desktop-de.png", full_page=True)

    # English, switched in place
    c.click("a[data-lang-switch]")
    expect(c.locator("#documents-title")).to_have_text("Documents")
    expect(c.locator("#documents-limits")).to_contain_text(
        "up to 1 MB per file, 2.5 MB and 50 files in all"
    )
    expect(mine).to_contain_text("from: You")
    expect(c.locator(".file-button")).to_contain_text("Upload a file")
    upload(c, note)
    expect(error).to_contain_text("“notiz.txt” cannot be shared: only PDF files")
    c.screenshot(path=artifacts / "documents-customer-desktop-en.png", full_page=True)

    advisor.assert_clean(allow="net::ERR_CONNECTION_RESET|status of 41[35]|status of 507")
    customer.assert_clean(allow="net::ERR_CONNECTION_RESET|status of 41[35]|status of 507")


def test_documents_panel_on_a_phone(
    gw: GatewayProcess, opener: Opener, tmp_path: Path, artifacts: Path
) -> None:
    _, advisor, customer = phone_pair(gw, opener)
    c = customer.page
    upload(c, pdf(tmp_path / "Gehaltsnachweis Oktober 2026 – Seite 1 von 3.pdf", 120_000))
    upload(advisor.page, pdf(tmp_path / "Angebot.pdf", 40_000))
    expect(c.locator("#documents-list li")).to_have_count(2)
    panel = c.locator("#documents")
    panel.scroll_into_view_if_needed()
    width = c.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE_TALL["width"], width
    box = c.locator(".file-button").bounding_box()
    assert box is not None and box["height"] >= 44, box  # a thumb hits it
    expect(c.locator(".drop-hint")).to_be_hidden()  # nothing to drag on a phone
    panel.screenshot(path=artifacts / "documents-customer-phone-de.png")
    assert axe_violations(c, "#documents") == []
    assert axe_violations(advisor.page, "#documents") == []
    c.click("a[data-lang-switch]")
    expect(c.locator(".file-button")).to_contain_text("Upload a file")
    panel.screenshot(path=artifacts / "documents-customer-phone-en.png")
    advisor.assert_clean()
    customer.assert_clean()


def _stats_rows(gw: GatewayProcess) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = gw.get("/api/stats")["rows"]
    return rows


def test_end_warns_about_documents_and_customer_rates_anonymously(
    gw: GatewayProcess, opener: Opener, tmp_path: Path, artifacts: Path
) -> None:
    body, advisor, customer = phone_pair(gw, opener)
    a, c = advisor.page, customer.page
    upload(c, pdf(tmp_path / "Ausweis Kopie.pdf", 30_000))
    upload(a, pdf(tmp_path / "Vertragsentwurf.pdf", 30_000))
    expect(c.locator("#documents-list li")).to_have_count(2)
    expect(a.locator("#documents-list li")).to_have_count(2)

    # the customer's "leave" asks first and names the documents; they stay
    c.click("#leave")
    dialog = c.locator("#leave-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("In dieser Beratung gibt es 2 Dokumente")
    expect(dialog).to_contain_text("laden Sie vorher herunter, was Sie brauchen")
    c.screenshot(path=artifacts / "leave-dialog-customer-phone-de.png")
    c.click("#leave-dialog button[value=cancel]")
    expect(dialog).to_be_hidden()
    expect(c.locator("#status")).to_have_attribute("data-state", "connected")

    c.click("#leave")  # asked again, and the advisor ends meanwhile
    expect(dialog).to_be_visible()

    # the advisor's end dialog says the same before it deletes everything
    a.click("#end-session")
    expect(a.locator("#end-documents")).to_contain_text("In dieser Beratung gibt es 2 Dokumente")
    a.screenshot(path=artifacts / "end-dialog-advisor.png")
    with a.expect_navigation():
        a.click("#end-confirm")

    # the customer's end screen: what was deleted, whom to ask, a rating
    end = c.locator("#end-screen")
    expect(end).to_be_visible()
    expect(dialog).to_be_hidden()
    expect(c.locator("#end-deleted")).to_have_text(
        "Gelöscht wurden: 2 Dokumente, die Kopien ausgefüllter Formulare und der Chat. "
        "Auf dem Server ist davon nichts mehr gespeichert."
    )
    expect(end).to_contain_text("Bei Fragen erreichen Sie Musterbank Köln so:")
    expect(end.locator("a[href='tel:+492211234560']")).to_have_text(BANK["phone"])
    expect(end.locator(f"a[href='mailto:{BANK['email']}']")).to_be_visible()
    expect(end).to_contain_text(BANK["hours"])
    c.click("#feedback-form button[type=submit]")  # nothing chosen yet
    expect(c.locator("#feedback-note")).to_have_text("Bitte wählen Sie 1 bis 5 Sterne.")
    c.click("label[for=rating-4]")
    c.click("#feedback-form button[type=submit]")
    expect(c.locator("#feedback-note")).to_have_text("Vielen Dank für Ihre Bewertung!")
    expect(c.locator("#feedback-form button[type=submit]")).to_be_disabled()
    c.screenshot(path=artifacts / "end-screen-customer-phone-de.png", full_page=True)
    assert axe_violations(c, "#left") == []
    c.click("a[data-lang-switch]")
    expect(c.locator("#end-deleted")).to_contain_text("Deleted: 2 documents")
    c.screenshot(path=artifacts / "end-screen-customer-phone-en.png", full_page=True)

    # counted in the statistics, and nothing else about anyone
    rated = [r for r in _stats_rows(gw) if r["feedback"] == 4 and r["documents"]]
    assert len(rated) == 1, _stats_rows(gw)
    stats = gw.get("/api/stats")
    assert stats["feedback"]["ratings"]["4"] >= 1
    status, _, raw = gw.request("GET", "/api/stats?format=csv")
    assert status == 200
    table = list(csv.DictReader(io.StringIO(raw.decode())))
    assert "feedback" in table[0] and any(row["feedback"] == "4" for row in table)
    text = json.dumps(stats) + raw.decode()
    for secret in (
        body["id"],
        body["customer"]["token"],
        body["customer"]["pin"],
        "Ausweis",
        "Vertragsentwurf",
    ):
        assert secret not in text
    advisor.assert_clean()
    customer.assert_clean()


def test_rating_after_leaving_counts_once(gw: GatewayProcess, opener: Opener) -> None:
    body, advisor, customer = phone_pair(gw, opener)
    c = customer.page
    c.click("#leave")  # no documents: no question, out at once
    expect(c.locator("#status")).to_have_text("Sie haben die Beratung verlassen.")
    expect(c.locator("#end-deleted")).to_contain_text(
        "Solange die Beratung läuft, können Sie zurückkehren. An ihrem Ende werden keine Dokumente"
    )
    c.click("label[for=rating-2]")
    c.click("#feedback-form button[type=submit]")
    expect(c.locator("#feedback-note")).to_have_text("Vielen Dank für Ihre Bewertung!")
    # a second rating of the same consultation is refused by the gateway
    again = c.evaluate(
        """async (url) => (await fetch(url, {method: "POST",
             headers: {"Content-Type": "application/json"},
             body: JSON.stringify({rating: 5})})).status""",
        f"/k/{body['id']}/feedback",
    )
    assert again == 409
    before = len(_stats_rows(gw))
    assert gw.request("DELETE", f"/api/sessions/{body['id']}")[0] == 204
    rows = _stats_rows(gw)
    assert len(rows) == before + 1 and rows[-1]["feedback"] == 2, rows[-1]
    advisor.assert_clean()
    customer.assert_clean(allow="status of 409")


def test_filled_forms_appear_in_the_documents_list(gw: GatewayProcess, opener: Opener) -> None:
    _, advisor, customer = phone_pair(gw, opener)
    a, c = advisor.page, customer.page
    a.locator("#form-template").select_option("beratungsprotokoll-bestaetigung")
    a.click("#forms-send button")
    expect(c.locator("#forms-alert")).to_be_visible()
    with c.context.expect_page() as opened:
        c.click("#forms-list a.primary")
    form = opened.value
    form.fill("#f-name", "Erika Mustermann")
    form.select_option("#f-beratungsthema", "geldanlage")
    form.check("#f-erhalten")
    form.check("#f-risikohinweise")
    form.fill("#f-unterschrift", "Erika Mustermann")
    form.click("button[type=submit]")
    expect(form.locator(".form-done .done")).to_contain_text("Vielen Dank")
    form.close()
    for page in (a, c):
        items = page.locator("#documents-list li[data-kind=form]")
        expect(items).to_have_count(2)  # the filled form as HTML and as PDF
        expect(items.first).to_contain_text("Formular")
    pdf_item = a.locator("#documents-list li[data-kind=form]", has_text=".pdf")
    with a.expect_download() as info:
        pdf_item.locator("a.doc-download").click()
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF-")
    a.click("#end-session")
    expect(a.locator("#end-documents")).to_contain_text("gibt es 2 Dokumente")
    a.click("#end-dialog button[value=cancel]")
    advisor.assert_clean()
    customer.assert_clean()


def test_upload_shows_its_progress_on_a_slow_uplink(
    gw: GatewayProcess, opener: Opener, tmp_path: Path, artifacts: Path
) -> None:
    _, advisor, customer = phone_pair(gw, opener)
    c = customer.page
    # the terms' minimum: 0.5 Mbit/s up (Chromium's own throttling, DevTools protocol)
    cdp = c.context.new_cdp_session(c)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 40,
            "downloadThroughput": 1_000_000 / 8,
            "uploadThroughput": 500_000 / 8,
        },
    )
    upload(c, pdf(tmp_path / "Lohnsteuerbescheinigung.pdf", 400_000))  # about 6 s
    text = c.locator("#documents-progress-text")
    expect(text).to_have_text(
        re.compile(r"„Lohnsteuerbescheinigung.pdf“ wird hochgeladen … [1-9]\d? %")
    )
    percent = c.locator("#documents-bar").evaluate("(bar) => bar.value")
    assert 0 < percent < 100, percent
    c.locator("#documents").screenshot(path=artifacts / "documents-progress-phone-de.png")
    expect(c.locator("#documents-list li", has_text="Lohnsteuerbescheinigung.pdf")).to_be_visible(
        timeout=30_000
    )
    expect(c.locator("#documents-progress")).to_be_hidden()
    expect(advisor.page.locator("#documents-list li")).to_have_count(1)

    # a slow upload can be cancelled: nothing arrives, no error
    upload(c, pdf(tmp_path / "Falsche Datei.pdf", 400_000))
    expect(text).to_contain_text("„Falsche Datei.pdf“ wird hochgeladen")
    c.click("#documents-cancel")
    expect(c.locator("#documents-progress")).to_be_hidden()
    expect(c.locator("#documents-error")).to_be_hidden()
    c.wait_for_timeout(500)  # give a wrongly finished upload time to show (it must not)
    expect(c.locator("#documents-list li")).to_have_count(1)
    expect(advisor.page.locator("#documents-list li")).to_have_count(1)
    advisor.assert_clean()
    customer.assert_clean()


def test_an_interrupted_upload_leaves_no_trace_and_no_reservation(gw: GatewayProcess) -> None:
    """A person cancels, closes the tab or loses the network mid-upload: the gateway
    frees the consultation's share and logs no error (it was not one)."""
    body = gw.create_session()
    token = body["customer"]["token"]
    path = f"/api/sessions/{body['id']}/documents"
    for cut in (10, 4000):  # before the part's headers end / in the middle of the file
        boundary = "vbboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        payload = (head + b"%PDF-1.4\n" + os.urandom(900_000))[:cut]
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {900_000 + 200}\r\n\r\n"
        ).encode()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", gw.http_port), 5) as s:
                s.sendall(request + payload)
                time.sleep(0.2)  # the handler is reading; now the client is gone
    # three interrupted 0.9 MB uploads reserved 2.7 MB of 2.5: all given back
    boundary = "vbboundary"
    data = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="b.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        + pdf_bytes(int(0.9 * MIB))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, answer = gw.request(
        "POST",
        path,
        data,
        token=token,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 201, answer
    deadline = time.monotonic() + 5
    while "upload was interrupted" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "an upload was interrupted" in gw.log()
    assert "Traceback" not in gw.log()

"""The whole way through in Chromium, recording every request (issue 5 items 1, 2, 9):
an advisor signs in with name and password, creates a consultation, sees the customer
waiting, joins and ends it; the customer enters with link and PIN, on the browser page
and on the Flash page; the ops monitor. Nothing is requested from another origin, and
every page carries the headers the terms of use call for (CSP without third parties,
frame-ancestors, no referrer, camera/microphone for our origin only; HSTS under TLS).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

from bench.testkit.gwproc import GatewayProcess
from tests.conftest import require_tool
from tests.test_pages import skip_device_check

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-sandbox",
    "--headless=new",
]
ROOT = Path(__file__).resolve().parent.parent
NAME, PASSWORD = "frau.berater", "sehr-geheimes-Passwort-1"
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def add_advisor(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "advisor", "add", NAME, "--data-dir", str(data_dir),
         "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("privacy-pages")
    add_advisor(base / "data")  # before start: the CLI and the server share the file
    proc = GatewayProcess(base).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed (run `make deps`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Recorder:
    """Every request, WebSocket and document response of a browser context."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.urls: list[str] = []
        # (url, headers) of every page loaded; read when it arrives (pages get closed)
        self.documents: list[tuple[str, dict[str, str]]] = []

    def watch(self, context: Any) -> None:
        context.add_init_script(CSP_PROBE)
        context.on("request", lambda req: self.urls.append(req.url))
        context.on("response", self._response)
        context.on("page", lambda page: page.on("websocket", lambda ws: self.urls.append(ws.url)))

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.documents.append((response.url, response.headers))

    def foreign(self) -> list[str]:
        ws_origin = "ws" + self.origin[len("http") :]
        own = (self.origin + "/", ws_origin + "/", "data:", "blob:")
        return [u for u in self.urls if not u.startswith(own)]


def check_headers(document: tuple[str, dict[str, str]], origin: str) -> None:
    where, headers = document
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, where
    # every source named in the CSP is our own origin (or 'self', data:, blob:)
    host = urlsplit(origin).netloc
    for source in re.findall(r"(?:https?|wss?)://[^\s;]+", csp):
        assert urlsplit(source).netloc == host, (where, source)
    assert headers["referrer-policy"] == "no-referrer", where
    assert headers["permissions-policy"] == "camera=(self), microphone=(self)", where
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["x-frame-options"] == "DENY", where
    assert headers["cache-control"] == "no-store", where
    if origin.startswith("https:"):
        assert headers["strict-transport-security"].startswith("max-age="), where
    else:
        assert "strict-transport-security" not in headers, where


def no_csp_violations(page: Page) -> None:
    assert page.evaluate("window.__cspViolations || []") == []


def test_every_page_stays_on_our_origin_from_sign_in_to_the_end(
    gw: GatewayProcess, browser: Browser
) -> None:
    assert f"Advisor sign-in:        {gw.base}/login" in gw.log()  # the banner says where
    recorder = Recorder(gw.base)
    advisor_ctx = browser.new_context(
        locale="de-DE", permissions=["clipboard-read", "clipboard-write"]
    )
    customer_ctx = browser.new_context(
        locale="de-DE", viewport={"width": 360, "height": 640}, is_mobile=True, has_touch=True
    )
    for context in (advisor_ctx, customer_ctx):
        recorder.watch(context)
    try:
        advisor = advisor_ctx.new_page()
        advisor.on("dialog", lambda dialog: dialog.accept())  # "Beratung beenden?"

        # -- the advisor signs in with name and password -----------------------------------
        advisor.goto(f"{gw.base}/advisor")
        expect(advisor.locator("#login-name")).to_be_visible()
        advisor.fill("#login-name", NAME)
        advisor.fill("#login-password", "falsch-falsch-falsch")
        advisor.click("form.login-form button[type=submit]")
        expect(advisor.locator("p.error")).to_contain_text("Benutzername oder Passwort")
        advisor.fill("#login-password", PASSWORD)
        advisor.click("form.login-form button[type=submit]")
        expect(advisor.locator(".signed-in")).to_contain_text(NAME)
        cookies = {c["name"]: c for c in advisor_ctx.cookies()}
        assert cookies["vb_advisor"]["httpOnly"] and cookies["vb_advisor"]["sameSite"] == "Strict"

        # -- creates a consultation: link and PIN in the table ------------------------------
        advisor.click("#create-session")
        row = advisor.locator("#consultations tbody tr.new")
        expect(row).to_be_visible()
        cid = row.get_attribute("data-id")
        assert cid
        link = advisor.locator(f"#link-{cid}").inner_text().strip()
        pin = advisor.locator(f"#pin-{cid}").inner_text().strip()
        # shown grouped as people read it ("691 443"); the PIN form takes it so typed
        assert re.fullmatch(r"\d{3} \d{3}", pin) and link.endswith(f"/k/{cid}")
        expect(row.locator(".customer-state")).to_have_text("noch nicht da")
        row.locator(f'button[data-copy="pin-{cid}"]').click()
        expect(row.locator(f'button[data-copy="pin-{cid}"]')).to_have_text("Kopiert")
        assert advisor.evaluate("navigator.clipboard.readText()") == pin

        # -- the customer enters with link and PIN --------------------------------------------
        customer = customer_ctx.new_page()
        customer.goto(link)
        expect(customer.locator("#pin")).to_be_visible()
        customer.fill("#pin", pin)
        customer.click("form.pin-form button[type=submit]")
        skip_device_check(customer)
        expect(customer.locator("#status")).to_have_attribute("data-state", "connected")

        # -- the advisor sees who is waiting, without reloading: the start page creates
        # consultations with a waiting room, so the customer waits to be let in -----------
        expect(row).to_have_attribute("data-state", "lobby", timeout=10_000)
        expect(row.locator(".customer-state")).to_have_text("wartet auf Einlass")
        expect(advisor).to_have_title(re.compile(r"^\(1\) Kunde wartet auf Einlass"))
        row.locator("button.lobby-admit").click()
        expect(row).to_have_attribute("data-state", "waiting", timeout=10_000)
        expect(row.locator(".customer-state")).to_have_text("wartet")
        expect(advisor).to_have_title(re.compile(r"^\(1\) Kunde wartet"))

        # -- joins ----------------------------------------------------------------------------
        row.get_by_role("link", name="Beitreten").click()
        expect(advisor.locator("#status")).to_have_attribute("data-state", "connected")
        expect(customer.locator("#presence")).to_have_attribute("data-t", "cust.advisor.present")

        # -- the Flash page (its own PIN form; the SWF from our origin) ----------------------
        flash = customer_ctx.new_page()
        flash.goto(f"{gw.base}/flash/{cid}")
        flash.fill("#pin", pin)
        flash.click("form.pin-form button[type=submit]")
        expect(flash.locator("#flash-room")).to_be_attached()
        no_csp_violations(flash)
        flash.close()

        # -- the ops monitor (every build has one: INTERFACE.md) -------------------------------
        ops = advisor_ctx.new_page()
        response = ops.goto(f"{gw.base}/ops")
        assert response is not None and response.status == 200
        # its live data arrived (the state line says so), CSP-clean with it
        expect(ops.locator("#ops-state")).to_have_text("Live – Aktualisierung jede Sekunde")
        no_csp_violations(ops)
        ops.close()

        # -- back to the start page: "im Gespräch", then end it -----------------------------
        advisor.goto(f"{gw.base}/advisor")
        row = advisor.locator(f"#c-{cid}")
        expect(row).to_have_attribute("data-state", "together")
        no_csp_violations(advisor)
        row.get_by_role("button", name="Beenden").click()
        expect(advisor.locator("p.notice")).to_contain_text("Die Beratung wurde beendet")
        expect(advisor.locator(f"#c-{cid}")).to_have_count(0)
        expect(customer.locator("#status")).to_have_attribute("data-state", "ended")
        no_csp_violations(customer)

        # -- and signs out ----------------------------------------------------------------------
        advisor.click("form.logout button[type=submit]")
        expect(advisor.locator("main")).to_contain_text("abgemeldet")
        advisor.goto(f"{gw.base}/advisor")
        expect(advisor.locator("#login-name")).to_be_visible()

        kinds = {urlsplit(url).path.split("/")[1] for url, _ in recorder.documents}
        assert {"advisor", "k", "flash", "login"} <= kinds, kinds
        for document in recorder.documents:
            check_headers(document, gw.base)
    finally:
        advisor_ctx.close()
        customer_ctx.close()
    assert recorder.foreign() == [], recorder.foreign()
    access = gw.access_log()
    assert '"POST /login HTTP/1.1" 303' in access and '"GET /k/' in access
    assert '"GET /advisor/state HTTP/1.1" 200' not in access, "polls are not logged"
    assert PASSWORD not in gw.log()


def test_tls_pages_carry_hsts_and_secure_cookies(tmp_path: Path, browser: Browser) -> None:
    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    add_advisor(tmp_path / "gw" / "data")
    gw = GatewayProcess(tmp_path / "gw", extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    gw.start()
    try:
        recorder = Recorder(gw.base)
        context = browser.new_context(ignore_https_errors=True, locale="de-DE")
        recorder.watch(context)
        page = context.new_page()
        page.goto(f"{gw.base}/login")
        page.fill("#login-name", NAME)
        page.fill("#login-password", PASSWORD)
        page.click("form.login-form button[type=submit]")
        expect(page.locator(".signed-in")).to_contain_text(NAME)
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["vb_advisor"]["secure"] and cookies["vb_advisor"]["httpOnly"]
        page.click("#create-session")
        expect(page.locator("#consultations tbody tr.new")).to_be_visible()
        assert recorder.documents
        for document in recorder.documents:
            check_headers(document, gw.base)
        context.close()
        assert recorder.foreign() == [], recorder.foreign()
    finally:
        assert gw.stop() == 0, gw.log()

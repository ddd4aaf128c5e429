"""The advisor's display name as the customer reads it, in Chromium (issue 10, item 11):
an account made with ``advisor add … --display-name "Frau Schmidt"`` creates a
consultation on the start page; the customer reads the name on the PIN page and in the
room's status lines, in German and English. Only what people click and type."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, expect

from bench.testkit.gwproc import GatewayProcess
from tests.test_flash_page import (
    RUFFLE_CONFIG,
    RUFFLE_DIR,
    _allow_ruffle,
    _ocr,
    _serve_ruffle,
    _wait_for_trace,
)
from tests.test_pages import DESKTOP, PHONE, browser, playwright, skip_device_check
from tests.test_rooms_chromium import (
    PASSWORD,
    contexts,
    create_on_start_page,
    new_context,
    sign_in,
    watched,
)

__all__ = ["browser", "contexts", "playwright"]

ROOT = Path(__file__).resolve().parent.parent
SHOWN = "Frau Schmidt"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("display-name-gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")}
    command = ["advisor", "add", "schmidt", "--display-name", SHOWN]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *command, "--data-dir", str(root / "data")],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    proc = GatewayProcess(root).start()
    yield proc
    code = proc.stop()
    log = proc.log()  # the application log and the access log
    assert code == 0, log
    assert "Traceback" not in log, log
    # the display name is for the customer's eyes: never in a log or the statistics
    assert SHOWN not in log
    for path in (root / "data").rglob("*"):
        if path.is_file() and path.name != "advisors.sqlite":
            assert SHOWN.encode() not in path.read_bytes(), path


def test_customer_reads_the_advisors_display_name(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    advisor = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    sign_in(advisor.page, gw.base, "schmidt")
    cid = create_on_start_page(advisor.page, "Anzeigename")
    link = advisor.page.locator(f"#link-{cid}").inner_text()
    pin = advisor.page.locator(f"#pin-{cid}").inner_text()

    customer = watched(
        new_context(
            browser, contexts, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
        ),
        gw.base,
    )
    page = customer.page
    page.goto(link)
    expect(page.locator(".with-advisor")).to_have_text("Ihre Video-Beratung mit Frau Schmidt")
    page.screenshot(path=str(artifacts / "display-name-pin-page.png"))
    page.fill("#pin", pin)
    page.click("form.pin-form button[type=submit]")
    skip_device_check(page)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#presence")).to_have_text(
        "Frau Schmidt ist noch nicht da. Bitte warten Sie einen Moment."
    )
    expect(page.locator("#remote-placeholder-text")).to_have_text(
        "Sobald Frau Schmidt da ist, sehen Sie das Bild hier."
    )
    expect(page.locator(".remote-label")).to_have_text(SHOWN)

    # the advisor joins with a click on the start page
    advisor.page.click(f'a[href="/advisor/{cid}"]')
    expect(advisor.page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#presence")).to_have_text("Frau Schmidt ist da.", timeout=10_000)
    expect(page.locator("#remote-placeholder-text")).to_have_text(
        "Frau Schmidt hat die Kamera noch nicht eingeschaltet."
    )
    page.screenshot(path=str(artifacts / "display-name-room.png"))

    # the English switch keeps the name in every line
    page.click("a.lang-switch")
    expect(page.locator("#presence")).to_have_text("Frau Schmidt is here.")
    expect(page.locator("#remote-placeholder-text")).to_have_text(
        "Frau Schmidt has not switched the camera on yet."
    )
    page.screenshot(path=str(artifacts / "display-name-room-en.png"))
    advisor.assert_clean()
    customer.assert_clean()


@pytest.mark.timeout(300)
def test_flash_client_shows_the_advisors_display_name(
    gw: GatewayProcess, browser: Browser, contexts: list[BrowserContext], artifacts: Path
) -> None:
    """The SWF (in Ruffle, as in test_flash_page) labels the advisor's picture with the
    display name it got in its FlashVars; read back by OCR from what is drawn."""
    if not (RUFFLE_DIR / "ruffle.js").is_file():
        pytest.fail("Ruffle is not installed (make test runs npm ci in tests/node)")
    from PIL import Image, ImageOps  # Pillow comes with fpdf2 (forms)

    advisor = watched(new_context(browser, contexts, viewport=DESKTOP), gw.base)
    sign_in(advisor.page, gw.base, "schmidt")
    cid = create_on_start_page(advisor.page, "Flash-Anzeigename")
    link = advisor.page.locator(f"#link-{cid}").inner_text().replace("/k/", "/flash/")
    pin = advisor.page.locator(f"#pin-{cid}").inner_text()

    context = new_context(browser, contexts, viewport={"width": 1000, "height": 900})
    traces: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        found = re.search(r"(vb-[a-z]+: .*?)(?: color: whitesmoke|$)", msg.text)
        if found:
            traces.append(found.group(1).strip())

    context.route(f"{gw.base}/static/ruffle/*", _serve_ruffle)
    context.route(re.compile(re.escape(f"{gw.base}/flash/") + r"[^/?]+$"), _allow_ruffle)
    context.add_init_script(RUFFLE_CONFIG)
    context.add_init_script(path=str(RUFFLE_DIR / "ruffle.js"))
    page = context.new_page()
    page.on("console", on_console)
    page.goto(link)
    page.fill("#pin", pin)
    page.click("button[type=submit]")
    expect(page.locator("#flash-room")).to_have_count(1)
    _wait_for_trace(page, traces, "vb-ui: ")
    page.wait_for_timeout(500)
    shot = page.locator("ruffle-object").screenshot()
    (artifacts / "display-name-flash-ruffle.png").write_bytes(shot)
    # the label in the corner of the advisor's picture (SWF coordinates 20-300 × 384-410
    # of 800×560, inside the dark stage): white on dark, made black on white for OCR
    stage = Image.open(io.BytesIO(shot)).convert("L")
    sx, sy = stage.width / 800, stage.height / 560
    label = stage.crop((int(20 * sx), int(384 * sy), int(300 * sx), int(410 * sy)))
    label = label.point(lambda v: 0 if v > 128 else 255)
    label = label.resize((label.width * 3, label.height * 3))
    assert SHOWN in _ocr(ImageOps.expand(label, 20, fill=255), line=True)
    # the name went nowhere but into the FlashVars (never a trace line, never a URL)
    assert not [t for t in traces if SHOWN in t]

# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""The bank's look (issue 17 item 6, docs/web.md "The bank's look"): name, logo, colour,
contact, imprint and privacy links from the TOML file on every page, in the Flash
client's FlashVars and (tests/test_invitations.py) in the e-mail; neutral by default;
nothing fetched from anywhere but the gateway.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from playwright.sync_api import Page, expect

from bench.testkit.gwproc import GatewayProcess
from gateway import config as config_module
from gateway.config import Bank, contrast_with_white

# the fixtures of the pages' tests, on this module's own gateway (``gw`` below)
from tests.test_pages import (  # noqa: F401
    Opener,
    advisor_state,
    browser,
    opener,
    playwright,
)
from tests.test_ux import AXE, _axe
from web.templates import View, brand_css, not_found_page

COLOR = "#7a1f5c"  # a plum of the kind banks use; white on it: 9.9:1
COLOR_RGB = "rgb(122, 31, 92)"
IMPRINT = "https://www.musterbank.example/impressum"
PRIVACY = "https://www.musterbank.example/datenschutz"
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" viewBox="0 0 120 40">'
    '<rect width="120" height="40" rx="6" fill="#7a1f5c"/>'
    '<text x="60" y="27" font-family="sans-serif" font-size="20" fill="#fff" '
    'text-anchor="middle">MB</text></svg>'
)


def write_brand_toml(folder: Path) -> Path:
    (folder / "logo.svg").write_text(LOGO_SVG)
    path = folder / "bank.toml"
    path.write_text(
        "[bank]\n"
        'name = "Musterbank Köln"\n'
        f'color = "{COLOR}"\n'
        'logo = "logo.svg"\n'  # relative: beside the TOML file
        'phone = "+49 221 123456-0"\n'
        'email = "service@musterbank.example"\n'
        'address = "Domplatz 1, 50667 Köln"\n'
        f'imprint = "{IMPRINT}"\n'
        f'privacy = "{PRIVACY}"\n',
        encoding="utf-8",
    )
    return path


def _load(argv: list[str]) -> config_module.Config:
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    return config_module.load(parser.parse_args(argv), environ={})


# -- configuration ------------------------------------------------------------------------


def test_bank_table_from_toml_with_logo_beside_it(tmp_path: Path) -> None:
    cfg = _load(["--config", str(write_brand_toml(tmp_path))])
    assert cfg.bank.name == "Musterbank Köln"
    assert cfg.bank.logo == str((tmp_path / "logo.svg").resolve())
    assert cfg.bank.logo_type() == "image/svg+xml"
    assert cfg.bank.imprint == IMPRINT and cfg.bank.privacy == PRIVACY
    palette = cfg.bank.palette()
    assert palette is not None and palette["primary"] == COLOR
    # the hover shade is darker still, the light one nearly white
    assert contrast_with_white(palette["dark"]) > contrast_with_white(COLOR)
    assert contrast_with_white(palette["light"]) < 1.3


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("color", "red", "#rrggbb"),
        ("color", "#12345", "#rrggbb"),
        ("color", "#ffd700", "too light"),  # gold: white text unreadable on it
        ("imprint", "javascript:alert(1)", "http(s) URL"),
        ("privacy", "data:text/html,x", "http(s) URL"),
        ("logo", "missing.png", "cannot be read"),
        ("logo", "bank.toml", "must be one of"),
    ],
)
def test_bad_bank_settings_are_refused_with_a_clear_error(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    path = tmp_path / "bank.toml"
    path.write_text(f'[bank]\n{setting} = "{value}"\n')
    with pytest.raises(ValueError, match=f"bank.*{setting}|{setting}.*") as err:
        _load(["--config", str(path)])
    assert says in str(err.value)


def test_too_large_logo_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * config_module.LOGO_MAX_BYTES)
    with pytest.raises(ValueError, match="at most 512 KB"):
        _load(["--bank-logo", str(big)])


def test_neutral_default_has_no_brand_at_all() -> None:
    page = not_found_page(View("de", Bank()))
    assert "brand" not in page and "site-footer" not in page and "/brand.css" not in page
    assert brand_css(Bank()).startswith("/*")


# -- in the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("brand-gateway")
    toml = write_brand_toml(folder)
    proc = GatewayProcess(folder, extra=["--config", str(toml)]).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def _branded(page: Page, lang: str) -> None:
    logo = page.locator(".topbar img.brand-logo")
    expect(logo).to_be_visible()
    assert logo.get_attribute("alt") == "Musterbank Köln"
    # loaded (from the gateway: the page's requests are checked for foreign ones)
    assert page.evaluate("document.querySelector('.brand-logo').naturalWidth") == 120
    background = page.evaluate(
        "getComputedStyle(document.querySelector('.topbar')).backgroundColor"
    )
    assert background == COLOR_RGB
    footer = page.locator("footer.site-footer")
    expect(footer).to_contain_text("Musterbank Köln")
    expect(footer).to_contain_text("Domplatz 1, 50667 Köln")
    imprint = footer.locator("a[data-brand-link=imprint]")
    privacy = footer.locator("a[data-brand-link=privacy]")
    assert imprint.get_attribute("href") == IMPRINT
    assert privacy.get_attribute("href") == PRIVACY
    expect(imprint).to_have_text("Impressum" if lang == "de" else "Legal notice")
    expect(privacy).to_have_text("Datenschutz" if lang == "de" else "Privacy")


@pytest.mark.parametrize(("lang", "locale"), [("de", "de-DE"), ("en", "en-GB")])
def test_logo_colour_and_links_on_every_page(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    # the customer on a phone: PIN page, then the room
    customer = opener.customer(body, locale=locale, init_script=AXE.read_text())
    _branded(customer.page, lang)
    # the bank's colour, logo and footer keep the page accessible (axe-core, tests/node)
    assert _axe(customer.page) == [], "branded customer room"
    customer.page.screenshot(
        path=str(artifacts / f"brand-customer-phone-{lang}.png"), full_page=True
    )
    customer.assert_clean()
    # a primary button takes the bank's colour too
    send = customer.page.locator(".chat-form button.primary")
    assert send.evaluate("b => getComputedStyle(b).backgroundColor") == COLOR_RGB
    # the advisor's overview and room
    advisor = opener.advisor(body["id"], locale=locale)
    _branded(advisor.page, lang)
    advisor.page.goto(f"{gw.base}/advisor")
    _branded(advisor.page, lang)
    advisor.page.screenshot(path=str(artifacts / f"brand-advisor-overview-{lang}.png"))
    advisor.assert_clean()


def test_flash_page_and_swf_get_the_look(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    context = opener.context(viewport={"width": 1024, "height": 760})
    page = context.new_page()
    page.goto(body["customer"]["flash_page_url"])
    _branded(page, "de")
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    expect(page.locator("#flash-room")).to_be_attached()
    _branded(page, "de")
    flashvars = page.locator("object#vb-flash > param[name=flashvars]").get_attribute("value")
    assert flashvars is not None
    values = parse_qs(flashvars)
    assert values["color"] == [COLOR.removeprefix("#")]
    assert values["bank"] == ["Musterbank Köln"]
    page.screenshot(path=str(artifacts / "brand-flash-page.png"))


def test_logo_and_stylesheets_are_served_by_the_gateway(gw: GatewayProcess) -> None:
    status, headers, body = gw.request("GET", "/brand/logo")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert body == LOGO_SVG.encode()
    # an SVG opened directly runs no script
    assert "sandbox" in headers["Content-Security-Policy"]
    css = gw.get_text("/brand.css")
    assert f"--blue: {COLOR}" in css
    assert f"background: {COLOR}" in gw.get_text("/brand-flash.css")


@pytest.mark.timeout(180)
def test_swf_draws_its_title_bar_and_buttons_in_the_banks_colour(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    """The SWF itself, rendered by Ruffle (from tests/node, served as our own origin):
    the FlashVar ``color`` paints its title bar (and buttons) in the bank's colour."""
    import io

    from PIL import Image

    from tests.test_flash_page import (
        RUFFLE_CONFIG,
        RUFFLE_DIR,
        _allow_ruffle,
        _serve_ruffle,
        _wait_for_trace,
    )

    if not (RUFFLE_DIR / "ruffle.js").is_file():
        pytest.fail("Ruffle is not installed (make test runs npm ci in tests/node)")
    body = gw.create_session()
    context = opener.context(viewport={"width": 1000, "height": 900})
    traces: list[str] = []
    context.route(f"{gw.base}/static/ruffle/*", _serve_ruffle)
    context.route(re.compile(re.escape(f"{gw.base}/flash/") + r".*"), _allow_ruffle)
    context.add_init_script(RUFFLE_CONFIG)
    context.add_init_script(path=str(RUFFLE_DIR / "ruffle.js"))
    page = context.new_page()
    page.on(
        "console",
        lambda msg: traces.extend(
            re.findall(r"(vb-[a-z]+: .*?)(?: color: whitesmoke|$)", msg.text)
        ),
    )
    page.goto(body["customer"]["flash_page_url"])
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    _wait_for_trace(page, traces, "vb-ui: ")
    page.wait_for_timeout(500)  # the next frame is drawn
    player = page.locator("ruffle-object")
    shot = player.screenshot()
    (artifacts / "brand-swf-ruffle.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    width, height = image.size
    # the title bar: the top 40 of the SWF's 560 rows, letterboxed into the element
    band = [
        image.getpixel((x, y))
        for x in range(width // 4, width * 3 // 4, 7)
        for y in range(2, max(3, height * 30 // 560), 3)
    ]
    target = tuple(int(COLOR[i : i + 2], 16) for i in (1, 3, 5))
    close = [p for p in band if all(abs(a - b) <= 12 for a, b in zip(p, target, strict=True))]
    assert len(close) > len(band) // 2, (len(close), len(band), band[:5])

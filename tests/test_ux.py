# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""What a customer and an advisor see and do (issue 10, items 6, 7, 9–12), in Chromium:
the status lines decided by one state machine per page, a reload that keeps what was on,
the customer's own connection shown to the advisor, phone layouts, keyboard and screen
reader use (with axe-core, served from tests/node, never a CDN), wording, chat links,
the 404 page, the form's way back, and the /ops charts.

Each test uses only what a person clicks and types; German and English, desktop and
phone. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from bench.testkit.gwproc import GatewayProcess
from tests.test_pages import (  # noqa: F401  (fixtures used by name)
    DESKTOP,
    PHONE,
    Opener,
    advisor_state,
    browser,
    gw,
    opener,
    playwright,
    remote_video_playing,
    send_chat,
    skip_device_check,
    wait_until,
)
from web import i18n

pytestmark = pytest.mark.e2e

AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
LANDSCAPE = {"width": 640, "height": 360}
PHONE_OPTIONS: dict[str, Any] = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}

# Every text a page's element shows, in order: a line may flicker through a state for a
# moment, and such a moment is what a customer reads (MutationObserver on data-t).
TEXT_LOG = """
window.__texts = [];
new MutationObserver(function (records) {
  records.forEach(function (r) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (el && el.id && el.dataset && el.dataset.t) {
      window.__texts.push(el.id + "=" + el.dataset.t + (el.hidden ? " (hidden)" : ""));
    }
  });
  window.__texts.push("|"); // one batch: what a person can see at one moment
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-t", "hidden"] });
"""

# Keeps the page's RTCPeerConnections reachable, to cut the customer's media in a test.
PC_HANDLE = """
(function () {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (config) {
    const pc = new Native(config);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""

# What the /ops charts draw: canvas text with its position and width.
CANVAS_LOG = """
window.__drawn = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, x, y) {
  window.__drawn.push({ id: this.canvas.id, text: String(text), x: x, y: y,
    w: this.measureText(String(text)).width,
    cw: this.canvas.clientWidth, ch: this.canvas.clientHeight });
  return fillText.apply(this, arguments);
};
"""

LANGS = [("de", "de-DE"), ("en", "en-GB")]


def t(lang: str, key: str, **params: Any) -> str:
    return i18n.translate(lang, key, **params)


def shot(page: Page, artifacts: Path, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(artifacts / f"ux-{name}.png"), full_page=full_page)


def texts(page: Page) -> list[str]:
    return list(page.evaluate("window.__texts || []"))


def never_together(seen: list[str], first: str, second: str) -> None:
    """Replay the text log: at no moment did one element show ``first`` (visible) while
    another showed ``second`` (visible)."""
    now: dict[str, str] = {}
    for entry in seen:
        if entry != "|":
            now[entry.split("=", 1)[0]] = entry
            continue
        shown = set(now.values())  # checked once a batch of changes is complete
        assert not (first in shown and second in shown), (first, second, seen)


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id : ''"))


def tab_to(page: Page, element_id: str, limit: int = 60) -> None:
    """Press Tab until the element has the focus, as a keyboard user would."""
    for _ in range(limit):
        if focused_id(page) == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} not reached with Tab (at #{focused_id(page)})")


def in_viewport(page: Page, selector: str) -> bool:
    return bool(
        page.evaluate(
            """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
            return r.width > 0 && r.top >= 0 && r.left >= 0 &&
              r.bottom <= window.innerHeight + 0.5 && r.right <= window.innerWidth + 0.5; }""",
            selector,
        )
    )


# -- 7: one state machine per page ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "locale", "viewport"), [("de", "de-DE", PHONE), ("en", "en-GB", DESKTOP)]
)
def test_customer_status_lines_never_contradict_each_other(
    gw: GatewayProcess,
    opener: Opener,
    artifacts: Path,
    lang: str,
    locale: str,
    viewport: dict[str, int],
) -> None:
    body = gw.create_session()
    options = PHONE_OPTIONS if viewport == PHONE else {}
    customer = opener.customer(body, viewport, locale=locale, init_script=TEXT_LOG, **options)
    c = customer.page
    # alone: "not here yet", and the picture's text does not speak of a camera
    expect(c.locator("#presence")).to_have_text(t(lang, "cust.advisor.absent"))
    expect(c.locator("#remote-placeholder-text")).to_have_text(t(lang, "cust.remote.absent"))
    shot(c, artifacts, f"customer-waiting-{lang}")

    advisor = opener.advisor(body["id"], locale=locale)
    a = advisor.page
    expect(c.locator("#presence")).to_have_text(t(lang, "cust.advisor.present"))
    expect(c.locator("#remote-placeholder-text")).to_have_text(t(lang, "cust.remote.waiting"))

    a.click("#end-session")
    a.click("#end-confirm")
    expect(c.locator("#status")).to_have_text(t(lang, "status.ended"))
    # the end: nothing about the advisor being here stays beside it
    expect(c.locator("#presence")).to_be_hidden()
    shot(c, artifacts, f"customer-ended-{lang}")
    # replayed moment by moment, the lines never said two things at once
    never_together(
        texts(c), "presence=cust.advisor.absent", "remote-placeholder-text=cust.remote.waiting"
    )
    never_together(texts(c), "status=status.ended", "presence=cust.advisor.present")
    customer.assert_clean()


def test_advisor_reload_keeps_camera_and_microphone_on(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body, init_script=TEXT_LOG)
    a, c = advisor.page, customer.page
    a.click("#camera")
    a.click("#microphone")
    expect(a.locator("#microphone")).to_have_attribute("data-on", "true")
    wait_until(c, lambda: remote_video_playing(c), timeout=20)
    c.evaluate("window.__texts = []")

    a.reload()
    # nothing pressed: what was on is on again
    expect(a.locator("#status")).to_have_attribute("data-state", "connected")
    expect(a.locator("#camera")).to_have_attribute("data-on", "true", timeout=10_000)
    expect(a.locator("#microphone")).to_have_attribute("data-on", "true")
    wait_until(c, lambda: remote_video_playing(c), timeout=20)
    expect(c.locator("#presence")).to_have_text("Ihre Ansprechperson ist da.")
    # Both of the advisor's rows settle on "verbunden" (ICE and DTLS take about a second
    # after the reload; the customer's picture meanwhile may still be the last frame of
    # the old session, so "the customer sees video" alone is no sign they are up).
    expect(a.locator("#send-state")).to_have_text("verbunden", timeout=15_000)
    expect(a.locator("#receive-state")).to_have_text("verbunden", timeout=15_000)
    seen = texts(c)
    # the customer was never told the camera is off, or not switched on yet
    assert seen, "no text was logged"
    assert "remote-placeholder-text=cust.remote.camera_off" not in seen, seen
    assert "remote-placeholder-text=cust.remote.waiting" not in seen, seen
    shot(a, artifacts, "advisor-after-reload-de")
    advisor.assert_clean()
    customer.assert_clean()


# -- 6: the customer's connection, as the gateway measures it -------------------------------------


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_advisor_sees_the_customer_connection_and_an_outage(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], locale=locale)
    customer = opener.customer(body, init_script=PC_HANDLE, locale=locale)
    a, c = advisor.page, customer.page
    c.click("#camera")
    expect(a.locator("#customer-camera")).to_have_text(t(lang, "room.camera_on"))
    # the gateway's measurement of what it receives from the customer
    expect(a.locator("#uplink-state")).to_have_text(t(lang, "pc.connected"), timeout=15_000)
    expect(a.locator("#uplink-stats")).to_contain_text("kbit/s", timeout=10_000)
    wait_until(a, lambda: remote_video_playing(a), timeout=20)

    # an outage on the customer's side: the browser stops sending, the camera stays "on"
    c.evaluate(
        "window.__saved = []; window.__pcs.forEach(pc => pc.getSenders().forEach(s => {"
        " if (s.track) { window.__saved.push([s, s.track]); s.replaceTrack(null); } }))"
    )
    expect(a.locator("#presence")).to_have_text(
        t(lang, "room.customer.reconnecting"), timeout=15_000
    )
    expect(a.locator("#customer-camera")).to_have_text(t(lang, "room.camera_stalled"))
    expect(a.locator("#customer-camera")).not_to_have_text(t(lang, "room.camera_on"))
    expect(a.locator("#uplink-dot")).to_have_attribute("data-quality", "poor")
    expect(a.locator("#receive-dot")).not_to_have_attribute("data-quality", "good")
    shot(a, artifacts, f"advisor-customer-outage-{lang}")

    c.evaluate("window.__saved.forEach(([s, track]) => s.replaceTrack(track))")
    expect(a.locator("#customer-camera")).to_have_text(t(lang, "room.camera_on"), timeout=15_000)
    expect(a.locator("#presence")).not_to_have_text(t(lang, "room.customer.reconnecting"))
    advisor.assert_clean()
    customer.assert_clean()


# -- 9: phone layouts -----------------------------------------------------------------------------


def test_phone_landscape_keeps_controls_and_self_view_in_sight(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], viewport=LANDSCAPE, **PHONE_OPTIONS)
    customer = opener.customer(body, LANDSCAPE, **PHONE_OPTIONS)
    c, a = customer.page, advisor.page
    for page in (c, a):
        page.evaluate("window.scrollTo(0, 0)")
        assert in_viewport(page, "#camera"), page.url
        assert in_viewport(page, "#microphone"), page.url
    c.click("#camera")
    expect(c.locator("#self-view")).to_be_visible()
    c.evaluate("window.scrollTo(0, 0)")
    assert in_viewport(c, "#self-view")
    assert in_viewport(c, "#camera")
    shot(c, artifacts, "customer-phone-landscape-de")
    shot(a, artifacts, "advisor-phone-landscape-de")
    advisor.assert_clean()
    customer.assert_clean()


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_phone_form_card_leaves_the_chat_input_in_place_and_unread_messages_show(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], locale=locale)
    customer = opener.customer(body, locale=locale)
    a, c = advisor.page, customer.page
    c.locator("#chat-text").scroll_into_view_if_needed()
    assert in_viewport(c, "#chat-text")

    a.locator("#form-template").select_option("kontaktdaten-aendern")
    a.click("#forms-send button")
    expect(c.locator("#forms")).to_be_visible()
    # the page brings the new form into view (forms.js); the chat input stays in sight
    fill = "#forms-list a.primary"
    expect(c.locator(fill)).to_be_visible()
    wait_until(c, lambda: in_viewport(c, fill))
    c.wait_for_timeout(500)  # smooth scrolling has settled
    assert in_viewport(c, fill)
    assert in_viewport(c, "#chat-text")
    shot(c, artifacts, f"customer-phone-form-{lang}")

    # new messages while the chat is out of sight (the phone turned sideways, the
    # picture in view): a badge, which brings the chat back
    c.set_viewport_size(LANDSCAPE)
    c.evaluate("window.scrollTo(0, 0)")
    c.wait_for_timeout(300)
    if in_viewport(c, "#chat-text"):
        pytest.fail("the chat input should be out of sight on a phone held sideways")
    send_chat(a, "Bitte sehen Sie sich das Formular an.")
    badge = c.locator(".unread-badge")
    expect(badge).to_have_text(t(lang, "chat.unread.one"))
    send_chat(a, "Noch eine Nachricht")
    expect(badge).to_have_text(t(lang, "chat.unread.other", n=2))
    shot(c, artifacts, f"customer-phone-unread-{lang}")
    badge.click()
    expect(badge).to_be_hidden()
    wait_until(c, lambda: in_viewport(c, "#chat-text"))
    advisor.assert_clean()
    customer.assert_clean()


# -- 10: keyboard and screen readers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "locale", "viewport"), [("de", "de-DE", PHONE), ("en", "en-GB", DESKTOP)]
)
def test_keyboard_only_customer_keeps_focus_and_lands_on_the_end_message(
    gw: GatewayProcess,
    opener: Opener,
    lang: str,
    locale: str,
    viewport: dict[str, int],
) -> None:
    body = gw.create_session()
    options = PHONE_OPTIONS if viewport == PHONE else {}
    customer = opener.customer(body, viewport, locale=locale, **options)
    c = customer.page
    # what changes is announced: the status and the line about the advisor are live regions
    expect(c.locator("#status")).to_have_attribute("role", "status")
    expect(c.locator("#presence")).to_have_attribute("aria-live", "polite")

    c.evaluate("document.activeElement && document.activeElement.blur()")
    tab_to(c, "camera")
    c.keyboard.press("Enter")
    expect(c.locator("#camera")).to_have_attribute("data-on", "true")
    assert focused_id(c) == "camera"
    c.keyboard.press("Enter")
    expect(c.locator("#camera")).to_have_attribute("data-on", "false")
    assert focused_id(c) == "camera"
    tab_to(c, "microphone")
    c.keyboard.press("Space")
    expect(c.locator("#microphone")).to_have_attribute("data-on", "true")
    assert focused_id(c) == "microphone"

    tab_to(c, "leave")
    c.keyboard.press("Enter")
    expect(c.locator("#left")).to_be_visible()
    assert focused_id(c) == "left-text"
    expect(c.locator("#left-text")).to_have_text(t(lang, "cust.left"))
    customer.assert_clean()


def test_keyboard_only_advisor_keeps_focus_and_is_asked_before_leaving_a_call(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body)
    a = advisor.page
    expect(a.locator("#send")).to_have_count(0)  # the toggles suffice (item 12)
    tab_to(a, "camera")
    a.keyboard.press("Enter")
    expect(a.locator("#camera")).to_have_attribute("data-on", "true")
    assert focused_id(a) == "camera"
    expect(customer.page.locator("#presence")).to_have_text("Ihre Ansprechperson ist da.")

    # "Zur Übersicht" during a call asks first; staying keeps everything on
    back = a.locator("a.nav-back")
    back.focus()
    a.keyboard.press("Enter")
    expect(a.locator("#leave-dialog")).to_be_visible()
    shot(a, artifacts, "advisor-leave-dialog-de")
    a.keyboard.press("Escape")
    expect(a.locator("#leave-dialog")).to_be_hidden()
    assert re.search(r"/advisor/[^/]+$", a.url)
    expect(a.locator("#camera")).to_have_attribute("data-on", "true")
    back.click()
    with a.expect_navigation():
        a.click("#leave-confirm")
    assert a.url.endswith("/advisor")
    advisor.assert_clean()


def _axe(page: Page) -> list[dict[str, Any]]:
    if not AXE.exists():
        pytest.fail("axe-core is not installed (run `make test`, which runs npm ci in tests/node)")
    result = page.evaluate(
        """async () => {
          const r = await axe.run(document, { resultTypes: ["violations"] });
          return r.violations.map(v => ({ id: v.id, impact: v.impact,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")) }));
        }"""
    )
    return list(result)


@pytest.mark.parametrize(
    ("lang", "locale", "viewport"),
    [
        ("de", "de-DE", DESKTOP),
        ("de", "de-DE", PHONE),
        ("en", "en-GB", DESKTOP),
        ("en", "en-GB", PHONE),
    ],
)
def test_axe_finds_no_violations(
    gw: GatewayProcess,
    opener: Opener,
    lang: str,
    locale: str,
    viewport: dict[str, int],
) -> None:
    """axe-core (tests/node, injected as an init script: never fetched) on the PIN page,
    the customer's room, the advisor's start page and room, with people in them."""
    body = gw.create_session()
    options: dict[str, Any] = dict(PHONE_OPTIONS) if viewport == PHONE else {}
    ctx = opener.context(locale=locale, viewport=viewport, **options)
    ctx.add_init_script(path=str(AXE))
    pin = ctx.new_page()
    pin.goto(body["customer"]["page_url"])
    assert _axe(pin) == [], "PIN page"
    pin.fill("#pin", body["customer"]["pin"])
    pin.click("button[type=submit]")
    skip_device_check(pin)
    expect(pin.locator("#status")).to_have_attribute("data-state", "connected")

    actx = opener.context(
        locale=locale, viewport=viewport, storage_state=opener.advisor_state, **options
    )
    actx.add_init_script(path=str(AXE))
    start = actx.new_page()
    start.goto(f"{gw.base}/advisor")
    assert _axe(start) == [], "advisor start page"
    start.goto(f"{gw.base}/advisor/{body['id']}")
    expect(start.locator("#status")).to_have_attribute("data-state", "connected")
    send_chat(start, "Guten Tag – https://www.example.org/info")
    expect(pin.locator(".chat-log li.theirs")).to_have_count(1)
    expect(pin.locator("#presence")).to_be_visible()
    assert _axe(pin) == [], "customer room"
    assert _axe(start) == [], "advisor room"


# -- 11: wording ----------------------------------------------------------------------------------


def test_one_inclusive_form_for_the_advisor_in_every_customer_text() -> None:
    de = i18n.TABLES["de"]
    customer_facing = [
        k
        for k in de
        if k.split(".")[0] in ("cust", "pin", "form", "swf", "gone", "locked", "chat", "flash")
        or k.startswith("forms.customer")
    ]
    gendered = [k for k in customer_facing if re.search(r"\bBerater(in|s)?\b|Beraterin", de[k])]
    assert gendered == [], gendered
    named = [k for k in customer_facing if "Ansprechperson" in de[k]]
    assert len(named) >= 22, named


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_pin_page_and_room_name_the_advisor_alike(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    ctx = opener.context(locale=locale, viewport=PHONE, **PHONE_OPTIONS)
    page = ctx.new_page()
    page.goto(body["customer"]["page_url"])
    expect(page.locator("main")).to_contain_text(t(lang, "pin.intro"))
    # the tab title names the service once
    title = page.title()
    assert title.count(t(lang, "app.name")) <= 1, title
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    skip_device_check(page)
    expect(page.locator("#privacy")).to_have_text(t(lang, "cust.privacy.off"))
    shot(page, artifacts, f"customer-phone-room-{lang}")
    word = "Ansprechperson" if lang == "de" else "advisor"
    assert word in page.locator("#privacy").inner_text()
    assert word in t(lang, "pin.intro")


# -- 12: smaller ones -----------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_chat_links_are_clickable_safely_and_show_their_host(
    gw: GatewayProcess, opener: Opener, lang: str, locale: str
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], locale=locale)
    customer = opener.customer(body, locale=locale)
    a, c = advisor.page, customer.page
    send_chat(
        a,
        "Infos: https://www.example.org/konto?x=1. Nicht: javascript:alert(1) "
        "und https://bank.example@evil.example/login",
    )
    msg = c.locator(".chat-log li.theirs .text")
    expect(msg).to_have_count(1)
    links = msg.locator("a")
    expect(links).to_have_count(2)
    assert links.nth(0).get_attribute("href") == "https://www.example.org/konto?x=1"
    for i in range(2):
        assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
        assert links.nth(i).get_attribute("target") == "_blank"
        assert (links.nth(i).get_attribute("href") or "").startswith("https://")
    # the real host is shown beside the link
    expect(msg.locator(".link-host").nth(1)).to_have_text(" (evil.example)")
    expect(msg).to_contain_text("javascript:alert(1)")  # as plain text, not a link
    assert c.evaluate("!!window.__cspViolations && window.__cspViolations.length === 0")
    advisor.assert_clean()
    customer.assert_clean()


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_mistyped_address_shows_a_page_and_api_paths_keep_problem_json(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    ctx = opener.context(locale=locale, viewport=PHONE, **PHONE_OPTIONS)
    page = ctx.new_page()
    response = page.goto(f"{gw.base}/beratungg/abc")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator("h1")).to_have_text(t(lang, "notfound.title"))
    assert page.evaluate("document.documentElement.lang") == lang
    shot(page, artifacts, f"not-found-phone-{lang}")
    page.click("text=" + t(lang, "notfound.home"))
    # the API keeps its problem details, whatever the client accepts
    status, headers, payload = gw.request(
        "GET", "/api/nonsense", headers={"Accept": "text/html,application/xhtml+xml"}
    )
    assert status == 404
    assert headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(payload)["status"] == 404


def test_form_has_autofill_hints_and_a_way_back_to_the_call(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body)
    a, c = advisor.page, customer.page
    a.locator("#form-template").select_option("kontaktdaten-aendern")
    a.click("#forms-send button")
    expect(c.locator("#forms-list a.primary")).to_be_visible()
    with c.context.expect_page() as opened:
        c.click("#forms-list a.primary")
    form = opened.value
    expect(form.locator("form.vb-form")).to_be_visible()
    hints = form.evaluate(
        "Object.fromEntries([...document.querySelectorAll('input[name]')]"
        ".map(i => [i.name, i.getAttribute('autocomplete')]))"
    )
    for name, token in (
        ("name", "name"),
        ("strasse", "street-address"),
        ("plz", "postal-code"),
        ("ort", "address-level2"),
        ("email", "email"),
        ("telefon", "tel"),
    ):
        if name in hints:
            assert hints[name] == token, (name, hints)
    assert hints.get("plz") == "postal-code", hints
    form.fill("#f-name", "Erika Mustermann")
    form.fill("#f-geburtsdatum", "1970-03-01")
    form.fill("#f-strasse", "Domstraße 1")
    form.fill("#f-plz", "50667")
    form.fill("#f-ort", "Köln")
    form.check("#f-kontaktweg-0")
    form.check("#f-bestaetigung")
    form.click("button[type=submit]")
    expect(form.locator(".form-done .done")).to_be_visible()
    back = form.locator("#back-to-call")
    expect(back).to_have_attribute("href", f"/k/{body['id']}")
    shot(form, artifacts, "form-done-phone-de")
    back.click()
    expect(form.locator("#room")).to_be_visible()
    expect(form.locator("#status")).to_have_attribute("data-state", "connected")


def test_advisor_start_page_title_names_the_service_once(
    gw: GatewayProcess, opener: Opener
) -> None:
    ctx = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP)
    page = ctx.new_page()
    page.goto(f"{gw.base}/advisor")
    assert page.title().count("Video-Beratung") == 1, page.title()


# -- 11: /ops -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "locale"), LANGS)
def test_ops_charts_count_passthrough_and_label_everything(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body)
    customer.page.click("#camera")
    wait_until(advisor.page, lambda: remote_video_playing(advisor.page), timeout=20)

    ctx = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP, locale=locale)
    ctx.add_init_script(CANVAS_LOG)
    ops = ctx.new_page()
    ops.goto(f"{gw.base}/ops")
    legend = t(lang, "ops.direction.webrtc_to_webrtc") + " (" + t(lang, "ops.kind.video") + ")"

    def drawn(canvas: str) -> list[dict[str, Any]]:
        return [d for d in ops.evaluate("window.__drawn") if d["id"] == canvas]

    # a browser-to-browser call shows in the fps chart although nothing is transcoded
    wait_until(ops, lambda: any(d["text"] == legend for d in drawn("chart-fps")), timeout=15)
    wait_until(ops, lambda: any(d["text"] == legend for d in drawn("chart-bitrate")), timeout=5)
    # every duration bucket, in the page's language, none left out
    wait_until(ops, lambda: bool(drawn("chart-durations")), timeout=10)
    labels = {d["text"] for d in drawn("chart-durations")}
    for key in ("under_5", "5_15", "15_30", "30_60", "over_60"):
        assert t(lang, f"ops.duration.{key}") in labels, labels
    if lang == "de":
        assert "5-15 min" not in labels and "under 5 min" not in labels
    # counts on whole numbers only
    axis = [d["text"] for d in drawn("chart-per_day") if d["x"] == 2 and d["text"]]
    assert axis and all(re.fullmatch(r"\d+", a) for a in axis), axis
    # nothing drawn past the canvas's edges (legends wrap instead)
    for d in ops.evaluate("window.__drawn"):
        assert d["x"] + d["w"] <= d["cw"] + 1 and d["y"] <= d["ch"] + 1, d
    ops.wait_for_timeout(1500)
    shot(ops, artifacts, f"ops-desktop-{lang}", full_page=True)
    advisor.assert_clean()
    customer.assert_clean()

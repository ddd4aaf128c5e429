# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""What people know from other video services (issue 17, items 1, 3, 4, 7), in Chromium
with its fake camera and microphone, using only what a person clicks and types: the
device check after the PIN, the waiting room with "Einlassen", the chat's "… schreibt",
unread count in the tab title and notification sounds (muted and remembered), full screen
and picture-in-picture for the other side's picture. Screenshots go to tests/artifacts/.
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
from tests.test_ux import AXE, PHONE_OPTIONS, _axe
from web import i18n

pytestmark = pytest.mark.e2e

# Every track a page captures, and every tone it plays (frequency in Hz): the sounds are
# WebAudio oscillators (static/sounds.js), so starting one is playing a sound.
PROBES = """
window.__tracks = [];
window.__tones = [];
(function () {
  const md = navigator.mediaDevices;
  if (md && md.getUserMedia) {
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = async function (c) {
      const s = await gum(c);
      s.getTracks().forEach(function (t) { window.__tracks.push(t); });
      return s;
    };
  }
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function () {
    window.__tones.push(this.frequency.value);
    return start.apply(this, arguments);
  };
})();
"""
LOBBY_TONES = [784, 988, 1319]
ARRIVE_TONES = [523, 784]
MESSAGE_TONES = [880, 1175]


def t(lang: str, key: str, **params: Any) -> str:
    return i18n.translate(lang, key, **params)


def shot(page: Page, artifacts: Path, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(artifacts / f"extras-{name}.png"), full_page=full_page)


def tones(page: Page) -> list[float]:
    return [round(f) for f in page.evaluate("window.__tones")]


def played(page: Page, tune: list[int]) -> int:
    """How often ``tune`` was played (its notes one after the other)."""
    seen, n = tones(page), len(tune)
    return sum(1 for i in range(len(seen) - n + 1) if seen[i : i + n] == tune)


def live_tracks(page: Page) -> int:
    return int(page.evaluate("window.__tracks.filter(t => t.readyState === 'live').length"))


# -- 1: the device check -------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "locale"), [("de", "de-DE"), ("en", "en-GB")])
def test_device_check_shows_picture_and_level_remembers_the_choice_and_sends_nothing(
    gw: GatewayProcess, opener: Opener, artifacts: Path, lang: str, locale: str
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], locale=locale)
    customer = opener.customer(body, init_script=PROBES, check=True, locale=locale)
    c = customer.page
    expect(c.locator("#device-check")).to_be_visible()
    expect(c.locator("#check-title")).to_have_text(t(lang, "check.title"))
    expect(c.locator("#room .room-grid")).to_be_hidden()
    # the camera's picture plays
    wait_until(
        c,
        lambda: c.evaluate(
            "(() => { const v = document.getElementById('check-video');"
            " return v.readyState >= 2 && v.videoWidth > 0 && !v.paused; })()"
        ),
    )
    # the level meter moves with the (fake) microphone's beeps
    levels = set()
    for _ in range(30):
        levels.add(round(float(c.evaluate("document.getElementById('check-level').value")), 3))
        c.wait_for_timeout(100)
    assert max(levels) > 0.02 and len(levels) > 3, levels
    # nothing reaches the advisor: the customer is not even in the consultation yet
    expect(advisor.page.locator("#presence")).to_have_text(t(lang, "room.customer.absent"))

    # choose the second microphone and the second speaker; the test sound plays
    expect(c.locator("#check-microphone option")).to_have_count(3)
    mic = c.locator("#check-microphone option").nth(1).get_attribute("value")
    c.select_option("#check-microphone", mic)
    wait_until(
        c,
        lambda: c.evaluate(
            "window.__tracks.some(t => t.kind === 'audio' && t.readyState === 'live'"
            f" && t.getSettings().deviceId === {mic!r})"
        ),
    )
    speaker = c.locator("#check-speaker option").nth(1).get_attribute("value")
    c.select_option("#check-speaker", speaker)
    c.click("#check-tone")
    wait_until(c, lambda: 440 in tones(c))
    shot(c, artifacts, f"device-check-phone-{lang}")

    # continuing: every track of the check stops, camera and microphone are off
    c.click("#check-join")
    expect(c.locator("#device-check")).to_be_hidden()
    expect(c.locator("#status")).to_have_attribute("data-state", "connected")
    expect(c.locator("#camera")).to_have_attribute("data-on", "false")
    expect(c.locator("#microphone")).to_have_attribute("data-on", "false")
    expect(c.locator("#privacy")).to_have_text(t(lang, "cust.privacy.off"))
    wait_until(c, lambda: live_tracks(c) == 0)
    expect(advisor.page.locator("#customer-camera")).to_have_text(t(lang, "room.camera_off"))
    expect(advisor.page.locator("#customer-mic")).to_have_text(t(lang, "room.mic_off"))

    # a reload goes straight back in: the check is for the first entry
    c.reload()
    expect(c.locator("#status")).to_have_attribute("data-state", "connected")
    expect(c.locator("#device-check")).to_be_hidden()

    # the next consultation on this device (the same browser) remembers the choice
    other = gw.create_session()
    again = c.context.new_page()
    again.goto(other["customer"]["page_url"])
    again.fill("#pin", other["customer"]["pin"])
    again.click("button[type=submit]")
    expect(again.locator("#device-check")).to_be_visible()
    expect(again.locator("#check-microphone")).to_have_value(mic)
    expect(again.locator("#check-speaker")).to_have_value(speaker)
    stored = again.evaluate("localStorage.getItem('vb-devices')")
    assert set(json.loads(stored)) <= {"camera", "microphone", "speaker"}
    again.click("#check-skip")
    expect(again.locator("#status")).to_have_attribute("data-state", "connected")
    # and switching the microphone on in the room takes the chosen one
    again.click("#microphone")
    expect(again.locator("#microphone")).to_have_attribute("data-on", "true")
    assert again.evaluate(
        "window.__tracks.filter(t => t.kind === 'audio' && t.readyState === 'live')"
        ".map(t => t.getSettings().deviceId)"
    ) == [mic]
    advisor.assert_clean()
    customer.assert_clean()


# -- 3: the waiting room ------------------------------------------------------------------------


def test_customer_waits_until_the_advisor_lets_them_in(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    # the advisor creates the consultation on the start page (waiting room: on)
    actx = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP)
    actx.add_init_script(PROBES)
    overview = actx.new_page()
    overview.goto(f"{gw.base}/advisor")
    expect(overview.locator("#create-waiting-room")).to_be_checked()
    overview.click("#create-session")
    row = overview.locator("#consultations tbody tr.new")
    expect(row).to_be_visible()
    cid = row.get_attribute("data-id")
    link = overview.locator(f"#link-{cid}").inner_text().strip()
    pin = overview.locator(f"#pin-{cid}").inner_text().strip()

    # the customer enters the PIN, skips the device check and waits
    cctx = opener.context(viewport=PHONE, **PHONE_OPTIONS)
    cctx.add_init_script(PROBES)
    c = cctx.new_page()
    c.goto(link)
    c.fill("#pin", pin)
    c.click("form.pin-form button[type=submit]")
    skip_device_check(c)
    expect(c.locator("#lobby")).to_be_visible()
    expect(c.locator("#lobby")).to_contain_text("Willkommen zu Ihrer Video-Beratung.")
    expect(c.locator("#lobby-wait")).to_have_text(t("de", "lobby.wait"))
    expect(c.locator(".stage")).to_be_hidden()
    expect(c.locator("#camera")).to_be_hidden()
    send_chat(c, "Guten Tag, ich bin etwas früher da.")

    # the overview: waiting to be let in, what they wrote, the tab title and a chime
    expect(row).to_have_attribute("data-state", "lobby", timeout=10_000)
    expect(row.locator(".customer-state")).to_have_text("wartet auf Einlass")
    expect(row.locator(f"#msg-{cid}")).to_have_text("Guten Tag, ich bin etwas früher da.")
    expect(overview).to_have_title("(1) Kunde wartet auf Einlass")
    wait_until(overview, lambda: played(overview, LOBBY_TONES) >= 1)
    shot(overview, artifacts, "overview-lobby-de")
    shot(c, artifacts, "customer-lobby-phone-de")

    # the advisor opens the room: "Einlassen", and writes first
    room = actx.new_page()
    room.goto(f"{gw.base}/advisor/{cid}")
    expect(room.locator("#lobby-card")).to_be_visible()
    expect(room.locator(".chat-log li.theirs .text")).to_have_text(
        "Guten Tag, ich bin etwas früher da."
    )
    assert "Kunde wartet" in room.title()
    send_chat(room, "Einen Moment bitte, ich lasse Sie gleich herein.")
    expect(c.locator(".chat-log li.theirs .text")).to_have_text(
        "Einen Moment bitte, ich lasse Sie gleich herein."
    )
    expect(c.locator("#lobby")).to_be_visible()
    shot(room, artifacts, "advisor-room-lobby-de")
    room.click("#camera")
    expect(room.locator("#camera")).to_have_attribute("data-on", "true")
    c.wait_for_timeout(1500)
    # still waiting: nothing of the advisor reaches the customer
    assert not remote_video_playing(c)

    room.click("#admit")
    expect(room.locator("#lobby-card")).to_be_hidden()
    expect(c.locator("#lobby")).to_be_hidden()
    expect(c.locator("#camera")).to_be_visible()
    expect(c.locator("#camera")).to_have_attribute("data-on", "false")
    wait_until(c, lambda: played(c, ARRIVE_TONES) >= 1)
    wait_until(c, lambda: remote_video_playing(c), timeout=20)
    assert "Kunde wartet" not in room.title()
    expect(row).not_to_have_attribute("data-state", "lobby", timeout=10_000)
    shot(c, artifacts, "customer-admitted-phone-de")


# -- 4: chat as people know it --------------------------------------------------------------------


def test_typing_indicator_unread_title_and_sounds_that_can_be_muted(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body, init_script=PROBES)
    a, c = advisor.page, customer.page

    # "… schreibt" while the other types; gone with the message
    c.fill("#chat-text", "Ich hätte eine Fra")
    expect(a.locator("#typing")).to_have_text("Kunde schreibt …")
    a.locator("#chat").screenshot(path=str(artifacts / "extras-advisor-typing-de.png"))
    c.fill("#chat-text", "Ich hätte eine Frage.")
    c.press("#chat-text", "Enter")
    expect(a.locator(".chat-log li.theirs")).to_have_count(1)
    expect(a.locator("#typing")).to_be_hidden()
    a.fill("#chat-text", "Gern")
    expect(c.locator("#typing")).to_have_text("Ihre Ansprechperson schreibt …")

    # a message while the chat is out of sight: counted in the tab's title, and a chime
    c.evaluate("window.scrollTo(0, 0)")
    expect(c.locator("#chat-text")).not_to_be_in_viewport()
    a.press("#chat-text", "Enter")
    expect(c.locator(".unread-badge")).to_have_text("1 neue Nachricht")
    expect(c).to_have_title(re.compile(r"^\(1\) "))
    wait_until(c, lambda: played(c, MESSAGE_TONES) == 1)
    shot(c, artifacts, "customer-unread-phone-de", full_page=False)
    c.click(".unread-badge")
    expect(c).not_to_have_title(re.compile(r"^\(\d+\) "))

    # muted: no chime, and still muted after a reload (this device remembers it)
    c.click("#sound-toggle")
    expect(c.locator("#sound-toggle")).to_have_text("Töne einschalten")
    send_chat(a, "Zweite Nachricht")
    expect(c.locator(".chat-log li.theirs")).to_have_count(2)
    c.wait_for_timeout(300)
    assert played(c, MESSAGE_TONES) == 1
    c.reload()
    expect(c.locator("#status")).to_have_attribute("data-state", "connected")
    expect(c.locator("#sound-toggle")).to_have_attribute("data-on", "false")
    send_chat(a, "Dritte Nachricht")
    expect(c.locator(".chat-log li.theirs")).to_have_count(3)
    c.wait_for_timeout(300)
    assert played(c, MESSAGE_TONES) == 0  # a fresh page: none played since the reload
    # the customer's arrival chimed for the advisor? Only the advisor's page knows: the
    # customer came back after the reload
    advisor.assert_clean()
    customer.assert_clean()


# -- 7: full screen and picture in picture -------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE])
def test_full_screen_and_picture_in_picture_for_the_remote_video(
    gw: GatewayProcess, opener: Opener, artifacts: Path, viewport: dict[str, int]
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    customer = opener.customer(body, viewport=viewport)
    a, c = advisor.page, customer.page
    # no picture, no buttons
    expect(c.locator("#fullscreen")).to_be_hidden()
    a.click("#camera")
    wait_until(c, lambda: remote_video_playing(c), timeout=20)
    button = c.locator("#fullscreen")
    expect(button).to_be_visible()
    expect(button).to_have_accessible_name("Vollbild")
    button.click()
    wait_until(
        c,
        lambda: c.evaluate(
            "!!document.fullscreenElement && document.fullscreenElement.classList.contains('stage')"
        ),
    )
    expect(button).to_have_accessible_name("Vollbild beenden")
    name = "desktop" if viewport == DESKTOP else "phone"
    shot(c, artifacts, f"customer-fullscreen-{name}", full_page=False)
    button.click()
    wait_until(c, lambda: c.evaluate("document.fullscreenElement === null"))
    pip = c.locator("#pip")
    if c.evaluate("document.pictureInPictureEnabled === true"):
        expect(pip).to_be_visible()
        pip.click()
        wait_until(c, lambda: c.evaluate("document.pictureInPictureElement !== null"))
        expect(pip).to_have_accessible_name("Bild im Bild beenden")
        pip.click()
        wait_until(c, lambda: c.evaluate("document.pictureInPictureElement === null"))
    else:
        expect(pip).to_be_hidden()  # offered only where the browser has it
    # the advisor's page has the same for the customer's picture
    c.click("#camera")
    wait_until(a, lambda: remote_video_playing(a), timeout=20)
    expect(a.locator("#fullscreen")).to_be_visible()
    advisor.assert_clean()
    customer.assert_clean()


# -- axe-core on the new parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "locale", "viewport"), [("de", "de-DE", PHONE), ("en", "en-GB", DESKTOP)]
)
def test_axe_finds_nothing_on_the_device_check_and_the_waiting_room(
    gw: GatewayProcess, opener: Opener, lang: str, locale: str, viewport: dict[str, int]
) -> None:
    status, _, raw = gw.request(
        "POST",
        "/api/sessions",
        json.dumps({"waiting_room": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, raw
    body: dict[str, Any] = json.loads(raw)
    options: dict[str, Any] = dict(PHONE_OPTIONS) if viewport == PHONE else {}
    ctx = opener.context(locale=locale, viewport=viewport, **options)
    ctx.add_init_script(path=str(AXE))
    page = ctx.new_page()
    page.goto(body["customer"]["page_url"])
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    expect(page.locator("#device-check")).to_be_visible()
    wait_until(page, lambda: page.evaluate("document.getElementById('check-video').videoWidth > 0"))
    assert _axe(page) == [], "device check"
    page.click("#check-skip")
    expect(page.locator("#lobby")).to_be_visible()
    expect(page.locator("#lobby-title")).to_have_text(t(lang, "lobby.title"))
    assert _axe(page) == [], "waiting room"

    actx = opener.context(
        locale=locale, viewport=viewport, storage_state=opener.advisor_state, **options
    )
    actx.add_init_script(path=str(AXE))
    room = actx.new_page()
    room.goto(f"{gw.base}/advisor/{body['id']}")
    expect(room.locator("#lobby-card")).to_be_visible()
    expect(room.locator("#admit")).to_have_text(t(lang, "lobby.admit"))
    assert _axe(room) == [], "advisor room with the waiting customer"
    overview = actx.new_page()
    overview.goto(f"{gw.base}/advisor")
    expect(overview.locator(f"#c-{body['id']}")).to_have_attribute("data-state", "lobby")
    assert _axe(overview) == [], "overview with the waiting customer"


def test_advisor_chooses_another_microphone_while_it_is_on(
    gw: GatewayProcess, opener: Opener, artifacts: Path
) -> None:
    body = gw.create_session()
    customer = opener.customer(body)
    ctx = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP)
    ctx.add_init_script(PROBES)
    ctx.add_init_script(path=str(AXE))
    a = ctx.new_page()
    a.goto(f"{gw.base}/advisor/{body['id']}")
    expect(a.locator("#status")).to_have_attribute("data-state", "connected")
    a.click("#microphone")
    expect(a.locator("#microphone")).to_have_attribute("data-on", "true")
    expect(customer.page.locator("#presence")).to_have_text("Ihre Ansprechperson ist da.")

    a.click("#devices-open")
    expect(a.locator("#devices-dialog")).to_be_visible()
    expect(a.locator("#check-join")).to_have_text("Übernehmen")
    mic = a.locator("#check-microphone option").nth(2).get_attribute("value")
    a.select_option("#check-microphone", mic)
    wait_until(a, lambda: a.evaluate("document.getElementById('check-level').value > 0"))
    shot(a, artifacts, "advisor-devices-dialog-de", full_page=False)
    assert _axe(a) == [], "advisor's device dialog"
    a.click("#check-join")
    expect(a.locator("#devices-dialog")).to_be_hidden()
    # the running microphone is now the chosen one; the dialog's tracks are stopped
    wait_until(
        a,
        lambda: (
            a.evaluate(
                "window.__tracks.filter(t => t.readyState === 'live')"
                ".map(t => t.getSettings().deviceId)"
            )
            == [mic]
        ),
    )
    expect(a.locator("#microphone")).to_have_attribute("data-on", "true")
    # Escape closes it as well, and stops what it opened
    a.click("#devices-open")
    expect(a.locator("#devices-dialog")).to_be_visible()
    wait_until(a, lambda: live_tracks(a) > 1)
    a.keyboard.press("Escape")
    expect(a.locator("#devices-dialog")).to_be_hidden()
    wait_until(a, lambda: live_tracks(a) == 1)
    customer.assert_clean()

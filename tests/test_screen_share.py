# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""Screen sharing by the advisor (issue 17 item 2, docs/web.md "Screen sharing"): the
advisor's Chromium shares its (fake) screen with getDisplayMedia; a browser customer sees
it with "Sie sehen den Bildschirm Ihrer Ansprechperson", and a Flash-like RTMP player
(rtmpdump, librtmp) receives the ``screen`` stream, transcoded to H.264, decoded with
PyAV. The advisor's stop button ends it for both.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.webrtc_client import close_all, http_poster, player, publisher, wait_for
from tests.conftest import require_tool
from tests.test_pages import (  # noqa: F401  (fixtures used by name)
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    Opener,
    advisor_state,
    gw,
    opener,
    playwright,
    skip_device_check,
    wait_until,
)
from tests.test_ux import AXE, _axe
from web.swf import SWF_PATH

pytestmark = pytest.mark.e2e

# Chromium's fake display capture: the picker is answered by itself (fake UI) with the
# whole screen (headless Chromium then captures a generated picture)
SCREEN_ARGS = [*CHROMIUM_ARGS, "--auto-select-desktop-capture-source=Entire screen"]


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=SCREEN_ARGS, headless=True
    )
    yield browser
    browser.close()


def screen_frames(page: Page) -> int:
    return int(
        page.evaluate(
            "(() => { const v = document.getElementById('screen-video');"
            " return v && v.getVideoPlaybackQuality ?"
            " v.getVideoPlaybackQuality().totalVideoFrames : 0; })()"
        )
    )


def rtmp_screen(gw: GatewayProcess, token: str, out: Path, seconds: float = 6.0) -> tuple[int, str]:
    """rtmpdump (librtmp, a Flash-like player) playing the ``screen`` stream live for
    ``seconds`` (then interrupted, as a person closes the player: it writes what it has);
    its exit code and messages."""
    require_tool("rtmpdump")
    dump = subprocess.Popen(
        [
            "rtmpdump",
            "--live",
            "-r",
            f"rtmp://127.0.0.1:{gw.rtmp_port}/consult",
            "-y",
            f"screen?token={token}",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = dump.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        dump.send_signal(signal.SIGINT)
        _, err = dump.communicate(timeout=10)
    return dump.returncode, err.decode(errors="replace")


def decoded_video(path: Path) -> list[av.VideoFrame]:
    frames: list[av.VideoFrame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            frames.extend(packet.decode())  # type: ignore[arg-type]
    return frames


@pytest.mark.parametrize(("lang", "locale"), [("de", "de-DE"), ("en", "en-GB")])
def test_advisor_shares_screen_to_browser_and_flash_customer(
    gw: GatewayProcess,
    opener: Opener,
    artifacts: Path,
    tmp_path: Path,
    lang: str,
    locale: str,
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"], locale=locale)
    customer = opener.customer(body, locale=locale)
    a, c = advisor.page, customer.page
    share = a.locator("#share-screen")
    expect(share).to_be_visible()
    expect(share).to_have_text("Bildschirm teilen" if lang == "de" else "Share screen")
    expect(c.locator("#screen-share")).to_be_hidden()

    share.click()
    expect(share).to_have_attribute("data-on", "true")
    expect(share).to_have_text("Teilen beenden" if lang == "de" else "Stop sharing")
    expect(a.locator("#screen-status")).to_contain_text(
        "Sie teilen Ihren Bildschirm" if lang == "de" else "You are sharing your screen"
    )
    # the gateway has the screen as a second stream of the advisor, beside the camera
    deadline = time.monotonic() + 15
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = gw.get(f"/api/sessions/{body['id']}")
        if state["screen"]["live"] and state["screen"]["video_codec"]:
            break
        time.sleep(0.1)
    assert state["screen"]["live"] and state["screen"]["via"] == "webrtc", state
    assert not state["streams"]["advisor"]["live"]  # the camera stays off

    # the browser customer sees it, with the line saying whose screen it is
    box = c.locator("#screen-share")
    expect(box).to_be_visible(timeout=20_000)
    expect(c.locator("#screen-label")).to_have_text(
        "Sie sehen den Bildschirm Ihrer Ansprechperson"
        if lang == "de"
        else "You are seeing your advisor's screen"
    )
    wait_until(c, lambda: screen_frames(c) >= 3, timeout=20)
    width = c.evaluate("document.getElementById('screen-video').videoWidth")
    height = c.evaluate("document.getElementById('screen-video').videoHeight")
    assert 0 < width <= 1280 and 0 < height <= 720, (width, height)
    c.screenshot(path=str(artifacts / f"screen-customer-phone-{lang}.png"))
    a.screenshot(path=str(artifacts / f"screen-advisor-{lang}.png"))

    # a Flash-like player gets the same screen, transcoded (VP8 → H.264), decodable
    out = tmp_path / "screen.flv"
    _, err = rtmp_screen(gw, body["customer"]["token"], out)
    frames = decoded_video(out)
    assert len(frames) >= 3, err
    assert (frames[-1].width, frames[-1].height) == (width, height)
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        packets = [p for p in container.demux(video) if p.size and p.pts is not None]
    # what the Flash customer's downlink carries for the screen: the rate is the capture's
    # (at most 5 a second), the bitrate printed for the report (not asserted: the
    # machine is shared)
    span = float((packets[-1].pts - packets[0].pts) * video.time_base)
    if span > 1.0:
        fps = (len(packets) - 1) / span
        kbps = sum(p.size for p in packets[1:]) * 8 / span / 1000
        size = f"{frames[-1].width}x{frames[-1].height}"
        print(f"screen to Flash: {size} {fps:.1f} fps {kbps:.0f} kbit/s")
        assert fps <= 6.5, fps

    # the advisor stops: gone on the customer's page, and from the gateway
    share.click()
    expect(share).to_have_attribute("data-on", "false")
    expect(box).to_be_hidden(timeout=10_000)
    deadline = time.monotonic() + 10
    while gw.get(f"/api/sessions/{body['id']}")["screen"]["live"]:
        assert time.monotonic() < deadline, "the screen stream did not end"
        time.sleep(0.1)
    advisor.assert_clean()
    customer.assert_clean()


@pytest.mark.parametrize(("locale", "viewport"), [("de-DE", PHONE), ("en-GB", DESKTOP)])
def test_shared_screen_pages_are_accessible(
    gw: GatewayProcess, opener: Opener, artifacts: Path, locale: str, viewport: dict[str, int]
) -> None:
    """axe-core (an init script from tests/node, never fetched) on both pages while the
    screen is shared: the customer on a phone, and on a desktop."""
    body = gw.create_session()
    actx = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP, locale=locale)
    actx.add_init_script(path=str(AXE))
    a = actx.new_page()
    a.goto(f"{gw.base}/advisor/{body['id']}")
    expect(a.locator("#status")).to_have_attribute("data-state", "connected")
    options: dict[str, Any] = (
        {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
        if viewport == PHONE
        else {}
    )
    cctx = opener.context(viewport=viewport, locale=locale, **options)
    cctx.add_init_script(path=str(AXE))
    c = cctx.new_page()
    c.goto(body["customer"]["page_url"])
    c.fill("#pin", body["customer"]["pin"])
    c.click("button[type=submit]")
    skip_device_check(c)
    expect(c.locator("#status")).to_have_attribute("data-state", "connected")
    a.locator("#share-screen").click()
    expect(c.locator("#screen-share")).to_be_visible(timeout=20_000)
    wait_until(c, lambda: screen_frames(c) >= 2, timeout=20)
    assert _axe(a) == [], "advisor room while sharing"
    assert _axe(c) == [], "customer room with the shared screen"
    c.screenshot(path=str(artifacts / f"screen-customer-{locale}-{viewport['width']}.png"))


def test_only_the_advisor_shares_and_only_the_customer_watches(gw: GatewayProcess) -> None:
    async def run() -> None:
        body = gw.create_session()
        cid = body["id"]
        advisor_token = body["advisor"]["token"]
        customer_token = body["customer"]["token"]
        async with aiohttp.ClientSession() as http:
            # a customer cannot publish a "screen", an advisor cannot receive one
            for url, token in (
                (f"{gw.base}/whip/{cid}/customer?stream=screen", customer_token),
                (f"{gw.base}/whep/{cid}/advisor?stream=screen", advisor_token),
            ):
                async with http.post(
                    url,
                    data="v=0\r\n",
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/sdp",
                    },
                ) as resp:
                    assert resp.status == 403, url
            # an aiortc advisor shares, an aiortc customer receives it, the camera stays off
            pub, status, _, _ = await publisher(
                http_poster(http, f"{gw.base}/whip/{cid}/advisor?stream=screen", advisor_token)
            )
            assert status == 201
            viewer, received, status, _, _ = await player(
                http_poster(http, f"{gw.base}/whep/{cid}/customer?stream=screen", customer_token)
            )
            assert status == 201
            try:
                await wait_for(lambda: len(received.video) >= 5, 20, "screen frames")
                state = gw.get(f"/api/sessions/{cid}")
                assert state["screen"]["live"] and not state["streams"]["advisor"]["live"]
            finally:
                await close_all(pub, viewer, received=received)

    # on a thread of its own: Playwright's sync API keeps an event loop on this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=90)


def test_advisor_cannot_play_the_screen_over_rtmp(gw: GatewayProcess, tmp_path: Path) -> None:
    body = gw.create_session()
    code, err = rtmp_screen(gw, body["advisor"]["token"], tmp_path / "x.flv", seconds=10)
    assert code != 0
    assert "NetStream.Play.Failed" in err, err


def test_flash_page_gives_the_swf_the_screen_stream(gw: GatewayProcess, opener: Opener) -> None:
    """The Flash client plays the ``screen`` stream beside the camera (its FlashVar) and
    the shipped SWF carries the line it shows over it. Flash Player itself is not in the
    tests (Ruffle has no RTMP): rtmpdump above plays the same stream name as the SWF."""
    body = gw.create_session()
    page = opener.context(viewport=DESKTOP).new_page()
    page.goto(body["customer"]["flash_page_url"])
    page.fill("#pin", body["customer"]["pin"])
    page.click("button[type=submit]")
    flashvars = page.locator("object#vb-flash > param[name=flashvars]").get_attribute("value")
    assert flashvars is not None and "screen=screen" in flashvars.split("&")
    swf = SWF_PATH.read_bytes()
    assert swf[:3] == b"CWS"  # zlib-compressed SWF (SWF file format spec, header)
    body_bytes = zlib.decompress(swf[8:])
    for text in ("Sie sehen den Bildschirm Ihrer Ansprechperson", "You are seeing your advisor"):
        assert text.encode() in body_bytes

"""The bridge with real peers on both sides: ffmpeg as the Flash customer (what Flash
Player 11's camera and microphone send, over RTMP) and the real advisor page in Debian's
Chromium (Playwright, fake camera and microphone), through the real gateway process.

Checked on decoded media: the page's <video> size and clock, the loudness of the remote
audio measured in the page (Web Audio AnalyserNode), and what an ffmpeg player receives
decoded with PyAV.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, expect

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import analyse, ffmpeg_publish, make_flv
from tests import test_pages as pages
from tests.conftest import require_tool
from tests.test_pages import DESKTOP, Opener, Watched, wait_until

pytestmark = pytest.mark.e2e

# the page fixtures of test_pages (a gateway of this module's own, the one-time advisor
# login, the page opener); the browser below adds the autoplay flag so that the page's
# remote <video> and an AudioContext play sound without a user gesture
gw = pages.gw
playwright = pages.playwright
advisor_state = pages.advisor_state
opener = pages.opener


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(pages.CHROMIUM),
        args=[*pages.CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
        headless=True,
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("ffmpeg")
    return tmp_path_factory.mktemp("bridge-chromium")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate()


REMOTE_VIDEO_JS = """() => {
  const v = document.getElementById("remote-video");
  return {w: v.videoWidth, h: v.videoHeight, t: v.currentTime, hidden: v.hidden,
          paused: v.paused};
}"""

# RMS of the remote stream's audio track over ~1 s, decoded by the page (Web Audio).
REMOTE_RMS_JS = """async () => {
  const v = document.getElementById("remote-video");
  const stream = v.srcObject;
  const tracks = stream ? stream.getAudioTracks() : [];
  if (!tracks.length) return {rms: -1, why: "no audio track"};
  const ctx = new AudioContext();
  await ctx.resume();
  const source = ctx.createMediaStreamSource(new MediaStream([tracks[0]]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let squares = 0, n = 0, peak = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1200) {
    await new Promise((r) => setTimeout(r, 40));
    analyser.getFloatTimeDomainData(buf);
    for (const s of buf) { squares += s * s; n += 1; peak = Math.max(peak, Math.abs(s)); }
  }
  // the loudest frequency: the sine's 440 Hz, not noise or a codec's artefacts
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  let loudest = 0;
  for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[loudest]) loudest = i;
  const hz = (loudest * ctx.sampleRate) / analyser.fftSize;
  const state = ctx.state;
  await ctx.close();
  return {rms: Math.sqrt(squares / n), peak: peak, hz: hz, state: state, muted: tracks[0].muted};
}"""


def _advisor(opener: Opener, sid: str) -> Watched:
    return opener.advisor(sid, viewport=DESKTOP)


def _remote(watched: Watched) -> dict[str, Any]:
    result: dict[str, Any] = watched.page.evaluate(REMOTE_VIDEO_JS)
    return result


def _shows_flash_video(watched: Watched) -> bool:
    r = _remote(watched)
    return (r["w"], r["h"]) == (320, 240) and not r["hidden"]


@pytest.mark.parametrize("profile", ["spark_speex", "spark_nellymoser", "h264_speex"])
def test_flash_customer_plays_in_the_advisor_page(
    gw: GatewayProcess, opener: Opener, media_dir: Path, artifacts: Path, profile: str
) -> None:
    src = make_flv(media_dir / f"{profile}.flv", profile, seconds=14)
    session = gw.create_session()
    advisor = _advisor(opener, session["id"])
    a = advisor.page
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    try:
        # (ffmpeg calls no media(camera, microphone): the badge stays "Kamera aus", and
        # the page shows the video once it has flowed for 3 s)
        wait_until(a, lambda: _shows_flash_video(advisor), timeout=20)
        before = _remote(advisor)
        a.wait_for_timeout(1500)
        after = _remote(advisor)
        assert not after["paused"], after
        assert after["t"] - before["t"] > 1.0, (before, after)
        expect(a.locator("#presence")).to_contain_text("(Flash)", timeout=10_000)
        expect(a.locator("#remote-placeholder")).to_be_hidden()

        # the 440 Hz sine, decoded in the page (silence would be an RMS near 0)
        sound = a.evaluate(REMOTE_RMS_JS)
        assert sound["rms"] > 0.03, sound  # ffmpeg's sine: amplitude 1/8, RMS 0.088
        assert abs(sound["hz"] - 440) < 50, sound

        if profile == "spark_speex":
            a.screenshot(path=artifacts / "bridge-advisor-with-flash-customer.png")
        assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
    finally:
        _stop(publisher)
    advisor.assert_clean()


def test_chromium_camera_reaches_an_ffmpeg_player(
    gw: GatewayProcess, opener: Opener, media_dir: Path
) -> None:
    session = gw.create_session()
    advisor = _advisor(opener, session["id"])
    a = advisor.page
    a.click("#camera")  # the toggles replaced "Übertragung starten" (issue 10)
    a.click("#microphone")
    expect(a.locator("#camera")).to_have_attribute("data-on", "true")
    expect(a.locator("#microphone")).to_have_attribute("data-on", "true")
    expect(a.locator("#send-state")).to_have_text("verbunden", timeout=15_000)
    # what the page's fake camera captures
    size = a.evaluate(
        "() => { const v = document.getElementById('self-video');"
        " return [v.videoWidth, v.videoHeight]; }"
    )
    assert size == [640, 480], size
    a.wait_for_timeout(1500)  # the sender's bandwidth estimate ramps up first
    out = media_dir / "advisor-as-flash-sees-chromium.flv"
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-i", session["customer"]["rtmp"]["play_url"], "-t", "4",
           "-c", "copy", "-f", "flv", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    result = analyse(out)
    assert (result.video_codec, result.audio_codec) == ("h264", "aac"), result
    assert (result.width, result.height) == (640, 480), result
    assert result.first_video_keyframe, result
    assert result.video_frames >= 60, result
    assert result.audio_rms > 1000, result  # the fake microphone beeps
    assert result.decode_errors == [], result
    advisor.assert_clean()


def test_screenshots_of_a_conversation(gw: GatewayProcess, opener: Opener, artifacts: Path) -> None:
    """The browser customer (PIN) sees the advisor's fake camera; both pages on file."""
    session = gw.create_session()
    advisor = _advisor(opener, session["id"])
    customer = opener.customer(session)
    a, c = advisor.page, customer.page
    a.click("#camera")
    a.click("#microphone")
    expect(a.locator("#send-state")).to_have_text("verbunden", timeout=15_000)
    wait_until(c, lambda: pages.remote_video_playing(c), timeout=20)
    c.wait_for_timeout(1000)
    size = c.evaluate(
        "() => { const v = document.getElementById('remote-video');"
        " return [v.videoWidth, v.videoHeight]; }"
    )
    assert size[0] > 0 and size[1] > 0, size
    c.screenshot(path=artifacts / "bridge-customer-with-advisor.png")
    a.screenshot(path=artifacts / "bridge-advisor-sending.png")
    advisor.assert_clean()
    customer.assert_clean()

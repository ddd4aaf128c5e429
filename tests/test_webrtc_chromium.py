"""Chromium (Playwright, Debian's ``/usr/bin/chromium``) as the real browser peer.

A browser does what aiortc does not: BUNDLE with ``max-bundle``, RTX SSRC groups,
transport-cc, its own SR timing, a fake camera at 640×480 with a beeping microphone.
One direction each: Chromium publishes over WHIP (VP8, then H.264) and aiortc decodes
the WHEP side; aiortc publishes and Chromium plays over WHEP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright

from bench.testkit import webrtc_client as wc
from gateway.config import Config
from gateway.consultation import Role
from gateway.main import build_app, build_gateway
from gateway.service import Gateway
from tests.conftest import require_tool
from webrtc.frontend import WebRtcFrontEnd
from webrtc.whip import WhipSession

pytestmark = pytest.mark.e2e

ADVISOR_TOKEN = "static-advisor-token-for-chromium-tests"
CHROMIUM_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
]

Client = TestClient[web.Request, web.Application]

# The same steps as web/static/rtc.js: offer, wait for gathering, POST, apply the answer.
NEGOTIATE_JS = """
async function whipWhep(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
  const resp = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/sdp", Authorization: "Bearer " + token},
    body: pc.localDescription.sdp,
  });
  const answer = await resp.text();
  if (resp.status === 201) await pc.setRemoteDescription({type: "answer", sdp: answer});
  return {status: resp.status, answer, location: resp.headers.get("Location")};
}
"""

PUBLISH_JS = (
    "async ([url, token, codec]) => {"
    + NEGOTIATE_JS
    + """
  const media = await navigator.mediaDevices.getUserMedia(
    {video: {width: 640, height: 480}, audio: true});
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  const stream = new MediaStream();
  for (const track of media.getTracks()) {
    const t = pc.addTransceiver(track, {direction: "sendonly", streams: [stream]});
    if (track.kind === "video") {
      const caps = RTCRtpSender.getCapabilities("video").codecs.filter(
        (c) => c.mimeType.toLowerCase() === "video/" + codec || c.mimeType === "video/rtx");
      t.setCodecPreferences(caps);
    }
  }
  window.pc = pc;
  return await whipWhep(pc, url, token);
}"""
)

PLAY_JS = (
    "async ([url, token]) => {"
    + NEGOTIATE_JS
    + """
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const stream = new MediaStream();
  const video = document.createElement("video");
  video.autoplay = true;
  document.body.appendChild(video);
  pc.addEventListener("track", (e) => { stream.addTrack(e.track); video.srcObject = stream; });
  window.pc = pc;
  return await whipWhep(pc, url, token);
}"""
)

STATS_JS = """
async () => {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = s;
  });
  return out;
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = require_tool("chromium")
    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield instance
        await instance.close()


@pytest.fixture
def gw() -> Gateway:
    return build_gateway(Config(advisor_token=ADVISOR_TOKEN, ice_host=["127.0.0.1"]))


@pytest.fixture
async def frontend(gw: Gateway) -> AsyncIterator[WebRtcFrontEnd]:
    fe = WebRtcFrontEnd(gw)
    yield fe
    await fe.close()


@pytest.fixture
async def client(aiohttp_client: Any, gw: Gateway, frontend: WebRtcFrontEnd) -> Client:
    app = build_app(gw, frontend)
    return await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})


async def open_page(browser: Browser, client: Client) -> Page:
    page = await browser.new_page()
    # any page of ours: the browser's fetch to WHIP/WHEP is then same-origin
    await page.goto(str(client.make_url("/healthz")))
    return page


async def new_session(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"})
    assert resp.status == 201
    return await resp.json()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_chromium_publishes_over_whip(
    browser: Browser, client: Client, gw: Gateway, frontend: WebRtcFrontEnd, codec: str
) -> None:
    session = await new_session(client)
    cid = session["id"]
    page = await open_page(browser, client)
    result = await page.evaluate(
        PUBLISH_JS, [f"/whip/{cid}/advisor", session["advisor"]["token"], codec]
    )
    assert result["status"] == 201, result["answer"]

    async def post(sdp: str) -> tuple[int, dict[str, str], str]:
        resp = await client.post(
            f"/whep/{cid}/customer",
            data=sdp,
            headers={
                "Authorization": f"Bearer {session['customer']['token']}",
                "Content-Type": "application/sdp",
            },
        )
        return resp.status, dict(resp.headers), await resp.text()

    play, received, status, _, answer = await wc.player(post, codec)
    assert status == 201, answer
    try:
        await wc.wait_for(
            lambda: len(received.video) >= 30 and len(received.audio) >= 50, 15, "media"
        )
        assert {(f.width, f.height) for f in received.video[-5:]} == {(640, 480)}
        consultation = gw.directory.get(cid)
        assert consultation is not None
        stream = consultation.streams[Role.ADVISOR]
        assert (stream.video_codec, stream.audio_codec) == (codec, "opus")
        whip_session = next(s for s in frontend.sessions.values() if isinstance(s, WhipSession))
        # the PLI target is the media SSRC from the offer's FID group, not RTX
        assert whip_session.ingests["video"].media_ssrc is not None
        assert whip_session.ingests["video"].frames >= 30
        # the fake microphone beeps: somewhere in what arrived there is sound
        assert received.audio_peak(None) > 3000
        # DELETE from the browser's side ends it
        await page.evaluate(
            "async ([loc, token]) => (await fetch(loc, {method: 'DELETE', "
            "headers: {Authorization: 'Bearer ' + token}})).status",
            [result["location"], session["advisor"]["token"]],
        )
        await wc.wait_for(lambda: not stream.live, 5, "the stream to stop")
    finally:
        await wc.close_all(play, received=received)
        await page.close()


async def test_chromium_plays_over_whep(browser: Browser, client: Client) -> None:
    session = await new_session(client)
    cid = session["id"]
    adv = session["advisor"]

    async def post(sdp: str) -> tuple[int, dict[str, str], str]:
        resp = await client.post(
            f"/whip/{cid}/advisor",
            data=sdp,
            headers={"Authorization": f"Bearer {adv['token']}", "Content-Type": "application/sdp"},
        )
        return resp.status, dict(resp.headers), await resp.text()

    pub, status, _, answer = await wc.publisher(post)
    assert status == 201, answer
    page = await open_page(browser, client)
    try:
        result = await page.evaluate(
            PLAY_JS, [f"/whep/{cid}/customer", session["customer"]["token"]]
        )
        assert result["status"] == 201, result["answer"]
        stats: dict[str, Any] = {}

        async def poll() -> bool:
            stats.update(await page.evaluate(STATS_JS))
            video, audio = stats.get("video", {}), stats.get("audio", {})
            return video.get("framesDecoded", 0) >= 30 and audio.get("totalAudioEnergy", 0) > 0

        for _ in range(60):
            if await poll():
                break
            await page.wait_for_timeout(250)
        video, audio = stats["video"], stats["audio"]
        assert video["framesDecoded"] >= 30, stats
        assert (video["frameWidth"], video["frameHeight"]) == (wc.WIDTH, wc.HEIGHT)
        # the tone, not silence (Chrome measures only what it plays out: unmuted element)
        assert audio["totalAudioEnergy"] > 0, stats
    finally:
        await page.close()
        await wc.close_all(pub)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_chromium_to_chromium_is_forwarded(
    browser: Browser, client: Client, frontend: WebRtcFrontEnd, codec: str
) -> None:
    """Browser to browser through the gateway (issue 14): one Chromium publishes over
    WHIP, another plays over WHEP; the frames go out in the RTP payloads they came in
    (the forwarding encoder), and the receiving Chromium decodes picture and sound."""
    from gateway.latency import METER
    from webrtc.seams import ENCODER_ATTR, ForwardingEncoder
    from webrtc.whep import WhepSession

    session = await new_session(client)
    cid = session["id"]
    since = METER.snapshot()["clock"]
    publisher = await open_page(browser, client)
    player = await open_page(browser, client)
    try:
        result = await publisher.evaluate(
            PUBLISH_JS, [f"/whip/{cid}/customer", session["customer"]["token"], codec]
        )
        assert result["status"] == 201, result["answer"]
        # the player prefers the publisher's codec (the gateway answers in offer order)
        play_js = PLAY_JS.replace(
            'pc.addTransceiver("video", {direction: "recvonly"});',
            'pc.addTransceiver("video", {direction: "recvonly"}).setCodecPreferences('
            "RTCRtpReceiver.getCapabilities('video').codecs.filter((c) => "
            f"c.mimeType.toLowerCase() === 'video/{codec}' || c.mimeType === 'video/rtx'));",
        )
        assert play_js != PLAY_JS
        result = await player.evaluate(
            play_js, [f"/whep/{cid}/advisor", session["advisor"]["token"]]
        )
        assert result["status"] == 201, result["answer"]
        stats: dict[str, Any] = {}
        for _ in range(120):
            stats.update(await player.evaluate(STATS_JS))
            video, audio = stats.get("video", {}), stats.get("audio", {})
            if video.get("framesDecoded", 0) >= 30 and audio.get("totalAudioEnergy", 0) > 0:
                break
            await player.wait_for_timeout(250)
        assert stats["video"]["framesDecoded"] >= 30, stats
        assert (stats["video"]["frameWidth"], stats["video"]["frameHeight"]) == (640, 480)
        assert stats["audio"]["totalAudioEnergy"] > 0, stats
        whep = next(s for s in frontend.sessions.values() if isinstance(s, WhepSession))
        encoders = {t.kind: getattr(t.sender, ENCODER_ATTR) for t in whep.pc.getTransceivers()}
        assert all(isinstance(e, ForwardingEncoder) for e in encoders.values())
        # every frame the browser decoded was forwarded, none packetized again
        assert encoders["video"].forwarded >= 30 and encoders["audio"].forwarded >= 50
        assert encoders["video"].inner.__class__.__name__.lower().startswith(codec)
        # measured under its own path (a late joiner's GOP replay is not measured)
        added = METER.snapshot(since)["added"]
        assert {k for k in added if k.startswith("webrtc_to_webrtc")} == {
            "webrtc_to_webrtc/forwarded/video",
            "webrtc_to_webrtc/forwarded/audio",
        }, added
    finally:
        await publisher.close()
        await player.close()

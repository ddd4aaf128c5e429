"""Malformed SDP on WHIP/WHEP (issue 11 item 6), from outside against the real gateway.

Real offers (aiortc's, made here; Chromium's, captured here with Playwright) are mutated
by hypothesis: lines dropped, doubled, swapped, cut, tokens replaced, hostile attribute
lines inserted (``a=group:BUNDLE`` naming absent mids, a missing ``a=mid``, a missing
``m=`` line, …). Every answer is ``201`` or a ``4xx`` problem, never a ``500``; the
gateway logs no traceback and leaves no task pending ("Task was destroyed but it is
pending!") when it stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.async_api import async_playwright

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import GatewayProcess
from tests.conftest import require_tool
from webrtc import seams

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-sandbox",
]

# Lines that broke parsers or negotiators somewhere, or should be refused cleanly.
HOSTILE_LINES = [
    "a=group:BUNDLE 0 1 7",
    "a=group:BUNDLE 5",
    "a=group:BUNDLE",
    "a=group:LS 0 9",
    "a=mid:",
    "a=mid:0",
    "a=mid:1",
    "a=mid:" + "x" * 300,
    "m=video 9 UDP/TLS/RTP/SAVPF",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=audio 0 UDP/TLS/RTP/SAVPF 111",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=text 9 RTP/AVP 98",
    "m=video x UDP/TLS/RTP/SAVPF 96",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:300 VP8/90000",
    "a=rtpmap:96",
    "a=fmtp:97 apt=999",
    "a=fmtp:97 apt=",
    "a=fmtp:x",
    "a=ssrc-group:FID 1",
    "a=ssrc-group:FID",
    "a=ssrc-group:SIM 1 2 3",
    "a=ssrc:abc cname:x",
    "a=ssrc:99999999999 cname:x",
    "a=candidate:garbage",
    "a=candidate:1 1 udp 1 127.0.0.1 99999 typ host",
    "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype passive",
    "a=fingerprint:sha-256 ZZ",
    "a=fingerprint:md5 00",
    "a=fingerprint:",
    "a=setup:active",
    "a=setup:holdconn",
    "a=setup:",
    "a=rtcp-fb:* nack",
    "a=rtcp-fb:96",
    "a=extmap:99999 urn:x",
    "a=extmap:x",
    "a=extmap:1/sendonly urn:ietf:params:rtp-hdrext:sdes:mid",
    "c=IN IP6 ::1",
    "c=IN IP4",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=ice-options:trickle",
    "b=AS:-1",
    "a=msid:",
    "a=sctp-port:x",
    "a=rtcp:x",
    "a=rtcp:9 IN IP4",
    "a=inactive",
    "a=recvonly",
    "a=sendonly",
    "a=simulcast:send 1;2",
    "a=rid:1 send",
    "o=- x x IN IP4 0.0.0.0",
    "t=x",
    "v=1",
    "",
    "\x00",
    "ä=ö",
]


async def _aiortc_offer(direction: str) -> str:
    seams.install()
    pc = wc.new_peer()
    if direction == "sendonly":
        pc.addTransceiver(wc.PatternVideoTrack(), direction="sendonly")
        pc.addTransceiver(wc.SineAudioTrack(), direction="sendonly")
    else:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
    offer = await pc.createOffer()
    with seams.ice_hosts(["127.0.0.1"]):
        await pc.setLocalDescription(offer)
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


CHROMIUM_OFFER_JS = """async (direction) => {
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  if (direction === "sendonly") {
    const media = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
    const stream = new MediaStream();
    for (const track of media.getTracks())
      pc.addTransceiver(track, {direction: "sendonly", streams: [stream]});
  } else {
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
  const sdp = pc.localDescription.sdp;
  pc.close();
  return sdp;
}"""


async def _chromium_offers(base: str) -> dict[str, str]:
    executable = require_tool("chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(base + "/healthz")  # loopback: a secure context for the camera
            return {d: await page.evaluate(CHROMIUM_OFFER_JS, d) for d in ("sendonly", "recvonly")}
        finally:
            await browser.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("sdp")).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    log = proc.log()
    for bad in ("Traceback", "Task was destroyed", "unhandled error", "Error handling request"):
        assert bad not in log, log[-5000:]


@pytest.fixture(scope="module")
def offers(gw: GatewayProcess) -> dict[str, list[str]]:
    """Real offers by the kind they are for: WHIP (the client sends), WHEP (receives)."""
    chromium = asyncio.run(_chromium_offers(gw.base))
    aiortc = {d: asyncio.run(_aiortc_offer(d)) for d in ("sendonly", "recvonly")}
    for sdp in (*chromium.values(), *aiortc.values()):
        assert sdp.startswith("v=0") and "a=mid:" in sdp, sdp
    return {
        "whip": [chromium["sendonly"], aiortc["sendonly"]],
        "whep": [chromium["recvonly"], aiortc["recvonly"]],
    }


@pytest.fixture(scope="module")
def consultation(gw: GatewayProcess) -> str:
    return str(gw.create_session()["id"])


def post_offer(gw: GatewayProcess, kind: str, cid: str, sdp: str) -> int:
    status, headers, body = gw.request(
        "POST",
        f"/{kind}/{cid}/advisor",
        sdp.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/sdp"},
    )
    if status == 201:
        # end the peer at once: the fuzzer is not here to hold sessions open
        assert gw.request("DELETE", headers["Location"])[0] == 200
    else:
        assert headers.get("Content-Type", "").startswith("application/problem+json"), body
        assert json.loads(body)["status"] == status
    return status


@st.composite
def mutated(draw: st.DrawFn, sdp: str) -> str:
    lines = sdp.split("\r\n")
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "double", "swap", "hostile", "token", "cut"]))
        if op == "drop":
            del lines[at]
        elif op == "double":
            lines.insert(at, lines[at])
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif op == "hostile":
            hostile = draw(st.sampled_from(HOSTILE_LINES))
            if draw(st.booleans()):
                lines.insert(at, hostile)
            else:
                lines[at] = hostile
        elif op == "token":
            tokens = lines[at].split(" ")
            i = draw(st.integers(0, len(tokens) - 1))
            tokens[i] = draw(
                st.sampled_from(["", "0", "-1", "4294967296", "x", "99999", "::", "a=mid:0"])
                | st.text(max_size=8)
            )
            lines[at] = " ".join(tokens)
        else:
            lines = lines[:at]
    return "\r\n".join(lines)


def test_unmutated_offers_are_answered(
    gw: GatewayProcess, offers: dict[str, list[str]], consultation: str
) -> None:
    for kind, sdps in offers.items():
        for sdp in sdps:
            assert post_offer(gw, kind, consultation, sdp) == 201


# the cases the attack report named
NAMED = {
    "bundle names an absent mid": lambda s: s.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"),
    "bundle names only absent mids": lambda s: s.replace(
        "a=group:BUNDLE 0 1", "a=group:BUNDLE 5 6"
    ),
    "no a=mid": lambda s: "\r\n".join(x for x in s.split("\r\n") if not x.startswith("a=mid:")),
    "one a=mid missing": lambda s: s.replace("a=mid:1\r\n", "", 1),
    "no m= line": lambda s: "\r\n".join(x for x in s.split("\r\n") if not x.startswith("m=")),
    "duplicate mids": lambda s: s.replace("a=mid:1", "a=mid:0"),
    "cut after the session part": lambda s: s.split("m=")[0],
}


@pytest.mark.parametrize("case", sorted(NAMED))
def test_named_malformed_offers_are_4xx(
    gw: GatewayProcess, offers: dict[str, list[str]], consultation: str, case: str
) -> None:
    for kind, sdps in offers.items():
        for sdp in sdps:
            status = post_offer(gw, kind, consultation, NAMED[case](sdp))
            assert status == 400, (case, kind, status)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_offers_never_fail_the_server(
    gw: GatewayProcess, offers: dict[str, list[str]], consultation: str, data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(["whip", "whep"]))
    sdp = data.draw(mutated(data.draw(st.sampled_from(offers[kind]))))
    status = post_offer(gw, kind, consultation, sdp)
    assert status == 201 or 400 <= status < 500, (kind, status, sdp[:3000])


def test_gateway_still_serves_after_the_fuzzing(
    gw: GatewayProcess, offers: dict[str, list[str]], consultation: str
) -> None:
    assert gw.get("/healthz")
    assert post_offer(gw, "whip", consultation, offers["whip"][0]) == 201

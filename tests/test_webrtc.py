"""The WebRTC front-end with aiortc as the real WHIP/WHEP peer against the real app.

The publisher (WHIP) sends moving bars and a 440 Hz tone; the player (WHEP) is a normal
aiortc client that decodes what it gets. Everything runs on 127.0.0.1 with no ICE
servers at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiortc.rtcpeerconnection
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import GatewayProcess
from gateway.config import Config
from gateway.consultation import Role
from gateway.main import build_app, build_gateway
from gateway.media import MediaUnit, PublishedStream
from gateway.service import Gateway
from webrtc.frontend import WebRtcFrontEnd
from webrtc.whep import WhepSession
from webrtc.whip import WhipSession

ADVISOR_TOKEN = "static-advisor-token-for-webrtc-tests"
ROOT = Path(__file__).resolve().parent.parent

Client = TestClient[web.Request, web.Application]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def gw() -> Gateway:
    return build_gateway(Config(advisor_token=ADVISOR_TOKEN, ice_host=["127.0.0.1"]))


@pytest.fixture
async def frontend(gw: Gateway) -> Any:
    fe = WebRtcFrontEnd(gw)
    yield fe
    await fe.close()


@pytest.fixture
async def client(aiohttp_client: Any, gw: Gateway, frontend: WebRtcFrontEnd) -> Client:
    return await aiohttp_client(build_app(gw, frontend))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path(url: str) -> str:
    return urlsplit(url).path


async def create(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers=bearer(ADVISOR_TOKEN))
    assert resp.status == 201
    return await resp.json()


def poster(client: Client, url: str, token: str) -> wc.Poster:
    async def post(sdp: str) -> tuple[int, dict[str, str], str]:
        resp = await client.post(
            path(url),
            data=sdp,
            headers={**bearer(token), "Content-Type": "application/sdp"},
        )
        return resp.status, dict(resp.headers), await resp.text()

    return post


async def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = json.loads(await resp.text())
    assert body["status"] == status and body["detail"]
    return body


def candidate_addresses(sdp: str) -> set[str]:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


class Recorder:
    """A receiver on a published stream that keeps what arrives, and when."""

    def __init__(self) -> None:
        self.units: list[tuple[MediaUnit, float]] = []
        self.started = 0
        self.stopped = 0

    def deliver(self, unit: MediaUnit) -> bool:
        self.units.append((unit, time.monotonic()))
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        self.started += 1

    def stream_stopped(self, stream: PublishedStream) -> None:
        self.stopped += 1


async def publish_and_play(
    client: Client,
    session: dict[str, Any],
    publish_codec: str | None = None,
    play_codec: str | None = None,
) -> tuple[RTCPeerConnection, RTCPeerConnection, wc.Received, dict[str, str], dict[str, str]]:
    adv, cus = session["advisor"], session["customer"]
    pub, status, pub_headers, answer = await wc.publisher(
        poster(client, adv["whip_url"], adv["token"]), publish_codec
    )
    assert status == 201, answer
    play, received, status, play_headers, answer = await wc.player(
        poster(client, cus["whep_url"], cus["token"]), play_codec
    )
    assert status == 201, answer
    return pub, play, received, pub_headers, play_headers


# -- end to end -------------------------------------------------------------------------


async def test_whip_to_whep_decodes_video_and_audio(
    client: Client, gw: Gateway, frontend: WebRtcFrontEnd
) -> None:
    session = await create(client)
    cid = session["id"]
    adv = session["advisor"]
    pub, status, headers, answer = await wc.publisher(poster(client, adv["whip_url"], adv["token"]))
    assert status == 201
    assert headers["Content-Type"] == "application/sdp"
    location = headers["Location"]
    assert re.fullmatch(rf"/whip/{cid}/advisor/[A-Za-z0-9_-]{{24}}", location)
    # every candidate we announce is the configured --ice-host, and only host ones
    assert candidate_addresses(answer) == {"127.0.0.1"}
    assert " typ srflx" not in answer and " typ relay" not in answer

    cus = session["customer"]
    play, received, status, play_headers, play_answer = await wc.player(
        poster(client, cus["whep_url"], cus["token"])
    )
    assert status == 201
    assert play_headers["Location"].startswith(f"/whep/{cid}/customer/")
    assert candidate_addresses(play_answer) == {"127.0.0.1"}
    try:
        await wc.wait_for(
            lambda: len(received.video) >= 30 and len(received.audio) >= 50, 10, "media"
        )
        assert {(f.width, f.height) for f in received.video[-10:]} == {(wc.WIDTH, wc.HEIGHT)}
        assert received.audio_peak() > 3000  # the tone, not silence (0.3 full scale ≈ 9800)

        consultation = gw.directory.get(cid)
        assert consultation is not None
        stream = consultation.streams[Role.ADVISOR]
        assert stream.live and stream.kind == "webrtc"
        assert (stream.video_codec, stream.audio_codec) == ("vp8", "opus")
        state = await (
            await client.get(f"/api/sessions/{cid}", headers=bearer(ADVISOR_TOKEN))
        ).json()
        advisor = state["participants"]["advisor"]["connections"]
        customer = state["participants"]["customer"]["connections"]
        assert advisor[0]["kind"] == "webrtc"
        assert advisor[0]["codecs_in"] == {"video": "vp8", "audio": "opus"}
        assert customer[0]["codecs_out"] == {"video": "vp8", "audio": "opus"}
        whep = next(s for s in frontend.sessions.values() if isinstance(s, WhepSession))
        assert whep.sink is not None and whep.sink.negotiated == {"video": "vp8", "audio": "opus"}
        assert whep.sink.delivered["video"] >= 30
    finally:
        await wc.close_all(pub, play, received=received)


async def test_h264_both_ways(client: Client, gw: Gateway) -> None:
    """H.264 from the browser: Annex-B → AVCC with an avcC config unit on the core, and
    back to Annex-B with SPS/PPS before each IDR for an H.264 player."""
    session = await create(client)
    recorder = Recorder()
    consultation = gw.directory.get(session["id"])
    assert consultation is not None
    consultation.streams[Role.ADVISOR].add_receiver(recorder)
    pub, play, received, _, _ = await publish_and_play(client, session, "h264", "h264")
    try:
        await wc.wait_for(lambda: len(received.video) >= 20, 12, "H.264 video")
        assert {(f.width, f.height) for f in received.video[-5:]} == {(wc.WIDTH, wc.HEIGHT)}
        video = [u for u, _ in recorder.units if u.kind == "video"]
        assert video[0].config and video[0].codec == "h264"
        record = video[0].payload
        assert record[0] == 1 and record[1] == 66  # avcC, constrained baseline (42e01f)
        frames = [u for u in video if not u.config]
        assert frames[0].keyframe
        for unit in frames[:10]:
            # AVCC: 4-byte lengths that add up, no start codes, no parameter sets in band
            pos, types = 0, []
            while pos < len(unit.payload):
                size = int.from_bytes(unit.payload[pos : pos + 4], "big")
                types.append(unit.payload[pos + 4] & 0x1F)
                pos += 4 + size
            assert pos == len(unit.payload)
            assert 7 not in types and 8 not in types
    finally:
        await wc.close_all(pub, play, received=received)


async def test_codec_mismatch_is_transcoded(client: Client, frontend: WebRtcFrontEnd) -> None:
    """A VP8 publisher and an H.264-only player: the in-process composition routes the
    WHEP sink (gateway.routing.connect) through the shared transcoder, so the player
    decodes H.264 pictures and the sink sees no unit of a codec it did not negotiate
    (the sink's own count of mismatches: test_webrtc_units.py)."""
    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session, "vp8", "h264")
    try:
        await wc.wait_for(lambda: len(received.audio) >= 25, 10, "audio")
        await wc.wait_for(lambda: len(received.video) >= 10, 20, "transcoded video")
        whep = next(s for s in frontend.sessions.values() if isinstance(s, WhepSession))
        assert whep.sink is not None and whep.sink.negotiated["video"] == "h264"
        assert whep.route is not None and whep.route.describe()["video"] == "vp8>h264"
        assert whep.sink.mismatched == 0
        assert {(f.width, f.height) for f in received.video[-3:]} == {(wc.WIDTH, wc.HEIGHT)}
    finally:
        await wc.close_all(pub, play, received=received)


async def test_delete_closes_the_peer(
    client: Client, gw: Gateway, frontend: WebRtcFrontEnd
) -> None:
    session = await create(client)
    adv = session["advisor"]
    pub, status, headers, _ = await wc.publisher(poster(client, adv["whip_url"], adv["token"]))
    assert status == 201
    consultation = gw.directory.get(session["id"])
    assert consultation is not None
    stream = consultation.streams[Role.ADVISOR]
    try:
        await wc.wait_for(lambda: stream.live and stream.stats.units_in > 10, 10, "publishing")
        (whip_session,) = frontend.sessions.values()
        location = headers["Location"]
        # another participant's token may not end it
        resp = await client.delete(location, headers=bearer(session["customer"]["token"]))
        await assert_problem(resp, 403)
        resp = await client.delete(location, headers=bearer(adv["token"]))
        assert resp.status == 200
        assert whip_session.pc.connectionState == "closed"
        assert not frontend.sessions
        assert not stream.live
        assert consultation.participants[Role.ADVISOR].connections == []
        # DELETE is idempotent (RFC 9110 §9.2.2): a page whose DELETE races its own
        # peer close still gets 200; an id that never existed is a 404
        again = await client.delete(location, headers=bearer(adv["token"]))
        assert again.status == 200
        unknown = location.rsplit("/", 1)[0] + "/not-a-resource"
        await assert_problem(await client.delete(unknown, headers=bearer(adv["token"])), 404)
    finally:
        await wc.close_all(pub)


async def test_second_whip_replaces_the_first(
    client: Client, gw: Gateway, frontend: WebRtcFrontEnd
) -> None:
    session = await create(client)
    adv = session["advisor"]
    post = poster(client, adv["whip_url"], adv["token"])
    first, status, _, _ = await wc.publisher(post)
    assert status == 201
    consultation = gw.directory.get(session["id"])
    assert consultation is not None
    stream = consultation.streams[Role.ADVISOR]
    try:
        await wc.wait_for(lambda: stream.live, 10, "first publisher")
        (old,) = frontend.sessions.values()
        second, status, _, _ = await wc.publisher(post)
        assert status == 201
        assert old.closed and old.pc.connectionState == "closed"
        (new,) = frontend.sessions.values()
        assert isinstance(new, WhipSession) and new is not old
        await wc.wait_for(lambda: new.publishing and stream.live, 10, "second publisher")
        assert len(consultation.participants[Role.ADVISOR].connections) == 1
    finally:
        await wc.close_all(first, second)


async def test_consultation_end_closes_both_peers(
    client: Client, gw: Gateway, frontend: WebRtcFrontEnd
) -> None:
    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session)
    try:
        await wc.wait_for(lambda: len(received.video) >= 5, 10, "video")
        sessions = list(frontend.sessions.values())
        assert len(sessions) == 2
        resp = await client.delete(f"/api/sessions/{session['id']}", headers=bearer(ADVISOR_TOKEN))
        assert resp.status == 204
        await wc.wait_for(lambda: not frontend.sessions, 5, "sessions to close")
        await wc.wait_for(
            lambda: all(s.pc.connectionState == "closed" for s in sessions), 5, "peers to close"
        )
        # the player hears of it too: RTCP BYE ends its remote tracks
        await wc.wait_for(lambda: received.ended.get("video", False), 5, "player's track to end")
    finally:
        await wc.close_all(pub, play, received=received)


async def test_keyframe_request_travels_from_player_to_publisher(
    client: Client, frontend: WebRtcFrontEnd
) -> None:
    """PLI from the WHEP browser → sink → attachment → PublishedStream.request_keyframe
    → PLI from the WHIP receiver → the publishing browser's sender."""
    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session)
    pub_video = next(t.sender for t in pub.getTransceivers() if t.kind == "video")
    requests: list[float] = []
    original = pub_video._send_keyframe

    def counted() -> None:
        requests.append(time.monotonic())
        original()

    pub_video._send_keyframe = counted  # type: ignore[method-assign]
    try:
        await wc.wait_for(lambda: len(received.video) >= 5, 10, "video")
        await asyncio.sleep(0.6)  # past both pacing intervals of the request at connect
        before = len(requests)
        receiver = next(t.receiver for t in play.getTransceivers() if t.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source
        await receiver._send_rtcp_pli(ssrc)
        await wc.wait_for(lambda: len(requests) > before, 5, "the publisher to see a PLI")
        whip_session = next(s for s in frontend.sessions.values() if isinstance(s, WhipSession))
        assert whip_session.pli_sent >= 1
    finally:
        await wc.close_all(pub, play, received=received)


async def test_remb_reaches_the_sink(client: Client, frontend: WebRtcFrontEnd) -> None:
    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session)
    try:
        await wc.wait_for(lambda: len(received.video) >= 5, 10, "video")
        whep = next(s for s in frontend.sessions.values() if isinstance(s, WhepSession))
        assert whep.sink is not None
        reported: list[int] = []
        whep.sink.on_bitrate = reported.append
        receiver = next(t.receiver for t in play.getTransceivers() if t.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=1234, media_ssrc=0, fci=pack_remb_fci(321_000, [ssrc])
        )
        await receiver._send_rtcp(remb)
        await wc.wait_for(lambda: 321_000 in reported, 5, "the REMB")
        assert whep.sink.bitrate is not None
    finally:
        await wc.close_all(pub, play, received=received)


async def test_sender_reports_put_audio_and_video_on_one_clock(
    client: Client, gw: Gateway, frontend: WebRtcFrontEnd
) -> None:
    session = await create(client)
    consultation = gw.directory.get(session["id"])
    assert consultation is not None
    recorder = Recorder()
    consultation.streams[Role.ADVISOR].add_receiver(recorder)
    adv = session["advisor"]
    pub, status, _, _ = await wc.publisher(poster(client, adv["whip_url"], adv["token"]))
    assert status == 201
    try:
        (whip_session,) = frontend.sessions.values()
        assert isinstance(whip_session, WhipSession)
        clocks = [i.clock for i in whip_session.ingests.values()]
        # aiortc sends a sender report every 0.5–1.5 s per stream
        await wc.wait_for(lambda: all(c.synced for c in clocks), 8, "sender reports")
        mark = time.monotonic()
        await asyncio.sleep(1.0)
        offsets: dict[str, list[float]] = {"audio": [], "video": []}
        for unit, arrived in recorder.units:
            if arrived >= mark and not unit.config:
                offsets[unit.kind].append(arrived * 1000 - unit.timestamp)
        # The same instant has the same session time: what separates the two kinds on
        # arrival is the jitter buffers (audio ~80 ms, video ~33–67 ms) and encoding.
        medians = {k: sorted(v)[len(v) // 2] for k, v in offsets.items()}
        assert abs(medians["audio"] - medians["video"]) < 150, medians
        for kind in ("audio", "video"):
            stamps = [u.timestamp for u, _ in recorder.units if u.kind == kind and not u.config]
            assert stamps == sorted(stamps)
    finally:
        await wc.close_all(pub)


# -- refusals ---------------------------------------------------------------------------------


async def test_authorisation(client: Client) -> None:
    session = await create(client)
    other = await create(client)
    cid = session["id"]
    sdp = {"Content-Type": "application/sdp"}
    url = f"/whip/{cid}/advisor"
    resp = await client.post(url, data="v=0\r\n", headers=sdp)
    await assert_problem(resp, 401)
    resp = await client.post(url, data="v=0\r\n", headers={**sdp, **bearer("wrong-token")})
    body = await assert_problem(resp, 401)
    assert "invalid_token" in resp.headers["WWW-Authenticate"]
    assert body["status"] == 401
    for kind in ("whip", "whep"):
        # the customer's token for the advisor's role, another consultation's token
        for token, target in (
            (session["customer"]["token"], f"/{kind}/{cid}/advisor"),
            (other["advisor"]["token"], f"/{kind}/{cid}/advisor"),
            (ADVISOR_TOKEN, f"/{kind}/{cid}/customer"),
        ):
            resp = await client.post(target, data="v=0\r\n", headers={**sdp, **bearer(token)})
            await assert_problem(resp, 403)
        resp = await client.post(f"/{kind}/{cid}/nobody", headers=bearer(ADVISOR_TOKEN))
        await assert_problem(resp, 404)
    # advisor credentials act as the advisor (the offer is checked after authorisation)
    resp = await client.post(url, data="v=0\r\n", headers={**sdp, **bearer(ADVISOR_TOKEN)})
    await assert_problem(resp, 400)
    resp = await client.post(
        "/whip/nosuchid/advisor", data="v=0", headers={**sdp, **bearer(ADVISOR_TOKEN)}
    )
    await assert_problem(resp, 404)


def _strip_media(sdp: str, kinds: tuple[str, ...]) -> str:
    """Keep the session part and the media sections of ``kinds``."""
    head, *sections = re.split(r"(?m)^(?=m=)", sdp)
    kept = [s for s in sections if s.split()[0][2:] in kinds]
    return head + "".join(kept)


async def test_bad_offers_are_400_problems(client: Client, frontend: WebRtcFrontEnd) -> None:
    session = await create(client)
    cid = session["id"]
    token = session["advisor"]["token"]
    headers = {**bearer(token), "Content-Type": "application/sdp"}
    whip_url = f"/whip/{cid}/advisor"

    # a real offer to mutate
    pc = wc.new_peer()
    pc.addTransceiver(wc.PatternVideoTrack(), direction="sendonly")
    pc.addTransceiver(wc.SineAudioTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    good = pc.localDescription.sdp
    await pc.close()

    bad = {
        "garbage": "hello world",
        "not utf-8": b"v=0\r\n\xff\xfe",
        "no media": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        "broken attribute": "v=0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=rtpmap:96 VP8/90000\r\na=fmtp:xx\r\n",
        "truncated m-line": "v=0\r\nm=audio x\r\n",
        "no ICE credentials": re.sub(r"(?m)^a=ice-(ufrag|pwd):.*\r\n", "", good),
        "no fingerprint": re.sub(r"(?m)^a=fingerprint:.*\r\n", "", good),
        "no common codec": re.sub(
            r"(?im)^a=rtpmap:(\d+) (VP8|H264|opus)/", r"a=rtpmap:\1 X\2/", good
        ),
        "receive-only offer to WHIP": good.replace("a=sendonly", "a=recvonly"),
        "data channel": good.replace("m=audio", "m=application"),
    }
    for what, body in bad.items():
        resp = await client.post(whip_url, data=body, headers=headers)
        problem = await assert_problem(resp, 400)
        assert problem["detail"], what
    # WHEP wants to send: a send-only offer is refused
    whep_headers = {**bearer(session["customer"]["token"]), "Content-Type": "application/sdp"}
    resp = await client.post(f"/whep/{cid}/customer", data=good, headers=whep_headers)
    await assert_problem(resp, 400)
    assert not frontend.sessions

    resp = await client.post(
        whip_url, data=good, headers={**bearer(token), "Content-Type": "text/plain"}
    )
    await assert_problem(resp, 415)
    assert resp.headers["Accept-Post"] == "application/sdp"
    resp = await client.post(whip_url, data="v=0\r\n" + "a=x\r\n" * 20000, headers=headers)
    await assert_problem(resp, 413)
    assert not frontend.sessions


async def test_patch_is_405_and_unknown_resources_404(client: Client) -> None:
    session = await create(client)
    cid = session["id"]
    token = session["advisor"]["token"]
    resource = f"/whip/{cid}/advisor/abcdefghijklmnopqrstuvwx"
    resp = await client.patch(
        resource,
        data="a=candidate:1",
        headers={**bearer(token), "Content-Type": "application/trickle-ice-sdpfrag"},
    )
    problem = await assert_problem(resp, 405)
    assert "Trickle ICE" in problem["detail"]
    assert resp.headers["Allow"] == "DELETE"
    await assert_problem(await client.delete(resource, headers=bearer(token)), 404)
    await assert_problem(await client.delete(resource), 401)


# -- peers are only ever ours --------------------------------------------------------------


@pytest.fixture
def peer_configurations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every RTCPeerConnection constructed meanwhile, with the configuration it got."""
    seen: list[Any] = []
    original = aiortc.rtcpeerconnection.RTCPeerConnection.__init__

    def init(self: RTCPeerConnection, configuration: Any = None) -> None:
        seen.append(configuration)
        original(self, configuration)

    monkeypatch.setattr(aiortc.rtcpeerconnection.RTCPeerConnection, "__init__", init)
    yield seen


async def test_no_peer_without_our_configuration(
    client: Client, frontend: WebRtcFrontEnd, peer_configurations: list[Any]
) -> None:
    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session)
    try:
        gateway_peers = [s.pc for s in frontend.sessions.values()]
        assert len(gateway_peers) == 2
        for pc in gateway_peers:
            config = pc._RTCPeerConnection__configuration  # type: ignore[attr-defined]
            assert isinstance(config, RTCConfiguration) and config.iceServers == []
        # nobody in the process built a peer without an explicit server list
        assert len(peer_configurations) == 4
        for config in peer_configurations:
            assert isinstance(config, RTCConfiguration) and config.iceServers == []
    finally:
        await wc.close_all(pub, play, received=received)


def test_only_the_factory_builds_peers() -> None:
    """A static guard: ``RTCPeerConnection(`` appears in webrtc/peers.py only."""
    offenders = []
    for source in (ROOT / "webrtc").rglob("*.py"):
        if source.name != "peers.py" and "RTCPeerConnection(" in source.read_text():
            offenders.append(source.name)
    assert offenders == []


# -- the real process (composition root, uvloop) -------------------------------------------


@pytest.mark.e2e
async def test_gateway_process_serves_whip_and_whep(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    async with aiohttp.ClientSession() as http:

        def post_to(url: str, token: str) -> wc.Poster:
            async def post(sdp: str) -> tuple[int, dict[str, str], str]:
                async with http.post(
                    url, data=sdp, headers={**bearer(token), "Content-Type": "application/sdp"}
                ) as resp:
                    return resp.status, dict(resp.headers), await resp.text()

            return post

        adv, cus = session["advisor"], session["customer"]
        assert urlsplit(adv["whip_url"]).port == gateway.http_port
        pub, status, headers, answer = await wc.publisher(post_to(adv["whip_url"], adv["token"]))
        assert status == 201, answer
        for address in candidate_addresses(answer):
            assert ipaddress.ip_address(address).is_loopback
        play, received, status, _, answer = await wc.player(post_to(cus["whep_url"], cus["token"]))
        assert status == 201, answer
        try:
            await wc.wait_for(
                lambda: len(received.video) >= 20 and len(received.audio) >= 25, 12, "media"
            )
            assert received.audio_peak() > 3000
            state = gateway.get(f"/api/sessions/{session['id']}")
            assert state["streams"]["advisor"]["via"] == "webrtc"
            async with http.delete(
                gateway.base + headers["Location"], headers=bearer(adv["token"])
            ) as resp:
                assert resp.status == 200
            state = gateway.get(f"/api/sessions/{session['id']}")
            assert state["streams"]["advisor"]["live"] is False
        finally:
            await wc.close_all(pub, play, received=received)


async def test_lost_video_is_nacked_and_a_lasting_gap_asks_for_a_keyframe(
    client: Client, frontend: WebRtcFrontEnd
) -> None:
    """Loss on the publishing leg with the reorder-only buffer (issue 14): a lost packet
    is NACKed and its retransmission completes the frame (no keyframe needed); a packet
    that never comes is given up after --rtp-video-wait-ms and a PLI brings a keyframe."""
    from webrtc import seams

    session = await create(client)
    pub, play, received, _, _ = await publish_and_play(client, session)
    pub_video = next(t.sender for t in pub.getTransceivers() if t.kind == "video")
    keyframes: list[float] = []
    retransmitted: list[int] = []
    original_keyframe, original_retransmit = pub_video._send_keyframe, pub_video._retransmit

    def counted_keyframe() -> None:
        keyframes.append(time.monotonic())
        original_keyframe()

    async def counted_retransmit(seq: int) -> None:
        retransmitted.append(seq)
        await original_retransmit(seq)

    pub_video._send_keyframe = counted_keyframe  # type: ignore[method-assign]
    pub_video._retransmit = counted_retransmit  # type: ignore[method-assign]
    try:
        await wc.wait_for(lambda: len(received.video) >= 5, 10, "video")
        whip = next(s for s in frontend.sessions.values() if isinstance(s, WhipSession))
        ingest = whip.ingests["video"]
        assert ingest.rtp is not None
        stats = ingest.rtp.buffer.stats
        receiver = ingest.receiver

        # 1. one packet lost on the way in (before aiortc's NACK generator sees it)
        lost: list[int] = []
        handle = receiver._handle_rtp_packet

        async def lose_one(packet: Any, arrival_time_ms: int) -> None:
            # a media packet (a retransmission comes as RTX, from another SSRC)
            if not lost and packet.ssrc == pub_video._ssrc:
                lost.append(packet.sequence_number)
                return
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lose_one  # type: ignore[method-assign]
        await wc.wait_for(lambda: lost and lost[0] in retransmitted, 5, "the NACKed packet")
        frames = len(received.video)
        await wc.wait_for(lambda: len(received.video) >= frames + 10, 10, "video after it")
        assert stats.skipped == 0 and stats.pli == 0, stats
        receiver._handle_rtp_packet = handle  # type: ignore[method-assign]

        # 2. a packet that never comes, retransmissions included (dropped after RTX
        # unwrapping): given up, and the publisher is asked for a keyframe
        tap = getattr(receiver, seams.JITTER_BUFFER_ATTR)
        on_packet = tap.on_packet
        gone: list[int] = []

        def lose_for_good(packet: Any, now: float) -> None:
            if not gone and packet.ssrc == pub_video._ssrc:
                gone.append(packet.sequence_number)
            if gone and packet.sequence_number == gone[0]:
                return
            on_packet(packet, now)

        tap.on_packet = lose_for_good
        before = len(keyframes)
        await wc.wait_for(lambda: stats.skipped >= 1 and stats.pli >= 1, 5, "the gap given up")
        await wc.wait_for(lambda: len(keyframes) > before, 5, "the publisher to see a PLI")
        frames = len(received.video)
        await wc.wait_for(lambda: len(received.video) >= frames + 10, 10, "video after the PLI")
    finally:
        await wc.close_all(pub, play, received=received)

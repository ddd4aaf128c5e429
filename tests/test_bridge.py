"""The bridge: a Flash customer (ffmpeg publishing what Flash Player 11 sends) and a
WebRTC advisor (aiortc, a real peer that decodes) in one consultation, through the real
gateway process. Decoded media is checked, not packets."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import analyse, ffmpeg_publish, make_flv
from rtmp.client import RtmpClient
from tests.conftest import require_tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("ffmpeg")
    return tmp_path_factory.mktemp("bridge")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate()


@pytest.mark.parametrize(
    ("profile", "offer_video", "expect_route"),
    [
        ("spark_speex", None, "spark>vp8"),
        ("spark_nellymoser", None, "spark>vp8"),
        ("h264_speex", "h264", "h264 (passthrough)"),
        ("h264_speex", "vp8", "h264>vp8"),
    ],
)
async def test_flash_customer_reaches_webrtc_advisor(
    gateway: GatewayProcess,
    media_dir: Path,
    profile: str,
    offer_video: str | None,
    expect_route: str,
) -> None:
    src = make_flv(media_dir / f"{profile}.flv", profile, seconds=12)
    session = gateway.create_session()
    clock = (await asyncio.to_thread(gateway.get, "/api/ops/snapshot"))["latency"]["clock"]
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    try:
        async with aiohttp.ClientSession() as http:
            post = wc.http_poster(http, session["advisor"]["whep_url"], session["advisor"]["token"])
            pc, received, status, _, body = await wc.player(post, offer_video)
            assert status == 201, body
            try:
                await wc.wait_for(lambda: len(received.video) >= 45, 20, "45 video frames")
                await wc.wait_for(lambda: len(received.audio) >= 100, 10, "audio")
                frame = received.video[-1]
                assert (frame.width, frame.height) == (320, 240)
                assert received.audio_peak() > 3000, "the sine is audible, not silence"
                state = await asyncio.to_thread(gateway.get, f"/api/sessions/{session['id']}")
                advisor = state["participants"]["advisor"]["connections"]
                out = {c["kind"]: c for c in advisor}
                assert "webrtc" in out, state
                routes = state["streams"]["customer"]["routes"]
                assert any(r.get("video") == expect_route for r in routes), routes
                path = "passthrough" if "passthrough" in expect_route else "transcoded"
                _check_latency(gateway, clock, f"flash_to_webrtc/{path}/video")
                _check_latency(gateway, clock, "flash_to_webrtc/transcoded/audio")  # Speex>Opus
            finally:
                await wc.close_all(pc, received=received)
    finally:
        _stop(publisher)
    log = gateway.log()
    assert session["customer"]["token"] not in log


def _check_latency(gateway: GatewayProcess, since: float, key: str) -> dict[str, Any]:
    """The gateway measured its own added latency for ``key`` in this test, sanely."""
    latency = gateway.get(f"/api/ops/snapshot?since={since}")["latency"]
    figures = latency["added"].get(key)
    assert figures is not None and figures["count"] >= 20, latency
    # Loose bounds (a busy 2-core test machine): a unit of measure or a stamp gone
    # wrong shows up as negative, zero-width or seconds-long figures.
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] < 500, latency
    metrics = gateway.get_text("/metrics")
    direction, path, kind = key.split("/")
    assert (
        f'vb_added_latency_seconds_count{{direction="{direction}",kind="{kind}",path="{path}"}}'
        in metrics
    )
    return latency


async def test_webrtc_advisor_reaches_flash_customer_as_h264_and_aac(
    gateway: GatewayProcess, media_dir: Path
) -> None:
    """aiortc publishes VP8 + Opus; ffmpeg (a Flash-capable player) gets H.264 + AAC."""
    session = gateway.create_session()
    clock = (await asyncio.to_thread(gateway.get, "/api/ops/snapshot"))["latency"]["clock"]
    async with aiohttp.ClientSession() as http:
        post = wc.http_poster(http, session["advisor"]["whip_url"], session["advisor"]["token"])
        pc, status, _, body = await wc.publisher(post, "vp8")
        assert status == 201, body
        try:
            await asyncio.to_thread(gateway.wait_live, session["id"], "advisor")
            out = media_dir / "advisor-as-flash-sees.flv"
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                   "-i", session["customer"]["rtmp"]["play_url"], "-t", "4",
                   "-c", "copy", "-f", "flv", str(out)]  # fmt: skip
            done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=60)
            assert done.returncode == 0, done.stderr.decode()
            latency = _check_latency(gateway, clock, "webrtc_to_flash/transcoded/video")
            _check_latency(gateway, clock, "webrtc_to_flash/transcoded/audio")
            # aiortc's jitter buffer, measured beside the gateway's own latency
            jitter = latency["jitter_buffer"]["video"]
            assert jitter["count"] >= 20 and 0 <= jitter["p50_ms"] < 1000, latency
        finally:
            await wc.close_all(pc)
    result = analyse(out)
    assert (result.video_codec, result.audio_codec) == ("h264", "aac")
    assert (result.width, result.height) == (320, 240)
    assert result.first_video_keyframe
    assert result.video_frames >= 60, result  # 4 s at 30 fps, some start-up loss allowed
    assert result.audio_rms > 1000, result


async def test_flash_player_without_h264_gets_spark_and_nellymoser(
    gateway: GatewayProcess,
) -> None:
    """An old Flash player (no H.264/AAC bits in connect) gets Sorenson Spark."""
    session = gateway.create_session()
    async with aiohttp.ClientSession() as http:
        post = wc.http_poster(http, session["advisor"]["whip_url"], session["advisor"]["token"])
        pc, status, _, body = await wc.publisher(post, "vp8")
        assert status == 201, body
        player = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
        try:
            await player.connect(
                "consult",
                session["customer"]["rtmp"]["connect_url"],
                session["customer"]["token"],
                video_codecs=0x7C,
                audio_codecs=0x0FF7 & ~0x400,
            )
            sid = await player.create_stream()
            player.play(sid, "advisor")
            await player.wait_for(
                lambda: sum(1 for e in player.media if e.type_id == 9) >= 10, timeout=20
            )
            await player.wait_for(lambda: any(e.type_id == 8 for e in player.media), 10)
            video = [e for e in player.media if e.type_id == 9]
            audio = [e for e in player.media if e.type_id == 8]
            assert all(e.payload[0] & 0x0F == 2 for e in video)  # Sorenson H.263
            assert video[0].payload[0] >> 4 == 1  # starts with a keyframe
            assert all(e.payload[0] >> 4 in (4, 5, 6) for e in audio)  # Nellymoser
        finally:
            await player.close()
            await wc.close_all(pc)


async def test_customer_camera_off_stops_the_flow_and_tells_the_advisor(
    gateway: GatewayProcess, media_dir: Path
) -> None:
    src = make_flv(media_dir / "toggle.flv", "spark_speex", seconds=14)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    try:
        async with aiohttp.ClientSession() as http:
            post = wc.http_poster(http, session["advisor"]["whep_url"], session["advisor"]["token"])
            pc, received, status, _, body = await wc.player(post)
            assert status == 201, body
            ws = await http.ws_connect(session["advisor"]["events_url"])
            flash = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
            try:
                await wc.wait_for(lambda: len(received.video) >= 15, 20, "video before")
                await flash.connect(
                    "consult",
                    session["customer"]["rtmp"]["connect_url"],
                    session["customer"]["token"],
                )
                result = await flash.call("media", False, False)
                assert not result.error
                async with asyncio.timeout(5):
                    async for msg in ws:
                        event = msg.json()
                        if (
                            event.get("type") == "media"
                            and event.get("role") == "customer"
                            and event.get("camera") is False
                        ):
                            break
                await asyncio.sleep(0.5)  # frames in flight
                before = len(received.video)
                await asyncio.sleep(2.0)
                assert len(received.video) - before <= 1, "video still flows with camera off"
                await flash.call("media", True, True)
                await wc.wait_for(lambda: len(received.video) > before + 10, 15, "video again")
            finally:
                await flash.close()
                await ws.close()
                await wc.close_all(pc, received=received)
    finally:
        _stop(publisher)


async def test_flash_client_gets_avc_and_aac_headers_first_from_the_browser(
    gateway: GatewayProcess,
) -> None:
    """What Flash Player needs to start decoding: the AVC sequence header, then a
    keyframe; the AAC AudioSpecificConfig before the first AAC frame."""
    session = gateway.create_session()
    async with aiohttp.ClientSession() as http:
        post = wc.http_poster(http, session["advisor"]["whip_url"], session["advisor"]["token"])
        pc, status, _, body = await wc.publisher(post, "vp8")
        assert status == 201, body
        player = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
        try:
            await player.connect(
                "consult", session["customer"]["rtmp"]["connect_url"],
                session["customer"]["token"],
            )  # fmt: skip
            sid = await player.create_stream()
            player.play(sid, "advisor")
            await player.wait_for(
                lambda: (
                    sum(1 for e in player.media if e.type_id == 9) >= 5
                    and sum(1 for e in player.media if e.type_id == 8) >= 5
                ),
                timeout=20,
            )
            video = [e.payload for e in player.media if e.type_id == 9]
            audio = [e.payload for e in player.media if e.type_id == 8]
            assert video[0][:2] == b"\x17\x00"  # AVC sequence header (keyframe, type 0)
            assert video[1][:2] == b"\x17\x01"  # then a keyframe NALU
            assert audio[0][:2] == b"\xaf\x00"  # AAC sequence header
            assert all(a[:2] == b"\xaf\x01" for a in audio[1:])
        finally:
            await player.close()
            await wc.close_all(pc)

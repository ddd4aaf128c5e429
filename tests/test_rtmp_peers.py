"""End to end with real RTMP peers nobody here wrote: Debian's ffmpeg and rtmpdump.

The gateway runs as a subprocess (``python -m gateway serve``); each test creates its own
consultation through the HTTP API and uses the URLs it hands out, as a user would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
import time
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import analyse, ffmpeg_publish, make_flv
from tests.conftest import require_tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("ffmpeg")
    return tmp_path_factory.mktemp("media")


def _play_ffmpeg(
    url: str, out: Path, seconds: float, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *extra,
        "-i",
        url,
        "-t",
        str(seconds),
        "-c",
        "copy",
        "-f",
        "flv",
        str(out),
    ]
    return subprocess.run(cmd, capture_output=True, timeout=60)


def _finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


@pytest.mark.parametrize(
    ("profile", "vcodec", "acodec"),
    [
        ("spark_speex", "flv", "speex"),
        ("spark_nellymoser", "flv", "nellymoser"),
        ("h264_aac", "h264", "aac"),
    ],
)
def test_ffmpeg_publishes_and_ffmpeg_plays_back(
    gateway: GatewayProcess, media_dir: Path, profile: str, vcodec: str, acodec: str
) -> None:
    """What Flash Player 11's camera/microphone send goes through unchanged, decodable."""
    src = make_flv(media_dir / f"{profile}.flv", profile, seconds=8)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    try:
        time.sleep(1.5)  # join late: the player must start at the cached keyframe
        out = media_dir / f"{profile}-played.flv"
        # ffmpeg as a player validates the server's digest (S1 version byte >= 3).
        played = _play_ffmpeg(session["advisor"]["rtmp"]["play_url"], out, 4)
        assert played.returncode == 0, played.stderr.decode()
    finally:
        err = _finish(publisher)
    assert publisher.returncode == 0, err
    result = analyse(out)
    assert result.video_codec == vcodec
    assert result.audio_codec == acodec
    assert (result.width, result.height) == (320, 240)
    assert result.first_video_keyframe
    assert result.video_frames >= 40, result  # ~4 s at 15 fps
    assert not result.decode_errors
    assert result.audio_rms > 1000, result  # a sine, not silence


def test_consultation_reports_how_each_participant_is_connected(
    gateway: GatewayProcess, media_dir: Path
) -> None:
    src = make_flv(media_dir / "state.flv", "spark_speex", seconds=5)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    try:
        deadline = time.monotonic() + 10
        state = {}
        while time.monotonic() < deadline:
            state = gateway.get(f"/api/sessions/{session['id']}")
            if state["streams"]["customer"]["live"] and state["streams"]["customer"]["video_codec"]:
                break
            time.sleep(0.2)
        customer = state["participants"]["customer"]
        assert [c["kind"] for c in customer["connections"]] == ["rtmp"]
        assert state["streams"]["customer"]["video_codec"] == "spark"
        assert state["streams"]["customer"]["audio_codec"] == "speex"
    finally:
        publisher.kill()
        _finish(publisher)


@pytest.mark.parametrize("digest", [False, True], ids=["plain", "digest-validated"])
def test_rtmpdump_plays(gateway: GatewayProcess, media_dir: Path, digest: bool) -> None:
    """rtmpdump plays with the plain handshake, and with ``-w/-x`` (digest + validation)."""
    require_tool("rtmpdump")
    src = make_flv(media_dir / "dump.flv", "h264_aac", seconds=8)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["advisor"]["rtmp"]["publish_url"])
    out = media_dir / f"rtmpdump-{digest}.flv"
    try:
        gateway.wait_live(session["id"], "advisor")
        token = session["customer"]["token"]
        cmd = [
            "rtmpdump",
            "-q",
            "--live",
            "-r",
            f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult",
            "-y",
            f"advisor?token={token}",
            "-o",
            str(out),
            "-B",
            "3",
        ]
        if digest:
            # A SWF hash and size force librtmp's digest handshake and its check of our
            # digest ("Couldn't verify the server digest" otherwise).
            swf_hash = hashlib.sha256(b"videoberatung").hexdigest()
            cmd += ["-w", swf_hash, "-x", "12345"]
        done = subprocess.run(cmd, capture_output=True, timeout=60)
    finally:
        publisher.kill()
        _finish(publisher)
    assert b"verify" not in done.stderr, done.stderr
    result = analyse(out)
    assert result.video_codec == "h264"
    assert result.video_frames >= 25, (result, done.stderr)
    assert result.first_video_keyframe
    assert result.audio_rms > 1000


def test_two_participants_relay_both_ways(gateway: GatewayProcess, media_dir: Path) -> None:
    a_src = make_flv(media_dir / "a.flv", "spark_speex", seconds=8, size="320x240")
    b_src = make_flv(media_dir / "b.flv", "h264_aac", seconds=8, size="640x360")
    session = gateway.create_session()
    pub_c = ffmpeg_publish(a_src, session["customer"]["rtmp"]["publish_url"])
    pub_a = ffmpeg_publish(b_src, session["advisor"]["rtmp"]["publish_url"])
    out_a = media_dir / "advisor-sees.flv"
    out_c = media_dir / "customer-sees.flv"
    try:
        gateway.wait_live(session["id"], "customer")
        gateway.wait_live(session["id"], "advisor")
        players = [
            subprocess.Popen(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    url,
                    "-t",
                    "3",
                    "-c",
                    "copy",
                    "-f",
                    "flv",
                    str(out),
                ],
                stderr=subprocess.PIPE,
            )
            for url, out in (
                (session["advisor"]["rtmp"]["play_url"], out_a),
                (session["customer"]["rtmp"]["play_url"], out_c),
            )
        ]
        for p in players:
            assert p.wait(60) == 0, _finish(p)
    finally:
        for p in (pub_a, pub_c):
            p.kill()
            _finish(p)
    seen_by_advisor = analyse(out_a)
    seen_by_customer = analyse(out_c)
    assert (seen_by_advisor.video_codec, seen_by_advisor.width) == ("flv", 320)
    assert (seen_by_customer.video_codec, seen_by_customer.width) == ("h264", 640)
    assert (
        seen_by_advisor.video_frames >= 40 and seen_by_customer.video_frames >= 40
    )  # 3 s at 15 fps


def test_wrong_token_is_rejected_at_publish_and_play(
    gateway: GatewayProcess, media_dir: Path
) -> None:
    src = make_flv(media_dir / "wrong.flv", "spark_speex", seconds=2)
    session = gateway.create_session()
    bad = f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult/customer?token=not-a-token"
    pub = ffmpeg_publish(src, bad)
    err = _finish(pub)
    assert pub.returncode != 0
    played = _play_ffmpeg(
        f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult/advisor?token=nope", media_dir / "x.flv", 1
    )
    assert played.returncode != 0
    # the customer may not publish the advisor's name
    wrong_role = session["customer"]["rtmp"]["publish_url"].replace("/customer?", "/advisor?")
    pub = ffmpeg_publish(src, wrong_role)
    err = _finish(pub)
    assert pub.returncode != 0, err
    assert gateway.proc is not None and gateway.proc.poll() is None


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_ffmpeg_over_native_rtmps(tmp_path: Path, media_dir: Path) -> None:
    require_tool("openssl")
    cert, key = _self_signed(tmp_path)
    gw = GatewayProcess(tmp_path / "tls", extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    src = make_flv(media_dir / "tls.flv", "h264_aac", seconds=6)
    gw.start()
    try:
        session = gw.create_session()
        token_c = session["customer"]["token"]
        token_a = session["advisor"]["token"]
        pub_url = f"rtmps://127.0.0.1:{gw.rtmps_port}/consult/customer?token={token_c}"
        play_url = f"rtmps://127.0.0.1:{gw.rtmps_port}/consult/customer?token={token_a}"
        publisher = ffmpeg_publish(src, pub_url)
        try:
            time.sleep(1.5)
            out = tmp_path / "rtmps-played.flv"
            played = _play_ffmpeg(play_url, out, 2)
            assert played.returncode == 0, played.stderr.decode()
        finally:
            publisher.kill()
            _finish(publisher)
        result = analyse(out)
        assert result.video_codec == "h264" and result.video_frames >= 20
    finally:
        assert gw.stop() == 0, gw.log()


def test_server_digest_is_what_flash_validates() -> None:
    """Cross-check our S1/S2 against the formula written out independently here."""
    from rtmp.handshake import ClientHandshake, ServerHandshake

    server = ServerHandshake()
    client = ClientHandshake(digest=True, validate=True)
    c0c1 = client.data_to_send()
    client_c1 = c0c1[1:]
    server.receive_data(c0c1)
    s = server.data_to_send()
    s1, s2 = s[1:1537], s[1537:]
    assert s1[4] >= 3
    key = b"Genuine Adobe Flash Media Server 001"
    tail = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
    found = False
    for base, lo in ((772, 776), (8, 12)):
        off = lo + sum(s1[base : base + 4]) % 728
        digest = hmac.new(key, s1[:off] + s1[off + 32 :], hashlib.sha256).digest()
        found = found or digest == s1[off : off + 32]
    assert found
    client.receive_data(s)
    assert client.done and client.s1_digest_valid and client.s2_valid
    # S2 = 1504 random bytes + HMAC keyed by HMAC(full server key, C1 digest)
    c1 = client_c1
    c1_digest = None
    for base, lo in ((772, 776), (8, 12)):
        off = lo + sum(c1[base : base + 4]) % 728
        fp_key = b"Genuine Adobe Flash Player 001"
        if (
            hmac.new(fp_key, c1[:off] + c1[off + 32 :], hashlib.sha256).digest()
            == c1[off : off + 32]
        ):
            c1_digest = c1[off : off + 32]
    assert c1_digest is not None
    s2_key = hmac.new(key + tail, c1_digest, hashlib.sha256).digest()
    assert hmac.new(s2_key, s2[:1504], hashlib.sha256).digest() == s2[1504:]


async def test_ffmpeg_metadata_reaches_a_late_flash_player_first(
    gateway: GatewayProcess, media_dir: Path
) -> None:
    """ffmpeg sends @setDataFrame/onMetaData (Flash does not); a player gets it first."""
    from rtmp.client import RtmpClient

    src = make_flv(media_dir / "meta.flv", "h264_aac", seconds=6)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
    player = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
    try:
        await asyncio.to_thread(gateway.wait_live, session["id"], "customer")
        await player.connect(
            "consult", session["advisor"]["rtmp"]["connect_url"], session["advisor"]["token"]
        )
        sid = await player.create_stream()
        player.play(sid, "customer")
        await player.wait_for(lambda: len(player.media) >= 10)
        meta = [d for d in player.data if d.values and d.values[0] == "onMetaData"]
        assert meta and meta[0].values[1]["width"] == 320.0
        first_video = next(e for e in player.media if e.type_id == 9)
        first_audio = next(e for e in player.media if e.type_id == 8)
        assert first_video.payload[:2] == b"\x17\x00"  # AVC sequence header
        assert first_audio.payload[:2] == b"\xaf\x00"  # AudioSpecificConfig
    finally:
        await player.close()
        publisher.kill()
        _finish(publisher)


async def test_stuck_player_never_slows_the_publisher_or_other_players(
    tmp_path: Path, media_dir: Path
) -> None:
    """A player that stops reading loses frames (counted); everyone else is unaffected."""
    import socket

    from rtmp.client import RtmpClient

    gw = GatewayProcess(tmp_path, extra=["--limit", "player_buffer_bytes=65536"]).start()
    src = make_flv(
        media_dir / "stuck.flv", "h264_aac", seconds=6, size="640x360", video_bitrate="3M"
    )
    try:
        session = gw.create_session()
        token = session["advisor"]["token"]
        url = session["advisor"]["rtmp"]["connect_url"]
        # a small receive buffer set before connecting, so the kernel cannot hide the stall
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(raw, ("127.0.0.1", gw.rtmp_port))
        _, stuck = await loop.create_connection(RtmpClient, sock=raw)
        healthy = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
        for client in (stuck, healthy):
            await client.connect("consult", url, token)
            client.play(await client.create_stream(), "customer")
            await client.wait_status("NetStream.Play.Start")
        assert stuck.transport is not None
        stuck.transport.pause_reading()  # a player on a dead network
        t0 = time.monotonic()
        publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"])
        err = await asyncio.to_thread(_finish, publisher, 30)
        elapsed = time.monotonic() - t0
        assert publisher.returncode == 0, err
        assert elapsed < 9.0, "the publisher was held back by the stuck player"
        video = [e for e in healthy.media if e.type_id == 9]
        assert len(video) >= 85  # 6 s at 15 fps, minus start-up
        state = gw.get(f"/api/sessions/{session['id']}")
        assert state["streams"]["customer"]["dropped"] > 0, (state["streams"], stuck.bytes_received)
        await stuck.close()
        await healthy.close()
    finally:
        assert gw.stop() == 0

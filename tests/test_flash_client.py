"""What only Flash Player does, reproduced by our own client (rtmp.client.RtmpClient):
digest validation of S1 and S2, ``connect`` with objectEncoding 3 then AMF3 (type 17)
commands, 128-byte chunks, no metadata, the token as the first ``connect`` argument."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.testkit.gwproc import GatewayProcess, flash_client
from bench.testkit.media import FlvTag, analyse, ffmpeg_publish, make_flv, read_flv_tags
from rtmp import messages as m
from rtmp.client import RtmpClient
from tests.conftest import require_tool
from tests.test_rtmp_peers import _finish, _play_ffmpeg, _self_signed

pytestmark = pytest.mark.e2e

UMLAUT_TEXT = "Grüße aus Köln – 10 € 😀"


@pytest.fixture(scope="module")
def h264_tags(tmp_path_factory: pytest.TempPathFactory) -> list[FlvTag]:
    path = make_flv(tmp_path_factory.mktemp("flash") / "cam.flv", "h264_speex", seconds=3)
    return [t for t in read_flv_tags(path) if t.type_id in (8, 9)]


async def _publishing(client: RtmpClient, name: str = "customer") -> int:
    sid = await client.create_stream()
    client.publish(sid, name)
    await client.wait_status("NetStream.Publish.Start")
    return sid


async def _playing(client: RtmpClient, name: str = "customer") -> int:
    sid = await client.create_stream()
    client.play(sid, name)
    await client.wait_status("NetStream.Play.Start")
    return sid


async def test_flash_handshake_connect_and_amf3_commands(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    client = await flash_client(gateway, session["customer"]["token"])
    try:
        # ClientHandshake(validate=True) raises unless S1's digest and S2's HMAC check out.
        assert client.handshake is not None and client.handshake.digest
        assert client.conn.object_encoding == 3
        result = await client.call("createStream")
        assert result.amf3, "after objectEncoding 3 the server answers in AMF3 command messages"
        assert result.args and result.args[0] >= 1
    finally:
        await client.close()


async def test_flash_publishes_h264_without_metadata_and_flash_plays_it(
    gateway: GatewayProcess, h264_tags: list[FlvTag]
) -> None:
    session = gateway.create_session()
    customer = await flash_client(gateway, session["customer"]["token"])
    advisor = await flash_client(gateway, session["advisor"]["token"])
    try:
        sid = await _publishing(customer)
        assert customer.conn._writer.chunk_size == 128  # Flash keeps the default
        # Send the first second only, then let the advisor join late.
        start = [t for t in h264_tags if t.timestamp < 1000]
        rest = [t for t in h264_tags if t.timestamp >= 1000]
        for tag in start:
            customer.send_media(sid, tag.type_id, tag.timestamp, tag.body)
        await asyncio.to_thread(gateway.wait_live, session["id"], "customer")
        await _playing(advisor)
        for tag in rest:
            customer.send_media(sid, tag.type_id, tag.timestamp, tag.body)
        await advisor.wait_for(lambda: sum(1 for e in advisor.media if e.type_id == 9) >= 20)
        video = [e for e in advisor.media if e.type_id == 9]
        audio = [e for e in advisor.media if e.type_id == 8]
        # AVC sequence header first, then a keyframe (frame type 1)
        assert video[0].payload[0] == 0x17 and video[0].payload[1] == 0
        assert video[1].payload[0] >> 4 == 1 and video[1].payload[1] == 1
        assert audio and audio[0].payload[0] >> 4 == 11  # Speex, as Flash's microphone sends
        sample_access = [d.values for d in advisor.data if d.values[:1] == ["|RtmpSampleAccess"]]
        assert sample_access == [["|RtmpSampleAccess", True, True]]
        # relayed bytes are the publisher's bytes, in order, from the cached keyframe on
        sent = [t.body for t in h264_tags if t.type_id == 9]
        start_at = sent.index(video[1].payload)
        received = [e.payload for e in video[1:]]
        assert received == sent[start_at : start_at + len(received)]
    finally:
        await customer.close()
        await advisor.close()


async def test_chat_between_flash_clients_keeps_utf8(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    customer = await flash_client(gateway, session["customer"]["token"])
    advisor = await flash_client(gateway, session["advisor"]["token"])
    try:
        result = await customer.call("chat", UMLAUT_TEXT)
        assert not result.error
        call = await advisor.wait_for(
            lambda: next((c for c in advisor.calls if c.name == "onChat"), None)
        )
        assert call.args[0] == "customer"
        assert call.args[1] == UMLAUT_TEXT
        assert isinstance(call.args[2], float) and call.args[2] > 1.7e9
        # the sender does not get its own message echoed as a call: a later message of
        # the advisor is the barrier (the server handled the customer's chat first, so an
        # echo would have reached the customer before it)
        assert not (await advisor.call("chat", "Barriere")).error
        first = await customer.wait_for(
            lambda: next((c for c in customer.calls if c.name == "onChat"), None)
        )
        assert first.args[:2] == ["advisor", "Barriere"]
        too_long = await customer.call("chat", "x" * 5000)
        assert too_long.error
    finally:
        await customer.close()
        await advisor.close()


async def test_wrong_token_at_connect_is_rejected(gateway: GatewayProcess) -> None:
    client = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
    try:
        result = await client.connect(
            "consult", f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult", "wrong-token"
        )
        assert result.error
        assert result.args[0]["code"] == "NetConnection.Connect.Rejected"
        assert "token" in result.args[0]["description"]
        await asyncio.wait_for(client.closed.wait(), 5)
    finally:
        await client.close()


async def test_connect_without_token_then_publish_other_role_is_bad_name(
    gateway: GatewayProcess,
) -> None:
    session = gateway.create_session()
    client = await flash_client(gateway, None)
    try:
        sid = await client.create_stream()
        client.publish(sid, f"advisor?token={session['customer']['token']}")
        status = await client.wait_status("NetStream.Publish.BadName")
        assert status["level"] == "error"
        await asyncio.wait_for(client.closed.wait(), 5)
    finally:
        await client.close()


async def test_play_with_wrong_token_fails(gateway: GatewayProcess) -> None:
    client = await flash_client(gateway, None)
    try:
        sid = await client.create_stream()
        client.play(sid, "customer?token=bogus")
        await client.wait_status("NetStream.Play.Failed")
    finally:
        await client.close()


def _type0_chunks(csid: int, type_id: int, stream_id: int, ts: int, payload: bytes) -> bytes:
    """A message as type-0 chunks with an absolute extended timestamp, written out by hand
    (RTMP spec 5.3.1): the extended field repeats on every type-3 continuation chunk."""
    ext = ts >= 0xFFFFFF
    header = bytes([csid]) + (min(ts, 0xFFFFFF)).to_bytes(3, "big")
    header += len(payload).to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", stream_id)
    if ext:
        header += struct.pack(">I", ts)
    out = bytearray(header)
    for i in range(0, len(payload), 128):
        if i:
            out.append(0xC0 | csid)
            if ext:
                out += struct.pack(">I", ts)
        out += payload[i : i + 128]
    return bytes(out)


async def test_timestamps_cross_24_bits_and_wrap_at_32(
    gateway: GatewayProcess, h264_tags: list[FlvTag]
) -> None:
    session = gateway.create_session()
    customer = await flash_client(gateway, session["customer"]["token"])
    advisor = await flash_client(gateway, session["advisor"]["token"])
    try:
        sid = await _publishing(customer)
        await _playing(advisor)
        video = [t for t in h264_tags if t.type_id == 9]
        header = video[0]
        assert header.body[1] == 0
        frames = [t for t in video if t.body[1] == 1][:4]
        assert frames[0].body[0] >> 4 == 1  # a keyframe first
        # start just below 2^24, pass 2^32 (4.66 h ... 49.7 days of session clock)
        base_values = [0xFFFFF0, 0xFFFFFF, 0x1000000, 0xFFFFFFF0 - 40]
        customer.write_raw(_type0_chunks(6, 9, sid, base_values[0], header.body))
        sent: list[int] = []
        for base in base_values:
            for i, tag in enumerate(frames):
                ts = (base + i * 66) & 0xFFFFFFFF
                sent.append(ts)
                customer.write_raw(_type0_chunks(6, 9, sid, ts, tag.body))
        await advisor.wait_for(
            lambda: (
                sum(1 for e in advisor.media if e.type_id == 9 and e.payload[1] == 1) >= len(sent)
            ),
            timeout=10,
        )
        got = [e.timestamp for e in advisor.media if e.type_id == 9 and e.payload[1] == 1]
        assert got == sent
        assert max(sent) >= 0xFFFFFFF0 - 40 and min(sent[-4:]) < 0x1000  # really wrapped
    finally:
        await customer.close()
        await advisor.close()


async def test_ping_is_answered_and_acknowledgements_follow_the_window(
    gateway: GatewayProcess,
) -> None:
    session = gateway.create_session()
    client = await flash_client(gateway, session["customer"]["token"])
    try:
        # the server told us its window: a peer acknowledging by window size is expected
        assert client.conn.peer_window == 2_500_000
        client.send_raw(m.user_control(m.UC_PING_REQUEST, 12345))
        pong = await client.wait_for(lambda: client.conn.bytes_received > 0 and client.pings)
        assert pong == [12345]
    finally:
        await client.close()


async def test_chat_between_flash_client_and_events_websocket(gateway: GatewayProcess) -> None:
    """„Grüße aus Köln – 10 €“ intact both ways between RTMP and the events WebSocket."""
    import aiohttp

    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(session["advisor"]["events_url"]) as ws,
        ):
            await ws.send_json({"type": "chat", "text": UMLAUT_TEXT})
            call = await flash.wait_for(
                lambda: next((c for c in flash.calls if c.name == "onChat"), None)
            )
            assert call.args[:2] == ["advisor", UMLAUT_TEXT]
            result = await flash.call("chat", "Danke, " + UMLAUT_TEXT)
            assert not result.error
            async with asyncio.timeout(5):
                async for msg in ws:
                    event = msg.json()
                    if event.get("type") == "chat" and event["from"] == "customer":
                        assert event["text"] == "Danke, " + UMLAUT_TEXT
                        break
            # the Flash side hears about participants through onSessionEvent
            events = [c.args[0] for c in flash.calls if c.name == "onSessionEvent"]
            assert any(
                e.get("type") == "participant" and e.get("role") == "advisor" for e in events
            )
    finally:
        await flash.close()


async def test_ending_the_consultation_tells_flash_and_closes(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    try:
        status, _, _ = await asyncio.to_thread(
            gateway.request, "DELETE", f"/api/sessions/{session['id']}"
        )
        assert status == 204
        await asyncio.wait_for(flash.closed.wait(), 5)
        ended = [
            c.args[0]
            for c in flash.calls
            if c.name == "onSessionEvent" and c.args[0].get("type") == "session_ended"
        ]
        assert ended
    finally:
        await flash.close()


async def test_reconnecting_publisher_takes_over_and_the_stale_one_is_closed(
    gateway: GatewayProcess, h264_tags: list[FlvTag]
) -> None:
    session = gateway.create_session()
    token = session["customer"]["token"]
    stale = await flash_client(gateway, token)
    fresh = await flash_client(gateway, token)
    try:
        await _publishing(stale)
        sid2 = await _publishing(fresh)
        status = await stale.wait_status("NetStream.Publish.BadName")
        assert "another connection" in status["description"]
        # told why, so the older client stands down instead of taking the stream back
        assert status["reason"] == "replaced"
        await asyncio.wait_for(stale.closed.wait(), 5)
        state = await asyncio.to_thread(gateway.get, f"/api/sessions/{session['id']}")
        assert state["streams"]["customer"]["live"]
        # the new connection's media flows to a player
        player = await flash_client(gateway, session["advisor"]["token"])
        await _playing(player)
        for tag in h264_tags[:40]:
            fresh.send_media(sid2, tag.type_id, tag.timestamp, tag.body)
        await player.wait_for(lambda: any(e.type_id == 9 for e in player.media))
        await player.close()
    finally:
        await stale.close()
        await fresh.close()


async def test_session_state_says_how_each_participant_is_connected(
    gateway: GatewayProcess,
) -> None:
    import aiohttp

    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(session["advisor"]["events_url"]) as ws,
        ):
            await ws.receive_json()  # the socket is attached once it has spoken
            state = await asyncio.to_thread(gateway.get, f"/api/sessions/{session['id']}")
            assert state["participants"]["customer"]["via"] == ["rtmp"]
            assert state["participants"]["advisor"]["via"] == ["chat-only"]
    finally:
        await flash.close()


# -- under TLS the token travels encrypted only (issue 18), and the TLS floor (issue 12) ---------


def _listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on: its socket inodes matched in /proc/net/tcp{,6}
    (state 0A = LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _tls1_handshake(port: int) -> bool:
    """Whether an OpenSSL client that offers only TLS 1.0 (a Flash Player 11 era system,
    e.g. Windows 7 without updates) completes a handshake. The client lowers its own
    security level: Debian's OpenSSL refuses TLS 1.0 on the client side too."""
    result = subprocess.run(
        [
            require_tool("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-tls1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    out = result.stdout.decode(errors="replace")
    return result.returncode == 0 and "Protocol  : TLSv1\n" in out and "Cipher is (NONE)" not in out


def _urls(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [u for v in doc.values() for u in _urls(v)]
    return [doc] if isinstance(doc, str) and "://" in doc else []


def test_under_tls_the_api_hands_out_only_encrypted_urls_and_ffmpeg_uses_them(
    tmp_path: Path,
) -> None:
    require_tool("ffmpeg")
    cert, key = _self_signed(tmp_path)
    gw = GatewayProcess(tmp_path / "tls", extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    src = make_flv(tmp_path / "cam.flv", "spark_speex", seconds=6)
    gw.start()
    try:
        session = gw.create_session()
        urls = _urls(session)
        assert urls and all(urlsplit(u).scheme in ("https", "wss", "rtmps") for u in urls), urls
        customer, advisor = session["customer"]["rtmp"], session["advisor"]["rtmp"]
        assert customer["connect_url"] == f"rtmps://127.0.0.1:{gw.rtmps_port}/consult"
        # exactly as the API returns them
        publisher = ffmpeg_publish(src, customer["publish_url"])
        try:
            time.sleep(1.5)
            out = tmp_path / "played.flv"
            played = _play_ffmpeg(advisor["play_url"], out, 2)
            assert played.returncode == 0, played.stderr.decode()
        finally:
            publisher.kill()
            _finish(publisher)
        result = analyse(out)
        assert result.video_codec == "flv" and result.video_frames >= 20, result
        # TLS 1.2 at least by default, on the RTMPS port and the HTTPS/RTMPTS port
        assert not _tls1_handshake(gw.rtmps_port)
        assert not _tls1_handshake(gw.http_port)
    finally:
        assert gw.stop() == 0, gw.log()
    assert "Traceback" not in gw.log()


def test_plain_rtmp_off_and_tls_1_0_admitted_when_the_operator_says_so(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    gw = GatewayProcess(
        tmp_path / "tls",
        extra=[
            *("--tls-cert", str(cert), "--tls-key", str(key)),
            *("--rtmp-port", "0", "--tls-min-version", "1.0"),
        ],
    )
    plain = gw.rtmp_port
    gw.rtmp_port = gw.rtmps_port  # GatewayProcess waits for this port; --rtmp-port 0 wins
    gw.start()
    try:
        assert gw.proc is not None
        ports = _listening_ports(gw.proc.pid)
        assert ports == {gw.http_port, gw.rtmps_port}, (ports, plain)
        session = gw.create_session()
        assert not [u for u in _urls(session) if u.startswith(("rtmp:", "http:", "ws:"))]
        assert _tls1_handshake(gw.rtmps_port)
        assert _tls1_handshake(gw.http_port)
    finally:
        assert gw.stop() == 0, gw.log()


# -- the SWF's upload: FileReference.upload() with a one-time ticket (issue 10 item 1) -----------


def _flash_multipart(name: str, data: bytes) -> Any:
    """The body Flash Player's ``FileReference.upload(request, "Filedata")`` sends: the
    file name, the file in ``Filedata``, then ``Upload=Submit Query`` (no header of ours)."""
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("Filename", name)
    form.add_field("Filedata", data, filename=name, content_type="application/octet-stream")
    form.add_field("Upload", "Submit Query")
    return form


async def test_flash_uploads_with_a_one_time_ticket(gateway: GatewayProcess) -> None:
    import aiohttp

    session = gateway.create_session()
    flash = await flash_client(gateway, session["customer"]["token"])
    pdf = b"%PDF-1.4\n% Kontoauszug\n" + b"0" * 2000 + b"\n%%EOF\n"
    try:
        result = await flash.call("uploadUrl")
        assert not result.error, result
        answer = result.args[0]
        assert answer["max_bytes"] == 20 * 1024 * 1024 and answer["expires_in"] == 120
        url = answer["url"]
        assert url.startswith(f"{gateway.base}/api/sessions/{session['id']}/documents/")
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=_flash_multipart("Auszug März.pdf", pdf)) as resp:
                assert resp.status == 200, await resp.text()  # Flash wants 200, not 201
                doc = await resp.json()
            assert doc["name"] == "Auszug März.pdf" and doc["size"] == len(pdf)
            # the advisor's list and the Flash client's own event
            event = await flash.wait_for(
                lambda: next(
                    (
                        c.args[0]
                        for c in flash.calls
                        if c.name == "onSessionEvent" and c.args[0].get("type") == "document"
                    ),
                    None,
                )
            )
            assert event["id"] == doc["id"] and event["url"].startswith(gateway.base)
            # one upload per ticket
            async with http.post(url, data=_flash_multipart("b.pdf", pdf)) as resp:
                assert resp.status == 403
                assert "abgelaufen" not in await resp.text()  # problem+json, English detail
            # the limits and their statuses, each with a fresh ticket
            fresh = (await flash.call("uploadUrl")).args[0]["url"]
            async with http.post(fresh, data=_flash_multipart("x.exe", b"MZ" + b"\0" * 500)) as r:
                assert r.status == 415
            # no ticket, or another consultation's: refused
            other = gateway.create_session()
            unused = (await flash.call("uploadUrl")).args[0]["url"]
            wrong = unused.replace(session["id"], other["id"])
            async with http.post(wrong, data=_flash_multipart("a.pdf", pdf)) as resp:
                assert resp.status == 403
            bare = url.split("?", 1)[0]
            async with http.post(bare, data=_flash_multipart("a.pdf", pdf)) as resp:
                assert resp.status == 403
        docs = await asyncio.to_thread(gateway.get, f"/api/sessions/{session['id']}/documents")
        assert [d["id"] for d in docs] == [doc["id"]]
    finally:
        await flash.close()
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize(
    ("tls", "extra", "scheme"),
    [
        (False, ["--rtmp-port", "0"], "rtmpt"),  # plain RTMP off: the tunnel on the web port
        (True, ["--rtmps-port", "0"], "rtmpts"),  # no native RTMPS: the tunnel over HTTPS
    ],
    ids=["rtmp-off", "rtmps-off"],
)
def test_without_native_rtmp_the_api_hands_out_working_tunnel_urls(
    tmp_path: Path, tls: bool, extra: list[str], scheme: str
) -> None:
    require_tool("ffmpeg")
    args = list(extra)
    if tls:
        cert, key = _self_signed(tmp_path)
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    gw = GatewayProcess(tmp_path / "gw", extra=args)
    if not tls:
        gw.rtmp_port = gw.http_port  # GatewayProcess waits for this port; --rtmp-port 0 wins
    src = make_flv(tmp_path / "cam.flv", "spark_speex", seconds=6)
    gw.start()
    try:
        session = gw.create_session()
        customer, advisor = session["customer"]["rtmp"], session["advisor"]["rtmp"]
        assert customer["connect_url"] == f"{scheme}://127.0.0.1:{gw.http_port}/consult"
        publisher = ffmpeg_publish(src, customer["publish_url"])
        try:
            time.sleep(2.0)
            out = tmp_path / "played.flv"
            played = _play_ffmpeg(advisor["play_url"], out, 2)
            assert played.returncode == 0, played.stderr.decode()
        finally:
            publisher.kill()
            _finish(publisher)
        assert analyse(out).video_frames >= 15
    finally:
        assert gw.stop() == 0, gw.log()
    assert "Traceback" not in gw.log()

"""What only Flash Player does, reproduced by our own client (rtmp.client.RtmpClient):
digest validation of S1 and S2, ``connect`` with objectEncoding 3 then AMF3 (type 17)
commands, 128-byte chunks, no metadata, the token as the first ``connect`` argument."""

from __future__ import annotations

import asyncio
import struct

import pytest

from rtmp import messages as m
from rtmp.client import RtmpClient
from tests.gwproc import GatewayProcess, flash_client
from tests.media import FlvTag, make_flv, read_flv_tags

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

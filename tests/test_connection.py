"""rtmp.connection.RtmpConnection without sockets: a client and a server connection
moving bytes between each other, and hand-made chunks fed straight into a server.

What the core must do on its own (spec 5.4: acknowledgements, window sizes, ping
responses) is checked on the raw bytes with a separate ChunkReader; what it leaves to
its user shows up as events.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rtmp import messages as m
from rtmp.amf import encode_command_payload
from rtmp.chunk import ChunkReader
from rtmp.chunk_writer import ChunkWriter
from rtmp.connection import RtmpConnection
from rtmp.events import (
    CommandReceived,
    HandshakeCompleted,
    MediaReceived,
    PingResponse,
    ProtocolViolation,
    ResultReceived,
    RtmpEvent,
    SharedObjectReceived,
    UserControlReceived,
)
from rtmp.messages import Message
from tests.fuzzing import examples

HANDSHAKE_C0C1 = 1 + 1536
HANDSHAKE_C2 = 1536

# --- helpers ------------------------------------------------------------------------


def seeded(seed: int) -> Callable[[int], bytes]:
    """A deterministic rng for the handshake, so two runs produce the same bytes."""
    return random.Random(seed).randbytes


def client_server(seed: int = 1) -> tuple[RtmpConnection, RtmpConnection]:
    client = RtmpConnection(is_client=True, rng=seeded(seed))
    server = RtmpConnection(rng=seeded(seed + 1000))
    return client, server


def pump(a: RtmpConnection, b: RtmpConnection, max_rounds: int = 50) -> None:
    """Move bytes both ways until neither side has anything to send."""
    for _ in range(max_rounds):
        ab = a.data_to_send()
        if ab:
            b.receive_data(ab)
        ba = b.data_to_send()
        if ba:
            a.receive_data(ba)
        if not ab and not ba:
            return
    raise AssertionError("the connections never went quiet")


def handshaken(seed: int = 1) -> tuple[RtmpConnection, RtmpConnection]:
    """A client and a server past the handshake, their handshake events consumed."""
    client, server = client_server(seed)
    pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert [type(e) for e in client.events()] == [HandshakeCompleted]
    assert [type(e) for e in server.events()] == [HandshakeCompleted]
    return client, server


def connected(seed: int = 1) -> tuple[RtmpConnection, RtmpConnection]:
    """A client whose AMF3 ``connect`` the server accepted; all events consumed."""
    client, server = handshaken(seed)
    client.connect("consult", "rtmp://127.0.0.1/consult")
    pump(client, server)
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived) and cmd.name == "connect"
    server.accept_connect(cmd.transaction_id, 3)
    pump(client, server)
    (result,) = client.events()
    assert isinstance(result, ResultReceived) and not result.error
    return client, server


def chunk0(csid: int, type_id: int, payload: bytes, stream_id: int = 0, ts: int = 0) -> bytes:
    """One type-0 chunk carrying a whole message (payload at most 128 bytes)."""
    assert len(payload) <= 128
    return (
        bytes([csid])
        + ts.to_bytes(3, "big")
        + len(payload).to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
        + payload
    )


def flv_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    """An aggregate sub-message: FLV tag header, body, back pointer (spec 7.1.6)."""
    header = (
        bytes([type_id])
        + len(body).to_bytes(3, "big")
        + (timestamp & 0xFFFFFF).to_bytes(3, "big")
        + bytes([timestamp >> 24])
        + b"\x00\x00\x00"
    )
    return header + body + (11 + len(body)).to_bytes(4, "big")


def shared_object(name: bytes, events: list[tuple[int, bytes]]) -> bytes:
    """Shared object message body (spec 7.1.3): name, version, flags, reserved, events."""
    body = len(name).to_bytes(2, "big") + name + bytes(12)
    for ev_type, data in events:
        body += bytes([ev_type]) + len(data).to_bytes(4, "big") + data
    return body


def violations(events: list[RtmpEvent]) -> list[ProtocolViolation]:
    return [e for e in events if isinstance(e, ProtocolViolation)]


# --- handshake and connect -------------------------------------------------------------


def test_connect_queued_during_handshake_is_sent_right_after_c2() -> None:
    client, server = client_server()
    client.connect("consult", "rtmp://127.0.0.1/consult", "TOKEN")

    c0c1 = client.data_to_send()
    assert len(c0c1) == HANDSHAKE_C0C1, "connect must be held while the handshake runs"
    server.receive_data(c0c1)
    s0s1s2 = server.data_to_send()
    assert len(s0s1s2) == 1 + 2 * 1536
    client.receive_data(s0s1s2)

    after = client.data_to_send()
    assert len(after) > HANDSHAKE_C2, "the held connect follows C2 at once"
    (msg,) = ChunkReader().feed(after[HANDSHAKE_C2:])
    assert msg.type_id == m.COMMAND_AMF0 and msg.stream_id == 0

    server.receive_data(after)
    hs, cmd = server.events()
    assert isinstance(hs, HandshakeCompleted) and hs.digest
    assert isinstance(cmd, CommandReceived)
    assert cmd.name == "connect" and cmd.transaction_id == 1.0 and not cmd.amf3
    assert cmd.command_object["app"] == "consult"
    assert cmd.command_object["objectEncoding"] == 3.0
    assert cmd.args == ["TOKEN"]
    (client_hs,) = client.events()
    assert isinstance(client_hs, HandshakeCompleted) and client_hs.digest


def test_accept_connect_sends_window_bandwidth_chunk_size_then_amf0_result() -> None:
    client, server = handshaken()
    client.connect("consult", "rtmp://127.0.0.1/consult")
    pump(client, server)
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived)

    server.accept_connect(cmd.transaction_id, 3)
    raw = server.data_to_send()
    wack, bw, chunk_size, result = ChunkReader().feed(raw)
    assert (wack.type_id, m.parse_u32(wack.payload)) == (m.WINDOW_ACK_SIZE, 2_500_000)
    assert bw.type_id == m.SET_PEER_BANDWIDTH
    assert m.parse_set_peer_bandwidth(bw.payload) == (2_500_000, 2)
    assert (chunk_size.type_id, m.parse_u32(chunk_size.payload)) == (m.SET_CHUNK_SIZE, 4096)
    assert result.type_id == m.COMMAND_AMF0, "the connect answer is AMF0 even for AMF3 clients"

    client.receive_data(raw)
    (res,) = client.events()
    assert isinstance(res, ResultReceived)
    assert not res.error and res.transaction_id == 1.0 and not res.amf3
    assert res.command_object["fmsVer"].startswith("FMS/")
    info = res.args[0]
    assert info["code"] == "NetConnection.Connect.Success"
    assert info["objectEncoding"] == 3.0
    assert client.peer_window == 2_500_000


def test_commands_after_amf3_connect_travel_as_type_17_both_ways() -> None:
    client, server = connected()
    tid = client.call("createStream")
    server.receive_data(client.data_to_send())
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived)
    # amf3 is set only for message type 17 (COMMAND_AMF3)
    assert (cmd.name, cmd.transaction_id, cmd.amf3) == ("createStream", tid, True)

    server.send_result(tid, None, 1.0)
    pump(client, server)
    (res,) = client.events()
    assert isinstance(res, ResultReceived)
    assert res.amf3 and res.transaction_id == tid and res.args == [1.0]


def test_server_uses_4096_byte_chunks_after_accepting_connect() -> None:
    client, server = connected()
    frame = bytes(range(256)) * 20  # 5120 bytes
    server.send_media(1, m.VIDEO, 40, frame)
    raw = server.data_to_send()
    # one 12-byte type-0 header, one 1-byte continuation header: two chunks, not 41
    assert len(raw) == 12 + len(frame) + 1
    client.receive_data(raw)
    assert client.events() == [MediaReceived(1, m.VIDEO, 40, frame)]


def test_reject_connect_is_an_error_with_the_description() -> None:
    client, server = handshaken()
    client.connect("consult", "rtmp://127.0.0.1/consult", "bad")
    pump(client, server)
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived)
    server.reject_connect(cmd.transaction_id, "Invalid token.")
    pump(client, server)
    (res,) = client.events()
    assert isinstance(res, ResultReceived) and res.error
    assert res.args[0]["code"] == "NetConnection.Connect.Rejected"
    assert res.args[0]["description"] == "Invalid token."


# --- what the core answers by itself -----------------------------------------------------


def test_ping_request_is_answered_automatically() -> None:
    client, server = connected()
    server.ping(123_456)
    raw = server.data_to_send()
    client.receive_data(raw)
    assert client.events() == [], "the client answers pings without bothering its user"
    answer = client.data_to_send()
    assert answer, "a ping request must be answered"
    server.receive_data(answer)
    assert server.events() == [PingResponse(123_456)]


def test_other_user_control_events_reach_the_user() -> None:
    client, server = connected()
    server.stream_begin(1)
    server.stream_eof(1)
    pump(client, server)
    assert client.events() == [
        UserControlReceived(m.UC_STREAM_BEGIN, (1,)),
        UserControlReceived(m.UC_STREAM_EOF, (1,)),
    ]


def test_window_ack_size_makes_the_receiver_acknowledge_exactly_once_per_window() -> None:
    client, server = handshaken()
    window = 10_000
    client.send(m.window_ack_size(window))
    pump(client, server)
    assert server.peer_window == window
    assert server.bytes_received < window

    # The server has sent nothing on chunk stream 2 yet, so a fresh reader can parse it.
    tap = ChunkReader()
    acks: list[int] = []
    received_at_ack: list[int] = []
    sent_at_ack: list[int] = []
    frame = bytes(700)
    for i in range(40):  # ~30 kB in 700-byte audio messages: three windows
        client.send_media(1, m.AUDIO, i * 20, frame)
        data = client.data_to_send()
        before = server.bytes_received
        server.receive_data(data)
        assert server.bytes_received == before + len(data)
        for msg in tap.feed(server.data_to_send()):
            assert msg.type_id == m.ACK
            acks.append(m.parse_u32(msg.payload))
            received_at_ack.append(server.bytes_received)
            sent_at_ack.append(client.bytes_sent)
        if i == 0:
            assert acks == [], "no acknowledgement before a window's worth of bytes"
    assert len(server.events()) == 40

    assert len(acks) == client.bytes_sent // window
    # the sequence number is the byte count so far, handshake included (5.4.3)
    assert acks == received_at_ack == sent_at_ack
    previous = 0
    for seq in acks:
        assert window <= seq - previous < window + 1000  # one per window, not per message
        previous = seq


def test_set_peer_bandwidth_with_another_size_is_answered_with_window_ack_size() -> None:
    client, server = handshaken()
    client.send(m.set_peer_bandwidth(1_000_000, 2))
    server.receive_data(client.data_to_send())
    (answer,) = ChunkReader().feed(server.data_to_send())
    assert answer.type_id == m.WINDOW_ACK_SIZE
    assert m.parse_u32(answer.payload) == 1_000_000
    assert server.window_ack_size == 1_000_000
    assert server.events() == []


def test_set_peer_bandwidth_with_the_same_size_needs_no_answer() -> None:
    client, server = handshaken()
    client.send(m.set_peer_bandwidth(server.window_ack_size, 1))
    server.receive_data(client.data_to_send())
    assert server.data_to_send() == b""
    assert server.events() == []


# --- message types -----------------------------------------------------------------------


def test_aggregate_message_yields_each_sub_message_with_rebased_timestamps() -> None:
    client, server = handshaken()
    audio = b"\xaf\x01" + b"A" * 10
    video = b"\x17\x01\x00\x00\x00" + b"V" * 20
    body = flv_tag(m.AUDIO, 50, audio) + flv_tag(m.VIDEO, 90, video)
    client.send(Message(m.AGGREGATE, 1, 1000, body, 6))
    pump(client, server)
    assert server.events() == [
        MediaReceived(1, m.AUDIO, 1000, audio),  # the first sub-message takes the aggregate's
        MediaReceived(1, m.VIDEO, 1040, video),  # the others keep their distance to it
    ]
    assert not server.closed


def test_aggregate_with_a_truncated_sub_message_is_a_violation() -> None:
    client, server = handshaken()
    body = flv_tag(m.AUDIO, 0, b"\xaf\x01xyz")[:-6]
    client.send(Message(m.AGGREGATE, 1, 0, body, 6))
    pump(client, server)
    assert len(violations(server.events())) == 1
    assert server.closed


def test_shared_object_message_is_parsed_into_name_and_events() -> None:
    client, server = handshaken()
    name = "chat.öffentlich".encode()
    events = [(1, b""), (3, b"\x00\x03key\x02\x00\x01v")]
    client.send(Message(m.SHARED_OBJECT_AMF0, 0, 0, shared_object(name, events), 3))
    pump(client, server)
    assert server.events() == [SharedObjectReceived(0, False, "chat.öffentlich", events)]
    assert not server.closed


def test_amf3_shared_object_message_skips_the_format_byte() -> None:
    client, server = handshaken()
    body = b"\x00" + shared_object(b"so", [(2, b"")])
    client.send(Message(m.SHARED_OBJECT_AMF3, 0, 0, body, 3))
    pump(client, server)
    assert server.events() == [SharedObjectReceived(0, True, "so", [(2, b"")])]


def test_truncated_shared_object_message_is_a_violation_and_closes() -> None:
    client, server = handshaken()
    body = shared_object(b"lobby", [])[:-5]  # name fine, header fields cut short
    client.send(Message(m.SHARED_OBJECT_AMF0, 0, 0, body, 3))
    pump(client, server)
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation)
    assert "shared object" in violation.reason
    assert server.closed and server.close_reason == violation.reason


def test_shared_object_event_longer_than_its_message_is_a_violation() -> None:
    client, server = handshaken()
    body = shared_object(b"lobby", []) + b"\x03\x00\x00\x10\x00" + b"short"
    client.send(Message(m.SHARED_OBJECT_AMF0, 0, 0, body, 3))
    pump(client, server)
    assert len(violations(server.events())) == 1 and server.closed


def test_unknown_message_type_is_a_violation_and_closes() -> None:
    _client, server = handshaken()
    server.receive_data(chunk0(3, 0x42, b"\x00\x01"))
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation)
    assert "66" in violation.reason
    assert server.closed
    # a closed connection ignores everything after
    server.receive_data(chunk0(2, m.USER_CONTROL, struct.pack(">HI", m.UC_PING_REQUEST, 1)))
    assert server.events() == [] and server.data_to_send() == b""


def test_window_ack_size_zero_is_a_violation() -> None:
    _client, server = handshaken()
    server.receive_data(chunk0(2, m.WINDOW_ACK_SIZE, b"\x00\x00\x00\x00"))
    assert len(violations(server.events())) == 1 and server.closed


def test_bad_handshake_version_is_a_violation_not_an_exception() -> None:
    server = RtmpConnection()
    server.receive_data(b"\x16\x03\x01" + bytes(600))  # a TLS ClientHello
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation) and "TLS" in violation.reason
    assert server.closed


# --- split invariance and fuzzing ----------------------------------------------------------


def client_opening(seed: int) -> tuple[bytes, list[RtmpEvent]]:
    """Everything a client sends to open a publishing session, and the server's events."""
    client, server = client_server(seed)
    sent = bytearray()
    client.connect("consult?token=abc", "rtmp://127.0.0.1/consult?token=abc", "abc")

    def to_server() -> None:
        data = client.data_to_send()
        sent.extend(data)
        server.receive_data(data)

    to_server()
    client.receive_data(server.data_to_send())
    to_server()
    tid = client.call("createStream")
    client.send_command(1, "publish", 0.0, None, "customer", "live", csid=8)
    client.send_data(1, ["@setDataFrame", "onMetaData", {"width": 320.0, "encoder": "Lavf"}])
    client.send_media(1, m.VIDEO, 0, b"\x17\x00\x00\x00\x00" + bytes(300))  # over 128 bytes
    client.send_media(1, m.AUDIO, 0, b"\xaf\x00\x12\x10")
    client.send(m.user_control(m.UC_SET_BUFFER_LENGTH, 1, 3000))
    client.send(m.set_chunk_size(60))
    client.send_media(1, m.VIDEO, 40, b"\x17\x01\x00\x00\x00" + bytes(250))
    client.send(m.user_control(m.UC_PING_RESPONSE, 7))
    to_server()
    assert tid == 2.0
    events = server.events()
    assert not violations(events)
    return bytes(sent), events


def test_bytes_split_at_every_offset_give_the_same_events() -> None:
    opening, expected = client_opening(seed=7)
    assert [type(e).__name__ for e in expected] == [
        "HandshakeCompleted",
        "CommandReceived",  # connect
        "CommandReceived",  # createStream
        "CommandReceived",  # publish
        "DataReceived",
        "MediaReceived",
        "MediaReceived",
        "UserControlReceived",
        "MediaReceived",
        "PingResponse",
    ]

    # one byte at a time: every chunk and handshake boundary falls between two calls
    server = RtmpConnection(rng=seeded(7 + 1000))
    got: list[RtmpEvent] = []
    for i in range(len(opening)):
        server.receive_data(opening[i : i + 1])
        got.extend(server.events())
    assert got == expected
    assert server.bytes_received == len(opening)

    # and two pieces, cut at every offset (inside C1, at C2, in every chunk header)
    assert len(opening) > HANDSHAKE_C0C1 + HANDSHAKE_C2 + 500
    for cut in range(1, len(opening)):
        server = RtmpConnection(rng=seeded(7 + 1000))
        server.receive_data(opening[:cut])
        server.receive_data(opening[cut:])
        assert server.events() == expected, f"cut at {cut}"


_amf_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _plausible_payload(draw: st.DrawFn, type_id: int) -> bytes:
    """A payload of the right shape for ``type_id`` (so parsing gets past the first bytes)."""
    if type_id in (m.ABORT, m.ACK, m.WINDOW_ACK_SIZE):
        return draw(st.binary(min_size=4, max_size=4))
    if type_id == m.SET_PEER_BANDWIDTH:
        return draw(st.binary(min_size=4, max_size=4)) + bytes([draw(st.integers(0, 3))])
    if type_id == m.USER_CONTROL:
        ev = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 31, 32]))
        fields = draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=2))
        return struct.pack(f">H{len(fields)}I", ev, *fields)
    if type_id in (m.COMMAND_AMF0, m.COMMAND_AMF3, m.DATA_AMF0, m.DATA_AMF3):
        command = draw(st.sampled_from(["connect", "_result", "_error", "onStatus", "x", ""]))
        tid = draw(st.one_of(st.floats(), st.text(max_size=3)))
        values: list[Any] = [command, tid, *draw(st.lists(_amf_values, max_size=3))]
        return encode_command_payload(values, type_id in (m.COMMAND_AMF3, m.DATA_AMF3))
    if type_id in (m.SHARED_OBJECT_AMF0, m.SHARED_OBJECT_AMF3):
        so_name = draw(st.binary(max_size=8))
        events = draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=8)), max_size=3))
        return shared_object(so_name, events)
    if type_id == m.AGGREGATE:
        subs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([m.AUDIO, m.VIDEO, m.DATA_AMF0, m.AGGREGATE, m.ACK, 0x42]),
                    st.integers(0, 0xFFFFFFFF),
                    st.binary(max_size=20),
                ),
                max_size=3,
            )
        )
        return b"".join(flv_tag(t, ts, body) for t, ts, body in subs)
    return draw(st.binary(max_size=300))


@st.composite
def _message(draw: st.DrawFn) -> Message:
    if draw(st.integers(0, 15)) == 0:
        type_id = draw(st.integers(0, 255).filter(lambda t: t != m.SET_CHUNK_SIZE))
    else:
        type_id = draw(st.sampled_from([2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22]))
    payload = draw(_plausible_payload(type_id))
    if payload and draw(st.integers(0, 3)) == 0:  # damage it: cut short or flip a byte
        i = draw(st.integers(0, len(payload) - 1))
        payload = payload[:i] if draw(st.booleans()) else payload[:i] + b"\xff" + payload[i + 1 :]
    return Message(
        type_id,
        draw(st.integers(0, 3)),
        draw(st.integers(0, 0xFFFFFFFF)),
        payload,
        draw(st.sampled_from([2, 3, 4, 5, 6, 8, 64, 320, 65599])),
    )


@st.composite
def _hostile_input(draw: st.DrawFn) -> list[bytes]:
    """Well-chunked messages of every type with plausible, sometimes damaged payloads,
    chunk size changes, and now and then raw bytes."""
    writer = ChunkWriter()
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            pieces.append(draw(st.binary(min_size=1, max_size=64)))
        elif kind == 1:
            pieces.append(writer.write(m.set_chunk_size(draw(st.integers(1, 1 << 20)))))
        else:
            pieces.append(writer.write(draw(_message())))
    return pieces


@functools.cache
def _plain_opening() -> bytes:
    """C0, C1 and C2 of a client talking to a server seeded with 1042."""
    client, server = client_server(seed=42)
    c0c1 = client.data_to_send()
    server.receive_data(c0c1)
    client.receive_data(server.data_to_send())
    return c0c1 + client.data_to_send()


def _fresh_server_past_handshake() -> RtmpConnection:
    server = RtmpConnection(rng=seeded(42 + 1000))
    server.receive_data(_plain_opening())
    assert server.handshake_done
    server.events()
    server.data_to_send()
    return server


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_input())
def test_arbitrary_bytes_after_the_handshake_never_raise(pieces: list[bytes]) -> None:
    server = _fresh_server_past_handshake()
    events: list[RtmpEvent] = []
    for piece in pieces:
        server.receive_data(piece)  # must never raise
        events.extend(server.events())
        server.data_to_send()
    bad = violations(events)
    event("violation" if bad else "clean")
    for ev in events:
        event(type(ev).__name__)
    assert len(bad) <= 1
    if bad:
        assert events[-1] is bad[0], "nothing is reported after a violation"
        assert server.closed
    else:
        assert not server.closed

"""The sans-I/O side of issue 11 items 2-4: what a server connection takes at each stage
(before connect, connected, publishing), the AMF value bound, the shared partial-message
budget, and per-address admission by /64. No sockets: bytes in, events out."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config
from gateway.service import Gateway
from rtmp import messages as m
from rtmp.amf import AmfError, decode_amf0, encode_amf0
from rtmp.chunk import BufferBudget, ChunkReader
from rtmp.chunk_writer import ChunkWriter
from rtmp.connection import RtmpConnection, Stages
from rtmp.events import CommandReceived, DataReceived, MediaReceived, ProtocolViolation
from rtmp.messages import Message
from rtmp.server import AdmissionControl
from tests.fuzzing import examples
from tests.test_connection import _amf_values, _hostile_input, _plain_opening, pump, seeded


def staged_pair(stages: Stages | None = None) -> tuple[RtmpConnection, RtmpConnection]:
    client = RtmpConnection(is_client=True, rng=seeded(3))
    server = RtmpConnection(rng=seeded(1003), stages=stages or Stages())
    pump(client, server)
    server.events()
    client.events()
    return client, server


def connect(client: RtmpConnection, server: RtmpConnection) -> None:
    client.connect("consult", "rtmp://127.0.0.1/consult")
    pump(client, server)
    (cmd,) = server.events()
    assert isinstance(cmd, CommandReceived)
    server.accept_connect(cmd.transaction_id, 0)
    pump(client, server)
    client.events()


# -- AMF: work bounded by values, not bytes ------------------------------------------------


def test_amf_value_bound_stops_a_flood_of_nulls_quickly() -> None:
    nulls = b"\x05" * (8 * 1024 * 1024)
    start = time.perf_counter()
    with pytest.raises(AmfError, match="more than 10000 values"):
        decode_amf0(nulls, max_values=10_000)
    assert time.perf_counter() - start < 0.5  # was ~2.8 s for all 8 million


def test_amf_value_bound_counts_object_properties() -> None:
    obj = {f"k{i}": None for i in range(300)}
    assert decode_amf0(encode_amf0("connect", 1.0, obj), max_values=303) == ["connect", 1.0, obj]
    with pytest.raises(AmfError, match="more than 256 values"):
        decode_amf0(encode_amf0("connect", 1.0, obj), max_values=256)


def _count(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


@settings(max_examples=examples(200), deadline=None)
@given(values=st.lists(_amf_values, min_size=1, max_size=4), cap=st.integers(1, 40))
def test_amf_value_bound_is_exact(values: list[object], cap: int) -> None:
    """Up to the cap a message decodes as without one; above it, an AmfError and nothing
    else. Every value counts, nested ones included."""
    data = encode_amf0(*values)
    if sum(_count(v) for v in values) <= cap:
        assert encode_amf0(*decode_amf0(data, max_values=cap)) == data
    else:
        with pytest.raises(AmfError, match="values in one message"):
            decode_amf0(data, max_values=cap)


# -- stages ----------------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=_hostile_input(), connected=st.booleans(), publishing=st.booleans())
def test_a_staged_server_never_raises_on_hostile_input(
    pieces: list[bytes], connected: bool, publishing: bool
) -> None:
    budget = BufferBudget(1 << 22)
    server = RtmpConnection(rng=seeded(42 + 1000), stages=Stages(budget=budget))
    server.receive_data(_plain_opening())
    server.events()
    server.data_to_send()
    if connected:
        server.accept_connect(1.0, 0)
        server.data_to_send()
    if publishing:
        server.allow_publish(1)
    for piece in pieces:
        server.receive_data(piece)  # must never raise
        server.events()
        server.data_to_send()
    server.close()
    assert budget.used == 0


def test_before_connect_a_message_above_the_small_limit_is_a_violation() -> None:
    client, server = staged_pair(Stages(pre_connect_size=4096))
    client.send_command(0, "connect", 1.0, {"app": "consult", "pad": "x" * 5000})
    pump(client, server)
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation) and "limit of 4096" in violation.reason


def test_before_connect_media_and_data_are_dropped_undecoded() -> None:
    client, server = staged_pair()
    client.send_media(1, m.VIDEO, 0, b"\x17\x01" + bytes(100))
    client.send_data_raw(1, b"\x05" * 1000)  # would be 1000 values
    pump(client, server)
    assert server.events() == [] and server.dropped == 2 and not server.closed


def test_media_and_data_only_on_a_stream_whose_publish_was_allowed() -> None:
    client, server = staged_pair()
    connect(client, server)
    frame = b"\x17\x01\x00\x00\x00" + bytes(200 * 1024)  # above the 64 KiB command size
    client.send_media(1, m.VIDEO, 0, b"\x17\x01" + bytes(10))
    pump(client, server)
    assert server.events() == [] and server.dropped == 1
    server.allow_publish(1)
    client.send_media(1, m.VIDEO, 40, frame)
    client.send_data(1, ["@setDataFrame", "onMetaData", {"width": 320.0}])
    client.send_media(2, m.VIDEO, 40, b"\x17\x01" + bytes(10))  # another stream: dropped
    pump(client, server)
    events = server.events()
    assert [type(e) for e in events] == [MediaReceived, DataReceived]
    assert isinstance(events[0], MediaReceived) and events[0].payload == frame
    server.end_publish(1)
    client.send_media(1, m.VIDEO, 80, b"\x17\x01" + bytes(10))
    pump(client, server)
    assert server.events() == [] and server.dropped == 3


def test_connected_commands_are_bounded_in_size_and_values() -> None:
    client, server = staged_pair(Stages(command_size=2048, max_values=100))
    connect(client, server)
    client.send_command(0, "chat", 2.0, None, *([None] * 200))
    pump(client, server)
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation) and "more than 100 values" in violation.reason


def test_a_publisher_may_not_send_large_commands_either() -> None:
    client, server = staged_pair(Stages(command_size=2048))
    connect(client, server)
    server.allow_publish(1)
    client.send_command(0, "chat", 2.0, None, "x" * 4000)
    pump(client, server)
    (violation,) = server.events()
    assert isinstance(violation, ProtocolViolation) and "exceeds 2048" in violation.reason


def test_the_client_role_is_never_staged() -> None:
    client = RtmpConnection(is_client=True, stages=Stages())
    assert client.stages is None


# -- the shared budget -------------------------------------------------------------------------


def _wire(sizes: list[int], chunk_size: int) -> bytes:
    writer = ChunkWriter()
    out = [writer.write(m.set_chunk_size(chunk_size))]
    for i, size in enumerate(sizes):
        out.append(writer.write(Message(m.VIDEO, 1, i * 40, bytes([i % 251]) * size, 6 + i % 3)))
    return b"".join(out)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 20_000), min_size=1, max_size=6),
    chunk_size=st.sampled_from([128, 1000, 4096, 65536]),
    cuts=st.lists(st.integers(0, 130_000), max_size=12),
)
def test_budget_holds_exactly_what_the_reader_holds(
    sizes: list[int], chunk_size: int, cuts: list[int]
) -> None:
    """At every split the shared budget holds the reader's partial and unparsed bytes,
    the messages come out as without a budget, and a release gives everything back."""
    wire = _wire(sizes, chunk_size)
    budget = BufferBudget(1 << 30)
    reader = ChunkReader(budget=budget)
    plain = ChunkReader()
    got: list[Message] = []
    prev = 0
    for cut in [*sorted(c for c in set(cuts) if c < len(wire)), len(wire)]:
        got.extend(reader.feed(wire[prev:cut]))
        prev = cut
        assert budget.used >= reader.partial_bytes
    assert got == plain.feed(wire)
    assert budget.used == 0  # everything complete: nothing held
    reader.feed(wire[: len(wire) // 2])
    reader.release()
    reader.release()
    assert budget.used == 0


def test_a_reader_that_does_not_fit_the_budget_fails_and_gives_back() -> None:
    budget = BufferBudget(100_000)
    first = ChunkReader(budget=budget)
    second = ChunkReader(budget=budget)
    wire = _wire([80_000], 4096)
    first.feed(wire[:70_000])
    held = budget.used
    assert 60_000 < held <= 70_000
    with pytest.raises(m.ProtocolError, match="of all connections exceed 100000"):
        second.feed(wire[:70_000])
    assert budget.used == held  # the failed reader holds nothing
    first.release()
    assert budget.used == 0
    assert ChunkReader(budget=budget).feed(wire)  # room again


def test_closing_a_connection_gives_its_partial_messages_back() -> None:
    budget = BufferBudget(1 << 24)
    client, server = staged_pair(Stages(budget=budget))
    connect(client, server)
    server.allow_publish(1)
    client.send_media(1, m.VIDEO, 0, b"\x17\x01" + bytes(300_000))
    data = client.data_to_send()
    server.receive_data(data[: len(data) // 2])
    assert budget.used > 100_000
    server.close()
    assert budget.used == 0


# -- admission: IPv6 by /64 ----------------------------------------------------------------


def test_admission_counts_ipv6_addresses_of_one_64_together() -> None:
    config = Config()
    config.limits.max_connections_per_address = 3
    admission = AdmissionControl(Gateway.from_config(config))
    now = 100.0
    same = [f"2001:db8:1:2::{i:x}" for i in range(1, 5)]
    assert [admission.admit(a, now) for a in same[:3]] == [None, None, None]
    assert admission.admit(same[3], now) == "too many connections from this address"
    assert admission.admit("2001:db8:1:3::1", now) is None  # another /64
    assert admission.admit("192.0.2.1", now) is None
    admission.release(same[0])
    assert admission.admit(same[3], now) is None
    for a in [*same[1:], "2001:db8:1:3::1", "192.0.2.1"]:
        admission.release(a)
    assert admission.total == 0 and not admission.per_address

"""Tests for rtmp.chunk (chunk stream reader/writer) and rtmp.messages (codecs).

Byte vectors are written by hand from the Adobe RTMP specification 1.0, section 5.3
(chunking) and 5.4 (protocol control); round trips, split invariance and fuzzing
check the reader's fast (bulk) path against its per-chunk path.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmp import messages as m
from rtmp.chunk import ChunkError, ChunkReader
from rtmp.chunk_writer import ChunkWriter
from rtmp.messages import Message, ProtocolError
from tests.fuzzing import examples

M32 = 0xFFFFFFFF


# --- helpers ------------------------------------------------------------------------


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic payload that is not a constant (so misplaced bytes show up)."""
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def parse(data: bytes, reader: ChunkReader | None = None, piece: int = 0) -> list[Message]:
    reader = reader or ChunkReader()
    if not piece:
        return reader.feed(data)
    out: list[Message] = []
    for i in range(0, len(data), piece):
        out.extend(reader.feed(data[i : i + piece]))
    return out


def feed_splits(data: bytes, cuts: list[int]) -> list[Message]:
    reader = ChunkReader()
    out: list[Message] = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        out.extend(reader.feed(data[prev:c]))
        prev = c
    return out


def expected(msgs: list[Message]) -> list[Message]:
    """What a reader must return for ``msgs``: timestamps reduced modulo 2**32."""
    return [Message(x.type_id, x.stream_id, x.timestamp & M32, x.payload, x.csid) for x in msgs]


def chunks_of(
    wire: bytes, first_header: int, cont_header: int, cs: int, length: int
) -> list[bytes]:
    """Split the wire image of one message into its chunks."""
    out = [wire[: first_header + min(cs, length)]]
    pos = len(out[0])
    while pos < len(wire):
        size = cont_header + min(cs, length - (len(out) * cs))
        out.append(wire[pos : pos + size])
        pos += size
    assert b"".join(out) == wire
    return out


def fmt_of(wire: bytes) -> int:
    return wire[0] >> 6


def type0(csid: int, ts: int, length: int, type_id: int, stream_id: int) -> bytes:
    """Hand-encoded type-0 chunk header for a csid < 64 (spec 5.3.1.2.1)."""
    assert 2 <= csid <= 63
    ext = ts >= 0xFFFFFF
    hdr = bytes((csid,)) + (0xFFFFFF if ext else ts).to_bytes(3, "big")
    hdr += length.to_bytes(3, "big") + bytes((type_id,)) + stream_id.to_bytes(4, "little")
    return hdr + (ts.to_bytes(4, "big") if ext else b"")


# --- spec byte vectors ----------------------------------------------------------------


def test_spec_example_1_audio_header_compression() -> None:
    # Spec 5.3.2.1: four 32-byte audio messages, stream 12345, ts 1000 then +20 each,
    # on chunk stream 3: header types 0, 2, 3, 3.
    msgs = [Message(m.AUDIO, 12345, 1000 + 20 * i, payload(32, i), 3) for i in range(4)]
    w = ChunkWriter()
    wires = [w.write(x) for x in msgs]
    assert wires[0][:12] == bytes.fromhex("03 0003e8 000020 08 39300000")
    assert wires[1][:4] == bytes.fromhex("83 000014")
    assert wires[2][:1] == b"\xc3"
    assert wires[3][:1] == b"\xc3"
    assert [len(x) for x in wires] == [12 + 32, 4 + 32, 1 + 32, 1 + 32]
    assert parse(b"".join(wires)) == msgs


def test_spec_example_2_video_message_split_into_chunks() -> None:
    # 307-byte video message at chunk size 128 on csid 6 as ffmpeg sends it: type-0
    # header, 128 bytes, 0xC6, 128 bytes, 0xC6, 51 bytes (spec 5.3.2.2 uses csid 4).
    body = payload(307)
    msg = Message(m.VIDEO, 1, 1000, body, 6)
    wire = ChunkWriter().write(msg)
    want = (
        bytes.fromhex("06 0003e8 000133 09 01000000")
        + body[:128]
        + b"\xc6"
        + body[128:256]
        + b"\xc6"
        + body[256:]
    )
    assert wire == want
    assert len(wire) == 12 + 307 + 2
    assert parse(want) == [msg]
    # The same bytes arriving one at a time (pure per-chunk path).
    assert parse(want, piece=1) == [msg]


def test_extended_timestamp_repeated_on_continuation_chunks() -> None:
    # Spec 5.3.1.3: timestamp 0x01000000 does not fit in 24 bits; the field is 0xFFFFFF
    # and the 4-byte value follows the header and every type-3 continuation header.
    body = payload(300)
    msg = Message(m.VIDEO, 1, 0x01000000, body, 6)
    wire = ChunkWriter().write(msg)
    ext = b"\x01\x00\x00\x00"
    want = (
        bytes.fromhex("06 ffffff 00012c 09 01000000")
        + ext
        + body[:128]
        + b"\xc6"
        + ext
        + body[128:256]
        + b"\xc6"
        + ext
        + body[256:]
    )
    assert wire == want
    assert parse(want) == [msg]
    assert parse(want, piece=1) == [msg]


def test_continuation_chunks_without_extended_timestamp_are_accepted() -> None:
    # Some encoders omit the extended timestamp on type-3 continuation chunks; the
    # reader only consumes the 4 bytes when they equal the stored value.
    body = b"\x00" + payload(299)  # first byte differs from the ext value's (0x01)
    ext = b"\x01\x00\x00\x00"
    head = bytes.fromhex("06 ffffff 00012c 09 01000000") + ext + body[:128]
    mixed = head + b"\xc6" + body[128:256] + b"\xc6" + ext + body[256:]
    omitted = head + b"\xc6" + body[128:256] + b"\xc6" + body[256:]
    msg = Message(m.VIDEO, 1, 0x01000000, body, 6)
    for wire in (mixed, omitted):
        assert parse(wire) == [msg]
        assert parse(wire, piece=1) == [msg]
        assert parse(wire, piece=7) == [msg]


def test_basic_header_forms() -> None:
    # Spec 5.3.1.1: one byte for 2..63, two bytes (marker 0) for 64..319, three bytes
    # (marker 1, little-endian) for 64..65599.
    w = ChunkWriter()
    cases = {
        2: b"\x02",
        63: b"\x3f",
        64: b"\x00\x00",
        319: b"\x00\xff",
        320: b"\x01\x00\x01",
        65599: b"\x01\xff\xff",
    }
    for csid, basic in cases.items():
        wire = w.write(Message(m.AUDIO, 1, 5, b"xy", csid))
        assert wire[: len(basic)] == basic
        assert len(wire) == len(basic) + 11 + 2
        # Second message: type 3 header, same basic-header form with fmt 3.
        wire = w.write(Message(m.AUDIO, 1, 10, b"xy", csid))
        assert wire[: len(basic)] == bytes((basic[0] | 0xC0,)) + basic[1:]
    for bad in (0, 1, 65600, -1):
        with pytest.raises(ValueError):
            w.write(Message(m.AUDIO, 1, 0, b"", bad))


def test_reader_accepts_three_byte_form_for_small_csid() -> None:
    # csid 100 may legally be sent in the 3-byte form; continuation chunks in that form
    # must not confuse the bulk path (which predicts the 2-byte form).
    body = payload(300)
    hdr0 = b"\x01" + (100 - 64).to_bytes(2, "little")
    hdr3 = b"\xc1" + (100 - 64).to_bytes(2, "little")
    wire = (
        hdr0
        + bytes.fromhex("000010 00012c 09 01000000")
        + body[:128]
        + hdr3
        + body[128:256]
        + hdr3
        + body[256:]
    )
    assert parse(wire) == [Message(m.VIDEO, 1, 16, body, 100)]


# --- header compression ---------------------------------------------------------------


def test_writer_header_type_selection() -> None:
    w = ChunkWriter()
    seq = [
        (Message(m.AUDIO, 1, 0, payload(10), 4), 0),  # first on csid: type 0
        (Message(m.AUDIO, 1, 20, payload(10, 1), 4), 2),  # only delta changed (0 -> 20)
        (Message(m.AUDIO, 1, 40, payload(10, 2), 4), 3),  # everything repeats
        (Message(m.AUDIO, 1, 60, payload(12, 3), 4), 1),  # length changed
        (Message(m.VIDEO, 1, 80, payload(12, 4), 4), 1),  # type changed
        (Message(m.VIDEO, 1, 100, payload(12, 5), 4), 3),
        (Message(m.VIDEO, 1, 90, payload(12, 6), 4), 0),  # timestamp went backwards
        (Message(m.VIDEO, 2, 95, payload(12, 7), 4), 0),  # message stream changed
        (Message(m.VIDEO, 2, 95 + 0x1000000, payload(12, 8), 4), 2),  # extended delta
        (Message(m.VIDEO, 2, 95 + 0x2000000, payload(12, 9), 4), 3),  # same ext delta
    ]
    wires = [w.write(x) for x, _ in seq]
    assert [fmt_of(x) for x in wires] == [f for _, f in seq]
    # Type 3 starting a message with an extended delta carries the 4-byte field.
    assert wires[-1] == b"\xc4" + b"\x01\x00\x00\x00" + seq[-1][0].payload
    assert parse(b"".join(wires)) == [x for x, _ in seq]
    assert parse(b"".join(wires), piece=1) == [x for x, _ in seq]


def test_type3_after_type0_reuses_timestamp_as_delta() -> None:
    # Spec 5.3.1.2.4: "If a Type 3 chunk follows a Type 0 chunk, then the timestamp
    # delta for this Type 3 chunk is the same as the timestamp of the Type 0 chunk."
    # (ffmpeg's ts_field and librtmp behave the same way.)
    wire = type0(5, 1000, 4, m.DATA_AMF0, 1) + b"abcd" + b"\xc5" + b"efgh" + b"\xc5" + b"ijkl"
    got = parse(wire)
    assert [x.timestamp for x in got] == [1000, 2000, 3000]
    assert [x.payload for x in got] == [b"abcd", b"efgh", b"ijkl"]
    # Our writer relies on the same rule when the delta equals the type-0 timestamp.
    w = ChunkWriter()
    msgs = [Message(m.AUDIO, 1, 100 * i, payload(5, i), 4) for i in range(1, 4)]
    wires = [w.write(x) for x in msgs]
    assert [fmt_of(x) for x in wires] == [0, 3, 3]
    assert parse(b"".join(wires)) == msgs


def test_type3_new_message_with_extended_delta_and_multichunk() -> None:
    w = ChunkWriter()
    msgs = [
        Message(m.VIDEO, 1, 0, payload(300, 1), 6),
        Message(m.VIDEO, 1, 0x1000000, payload(300, 2), 6),
        Message(m.VIDEO, 1, 0x2000000, payload(300, 3), 6),
    ]
    wires = [w.write(x) for x in msgs]
    assert [fmt_of(x) for x in wires] == [0, 2, 3]
    assert wires[2].count(b"\xc6\x01\x00\x00\x00") == 3
    data = b"".join(wires)
    assert parse(data) == msgs
    assert parse(data, piece=1) == msgs


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
@pytest.mark.parametrize("cs", [1, 128, 4096, 65536])
def test_round_trip_csids_and_chunk_sizes(csid: int, cs: int) -> None:
    w = ChunkWriter()
    head = w.write(w.set_chunk_size(cs))
    assert w.chunk_size == cs
    lengths = [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 5, 1000]
    if cs == 1:
        lengths += [300]
    msgs: list[Message] = []
    ts = 0
    for i, n in enumerate(lengths):
        if n < 0:
            continue
        ts += (0, 20, 20, 33, 0xFFFFFF, 7)[i % 6]
        msgs.append(Message((m.AUDIO, m.VIDEO)[i % 2], 1 + (i // 4), ts, payload(n, i), csid))
    data = head + w.write_many(msgs)
    reader = ChunkReader()
    got = reader.feed(data)
    assert got[0].type_id == m.SET_CHUNK_SIZE
    assert got[1:] == expected(msgs)
    assert reader.chunk_size == cs
    assert reader.bytes_received == len(data)
    # A different split of the same bytes gives the same messages.
    assert parse(data, piece=cs + 3)[1:] == expected(msgs)


def test_interleaved_messages_chunk_by_chunk() -> None:
    # Two messages on csids 4 and 6 whose chunks alternate on the wire (spec 5.3:
    # chunks of different chunk streams may be interleaved).
    w = ChunkWriter()
    a = Message(m.AUDIO, 1, 10, payload(300, 1), 4)
    v = Message(m.VIDEO, 1, 12, payload(700, 2), 6)
    ca = chunks_of(w.write(a), 12, 1, 128, 300)
    cv = chunks_of(w.write(v), 12, 1, 128, 700)
    wire = b""
    for i in range(max(len(ca), len(cv))):
        wire += (cv[i] if i < len(cv) else b"") + (ca[i] if i < len(ca) else b"")
    assert parse(wire) == [a, v]  # completion order: audio finishes first
    assert parse(wire, piece=1) == [a, v]
    assert parse(wire, piece=200) == [a, v]


def test_interleaving_in_long_runs() -> None:
    # A video message interrupted every few chunks: the bulk path consumes each run.
    w = ChunkWriter()
    v = Message(m.VIDEO, 1, 0, payload(50_000, 3), 6)
    audio = [Message(m.AUDIO, 1, i * 23, payload(150, 10 + i), 4) for i in range(40)]
    cv = chunks_of(w.write(v), 12, 1, 128, 50_000)
    ca = [w.write(x) for x in audio]  # 150 bytes: two chunks each
    ca_chunks = [
        c
        for wire, x in zip(ca, audio, strict=True)
        for c in chunks_of(wire, len(wire) - 151, 1, 128, 150)
    ]
    out = b""
    k = 0
    for i, c in enumerate(cv):
        out += c
        if i % 5 == 4 and k < len(ca_chunks):
            out += ca_chunks[k]
            k += 1
    out += b"".join(ca_chunks[k:])
    got = parse(out)
    assert [x for x in got if x.csid == 6] == [v]
    assert [x for x in got if x.csid == 4] == audio
    assert parse(out, piece=1000) == got


# --- timestamps -----------------------------------------------------------------------


WRAP_TIMESTAMPS = [
    0xFFFFFE - 40,
    0xFFFFFE,
    0xFFFFFF,
    0x1000000,
    0x1000021,
    0x1000000,  # backwards
    0x7FFFFFFF,
    0xFFFFFFF0,
    0xFFFFFFFF,
    (1 << 32) + 5,  # wraps to 5
    (1 << 32) + 38,
    (1 << 32) + 38 + 0xFFFFFF,
]


@pytest.mark.parametrize("length", [10, 300])
def test_extended_and_wrapping_timestamps_with_deltas(length: int) -> None:
    w = ChunkWriter()
    msgs = [Message(m.VIDEO, 1, ts, payload(length, i), 6) for i, ts in enumerate(WRAP_TIMESTAMPS)]
    wires = [w.write(x) for x in msgs]
    # Only the first message and the step backwards need a type-0 header; forward
    # jumps below 2**31 (even extended ones) and the step across the 2**32 wrap
    # (0xFFFFFFFF -> 5, delta 6 modulo 2**32) are deltas.
    assert [fmt_of(x) for x in wires] == [0, 2, 2, 3, 2, 0, 2, 2, 2, 2, 2, 2]
    assert wires[9][:4] == b"\x86\x00\x00\x06"
    assert wires[11][:8] == b"\x86\xff\xff\xff\x00\xff\xff\xff"  # delta 0xFFFFFF is extended
    data = b"".join(wires)
    assert [x.timestamp for x in parse(data)] == [t & M32 for t in WRAP_TIMESTAMPS]
    assert parse(data, piece=1) == expected(msgs)


@pytest.mark.parametrize("length", [10, 300])
def test_extended_and_wrapping_timestamps_with_type0_headers(length: int) -> None:
    # A source that sends every message with a type-0 (absolute) header, whose
    # timestamps cross 0xFFFFFF and wrap at 2**32.
    msgs = [Message(m.VIDEO, 1, ts, payload(length, i), 6) for i, ts in enumerate(WRAP_TIMESTAMPS)]
    wires = [ChunkWriter().write(x) for x in msgs]
    assert all(fmt_of(x) == 0 for x in wires)
    data = b"".join(wires)
    assert parse(data) == expected(msgs)
    assert parse(data, piece=1) == expected(msgs)


def test_reader_delta_accumulates_modulo_2_32() -> None:
    wire = type0(4, 0xFFFFFFF0, 1, m.AUDIO, 1) + b"a"
    wire += bytes((0x84,)) + (0x20).to_bytes(3, "big") + b"b"  # type 2, delta 32
    wire += b"\xc4" + b"c"  # type 3: delta 32 again
    assert [x.timestamp for x in parse(wire)] == [0xFFFFFFF0, 0x10, 0x30]


# --- protocol control inside the chunk stream -----------------------------------------


def test_set_chunk_size_applies_to_next_chunk_in_same_feed() -> None:
    w = ChunkWriter()
    scs = w.set_chunk_size(4096)
    assert (scs.type_id, scs.csid, scs.stream_id, scs.payload) == (1, 2, 0, b"\x00\x00\x10\x00")
    assert w.chunk_size == 128  # not yet: the message has not been sent
    first = w.write(scs)
    assert first == bytes.fromhex("02 000000 000004 01 00000000 00001000")
    big = Message(m.VIDEO, 1, 0, payload(10_000), 6)
    rest = w.write(big)
    assert w.chunk_size == 4096
    assert rest.count(b"\xc6") >= 2 and len(rest) == 12 + 10_000 + 2
    reader = ChunkReader()
    assert reader.feed(first + rest) == [scs, big]
    assert reader.chunk_size == 4096


def test_set_chunk_size_mid_message_on_other_stream() -> None:
    # The new size applies to the very next chunk, including the continuation of a
    # message that started under the old size.
    body = payload(300)
    wire = (
        type0(6, 0, 300, m.VIDEO, 1)
        + body[:128]
        + m_bytes(m.set_chunk_size(200))
        + b"\xc6"
        + body[128:]  # 172 bytes: one chunk at the new size
    )
    got = parse(wire)
    assert [x.type_id for x in got] == [m.SET_CHUNK_SIZE, m.VIDEO]
    assert got[1].payload == body
    assert parse(wire, piece=1) == got


def m_bytes(msg: Message) -> bytes:
    """A protocol control message as one type-0 chunk (payload <= 128)."""
    return (
        type0(msg.csid, msg.timestamp, len(msg.payload), msg.type_id, msg.stream_id) + msg.payload
    )


def test_writer_small_chunk_size_message_is_sent_with_old_size() -> None:
    w = ChunkWriter()
    first = w.write(w.set_chunk_size(1))
    assert len(first) == 12 + 4  # one chunk at 128
    assert w.chunk_size == 1
    msg = Message(m.AUDIO, 1, 0, b"abc", 4)
    wire = w.write(msg)
    assert wire == type0(4, 0, 3, m.AUDIO, 1) + b"a" + b"\xc4b" + b"\xc4c"
    assert parse(first + wire)[1] == msg


def test_abort_drops_partial_message() -> None:
    body = payload(300)
    wire = (
        type0(6, 100, 300, m.VIDEO, 1)
        + body[:128]
        + m_bytes(m.abort(6))
        + type0(6, 200, 5, m.VIDEO, 1)
        + b"hello"
        + b"\xc6"  # type 3 new message: delta = 200 again (5.3.1.2.4)
        + b"world"
    )
    for piece in (0, 1, 13):
        got = parse(wire, piece=piece)
        assert [(x.type_id, x.timestamp, x.payload) for x in got] == [
            (m.ABORT, 0, b"\x00\x00\x00\x06"),
            (m.VIDEO, 200, b"hello"),
            (m.VIDEO, 400, b"world"),
        ]


def test_abort_then_type3_continuation_starts_new_message() -> None:
    # After an abort the chunk stream has no message in progress; a type-3 chunk starts
    # a new one with the stored header.
    body = payload(10)
    wire = (
        type0(6, 100, 10, m.VIDEO, 1)
        + body
        + bytes((0x86,))
        + (5).to_bytes(3, "big")  # type 2, delta 5, 10 bytes again
        + b"x" * 4  # partial: chunk size 128 > 10, so this is incomplete ...
    )
    reader = ChunkReader()
    assert reader.feed(wire) == [Message(m.VIDEO, 1, 100, body, 6)]
    # ... complete the chunk: 6 more bytes.
    assert reader.feed(b"y" * 6) == [Message(m.VIDEO, 1, 105, b"xxxxyyyyyy", 6)]


def test_new_header_mid_message_replaces_partial() -> None:
    body = payload(300)
    wire = type0(6, 0, 300, m.VIDEO, 1) + body[:128] + type0(6, 50, 4, m.VIDEO, 1) + b"abcd"
    assert parse(wire) == [Message(m.VIDEO, 1, 50, b"abcd", 6)]


def test_zero_length_messages() -> None:
    w = ChunkWriter()
    msgs = [Message(m.DATA_AMF0, 1, i, b"", 5) for i in range(3)]
    data = w.write_many(msgs)
    assert parse(data) == msgs
    assert parse(data, piece=1) == msgs


# --- split invariance and random round trips -------------------------------------------


def rich_stream() -> tuple[bytes, list[Message]]:
    """Mixed csids, header types, extended timestamps, chunk size changes, interleaving."""
    w = ChunkWriter()
    msgs: list[Message] = []
    parts: list[bytes] = []

    def put(msg: Message) -> None:
        msgs.append(msg)
        parts.append(w.write(msg))

    put(Message(m.COMMAND_AMF0, 0, 0, payload(200, 1), 3))
    for i in range(6):
        put(Message(m.AUDIO, 1, i * 23, payload(64 + i, i), 4))
        put(Message(m.VIDEO, 1, i * 33, payload(900 + 100 * (i % 2), i), 6))
    put(w.set_chunk_size(60))
    put(Message(m.VIDEO, 1, 0xFFFFFE, payload(333, 7), 6))
    put(Message(m.VIDEO, 1, 0x1FFFFFF, payload(333, 8), 6))  # extended delta
    put(Message(m.VIDEO, 1, 0x2FFFFFE, payload(333, 9), 6))
    put(Message(m.AUDIO, 1, 0xFFFFFFF0, payload(90, 10), 400))
    put(Message(m.AUDIO, 1, 0x10, payload(90, 11), 400))  # wraps
    put(w.set_chunk_size(4096))
    put(Message(m.VIDEO, 1, 0x2FFFFFE + 33, payload(10_000, 12), 6))
    # An audio message interleaved chunk by chunk into a video message.
    put(w.set_chunk_size(128))
    a = Message(m.AUDIO, 1, 0x40, payload(300, 13), 4)
    v = Message(m.VIDEO, 1, 0x2FFFFFE + 66, payload(1000, 14), 6)
    wa, wv = w.write(a), w.write(v)
    ca = chunks_of(wa, len(wa) - 300 - 2, 1, 128, 300)
    cv = chunks_of(wv, len(wv) - 1000 - 7, 1, 128, 1000)
    inter = cv[0] + ca[0] + cv[1] + ca[1] + b"".join(cv[2:5]) + ca[2] + b"".join(cv[5:])
    parts.append(inter)
    msgs.extend([a, v])
    return b"".join(parts), expected(msgs)


def test_rich_stream_every_split() -> None:
    data, msgs = rich_stream()
    assert parse(data) == msgs
    assert parse(data, piece=1) == msgs
    for piece in (2, 3, 5, 127, 128, 129, 1000):
        assert parse(data, piece=piece) == msgs


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_rich_stream_random_splits(data: st.DataObject) -> None:
    wire, msgs = rich_stream()
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=60))
    assert feed_splits(wire, cuts) == msgs


STEPS = [0, 0, 1, 20, 23, 33, 0xFFFFFE, 0xFFFFFF, 0x1000000, -1, -100, 1 << 31, (1 << 32) - 1]
op_strategy = st.one_of(
    st.tuples(
        st.just("msg"),
        st.sampled_from([2, 3, 4, 6, 63, 64, 300, 320, 65599]),
        st.sampled_from([m.AUDIO, m.VIDEO, m.DATA_AMF0]),
        st.integers(0, 2),
        st.sampled_from(STEPS),
        st.one_of(st.integers(0, 300), st.integers(0, 3000)),
    ),
    st.tuples(st.just("cs"), st.sampled_from([1, 2, 7, 64, 128, 129, 4096, 65536])),
)


def build_ops(ops: list[tuple]) -> tuple[bytes, list[Message]]:
    w = ChunkWriter()
    ts: dict[int, int] = {}
    msgs: list[Message] = []
    for i, op in enumerate(ops):
        if op[0] == "cs":
            msg = w.set_chunk_size(op[1])
        else:
            _, csid, type_id, sid, step, length = op
            ts[csid] = (ts.get(csid, 0) + step) % (1 << 33)  # also > 2**32 on purpose
            msg = Message(type_id, sid, ts[csid], payload(length, i), csid)
        msgs.append(msg)
    return w.write_many(msgs), expected(msgs)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, max_size=25), data=st.data())
def test_random_round_trip(ops: list[tuple], data: st.DataObject) -> None:
    wire, msgs = build_ops(ops)
    assert parse(wire) == msgs
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
    assert feed_splits(wire, cuts) == msgs


# --- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 0x80000000, 0xFFFFFFFF, 16 * 1024 * 1024 + 1])
def test_invalid_chunk_size_rejected(size: int) -> None:
    reader = ChunkReader()
    wire = type0(2, 0, 4, m.SET_CHUNK_SIZE, 0) + size.to_bytes(4, "big")
    with pytest.raises(ChunkError):
        reader.feed(wire)
    # The reader stays failed: the stream cannot be resynchronised.
    with pytest.raises(ChunkError):
        reader.feed(b"\x02")


def test_chunk_size_limit_is_configurable() -> None:
    wire = type0(2, 0, 4, m.SET_CHUNK_SIZE, 0) + (70_000).to_bytes(4, "big")
    assert ChunkReader().feed(wire)[0].payload == (70_000).to_bytes(4, "big")
    with pytest.raises(ChunkError):
        ChunkReader(max_chunk_size=65536).feed(wire)


def test_set_chunk_size_wrong_length_rejected() -> None:
    with pytest.raises(ChunkError):
        ChunkReader().feed(type0(2, 0, 3, m.SET_CHUNK_SIZE, 0) + b"\x00\x10\x00")


def test_oversized_message_rejected_at_header_time() -> None:
    # The length field has 24 bits, so with the default 16 MiB limit every length is
    # acceptable; with a 16 MB (decimal) limit, 16 MB + 1 is not.  Only the header is
    # sent: the claimed length alone is enough to reject.
    reader = ChunkReader(max_message_size=16_000_000)
    with pytest.raises(ChunkError, match="exceeds"):
        reader.feed(type0(6, 0, 16_000_001, m.VIDEO, 1))
    assert ChunkReader(max_message_size=16_000_000).feed(type0(6, 0, 16_000_000, 9, 1)) == []
    # A type-1 header on a known stream is checked the same way.
    reader = ChunkReader(max_message_size=1000)
    reader.feed(type0(6, 0, 10, m.VIDEO, 1) + bytes(10))
    with pytest.raises(ChunkError):
        reader.feed(bytes((0x46,)) + bytes(3) + (1001).to_bytes(3, "big") + b"\x09")


def test_too_many_partial_chunk_streams() -> None:
    reader = ChunkReader()
    wire = b"".join(
        b"\x01" + (csid - 64).to_bytes(2, "little") + type0(5, 0, 1000, m.VIDEO, 1)[1:] + bytes(128)
        for csid in range(1000, 1100)
    )
    t0 = time.perf_counter()
    with pytest.raises(ChunkError, match="partial"):
        reader.feed(wire)
    assert time.perf_counter() - t0 < 0.5
    # 64 partial streams are fine.
    reader = ChunkReader()
    assert reader.feed(wire[: 64 * (3 + 11 + 128)]) == []


def test_too_many_known_chunk_streams() -> None:
    reader = ChunkReader(max_chunk_streams=4)  # state for at most 64 streams
    wire = b"".join(
        b"\x01" + (csid - 64).to_bytes(2, "little") + type0(5, 0, 1, m.AUDIO, 1)[1:] + b"x"
        for csid in range(1000, 1100)
    )
    with pytest.raises(ChunkError):
        reader.feed(wire)


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_header_without_prior_type0_rejected(fmt: int) -> None:
    reader = ChunkReader()
    t0 = time.perf_counter()
    with pytest.raises(ChunkError, match="without a prior header"):
        reader.feed(bytes(((fmt << 6) | 9,)) + bytes(20))
    assert time.perf_counter() - t0 < 0.1


def test_partial_buffer_budget() -> None:
    reader = ChunkReader(max_message_size=1000, max_buffered=1000)
    reader.feed(type0(4, 0, 1000, m.VIDEO, 1) + bytes(128) * 1)
    reader.feed(type0(5, 0, 1000, m.VIDEO, 1) + bytes(128) + b"\xc5" + bytes(128))
    with pytest.raises(ChunkError, match="budget"):
        # Continuation chunks of csid 4 and 5 until more than 1000 bytes are held.
        reader.feed((b"\xc4" + bytes(128) + b"\xc5" + bytes(128)) * 3)


@pytest.mark.parametrize("piece", [1, 100, 300, 5000])
def test_budgets_are_released_when_messages_complete_or_drop(piece: int) -> None:
    # Tight limits: one partial message of at most 1000 bytes at a time.  Hundreds of
    # messages that complete (via either path), are aborted or are replaced must not
    # leak budget.
    w = ChunkWriter()
    parts: list[bytes] = []
    for i in range(200):
        csid = (4, 6)[i % 2]
        msg = Message(m.VIDEO, 1, i * 10, payload(1000, i), csid)
        wire = w.write(msg)
        if i % 7 == 3:
            # Cut after the first chunk and abort, or replace with a fresh header.
            first_chunk = len(wire) - 1000 - 7 + 128  # header + 128 bytes (7 cont. headers)
            parts.append(wire[:first_chunk])
            parts.append(w.write(m.abort(csid)) if i % 2 else ChunkWriter().write(msg))
        else:
            parts.append(wire)
    data = b"".join(parts)
    reader = ChunkReader(max_message_size=1000, max_buffered=1000, max_chunk_streams=1)
    got = parse(data, reader, piece=piece)
    assert len([x for x in got if x.type_id == m.VIDEO]) == 200 - len(range(3, 200, 14))


def test_memory_bounded_for_claimed_large_message() -> None:
    # A peer claims a 16 MiB - 1 message (after raising the chunk size so the whole thing
    # would be one chunk) and sends 1 KB: the reader holds about 1 KB, not 16 MB.
    tracemalloc.start()
    try:
        reader = ChunkReader()
        base = tracemalloc.get_traced_memory()[0]
        reader.feed(m_bytes(m.set_chunk_size(16 * 1024 * 1024)))
        reader.feed(type0(6, 0, 0xFFFFFF, m.VIDEO, 1))
        for _ in range(100):
            assert reader.feed(bytes(10)) == []
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 64 * 1024
    # Same at the default chunk size: the partial message holds what was sent.
    tracemalloc.start()
    try:
        reader = ChunkReader()
        base = tracemalloc.get_traced_memory()[0]
        reader.feed(type0(6, 0, 0xFFFFFF, m.VIDEO, 1))
        for _ in range(8):
            reader.feed(bytes(128) + b"\xc6")
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 64 * 1024


def test_large_chunk_trickling_in_is_linear() -> None:
    # A 4 MB chunk arriving in 1 KB reads must not be re-joined on every read.
    reader = ChunkReader()
    reader.feed(m_bytes(m.set_chunk_size(8 * 1024 * 1024)))
    body = payload(4 * 1024 * 1024)
    wire = type0(6, 0, len(body), m.VIDEO, 1) + body
    t0 = time.perf_counter()
    got = parse(wire, reader, piece=1024)
    assert time.perf_counter() - t0 < 2.0
    assert got == [Message(m.VIDEO, 1, 0, body, 6)]


def outcome(data: bytes, piece: int, **limits: int) -> tuple[list[Message], bool]:
    """The messages a fresh reader returns for ``data`` fed in ``piece``-byte pieces
    (0: all at once) and whether it failed. On failure the messages are those returned
    before it (a whole-buffer feed that fails returns none)."""
    reader = ChunkReader(**limits)
    out: list[Message] = []
    try:
        for i in range(0, len(data), piece or max(len(data), 1)):
            out.extend(reader.feed(data[i : i + (piece or len(data))]))
    except ProtocolError:
        return out, True
    return out, False


def assert_split_invariant(data: bytes, piece: int, **limits: int) -> None:
    """Parsing in pieces is parsing the whole buffer: the same messages when that
    succeeds, a failure when it fails (with the messages before it a prefix)."""
    whole, whole_failed = outcome(data, 0, **limits)
    pieces, pieces_failed = outcome(data, piece, **limits)
    assert pieces_failed == whole_failed
    if not whole_failed:
        assert pieces == whole
    for msg in pieces:
        assert len(msg.payload) <= limits.get("max_message_size", 1 << 24)
        assert 0 <= msg.timestamp <= M32


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_fuzz_arbitrary_bytes(data: bytes, piece: int) -> None:
    assert_split_invariant(
        data, piece, max_message_size=4096, max_chunk_size=4096, max_chunk_streams=4
    )


@settings(max_examples=examples(300), deadline=None)
@given(
    ops=st.lists(op_strategy, min_size=1, max_size=8),
    flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=6),
    piece=st.integers(1, 64),
)
def test_fuzz_mutated_valid_streams(
    ops: list[tuple], flips: list[tuple[int, int]], piece: int
) -> None:
    wire, _ = build_ops(ops)
    buf = bytearray(wire)
    for where, value in flips:
        if buf:
            buf[where % len(buf)] = value
    assert_split_invariant(bytes(buf), piece, max_message_size=1 << 20)


# --- performance sanity ----------------------------------------------------------------


def test_bulk_path_parses_a_big_stream_quickly() -> None:
    # 2 MB of 128-byte chunks; the per-chunk path alone needs several times longer.
    w = ChunkWriter()
    msgs = [Message(m.VIDEO, 1, i * 33, payload(20_000, i), 6) for i in range(100)]
    wire = w.write_many(msgs)
    t0 = time.perf_counter()
    got = parse(wire, piece=65536)
    elapsed = time.perf_counter() - t0
    assert got == msgs
    assert elapsed < 0.25


def test_writer_large_message_large_chunks() -> None:
    w = ChunkWriter()
    w.write(w.set_chunk_size(4096))
    body = payload(50_000)
    wire = w.write(Message(m.VIDEO, 1, 0, body, 6))
    assert len(wire) == 12 + 50_000 + 12  # 13 chunks, 12 one-byte continuation headers
    assert [wire[12 + 4096 + i * 4097] for i in range(12)] == [0xC6] * 12


def test_writer_rejects_bad_messages() -> None:
    w = ChunkWriter()
    with pytest.raises(ValueError):
        w.write(Message(m.VIDEO, 1, 0, bytes(0x1000000), 6))
    with pytest.raises(ValueError):
        w.write(Message(256, 1, 0, b"", 6))
    with pytest.raises(ValueError):
        w.write(Message(m.VIDEO, 1 << 32, 0, b"", 6))
    with pytest.raises(ValueError):
        w.set_chunk_size(0)
    with pytest.raises(ValueError):
        w.set_chunk_size(0x80000000)


# --- cross-check with pyrtmp (independent implementation) ------------------------------


async def pyrtmp_read(data: bytes, chunk_size: int = 128) -> list[tuple[int, int, int, int, bytes]]:
    from pyrtmp import StreamClosedException
    from pyrtmp.session_manager import SessionManager

    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    session = SessionManager(reader=stream, writer=None, reader_chunk_size=chunk_size)  # type: ignore[arg-type]
    got = []
    with pytest.raises(StreamClosedException):
        async for c in session.read_chunks_from_stream():
            got.append((c.chunk_id, c.msg_type_id, c.msg_stream_id, c.timestamp, c.payload))
    return got


@pytest.mark.parametrize("cs", [128, 4096])
async def test_pyrtmp_parses_our_chunks(cs: int) -> None:
    # pyrtmp 0.3 mishandles extended timestamps on continuation chunks and type-3
    # headers that start a message, so this stream avoids both (every message on a
    # csid differs from its predecessor in length or delta).
    w = ChunkWriter()
    w.chunk_size = cs
    msgs: list[Message] = []
    for i in range(12):
        msgs.append(Message(m.VIDEO, 1, 40 * i + i * i, payload(300 + 700 * (i % 3), i), 6))
        msgs.append(Message(m.AUDIO, 1, 23 * i + i * i, payload(60 + i, 50 + i), 4))
    msgs.append(Message(m.COMMAND_AMF0, 0, 0, payload(150), 3))
    msgs.append(Message(m.VIDEO, 2, 5000, payload(5000), 70))
    data = w.write_many(msgs)
    got = await pyrtmp_read(data, cs)
    assert got == [(x.csid, x.type_id, x.stream_id, x.timestamp, x.payload) for x in msgs]
    assert ChunkReader().feed(m_bytes(m.set_chunk_size(cs)) + data)[1:] == msgs


def test_our_reader_parses_pyrtmp_chunks() -> None:
    # pyrtmp's RawChunk encoder (bitstring based) builds the headers, including type
    # 1/2 deltas and extended timestamps repeated on type-3 chunks.
    from pyrtmp.messages import RawChunk

    def raw(
        fmt: int, csid: int, ts: int, length: int, type_id: int, sid: int, data: bytes
    ) -> bytes:
        return RawChunk(fmt, csid, ts, length, type_id, sid, data).to_bytes()

    b1, b2, b3 = payload(300, 1), payload(300, 2), payload(40, 3)
    wire = (
        raw(0, 6, 0x1234567, 300, 9, 1, b1[:128])
        + raw(3, 6, 0x1234567, 300, 9, 1, b1[128:256])
        + raw(3, 6, 0x1234567, 300, 9, 1, b1[256:])
        + raw(2, 6, 33, 300, 9, 1, b2[:128])
        + raw(0, 100, 7, 40, 8, 1, b3)
        + raw(3, 6, 33, 300, 9, 1, b2[128:256])
        + raw(3, 6, 33, 300, 9, 1, b2[256:])
        + raw(1, 100, 0x1000000, 4, 18, 1, b"meta")
    )
    want = [
        Message(9, 1, 0x1234567, b1, 6),
        Message(8, 1, 7, b3, 100),
        Message(9, 1, 0x1234567 + 33, b2, 6),
        Message(18, 1, 7 + 0x1000000, b"meta", 100),
    ]
    assert parse(wire) == want
    assert parse(wire, piece=1) == want


# --- rtmp.messages codecs ----------------------------------------------------------------


def test_protocol_control_builders() -> None:
    cases = [
        (m.set_chunk_size(4096), 1, "00001000"),
        (m.abort(6), 2, "00000006"),
        (m.ack(1 << 32 | 5), 3, "00000005"),  # sequence number wraps at 2**32
        (m.window_ack_size(2_500_000), 5, "002625a0"),
        (m.set_peer_bandwidth(2_500_000), 6, "002625a002"),
        (m.set_peer_bandwidth(1000, 0), 6, "000003e800"),
    ]
    for msg, type_id, hexpayload in cases:
        assert (msg.type_id, msg.stream_id, msg.csid) == (type_id, 0, 2)
        assert msg.payload == bytes.fromhex(hexpayload)
    assert m.parse_u32(m.window_ack_size(2_500_000).payload) == 2_500_000
    assert m.parse_set_peer_bandwidth(bytes.fromhex("002625a001")) == (2_500_000, 1)
    for bad in (
        lambda: m.set_chunk_size(0),
        lambda: m.set_chunk_size(1 << 31),
        lambda: m.set_peer_bandwidth(5, 3),
        lambda: m.window_ack_size(1 << 32),
        lambda: m.abort(-1),
    ):
        with pytest.raises(ValueError):
            bad()
    for payload_ in (b"", b"\x00\x00\x00", b"\x00" * 5):
        with pytest.raises(ProtocolError):
            m.parse_u32(payload_)
    with pytest.raises(ProtocolError):
        m.parse_set_peer_bandwidth(b"\x00" * 4)
    with pytest.raises(ProtocolError):
        m.parse_set_peer_bandwidth(b"\x00" * 4 + b"\x03")


def test_user_control_codec() -> None:
    msg = m.user_control(m.UC_STREAM_BEGIN, 1)
    assert (msg.type_id, msg.csid, msg.stream_id) == (m.USER_CONTROL, 2, 0)
    assert msg.payload == bytes.fromhex("0000 00000001")
    msg = m.user_control(m.UC_SET_BUFFER_LENGTH, 1, 3000)
    assert msg.payload == bytes.fromhex("0003 00000001 00000bb8")
    assert m.parse_user_control(msg.payload) == (3, (1, 3000))
    ping = m.user_control(m.UC_PING_REQUEST, 123456)
    assert m.parse_user_control(ping.payload) == (6, (123456,))
    assert m.parse_user_control(bytes.fromhex("001f 00000001")) == (31, (1,))  # unknown event
    with pytest.raises(ValueError):
        m.user_control(m.UC_SET_BUFFER_LENGTH, 1)
    with pytest.raises(ValueError):
        m.user_control(m.UC_PING_RESPONSE)
    for bad in ("00", "0000", "0000 0000000100", "0003 00000001", "001f 000001"):
        with pytest.raises(ProtocolError):
            m.parse_user_control(bytes.fromhex(bad))


def agg_tag(type_id: int, ts: int, body: bytes) -> bytes:
    header = bytes((type_id,)) + len(body).to_bytes(3, "big")
    header += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes((ts >> 24,)) + b"\x00\x00\x00"
    return header + body + struct.pack(">I", 11 + len(body))


def test_split_aggregate() -> None:
    # Spec 7.1.6: sub-message timestamps are rebased so the first equals the aggregate
    # timestamp; the aggregate's message stream id overrides the sub-messages'.
    data = (
        agg_tag(9, 0x01000000, b"vid0")
        + agg_tag(8, 0x01000015, b"a")
        + agg_tag(9, 0x01000021, b"vid1")
    )
    agg = Message(m.AGGREGATE, 7, 5000, data, 6)
    subs = m.split_aggregate(agg)
    assert subs == [
        Message(9, 7, 5000, b"vid0", 6),
        Message(8, 7, 5021, b"a", 6),
        Message(9, 7, 5033, b"vid1", 6),
    ]
    # Rebasing across the 32-bit wrap.
    wrap = Message(m.AGGREGATE, 1, 0xFFFFFFF0, agg_tag(9, 0, b"x") + agg_tag(9, 0x20, b"y"), 6)
    assert [s.timestamp for s in m.split_aggregate(wrap)] == [0xFFFFFFF0, 0x10]
    assert m.split_aggregate(Message(m.AGGREGATE, 1, 0, b"", 6)) == []
    for bad in (data[:5], data[:-1], data[: 11 + 2], data + b"\x09"):
        with pytest.raises(ProtocolError):
            m.split_aggregate(Message(m.AGGREGATE, 1, 0, bad, 6))


def test_aggregate_through_chunk_stream() -> None:
    data = agg_tag(9, 100, payload(700)) + agg_tag(8, 120, payload(50))
    w = ChunkWriter()
    got = ChunkReader().feed(w.write(Message(m.AGGREGATE, 1, 100, data, 6)))
    assert [(s.type_id, s.timestamp, len(s.payload)) for s in m.split_aggregate(got[0])] == [
        (9, 100, 700),
        (8, 120, 50),
    ]

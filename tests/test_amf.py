"""Tests for rtmp.amf: byte-exact vectors from the AMF0/AMF3 specs, round trips, hostile input."""

from __future__ import annotations

import contextlib
import copy
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp.amf import (
    UNDEFINED,
    AMF3Value,
    AmfError,
    ECMAArray,
    TypedObject,
    XMLDocument,
    decode_amf0,
    decode_amf0_value,
    decode_amf3,
    decode_command_payload,
    encode_amf0,
    encode_amf3,
    encode_command_payload,
)
from tests.fuzzing import examples

# --------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------

CONNECT_OBJECT: dict[str, Any] = {
    "app": "videoberatung",
    "flashVer": "WIN 11,2,202,235",
    "swfUrl": "http://beratung.example.de/client.swf",
    "tcUrl": "rtmp://beratung.example.de/videoberatung",
    "fpad": False,
    "capabilities": 239.0,
    "audioCodecs": 3575.0,
    "videoCodecs": 252.0,
    "videoFunction": 1.0,
    "pageUrl": "http://beratung.example.de/termin",
    "objectEncoding": 3.0,
}
CONNECT_VALUES: list[Any] = ["connect", 1.0, CONNECT_OBJECT, "TOKEN"]

# The connect body exactly as Flash Player 11 lays it out (AMF0 §2.4 strings with U16 byte
# length, §2.2 numbers as big-endian IEEE doubles, §2.3 booleans, §2.5 object + 00 00 09).
CONNECT_BODY = (
    b"\x02\x00\x07connect"
    + b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"  # transaction id 1.0
    + b"\x03"
    + b"\x00\x03app\x02\x00\x0dvideoberatung"
    + b"\x00\x08flashVer\x02\x00\x10WIN 11,2,202,235"
    + b"\x00\x06swfUrl\x02\x00\x25http://beratung.example.de/client.swf"
    + b"\x00\x05tcUrl\x02\x00\x28rtmp://beratung.example.de/videoberatung"
    + b"\x00\x04fpad\x01\x00"
    + b"\x00\x0ccapabilities\x00\x40\x6d\xe0\x00\x00\x00\x00\x00"  # 239.0
    + b"\x00\x0baudioCodecs\x00\x40\xab\xee\x00\x00\x00\x00\x00"  # 3575.0
    + b"\x00\x0bvideoCodecs\x00\x40\x6f\x80\x00\x00\x00\x00\x00"  # 252.0
    + b"\x00\x0dvideoFunction\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"  # 1.0
    + b"\x00\x07pageUrl\x02\x00\x21http://beratung.example.de/termin"
    + b"\x00\x0eobjectEncoding\x00\x40\x08\x00\x00\x00\x00\x00\x00"  # 3.0
    + b"\x00\x00\x09"
    + b"\x02\x00\x05TOKEN"
)

GREETING = "Grüße aus Köln – 10 € 😀"
GREETING_UTF8 = GREETING.encode("utf-8")

# A type-17 (AMF3 command) body as Flash Player sends it: format selector 0x00, AMF0 name,
# transaction id and null command object, then the argument behind 0x11 as an AMF3 string
# (U29S-value = 33 << 1 | 1 = 0x43).
CHAT_BODY_AMF3 = (
    b"\x00"
    + b"\x02\x00\x04chat"
    + b"\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    + b"\x05"
    + b"\x11\x06\x43"
    + GREETING_UTF8
)


def _timed(fn: Callable[[], object], limit: float = 0.05) -> None:
    """Run ``fn``, expect AmfError, and require it to be rejected within ``limit`` seconds
    of this process's CPU time: the work bound is what is pinned, and CPU time does not
    grow when other processes share the cores (wall time did, 160 ms under a soak)."""
    start = time.process_time()
    with pytest.raises(AmfError):
        fn()
    elapsed = time.process_time() - start
    assert elapsed < limit, f"took {elapsed * 1000:.1f} ms"


def _same(actual: Any, expected: Any) -> None:
    """Strict structural equality: same types all the way down, floats bit-exact."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, float):
        assert struct.pack(">d", actual) == struct.pack(">d", expected)
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _same(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            _same(actual[key], expected[key])
    elif isinstance(expected, TypedObject):
        assert actual.class_name == expected.class_name
        _same(actual.fields, expected.fields)
    else:
        assert actual == expected


# --------------------------------------------------------------------------------------------
# AMF0: byte-exact vectors
# --------------------------------------------------------------------------------------------


def test_connect_command_encodes_byte_exact() -> None:
    assert encode_amf0(*CONNECT_VALUES) == CONNECT_BODY
    assert encode_command_payload(CONNECT_VALUES, amf3=False) == CONNECT_BODY


def test_connect_command_decodes() -> None:
    decoded = decode_amf0(CONNECT_BODY)
    _same(decoded, CONNECT_VALUES)
    assert decode_command_payload(CONNECT_BODY, amf3=False) == CONNECT_VALUES
    # Type 20 bodies have no format selector; a type-17 body is the same plus one 0x00.
    assert decode_command_payload(b"\x00" + CONNECT_BODY, amf3=True) == CONNECT_VALUES


def test_decode_amf0_value_walks_offsets() -> None:
    offset = 0
    values = []
    while offset < len(CONNECT_BODY):
        value, offset = decode_amf0_value(CONNECT_BODY, offset)
        values.append(value)
    assert values == CONNECT_VALUES
    assert offset == len(CONNECT_BODY)
    assert decode_amf0_value(CONNECT_BODY, 0) == ("connect", 10)
    with pytest.raises(AmfError):
        decode_amf0_value(CONNECT_BODY, len(CONNECT_BODY) + 1)
    with pytest.raises(AmfError):
        decode_amf0_value(CONNECT_BODY, len(CONNECT_BODY))


def test_accepts_bytearray_and_memoryview() -> None:
    assert decode_amf0(bytearray(CONNECT_BODY)) == CONNECT_VALUES
    assert decode_amf0(memoryview(CONNECT_BODY)) == CONNECT_VALUES
    assert decode_amf0_value(memoryview(CONNECT_BODY)[10:], 0) == (1.0, 9)


def test_utf8_strings_use_byte_length_prefix() -> None:
    assert len(GREETING_UTF8) == 33 != len(GREETING)
    amf0 = encode_amf0(GREETING)
    assert amf0 == b"\x02\x00\x21" + GREETING_UTF8
    assert decode_amf0(amf0) == [GREETING]
    amf3 = encode_amf3(GREETING)
    assert amf3 == b"\x06\x43" + GREETING_UTF8  # U29S-value 33 << 1 | 1
    assert decode_amf3(amf3) == (GREETING, len(amf3))
    assert encode_amf0("€") == b"\x02\x00\x03\xe2\x82\xac"
    assert encode_amf3("€") == b"\x06\x07\xe2\x82\xac"
    # UTF-8 in property names as well.
    obj = {"Straße": "Köln"}
    assert encode_amf0(obj) == b"\x03\x00\x07Stra\xc3\x9fe\x02\x00\x05K\xc3\xb6ln\x00\x00\x09"
    assert decode_amf0(encode_amf0(obj)) == [obj]
    assert decode_amf3(encode_amf3(obj))[0] == obj


def test_long_string_threshold_counts_utf8_bytes() -> None:
    # 21845 x "€" = 65535 bytes: the largest plain string (AMF0 §2.4).
    fits = "€" * 21845
    encoded = encode_amf0(fits)
    assert encoded[:3] == b"\x02\xff\xff"
    assert decode_amf0(encoded) == [fits]
    # 30000 chars but 90000 bytes: must be a long string (§2.14) although len(str) < 65535.
    big = "€" * 30000
    encoded = encode_amf0(big)
    assert encoded[:5] == b"\x0c" + struct.pack(">I", 90000)
    assert len(encoded) == 5 + 90000
    assert decode_amf0(encoded) == [big]


def test_amf0_scalar_markers() -> None:
    assert decode_amf0(b"\x05\x06\x0d") == [None, UNDEFINED, None]
    assert decode_amf0(b"\x01\x00\x01\x01\x01\x02") == [False, True, True]  # non-zero = true
    assert encode_amf0(None, UNDEFINED, True, False) == b"\x05\x06\x01\x01\x01\x00"
    assert encode_amf0(5) == b"\x00\x40\x14\x00\x00\x00\x00\x00\x00"
    assert decode_amf0(b"\x0c\x00\x00\x00\x02hi") == ["hi"]


def test_amf0_date_is_utc_and_ignores_timezone() -> None:
    when = datetime(2012, 1, 1, tzinfo=UTC)
    ms = b"\x42\x73\x49\x69\x0d\x00\x00\x00"  # 1325376000000.0
    assert encode_amf0(when) == b"\x0b" + ms + b"\x00\x00"
    # Naive datetimes are taken as UTC.
    assert encode_amf0(datetime(2012, 1, 1)) == b"\x0b" + ms + b"\x00\x00"
    (decoded,) = decode_amf0(b"\x0b" + ms + b"\xff\x88")  # tz -120 must be ignored
    assert decoded == when
    assert decoded.tzinfo is not None
    assert decoded.utcoffset() == when.utcoffset()
    with pytest.raises(AmfError):
        decode_amf0(b"\x0b\x7f\xf0\x00\x00\x00\x00\x00\x00\x00\x00")  # +inf
    with pytest.raises(AmfError):
        decode_amf0(b"\x0b\x43\x3e\xb2\x08\xc2\xdc\x00\x00\x00\x00")  # 8.64e15: year 275760


def test_ecma_array_round_trip_and_count_is_only_a_hint() -> None:
    meta = ECMAArray(duration=12.5, width=640.0)
    body = (
        b"\x02\x00\x0aonMetaData"
        + b"\x08\x00\x00\x00\x02"
        + b"\x00\x08duration\x00\x40\x29\x00\x00\x00\x00\x00\x00"
        + b"\x00\x05width\x00\x40\x84\x00\x00\x00\x00\x00\x00"
        + b"\x00\x00\x09"
    )
    assert encode_amf0("onMetaData", meta) == body
    name, decoded = decode_amf0(body)
    assert name == "onMetaData"
    assert type(decoded) is ECMAArray
    assert decoded == meta
    # A wrong associative-count (here 0) must not truncate or fail the array.
    lying = body.replace(b"\x08\x00\x00\x00\x02", b"\x08\x00\x00\x00\x00")
    assert decode_amf0(lying)[1] == meta


def test_amf0_strict_array_typed_object_xml() -> None:
    assert encode_amf0([1, "a"]) == (
        b"\x0a\x00\x00\x00\x02\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x02\x00\x01a"
    )
    assert decode_amf0(encode_amf0((1, "a"))) == [[1.0, "a"]]
    typed = TypedObject("de.beratung.Termin", {"id": 7.0})
    body = (
        b"\x10\x00\x12de.beratung.Termin\x00\x02id\x00\x40\x1c\x00\x00\x00\x00\x00\x00\x00\x00\x09"
    )
    assert encode_amf0(typed) == body
    assert decode_amf0(body) == [typed]
    xml = XMLDocument("<a>b</a>")
    assert encode_amf0(xml) == b"\x0f\x00\x00\x00\x08<a>b</a>"
    (decoded,) = decode_amf0(b"\x0f\x00\x00\x00\x08<a>b</a>")
    assert type(decoded) is XMLDocument
    assert decoded == "<a>b</a>"


def test_amf0_references() -> None:
    # Strict array (table index 0) holding an object (index 1) and a reference to it (§2.9).
    body = (
        b"\x0a\x00\x00\x00\x02"
        + b"\x03\x00\x01a\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x00\x00\x09"
        + b"\x07\x00\x01"
    )
    (decoded,) = decode_amf0(body)
    assert decoded == [{"a": 1.0}, {"a": 1.0}]
    assert decoded[0] is decoded[1]
    # References span all values of one decode_amf0 call.
    assert decode_amf0(b"\x03\x00\x00\x09\x07\x00\x00") == [{}, {}]
    with pytest.raises(AmfError, match="out of range"):
        decode_amf0(b"\x03\x00\x00\x09\x07\x00\x01")
    with pytest.raises(AmfError, match="out of range"):
        decode_amf0(b"\x07\x00\x00")
    # A reference to an object that is still open is a cycle: refused.
    with pytest.raises(AmfError, match="still being decoded"):
        decode_amf0(b"\x0a\x00\x00\x00\x01\x07\x00\x00")


def test_amf0_bytes_and_amf3value_use_avmplus_switch() -> None:
    assert encode_amf0(b"\x01\x02\x03") == b"\x11\x0c\x07\x01\x02\x03"
    assert decode_amf0(b"\x11\x0c\x07\x01\x02\x03") == [b"\x01\x02\x03"]
    assert encode_amf0(AMF3Value(["a", "a"])) == b"\x11\x09\x05\x01\x06\x03a\x06\x00"
    assert decode_amf0(b"\x11\x09\x05\x01\x06\x03a\x06\x00") == [["a", "a"]]
    # Each 0x11 switch gets fresh AMF3 tables: string ref 0 from the first switch is invisible.
    with pytest.raises(AmfError, match="string reference"):
        decode_amf0(b"\x11\x06\x03a\x11\x06\x00")
    assert decode_amf0(b"\x11\x06\x03a\x11\x06\x03a") == ["a", "a"]


def test_amf0_malformed_markers() -> None:
    for bad in (b"\x04", b"\x0e", b"\x12", b"\xff", b"\x09"):
        with pytest.raises(AmfError):
            decode_amf0(bad)
    with pytest.raises(AmfError, match="object-end"):
        decode_amf0(b"\x03\x00\x00\x05")  # empty key not followed by 0x09
    with pytest.raises(AmfError, match="UTF-8"):
        decode_amf0(b"\x02\x00\x02\xc3\x28")


# --------------------------------------------------------------------------------------------
# Type 17 command bodies
# --------------------------------------------------------------------------------------------


def test_type17_command_as_flash_sends_it() -> None:
    assert decode_command_payload(CHAT_BODY_AMF3, amf3=True) == ["chat", 0.0, None, GREETING]
    payload = encode_command_payload(["chat", 0.0, None, AMF3Value(GREETING)], amf3=True)
    assert payload == CHAT_BODY_AMF3


def test_type17_command_with_amf3_object_argument() -> None:
    body = (
        b"\x00\x02\x00\x04chat\x00\x40\x00\x00\x00\x00\x00\x00\x00\x05"
        + b"\x11\x0a\x0b\x01\x09text\x06\x05hi\x09from\x06\x0bKunde\x01"
    )
    assert decode_command_payload(body, amf3=True) == [
        "chat",
        2.0,
        None,
        {"text": "hi", "from": "Kunde"},
    ]
    # The selector is optional: a body without it decodes the same.
    assert decode_command_payload(body[1:], amf3=True) == decode_command_payload(body, True)


# --------------------------------------------------------------------------------------------
# AMF3
# --------------------------------------------------------------------------------------------

U29_VECTORS = [
    (0, b"\x04\x00"),
    (127, b"\x04\x7f"),
    (128, b"\x04\x81\x00"),
    (16383, b"\x04\xff\x7f"),
    (16384, b"\x04\x81\x80\x00"),
    (2**21 - 1, b"\x04\xff\xff\x7f"),
    (2**21, b"\x04\x80\xc0\x80\x00"),
    (2**28 - 1, b"\x04\xbf\xff\xff\xff"),
    (-1, b"\x04\xff\xff\xff\xff"),
    (-(2**28), b"\x04\xc0\x80\x80\x00"),
]


@pytest.mark.parametrize(("value", "encoded"), U29_VECTORS)
def test_amf3_integer_u29_edges(value: int, encoded: bytes) -> None:
    assert encode_amf3(value) == encoded
    assert decode_amf3(encoded) == (value, len(encoded))


def test_amf3_integers_outside_29_bits_become_doubles() -> None:
    assert encode_amf3(2**28) == b"\x05\x41\xb0\x00\x00\x00\x00\x00\x00"
    assert decode_amf3(encode_amf3(2**28))[0] == 2**28
    assert encode_amf3(-(2**28) - 1)[0] == 0x05
    assert encode_amf3(1.0) == b"\x05\x3f\xf0\x00\x00\x00\x00\x00\x00"  # floats stay doubles


def test_amf3_string_references() -> None:
    encoded = encode_amf3(["abc", "abc"])
    assert encoded == b"\x09\x05\x01\x06\x07abc\x06\x00"
    assert decode_amf3(encoded) == (["abc", "abc"], len(encoded))
    # The empty string is never put in the table, so "a" gets index 0 (§1.3.2).
    encoded = encode_amf3(["", "a", "a", ""])
    assert encoded == b"\x09\x09\x01\x06\x01\x06\x03a\x06\x00\x06\x01"
    assert decode_amf3(encoded)[0] == ["", "a", "a", ""]
    with pytest.raises(AmfError, match="string reference"):
        decode_amf3(b"\x06\x02")


def test_amf3_object_references() -> None:
    shared = {"x": 1}
    encoded = encode_amf3([shared, shared])
    # Array is object 0, the dict object 1; the second occurrence is U29O-ref 1 << 1.
    assert encoded == b"\x09\x05\x01\x0a\x0b\x01\x03x\x04\x01\x01\x0a\x02"
    decoded, _ = decode_amf3(encoded)
    assert decoded == [shared, shared]
    assert decoded[0] is decoded[1]
    # Dates and byte arrays occupy object-table slots too.
    when = datetime(2012, 1, 1, tzinfo=UTC)
    decoded, _ = decode_amf3(b"\x09\x05\x01\x08\x01\x42\x73\x49\x69\x0d\x00\x00\x00\x08\x02")
    assert decoded == [when, when]
    with pytest.raises(AmfError, match="out of range"):
        decode_amf3(b"\x0a\x00")
    with pytest.raises(AmfError, match="still being decoded"):
        decode_amf3(b"\x09\x03\x01\x09\x00")


def test_amf3_trait_references() -> None:
    points = [TypedObject("Point", {"x": 1, "y": 2}), TypedObject("Point", {"x": 3, "y": 4})]
    encoded = encode_amf3(points)
    assert encoded == (
        b"\x09\x05\x01"
        + b"\x0a\x23\x0bPoint\x03x\x03y\x04\x01\x04\x02"  # U29O-traits: 2 sealed, not dynamic
        + b"\x0a\x01\x04\x03\x04\x04"  # U29O-traits-ref 0
    )
    assert decode_amf3(encoded)[0] == points
    # Anonymous dynamic objects share their (empty) traits as well.
    assert encode_amf3([{"a": 1}, {"b": 2}]) == (
        b"\x09\x05\x01\x0a\x0b\x01\x03a\x04\x01\x01\x0a\x01\x03b\x04\x02\x01"
    )
    # Sealed and dynamic members together: traits 0x1b = 1 sealed member, dynamic.
    decoded, _ = decode_amf3(b"\x0a\x1b\x09User\x05id\x04\x05\x05nm\x06\x03X\x01")
    assert decoded == TypedObject("User", {"id": 5, "nm": "X"})
    with pytest.raises(AmfError, match="traits reference"):
        decode_amf3(b"\x0a\x05")


def test_amf3_arrays() -> None:
    assert decode_amf3(b"\x09\x01\x01")[0] == []
    # Associative part "a" -> 1, then dense ["x"]: a mixed array becomes an ECMAArray.
    decoded, _ = decode_amf3(b"\x09\x03\x03a\x04\x01\x01\x06\x03x")
    assert type(decoded) is ECMAArray
    assert decoded == {"0": "x", "a": 1}
    encoded = encode_amf3(ECMAArray(a=1))
    assert encoded == b"\x09\x01\x03a\x04\x01\x01"
    _same(decode_amf3(encoded)[0], ECMAArray(a=1))


def test_amf3_other_types() -> None:
    assert decode_amf3(b"\x00\x01\x02\x03") == (UNDEFINED, 1)
    assert [decode_amf3(bytes([m]))[0] for m in (0, 1, 2, 3)] == [UNDEFINED, None, False, True]
    assert encode_amf3(None) + encode_amf3(UNDEFINED) == b"\x01\x00"
    assert encode_amf3(True) + encode_amf3(False) == b"\x03\x02"
    for marker in (b"\x07", b"\x0b"):
        value, _ = decode_amf3(marker + b"\x09<a/>")
        assert type(value) is XMLDocument
        assert value == "<a/>"
    assert encode_amf3(XMLDocument("<a/>")) == b"\x07\x09<a/>"
    assert decode_amf3(b"\x0c\x07\x01\x02\x03")[0] == b"\x01\x02\x03"
    assert encode_amf3(bytearray(b"\x01\x02\x03")) == b"\x0c\x07\x01\x02\x03"
    when = datetime(2012, 1, 1, tzinfo=UTC)
    assert encode_amf3(when) == b"\x08\x01\x42\x73\x49\x69\x0d\x00\x00\x00"
    assert decode_amf3(encode_amf3(when))[0] == when


def test_amf3_vectors_and_dictionary() -> None:
    assert decode_amf3(b"\x0d\x05\x00\xff\xff\xff\xff\x00\x00\x00\x01")[0] == [-1, 1]
    assert decode_amf3(b"\x0e\x03\x01\xff\xff\xff\xff")[0] == [4294967295]
    assert decode_amf3(b"\x0f\x03\x00\x3f\xf0\x00\x00\x00\x00\x00\x00")[0] == [1.0]
    assert decode_amf3(b"\x10\x05\x00\x03*\x06\x03a\x04\x05")[0] == ["a", 5]
    encoded = b"\x11\x05\x00\x04\x01\x06\x03a\x06\x03b\x04\x02"
    assert decode_amf3(encoded)[0] == {1: "a", "b": 2}
    # Non-string keys can only be expressed as an AMF3 Dictionary (§3.16).
    assert encode_amf3({1: "a", "b": 2}) == encoded
    with pytest.raises(AmfError, match="unhashable"):
        decode_amf3(b"\x11\x03\x00\x09\x01\x01\x01")


def test_amf3_externalizable() -> None:
    name = b"flex.messaging.io.ArrayCollection"
    body = b"\x0a\x07\x43" + name + b"\x09\x05\x01\x04\x01\x04\x02"
    assert decode_amf3(body) == ([1, 2], len(body))
    proxy = b"flex.messaging.io.ObjectProxy"
    body = b"\x0a\x07" + bytes([len(proxy) << 1 | 1]) + proxy + b"\x0a\x0b\x01\x03a\x04\x01\x01"
    assert decode_amf3(body)[0] == {"a": 1}
    with pytest.raises(AmfError, match="externalizable"):
        decode_amf3(b"\x0a\x07\x07Foo\x04\x01")


def test_amf3_u29_fourth_byte_uses_8_bits() -> None:
    # 0xff in the 4th byte contributes 8 bits: 0x1fffffff -> -1 as int29. A 7-bit reading
    # would give a different number.
    assert decode_amf3(b"\x04\xff\xff\xff\xff")[0] == -1
    assert decode_amf3(b"\x04\x80\x80\x80\xff")[0] == 0xFF
    with pytest.raises(AmfError):
        decode_amf3(b"\x04\xff\xff\xff")


# --------------------------------------------------------------------------------------------
# Encoding errors and sentinel behaviour
# --------------------------------------------------------------------------------------------


def test_encoding_rejects_unrepresentable_values() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for value in (object(), cyclic, {1: "a"}, {"": 1}, "\ud800", 10**400):
        with pytest.raises(AmfError):
            encode_amf0(value)
    for value in (object(), cyclic, {"": 1}, "\ud800"):
        with pytest.raises(AmfError):
            encode_amf3(value)


def test_undefined_sentinel() -> None:
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert copy.deepcopy(UNDEFINED) is UNDEFINED
    assert UNDEFINED is not None


# --------------------------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------------------------


def test_every_truncation_of_connect_fails_or_yields_a_prefix() -> None:
    boundaries = {0: 0}
    offset = 0
    for count in range(1, len(CONNECT_VALUES) + 1):
        offset = decode_amf0_value(CONNECT_BODY, offset)[1]
        boundaries[offset] = count
    for cut in range(len(CONNECT_BODY)):
        prefix = CONNECT_BODY[:cut]
        if cut in boundaries:
            assert decode_amf0(prefix) == CONNECT_VALUES[: boundaries[cut]]
        else:
            with pytest.raises(AmfError):
                decode_amf0(prefix)


def test_every_truncation_of_amf3_value_fails() -> None:
    full = encode_amf3(
        [TypedObject("P", {"x": 1}), {"s": GREETING, "d": datetime(2012, 1, 1, tzinfo=UTC)}]
    )
    assert decode_amf3(full)[1] == len(full)
    for cut in range(len(full)):
        with pytest.raises(AmfError):
            decode_amf3(full[:cut])
    for cut in range(len(CHAT_BODY_AMF3)):
        try:
            values = decode_command_payload(CHAT_BODY_AMF3[:cut], amf3=True)
        except AmfError:
            continue
        assert values == ["chat", 0.0, None, GREETING][: len(values)]


@pytest.mark.parametrize(
    "unit",
    [b"\x0a\x00\x00\x00\x01", b"\x03\x00\x01a", b"\x08\x00\x00\x00\x01\x00\x01a"],
    ids=["strict-array", "object", "ecma-array"],
)
def test_amf0_deep_nesting_is_rejected(unit: bytes) -> None:
    data = unit * 10000
    _timed(lambda: decode_amf0(data))
    # Even if a caller allows it, the interpreter stack must not leak a RecursionError.
    _timed(lambda: decode_amf0(data, max_depth=10**6))


@pytest.mark.parametrize(
    "unit",
    [b"\x09\x03\x01", b"\x0a\x0b\x01\x03a", b"\x10\x03\x00\x01", b"\x11\x03\x00\x06\x03k"],
    ids=["array", "object", "vector-object", "dictionary"],
)
def test_amf3_deep_nesting_is_rejected(unit: bytes) -> None:
    data = unit * 10000
    _timed(lambda: decode_amf3(data))
    _timed(lambda: decode_amf3(data, max_depth=10**6))
    _timed(lambda: decode_amf0(b"\x11" + data))


def test_max_depth_boundary() -> None:
    nested: Any = 1.0
    for _ in range(32):
        nested = [nested]
    assert decode_amf0(encode_amf0(nested)) == [nested]
    assert decode_amf3(encode_amf3(nested))[0] == nested
    with pytest.raises(AmfError, match="max_depth"):
        decode_amf0(encode_amf0([nested]))
    with pytest.raises(AmfError, match="max_depth"):
        decode_amf3(encode_amf3([nested]))
    assert decode_amf0(encode_amf0([nested]), max_depth=33) == [[nested]]


@pytest.mark.parametrize(
    ("decoder", "data"),
    [
        (decode_amf0, b"\x0a\x80\x00\x00\x00" + b"\x05" * 16),  # strict array of 2**31
        (decode_amf0, b"\x0c\xff\xff\xff\xff" + b"x" * 16),  # long string of 4 GB
        (decode_amf0, b"\x0f\xff\xff\xff\xff" + b"x" * 16),  # XML of 4 GB
        (decode_amf0, b"\x02\xff\xff" + b"x" * 16),  # string of 64 KB
        (decode_amf0, b"\x10\xff\xffPoint"),  # class name of 64 KB
        (lambda d: decode_amf3(d), b"\x09\xff\xff\xff\xff\x01"),  # dense count 2**28-1
        (lambda d: decode_amf3(d), b"\x06\xbf\xff\xff\xff"),  # string of 2**28-1 bytes
        (lambda d: decode_amf3(d), b"\x0c\xbf\xff\xff\xff"),  # ByteArray of 2**28-1 bytes
        (lambda d: decode_amf3(d), b"\x0d\xff\xff\xff\xff\x00"),  # Vector.<int>
        (lambda d: decode_amf3(d), b"\x0f\x81\x01\x00" + b"\x00" * 80),  # 64 doubles, 80 bytes
        (lambda d: decode_amf3(d), b"\x0a\xff\xff\xff\xf3\x01"),  # 2**25 sealed members
        (lambda d: decode_amf3(d), b"\x11\xff\xff\xff\xff\x00"),  # dictionary
    ],
)
def test_oversized_counts_are_rejected_before_allocation(
    decoder: Callable[[bytes], object], data: bytes
) -> None:
    _timed(lambda: decoder(data))


def test_reference_bombs_are_rejected() -> None:
    # Three strict arrays: 100 nulls, then 100 refs to it, then 100 refs to that. Only ~700
    # bytes, but a consumer walking the result would visit 10**6 nodes (10**8 at four levels).
    base = b"\x0a\x00\x00\x00\x64" + b"\x05" * 100
    level1 = b"\x0a\x00\x00\x00\x64" + b"\x07\x00\x00" * 100
    level2 = b"\x0a\x00\x00\x00\x64" + b"\x07\x00\x01" * 100
    assert len(decode_amf0(base + level1)[1]) == 100
    _timed(lambda: decode_amf0(base + level1 + level2))
    # Same for AMF3 object references: outer array 0, A = 100 nulls (1), B = 100 x ref 1 (2),
    # C = 100 x ref 2. U29A-value for 100 dense items is 201 = 0x81 0x49.
    first = b"\x09\x81\x49\x01" + b"\x01" * 100
    second = b"\x09\x81\x49\x01" + b"\x09\x02" * 100
    third = b"\x09\x81\x49\x01" + b"\x09\x04" * 100
    decoded, _ = decode_amf3(b"\x09\x05\x01" + first + second)
    assert decoded[1][99] is decoded[0]
    _timed(lambda: decode_amf3(b"\x09\x07\x01" + first + second + third))


def test_reference_chains_count_towards_max_depth() -> None:
    # v0 = [null]; v(k) = [ref v(k-1)]: each value is one level deep on the wire, but v(k)
    # nests k+1 levels once references are followed.
    chain = b"\x0a\x00\x00\x00\x01\x05" + b"".join(
        b"\x0a\x00\x00\x00\x01\x07" + struct.pack(">H", k) for k in range(39)
    )
    with pytest.raises(AmfError, match="max_depth"):
        decode_amf0(chain)
    values = decode_amf0(chain, max_depth=40)
    assert values[1] == [values[0]]
    assert values[39][0] is values[38]


# --------------------------------------------------------------------------------------------
# Performance sanity (linear, not quadratic)
# --------------------------------------------------------------------------------------------


def test_large_arrays_decode_quickly() -> None:
    values = [float(i) for i in range(100_000)]
    encoded = encode_amf0(values)
    # CPU time, not wall time: the decoder's work is what is pinned (12 s wall at load 17)
    start = time.process_time()
    assert decode_amf0(encoded) == [values]
    encoded3 = encode_amf3(list(range(100_000)))
    assert decode_amf3(encoded3)[0] == list(range(100_000))
    assert time.process_time() - start < 2.0


# --------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_KEYS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**53), max_value=2**53)
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=20,
)


def _as_amf0(value: Any) -> Any:
    """What AMF0 gives back: every number is a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_as_amf0(v) for v in value]
    return {k: _as_amf0(v) for k, v in value.items()}


def _as_amf3(value: Any) -> Any:
    """What AMF3 gives back: ints inside 29 bits stay ints, others become doubles."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -(2**28) <= value < 2**28 else float(value)
    if isinstance(value, list):
        return [_as_amf3(v) for v in value]
    return {k: _as_amf3(v) for k, v in value.items()}


@given(st.lists(_VALUES, max_size=4))
@settings(max_examples=examples(400), deadline=None)
def test_amf0_round_trip(values: list[Any]) -> None:
    decoded = decode_amf0(encode_amf0(*values), max_depth=200)
    _same(decoded, [_as_amf0(v) for v in values])


@given(_VALUES)
@settings(max_examples=examples(400), deadline=None)
def test_amf3_round_trip(value: Any) -> None:
    encoded = encode_amf3(value)
    decoded, end = decode_amf3(encoded, max_depth=200)
    assert end == len(encoded)
    _same(decoded, _as_amf3(value))


@given(_VALUES, st.booleans())
@settings(max_examples=examples(200), deadline=None)
def test_command_payload_round_trip(value: Any, amf3: bool) -> None:
    values = ["call", 3.0, None, AMF3Value(value), value]
    decoded = decode_command_payload(encode_command_payload(values, amf3), amf3)
    _same(decoded, ["call", 3.0, None, _as_amf3(value), _as_amf0(value)])


_SEEDS = [
    CONNECT_BODY,
    CHAT_BODY_AMF3,
    encode_amf0("onMetaData", ECMAArray(duration=1.0, codec="avc1")),
    encode_amf0(AMF3Value([TypedObject("P", {"x": 1}), {"a": [1, 2]}, b"\x00", "x", "x"])),
    b"\x0a\x00\x00\x00\x02\x03\x00\x00\x09\x07\x00\x01",
    b"\x0b\x42\x73\x49\x69\x0d\x00\x00\x00\x00\x00",
]
_AMF3_SEEDS = [
    b"\x0a\x23\x0bPoint\x03x\x03y\x04\x01\x04\x02",
    b"\x09\x07\x01\x0a\x0b\x01\x03a\x04\x01\x01\x0a\x02\x11\x03\x00\x04\x01\x0c\x03\x00",
    b"\x0d\x05\x00\xff\xff\xff\xff\x00\x00\x00\x01",
    b"\x0a\x07\x43flex.messaging.io.ArrayCollection\x09\x05\x01\x04\x01\x04\x02",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS + _AMF3_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@given(st.binary(max_size=64) | _mutated())
@settings(max_examples=examples(1000), deadline=None)
def test_fuzz_decoders_raise_only_amf_error(data: bytes) -> None:
    decoders: list[Callable[[bytes], object]] = [
        decode_amf0,
        lambda d: decode_amf3(d),
        lambda d: decode_command_payload(d, amf3=True),
        lambda d: decode_command_payload(d, amf3=False),
        lambda d: decode_amf0(b"\x11" + d),
    ]
    for decoder in decoders:
        with contextlib.suppress(AmfError):
            decoder(data)


# --------------------------------------------------------------------------------------------
# Cross-check against pyrtmp's independent AMF0 implementation
# --------------------------------------------------------------------------------------------


def test_pyrtmp_reads_our_connect_and_we_read_its_output() -> None:
    # pyrtmp (and its bitstring) are test extras: missing, they are an import error, not a skip
    import bitstring
    from pyrtmp.amf import serializers

    stream = bitstring.BitStream(bytes=CONNECT_BODY)
    name = serializers.AMF0Deserializer.from_stream(stream)
    transaction_id = serializers.AMF0Deserializer.from_stream(stream)
    command_object = serializers.AMF0Deserializer.from_stream(stream)
    assert [name, transaction_id, command_object] == CONNECT_VALUES[:3]
    # pyrtmp stops *at* the object-end marker without consuming it; it must sit exactly there.
    assert stream.peek("bytes:3") == b"\x00\x00\x09"
    stream.bytepos += 3
    assert serializers.AMF0Deserializer.from_stream(stream) == "TOKEN"
    assert stream.bytepos == len(CONNECT_BODY)

    # And the other direction: pyrtmp's writer (ASCII-only, it counts characters) for the same
    # command must decode to the same values with our reader.
    out = bitstring.BitStream()
    for value in CONNECT_VALUES:
        serializers.AMF0Serializer.create_object(out, value)
    assert out.bytes == CONNECT_BODY
    assert decode_amf0(out.bytes) == CONNECT_VALUES

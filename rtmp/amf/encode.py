"""The AMF0/AMF3 encoder (our own, trusted values; cycles and depth still refused)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rtmp.amf.values import (
    _A0_AVMPLUS,
    _A0_BOOLEAN,
    _A0_DATE,
    _A0_ECMA_ARRAY,
    _A0_LONG_STRING,
    _A0_NULL,
    _A0_NUMBER,
    _A0_OBJECT,
    _A0_STRICT_ARRAY,
    _A0_STRING,
    _A0_TYPED_OBJECT,
    _A0_UNDEFINED,
    _A0_XML,
    _A3_ARRAY,
    _A3_BYTE_ARRAY,
    _A3_DATE,
    _A3_DICTIONARY,
    _A3_DOUBLE,
    _A3_FALSE,
    _A3_INTEGER,
    _A3_NULL,
    _A3_OBJECT,
    _A3_STRING,
    _A3_TRUE,
    _A3_UNDEFINED,
    _A3_XML_DOC,
    _DATE0,
    _DOUBLE,
    _EPOCH,
    _INT29_MAX,
    _INT29_MIN,
    _MAX_ENCODE_DEPTH,
    _ONE_MS,
    _U16,
    _U29_MAX,
    _U32,
    UNDEFINED,
    AMF3Value,
    AmfError,
    ECMAArray,
    TypedObject,
    XMLDocument,
)

# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _utf8_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
        raise AmfError(f"string is not encodable as UTF-8: {exc}") from exc


def _to_double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError as exc:
        raise AmfError(f"integer {value} does not fit in an AMF double") from exc


def _datetime_to_ms(value: datetime) -> float:
    # Naive datetimes are taken as UTC: AMF dates are UTC, and the local zone of a server is
    # never what a caller meant.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) / _ONE_MS


def _u29_bytes(value: int) -> bytes:
    """AMF3 §1.3.1 U29 encoding of ``0 <= value < 2**29``."""
    if value < 0:
        raise AmfError(f"U29 cannot encode {value}")
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value >> 7) | 0x80, value & 0x7F))
    if value < 0x200000:
        return bytes(((value >> 14) | 0x80, ((value >> 7) & 0x7F) | 0x80, value & 0x7F))
    if value <= _U29_MAX:
        return bytes(
            (
                (value >> 22) | 0x80,
                ((value >> 15) & 0x7F) | 0x80,
                ((value >> 8) & 0x7F) | 0x80,
                value & 0xFF,
            )
        )
    raise AmfError(f"U29 cannot encode {value} (maximum {_U29_MAX})")


def _u29_length(n: int, what: str) -> bytes:
    # Length/count headers are U29 with a low "inline" flag bit, so 28 bits remain.
    if n > _INT29_MAX:
        raise AmfError(f"{what} of {n} exceeds the AMF3 limit of {_INT29_MAX}")
    return _u29_bytes((n << 1) | 1)


class _Amf0Encoder:
    """AMF0 writer. Emits no references (§2.9 is optional for writers); shared sub-objects
    are simply written again, which every reader accepts."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, value: Any, depth: int) -> None:
        out = self.out
        if value is None:
            out.append(_A0_NULL)
        elif value is UNDEFINED:
            out.append(_A0_UNDEFINED)
        elif isinstance(value, bool):  # before int: bool is an int subclass
            out += bytes((_A0_BOOLEAN, 1 if value else 0))
        elif isinstance(value, int | float):
            out.append(_A0_NUMBER)
            out += _DOUBLE.pack(_to_double(value))
        elif isinstance(value, XMLDocument):  # before str: it is a str subclass
            raw = _utf8_bytes(value)
            self._check_u32(len(raw), "XML document")
            out.append(_A0_XML)
            out += _U32.pack(len(raw))
            out += raw
        elif isinstance(value, str):
            self._string(value)
        else:
            self._complex(value, depth)

    def _string(self, value: str) -> None:
        # §2.4 / §2.14: the U16 header counts UTF-8 *bytes*; beyond 65535 bytes use long string.
        raw = _utf8_bytes(value)
        n = len(raw)
        if n <= 0xFFFF:
            self.out.append(_A0_STRING)
            self.out += _U16.pack(n)
        else:
            self._check_u32(n, "string")
            self.out.append(_A0_LONG_STRING)
            self.out += _U32.pack(n)
        self.out += raw

    @staticmethod
    def _check_u32(n: int, what: str) -> None:
        if n > 0xFFFFFFFF:
            raise AmfError(f"{what} of {n} bytes exceeds the AMF0 limit of 4 GiB")

    def _complex(self, value: Any, depth: int) -> None:
        out = self.out
        if depth >= _MAX_ENCODE_DEPTH:
            raise AmfError(f"value nests deeper than {_MAX_ENCODE_DEPTH} levels (cycle?)")
        inner = depth + 1
        if isinstance(value, AMF3Value):
            out.append(_A0_AVMPLUS)
            out += encode_amf3(value.value)
        elif isinstance(value, bytes | bytearray | memoryview):
            # AMF0 has no binary type; Flash's ByteArray only exists in AMF3 (§3.14).
            out.append(_A0_AVMPLUS)
            out += encode_amf3(value)
        elif isinstance(value, ECMAArray):  # before dict: it is a dict subclass
            out.append(_A0_ECMA_ARRAY)
            self._check_u32(len(value), "ECMA array")
            out += _U32.pack(len(value))
            self._properties(value, inner)
        elif isinstance(value, dict):
            out.append(_A0_OBJECT)
            self._properties(value, inner)
        elif isinstance(value, TypedObject):
            raw = _utf8_bytes(value.class_name)
            if len(raw) > 0xFFFF:
                raise AmfError("class name longer than 65535 bytes")
            out.append(_A0_TYPED_OBJECT)
            out += _U16.pack(len(raw))
            out += raw
            self._properties(value.fields, inner)
        elif isinstance(value, list | tuple):
            self._check_u32(len(value), "strict array")
            out.append(_A0_STRICT_ARRAY)
            out += _U32.pack(len(value))
            for item in value:
                self.write(item, inner)
        elif isinstance(value, datetime):
            out.append(_A0_DATE)
            out += _DATE0.pack(_datetime_to_ms(value), 0)
        else:
            raise AmfError(f"cannot encode {type(value).__name__} as AMF0")

    def _properties(self, props: dict[Any, Any], depth: int) -> None:
        out = self.out
        for key, item in props.items():
            if not isinstance(key, str):
                raise AmfError(f"AMF0 property names must be str, got {type(key).__name__}")
            raw = _utf8_bytes(key)
            if not raw:
                # The empty name is reserved for the object-end terminator (§2.5).
                raise AmfError("AMF0 property names must not be empty")
            if len(raw) > 0xFFFF:
                raise AmfError("AMF0 property name longer than 65535 bytes")
            out += _U16.pack(len(raw))
            out += raw
            self.write(item, depth)
        out += b"\x00\x00\x09"


class _Amf3Encoder:
    """AMF3 writer for one serialization context (one set of reference tables).

    Uses string references (§1.3.2), traits references (§3.12) and object references for
    repeated containers, assigning object-table indices exactly as a reader does: one per
    inline Date, Array, Object, XML, ByteArray, Vector or Dictionary, in encounter order.
    """

    __slots__ = ("in_progress", "keep_alive", "object_count", "objects", "out", "strings", "traits")

    def __init__(self) -> None:
        self.out = bytearray()
        self.strings: dict[str, int] = {}
        self.traits: dict[tuple[str, tuple[str, ...], bool], int] = {}
        # id() -> object table index; ``keep_alive`` pins the objects so ids stay unique.
        self.objects: dict[int, int] = {}
        self.keep_alive: list[Any] = []
        self.in_progress: set[int] = set()
        self.object_count = 0

    def string(self, value: str) -> None:
        """Write a UTF-8-vr (§1.3.2): a reference when the string was sent before."""
        if not value:
            self.out.append(0x01)  # empty string: always inline, never in the table
            return
        index = self.strings.get(value)
        if index is not None:
            self.out += _u29_bytes(index << 1)
            return
        self.strings[value] = len(self.strings)
        raw = _utf8_bytes(value)
        self.out += _u29_length(len(raw), "string")
        self.out += raw

    def write(self, value: Any, depth: int) -> None:
        out = self.out
        if value is None:
            out.append(_A3_NULL)
        elif value is UNDEFINED:
            out.append(_A3_UNDEFINED)
        elif value is True:
            out.append(_A3_TRUE)
        elif value is False:
            out.append(_A3_FALSE)
        elif isinstance(value, int) and not isinstance(value, bool):
            if _INT29_MIN <= value <= _INT29_MAX:
                out.append(_A3_INTEGER)
                out += _u29_bytes(value & _U29_MAX)
            else:  # §3.6: integers outside 29 bits are sent as doubles
                out.append(_A3_DOUBLE)
                out += _DOUBLE.pack(_to_double(value))
        elif isinstance(value, float):
            out.append(_A3_DOUBLE)
            out += _DOUBLE.pack(value)
        elif isinstance(value, XMLDocument):  # before str
            self._blob(_A3_XML_DOC, _utf8_bytes(value), "XML document")
        elif isinstance(value, str):
            out.append(_A3_STRING)
            self.string(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            self._blob(_A3_BYTE_ARRAY, bytes(value), "ByteArray")
        elif isinstance(value, datetime):
            out.append(_A3_DATE)
            out.append(0x01)  # U29D-value: inline, remaining bits unused
            out += _DOUBLE.pack(_datetime_to_ms(value))
            self.object_count += 1
        elif isinstance(value, AMF3Value):
            self.write(value.value, depth)  # already AMF3: the wrapper is transparent here
        elif isinstance(value, dict | list | tuple | TypedObject):
            self._container(value, depth)
        else:
            raise AmfError(f"cannot encode {type(value).__name__} as AMF3")

    def _blob(self, marker: int, raw: bytes, what: str) -> None:
        """An XMLDocument or ByteArray: marker, U29 length, bytes (a referencable object)."""
        self.out.append(marker)
        self.out += _u29_length(len(raw), what)
        self.out += raw
        self.object_count += 1

    def _container(self, value: Any, depth: int) -> None:
        out = self.out
        key = id(value)
        if key in self.in_progress:
            raise AmfError("cannot encode a cyclic structure")
        index = self.objects.get(key)
        if index is not None:
            out.append(_marker_for(value))
            out += _u29_bytes(index << 1)  # U29O-ref / U29A-ref etc.
            return
        if depth >= _MAX_ENCODE_DEPTH:
            raise AmfError(f"value nests deeper than {_MAX_ENCODE_DEPTH} levels")
        self.objects[key] = self.object_count
        self.object_count += 1
        self.keep_alive.append(value)
        self.in_progress.add(key)
        inner = depth + 1
        if isinstance(value, list | tuple):
            out.append(_A3_ARRAY)
            out += _u29_length(len(value), "array")
            out.append(0x01)  # empty associative part
            for item in value:
                self.write(item, inner)
        elif isinstance(value, ECMAArray):
            # §3.11 associative-only Array: no dense part, name/value pairs, empty-string end.
            out.append(_A3_ARRAY)
            out.append(0x01)
            self._dynamic_members(value, inner)
        elif isinstance(value, TypedObject):
            out.append(_A3_OBJECT)
            names = tuple(value.fields)
            for name in names:
                if not isinstance(name, str):
                    raise AmfError(f"member names must be str, got {type(name).__name__}")
            self._traits(value.class_name, names, dynamic=False)
            for name in names:
                self.write(value.fields[name], inner)
        elif all(isinstance(k, str) for k in value):
            out.append(_A3_OBJECT)
            self._traits("", (), dynamic=True)
            self._dynamic_members(value, inner)
        else:
            # Non-string keys only exist in an ActionScript Dictionary (§3.16).
            out.append(_A3_DICTIONARY)
            out += _u29_length(len(value), "dictionary")
            out.append(0x00)  # weak-keys = false
            for k, item in value.items():
                self.write(k, inner)
                self.write(item, inner)
        self.in_progress.discard(key)

    def _traits(self, class_name: str, sealed: tuple[str, ...], *, dynamic: bool) -> None:
        signature = (class_name, sealed, dynamic)
        index = self.traits.get(signature)
        if index is not None:
            self.out += _u29_bytes((index << 2) | 0b01)  # U29O-traits-ref
            return
        self.traits[signature] = len(self.traits)
        if len(sealed) > (_U29_MAX >> 4):
            raise AmfError("too many sealed members")
        # U29O-traits: 0b0011 = inline object + inline traits, bit 3 = dynamic, then count.
        self.out += _u29_bytes((len(sealed) << 4) | (0b1000 if dynamic else 0) | 0b0011)
        self.string(class_name)
        for name in sealed:
            self.string(name)

    def _dynamic_members(self, members: dict[str, Any], depth: int) -> None:
        for name, item in members.items():
            if not isinstance(name, str) or not name:
                # The empty string terminates the member list, so it cannot be a name.
                raise AmfError(f"dynamic member names must be non-empty str, got {name!r}")
            self.string(name)
            self.write(item, depth)
        self.out.append(0x01)


def _marker_for(value: Any) -> int:
    if isinstance(value, list | tuple | ECMAArray):
        return _A3_ARRAY
    if isinstance(value, TypedObject) or all(isinstance(k, str) for k in value):
        return _A3_OBJECT
    return _A3_DICTIONARY


def encode_amf0(*values: Any) -> bytes:
    """Encode ``values`` back to back as AMF0.

    ``int``/``float`` become numbers (ints beyond 2**53 lose precision, as in ActionScript),
    ``bytes`` and :class:`AMF3Value` are written behind the avmplus marker 0x11.
    """
    encoder = _Amf0Encoder()
    for value in values:
        encoder.write(value, 0)
    return bytes(encoder.out)


def encode_amf3(value: Any) -> bytes:
    """Encode one value as AMF3 with its own reference tables."""
    encoder = _Amf3Encoder()
    encoder.write(value, 0)
    return bytes(encoder.out)


def encode_command_payload(values: Sequence[Any], amf3: bool) -> bytes:
    """Encode an RTMP command/data body; ``amf3`` selects the type 17/15 form (leading 0x00)."""
    body = encode_amf0(*values)
    return b"\x00" + body if amf3 else body

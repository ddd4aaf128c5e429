"""AMF0 and AMF3 encoder/decoder (sans-I/O).

RTMP carries command and data messages as Action Message Format values: AMF0 for message
types 20/18 and "AMF3" (really AMF0 with the avmplus escape, AMF0 spec §3.1) for types 17/15.
Flash Player 11 and ffmpeg are the peers we care about, but every byte we decode comes from
the network, so the decoder is written for hostile input:

* every malformed input raises :class:`AmfError` (a ``ValueError``) - never ``IndexError``,
  ``struct.error``, ``RecursionError`` or ``UnicodeDecodeError``;
* every length/count is checked against the bytes actually left *before* anything is
  allocated, so a 9-byte message cannot make us reserve 4 GB;
* nesting is bounded by ``max_depth``, and that bound also applies to the *effective* depth
  created through references (AMF0 §2.9, AMF3 §3.1 object table);
* references may not point at an object that is still being decoded (no cycles), and the
  total number of nodes that references can expand to is bounded linearly in the input size.
  Without that, ~600 bytes of nested references describe a 2**40 node tree ("billion laughs")
  that would hang any later code walking the result (logging, re-encoding, ``==``).

Spec references: "Action Message Format -- AMF 0" (Adobe, 2006) and "AMF 3 Specification"
(Adobe, January 2013).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "UNDEFINED",
    "AMF3Value",
    "AmfError",
    "ECMAArray",
    "TypedObject",
    "XMLDocument",
    "decode_amf0",
    "decode_amf0_value",
    "decode_amf3",
    "decode_command_payload",
    "encode_amf0",
    "encode_amf3",
    "encode_command_payload",
]


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


class AmfError(ValueError):
    """Malformed or hostile AMF input, or a Python value that AMF cannot represent."""


class _UndefinedType(enum.Enum):
    # An enum member is the idiomatic typed singleton: it survives copy/pickle as the same
    # object and lets mypy narrow ``x is UNDEFINED``.
    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        # ActionScript's ``undefined`` is falsy; mirror that so ``if value:`` behaves alike.
        return False


UNDEFINED: Final = _UndefinedType.UNDEFINED
"""AMF ``undefined`` (AMF0 §2.8 marker 0x06, AMF3 §3.2 marker 0x00). ``None`` is ``null``."""


class ECMAArray(dict[str, Any]):
    """AMF0 ECMA array (§2.10), e.g. the ``onMetaData`` body.

    A distinct type so that decode -> encode reproduces marker 0x08 rather than an anonymous
    object (0x03); some players only accept ``onMetaData`` as an ECMA array. The AMF3 decoder
    also returns it for arrays that have an associative part (AMF3 §3.11).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


@dataclass
class TypedObject:
    """Instance of a named ActionScript class (AMF0 §2.18, AMF3 §3.12 with a class name)."""

    class_name: str
    fields: dict[str, Any] = field(default_factory=dict)


class XMLDocument(str):
    """XML text (AMF0 §2.17 marker 0x0F, AMF3 §3.9 XMLDocument 0x07 and §3.13 XML 0x0B)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"XMLDocument({str.__repr__(self)})"


@dataclass
class AMF3Value:
    """Ask :func:`encode_amf0` to write ``value`` as AMF3 behind the avmplus marker 0x11."""

    value: Any


# --------------------------------------------------------------------------------------------
# Wire constants
# --------------------------------------------------------------------------------------------

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_S32: Final = struct.Struct(">i")
_DOUBLE: Final = struct.Struct(">d")
# AMF0 §2.13: DOUBLE milliseconds since the epoch (UTC) followed by an S16 time zone that is
# "reserved, not supported" and must be ignored on read / written as 0.
_DATE0: Final = struct.Struct(">dh")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

# AMF0 §2.1 type markers.
_A0_NUMBER: Final = 0x00
_A0_BOOLEAN: Final = 0x01
_A0_STRING: Final = 0x02
_A0_OBJECT: Final = 0x03
_A0_MOVIECLIP: Final = 0x04
_A0_NULL: Final = 0x05
_A0_UNDEFINED: Final = 0x06
_A0_REFERENCE: Final = 0x07
_A0_ECMA_ARRAY: Final = 0x08
_A0_OBJECT_END: Final = 0x09
_A0_STRICT_ARRAY: Final = 0x0A
_A0_DATE: Final = 0x0B
_A0_LONG_STRING: Final = 0x0C
_A0_UNSUPPORTED: Final = 0x0D
_A0_RECORDSET: Final = 0x0E
_A0_XML: Final = 0x0F
_A0_TYPED_OBJECT: Final = 0x10
_A0_AVMPLUS: Final = 0x11

# AMF3 §3.1 type markers.
_A3_UNDEFINED: Final = 0x00
_A3_NULL: Final = 0x01
_A3_FALSE: Final = 0x02
_A3_TRUE: Final = 0x03
_A3_INTEGER: Final = 0x04
_A3_DOUBLE: Final = 0x05
_A3_STRING: Final = 0x06
_A3_XML_DOC: Final = 0x07
_A3_DATE: Final = 0x08
_A3_ARRAY: Final = 0x09
_A3_OBJECT: Final = 0x0A
_A3_XML: Final = 0x0B
_A3_BYTE_ARRAY: Final = 0x0C
_A3_VECTOR_INT: Final = 0x0D
_A3_VECTOR_UINT: Final = 0x0E
_A3_VECTOR_DOUBLE: Final = 0x0F
_A3_VECTOR_OBJECT: Final = 0x10
_A3_DICTIONARY: Final = 0x11

_VECTOR_STRUCTS: Final = {
    _A3_VECTOR_INT: _S32,
    _A3_VECTOR_UINT: _U32,
    _A3_VECTOR_DOUBLE: _DOUBLE,
}

# AMF3 §3.6: integers are U29 interpreted as 29-bit two's complement.
_INT29_MIN: Final = -(1 << 28)
_INT29_MAX: Final = (1 << 28) - 1
_U29_MAX: Final = (1 << 29) - 1

# Externalizable classes (AMF3 §3.12, U29O-traits-ext) carry a class-private format that only
# the class itself can read. The two Flex wrappers below are the exception every AMF stack
# supports: their readExternal() reads exactly one AMF3 value (the source Array / the proxied
# Object), so we can decode them and return that wrapped value.
_WRAPPER_CLASSES: Final = frozenset(
    {"flex.messaging.io.ArrayCollection", "flex.messaging.io.ObjectProxy"}
)

# Expansion budget for references (see module docstring): without references every decoded
# node costs at least one input byte, so a legitimate message never comes close to this.
_EXPANSION_FACTOR: Final = 16
_EXPANSION_SLACK: Final = 65536

# Encoding depth limit. Generous compared to the decoders' default of 32 (our own data is
# trusted), but far below the interpreter recursion limit, and it turns a cyclic structure
# into an AmfError instead of a RecursionError.
_MAX_ENCODE_DEPTH: Final = 256

# Decoding depth ceiling, whatever a caller passes as ``max_depth``: a hostile 10000-deep
# message must be refused after a few hundred levels, not by unwinding a RecursionError
# from the interpreter's limit (that took 190 ms of CPU on CI with a raised limit).
_MAX_DECODE_DEPTH: Final = 256


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Traits:
    """AMF3 §3.12 class traits, shared between objects through the traits reference table."""

    class_name: str
    sealed: tuple[str, ...]
    dynamic: bool
    externalizable: bool


def _ms_to_datetime(ms: float) -> datetime:
    # AMF0 §2.13 / AMF3 §3.10: milliseconds since 1970-01-01 UTC as a DOUBLE. ActionScript
    # dates span +-8.64e15 ms, wider than Python's datetime (years 1..9999).
    if not math.isfinite(ms):
        raise AmfError(f"invalid date value {ms!r}")
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as exc:
        raise AmfError(f"date {ms!r} ms is outside the supported range") from exc


class _Decoder:
    """Cursor over one buffer plus the reference tables of one decode call.

    Both formats live in one class because an AMF0 stream may switch to AMF3 (marker 0x11)
    at any value and the depth / expansion accounting must span both.

    Reference tables hold ``(value, meta)`` where ``meta`` is ``(height, nodes)`` once the
    value is complete and ``None`` while it is still being decoded. ``height`` is how many
    container levels the value adds when referenced and ``nodes`` how many nodes it expands
    to; both feed the limits described in the module docstring.
    """

    __slots__ = (
        "buf",
        "deepest",
        "end",
        "max_depth",
        "max_values",
        "node_limit",
        "nodes",
        "objs0",
        "objs3",
        "pos",
        "strings3",
        "traits3",
    )

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        pos: int,
        max_depth: int,
        max_values: int | None = None,
    ) -> None:
        try:
            # A flat byte view avoids copying the (possibly large) message for every call;
            # slices of it are zero-copy too.
            buf = memoryview(data).cast("B")
        except TypeError as exc:
            raise AmfError(f"expected a contiguous bytes-like object, got {type(data)!r}") from exc
        self.buf: memoryview = buf
        self.end: int = len(buf)
        if not 0 <= pos <= self.end:
            raise AmfError(f"offset {pos} outside buffer of {self.end} bytes")
        self.pos: int = pos
        self.max_depth: int = min(max_depth, _MAX_DECODE_DEPTH)
        self.nodes: int = 0
        self.node_limit: int = _EXPANSION_SLACK + _EXPANSION_FACTOR * self.end
        # The work bound: without it an 8 MiB message of AMF nulls is 8 million values
        # (seconds of event loop); a caller that knows what it expects caps the count.
        self.max_values: int | None = max_values
        if max_values is not None and max_values < self.node_limit:
            self.node_limit = max_values
        self.deepest: int = 0
        self.objs0: list[list[Any]] = []
        self.objs3: list[list[Any]] = []
        self.strings3: list[str] = []
        self.traits3: list[_Traits] = []

    # -- primitive reads ---------------------------------------------------------------------

    def _take(self, n: int) -> int:
        """Reserve ``n`` bytes; return their start offset. Checked before any allocation."""
        pos = self.pos
        if n > self.end - pos:
            raise AmfError(f"truncated: need {n} bytes at offset {pos}, {self.end - pos} left")
        self.pos = pos + n
        return pos

    def _u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise AmfError(f"truncated: need 1 byte at offset {pos}")
        self.pos = pos + 1
        return self.buf[pos]

    def _u16(self) -> int:
        value: int = _U16.unpack_from(self.buf, self._take(2))[0]
        return value

    def _u32(self) -> int:
        value: int = _U32.unpack_from(self.buf, self._take(4))[0]
        return value

    def _double(self) -> float:
        value: float = _DOUBLE.unpack_from(self.buf, self._take(8))[0]
        return value

    def _utf8(self, n: int) -> str:
        pos = self._take(n)
        try:
            return str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError(f"invalid UTF-8 in string at offset {pos}") from exc

    def _check_count(self, count: int, min_bytes_each: int = 1) -> None:
        # Every element needs at least ``min_bytes_each`` bytes, so a count that cannot fit in
        # what is left is a lie; reject it before building anything of that size.
        if count * min_bytes_each > self.end - self.pos:
            raise AmfError(
                f"count {count} at offset {self.pos} exceeds the {self.end - self.pos} bytes left"
            )

    def _u29(self) -> int:
        # AMF3 §1.3.1: bytes 1-3 contribute 7 bits each with the high bit meaning "more";
        # a 4th byte, if reached, contributes all 8 bits (29 bits in total).
        buf = self.buf
        pos = self.pos
        end = self.end
        result = 0
        for _ in range(3):
            if pos >= end:
                raise AmfError(f"truncated U29 at offset {pos}")
            b = buf[pos]
            pos += 1
            if b < 0x80:
                self.pos = pos
                return (result << 7) | b
            result = (result << 7) | (b & 0x7F)
        if pos >= end:
            raise AmfError(f"truncated U29 at offset {pos}")
        self.pos = pos + 1
        return (result << 8) | buf[pos]

    # -- accounting --------------------------------------------------------------------------

    def _count_nodes(self, n: int) -> None:
        self.nodes += n
        if self.nodes > self.node_limit:
            if self.max_values is not None and self.node_limit == self.max_values:
                raise AmfError(f"more than {self.max_values} values in one message")
            raise AmfError("references expand to too many values (reference bomb?)")

    def _open(self, depth: int) -> tuple[int, int]:
        """Enter a container nested inside ``depth`` enclosing containers."""
        inner = depth + 1
        if inner > self.max_depth:
            raise AmfError(f"nesting deeper than max_depth={self.max_depth}")
        saved = self.deepest
        self.deepest = inner
        # The container's own node was counted by the value reader already.
        return saved, self.nodes - 1

    def _close(self, depth: int, saved: int, nodes_before: int) -> tuple[int, int]:
        """Leave a container; return its ``(height, nodes)`` meta for the reference table."""
        height = self.deepest - depth
        if saved > self.deepest:
            self.deepest = saved
        return height, self.nodes - nodes_before

    def _deref(self, table: list[list[Any]], index: int, depth: int) -> Any:
        if index >= len(table):
            raise AmfError(f"reference index {index} out of range (table has {len(table)})")
        value, meta = table[index]
        if meta is None:
            # Legal in the specs (self-referencing objects) but never needed for RTMP
            # commands; cyclic results would make every consumer that walks them recurse
            # forever, so refuse rather than hand them out.
            raise AmfError(f"reference {index} points at an object still being decoded")
        height, nodes = meta
        effective = depth + height
        if effective > self.max_depth:
            raise AmfError(f"reference nests deeper than max_depth={self.max_depth}")
        if effective > self.deepest:
            self.deepest = effective
        # The reference marker itself was already counted as one node.
        self._count_nodes(nodes - 1)
        return value

    # -- AMF0 --------------------------------------------------------------------------------

    def read_amf0(self, depth: int) -> Any:
        """Read one AMF0 value (AMF0 §2) inside ``depth`` enclosing containers."""
        self._count_nodes(1)
        marker = self._u8()
        # Ordered by frequency in RTMP command messages.
        if marker == _A0_STRING:  # §2.4
            return self._utf8(self._u16())
        if marker == _A0_NUMBER:  # §2.2
            return self._double()
        if marker == _A0_NULL:  # §2.7
            return None
        if marker == _A0_OBJECT:  # §2.5
            obj: dict[str, Any] = {}
            self._amf0_properties(obj, obj, depth)
            return obj
        if marker == _A0_BOOLEAN:  # §2.3: zero is false, anything else true
            return self._u8() != 0
        if marker == _A0_ECMA_ARRAY:  # §2.10
            # The associative-count is only a hint (encoders get it wrong, and ffmpeg writes
            # 0 for some metadata); the end marker is authoritative.
            self._take(4)
            arr = ECMAArray()
            self._amf0_properties(arr, arr, depth)
            return arr
        if marker == _A0_STRICT_ARRAY:  # §2.12
            return self._amf0_strict_array(depth)
        if marker == _A0_UNDEFINED:  # §2.8
            return UNDEFINED
        if marker == _A0_REFERENCE:  # §2.9
            return self._deref(self.objs0, self._u16(), depth)
        if marker == _A0_DATE:  # §2.13
            ms, _tz = _DATE0.unpack_from(self.buf, self._take(_DATE0.size))
            return _ms_to_datetime(ms)
        if marker == _A0_LONG_STRING:  # §2.14
            return self._utf8(self._u32())
        if marker == _A0_UNSUPPORTED:  # §2.15: "no value", closest Python meaning is None
            return None
        if marker == _A0_XML:  # §2.17: long-string encoded
            return XMLDocument(self._utf8(self._u32()))
        if marker == _A0_TYPED_OBJECT:  # §2.18: class name, then object properties
            typed = TypedObject(self._utf8(self._u16()), {})
            self._amf0_properties(typed, typed.fields, depth)
            return typed
        if marker == _A0_AVMPLUS:  # §3.1
            # The value after 0x11 is a self-contained AMF3 encoding: it gets its own empty
            # string, object and traits tables, which do not carry over to the next switch
            # (this is how Flash Player writes type-17 command arguments).
            self.strings3 = []
            self.objs3 = []
            self.traits3 = []
            return self.read_amf3(depth)
        if marker == _A0_OBJECT_END:
            raise AmfError(f"unexpected object-end marker at offset {self.pos - 1}")
        if marker in (_A0_MOVIECLIP, _A0_RECORDSET):
            raise AmfError(f"AMF0 marker 0x{marker:02x} is reserved and not supported")
        raise AmfError(f"unknown AMF0 marker 0x{marker:02x} at offset {self.pos - 1}")

    def _amf0_properties(self, owner: Any, props: dict[str, Any], depth: int) -> None:
        """Read ``(UTF-8 key, value)*`` up to the empty-key + object-end terminator (§2.5).

        ``owner`` is what a later reference (§2.9) to this complex object must return.
        """
        entry: list[Any] = [owner, None]
        self.objs0.append(entry)
        saved, before = self._open(depth)
        inner = depth + 1
        while True:
            n = self._u16()
            if n == 0:
                # §2.5 object-property = (UTF-8 value-type) | (UTF-8-empty object-end-marker):
                # an empty key is only valid as the terminator.
                if self._u8() != _A0_OBJECT_END:
                    raise AmfError(f"empty property name without object-end at {self.pos - 1}")
                break
            key = self._utf8(n)
            props[key] = self.read_amf0(inner)
        entry[1] = self._close(depth, saved, before)

    def _amf0_strict_array(self, depth: int) -> list[Any]:
        count = self._u32()
        self._check_count(count)
        items: list[Any] = []
        entry: list[Any] = [items, None]
        self.objs0.append(entry)
        saved, before = self._open(depth)
        inner = depth + 1
        for _ in range(count):
            items.append(self.read_amf0(inner))
        entry[1] = self._close(depth, saved, before)
        return items

    # -- AMF3 --------------------------------------------------------------------------------

    def read_amf3(self, depth: int) -> Any:
        """Read one AMF3 value (AMF3 §3) inside ``depth`` enclosing containers."""
        self._count_nodes(1)
        marker = self._u8()
        if marker == _A3_STRING:  # §3.8
            return self._amf3_string()
        if marker == _A3_INTEGER:  # §3.6: U29 as 29-bit two's complement
            value = self._u29()
            return value - (1 << 29) if value & (1 << 28) else value
        if marker == _A3_DOUBLE:  # §3.7
            return self._double()
        if marker == _A3_NULL:  # §3.3
            return None
        if marker == _A3_FALSE:  # §3.4
            return False
        if marker == _A3_TRUE:  # §3.5
            return True
        if marker == _A3_UNDEFINED:  # §3.2
            return UNDEFINED
        if marker == _A3_OBJECT:  # §3.12
            return self._amf3_object(depth)
        if marker == _A3_ARRAY:  # §3.11
            return self._amf3_array(depth)
        if marker in (_A3_XML_DOC, _A3_XML):  # §3.9, §3.13: U29X-value + UTF-8, object table
            header = self._u29()
            if not header & 1:
                return self._deref(self.objs3, header >> 1, depth)
            xml = XMLDocument(self._utf8(header >> 1))
            self.objs3.append([xml, (0, 1)])
            return xml
        if marker == _A3_DATE:  # §3.10: U29D-value (bits above the flag unused) + DOUBLE
            header = self._u29()
            if not header & 1:
                return self._deref(self.objs3, header >> 1, depth)
            date = _ms_to_datetime(self._double())
            self.objs3.append([date, (0, 1)])
            return date
        if marker == _A3_BYTE_ARRAY:  # §3.14
            header = self._u29()
            if not header & 1:
                return self._deref(self.objs3, header >> 1, depth)
            n = header >> 1
            pos = self._take(n)
            blob = bytes(self.buf[pos : pos + n])
            self.objs3.append([blob, (0, 1)])
            return blob
        if marker in _VECTOR_STRUCTS or marker == _A3_VECTOR_OBJECT:  # §3.15
            return self._amf3_vector(marker, depth)
        if marker == _A3_DICTIONARY:  # §3.16
            return self._amf3_dictionary(depth)
        raise AmfError(f"unknown AMF3 marker 0x{marker:02x} at offset {self.pos - 1}")

    def _amf3_string(self) -> str:
        # §1.3.2 / §3.8: U29S-ref (low bit 0, index into the string table) or U29S-value
        # (low bit 1, byte length). The empty string is never added to the table.
        header = self._u29()
        if not header & 1:
            index = header >> 1
            if index >= len(self.strings3):
                raise AmfError(f"string reference {index} out of range")
            return self.strings3[index]
        n = header >> 1
        if n == 0:
            return ""
        text = self._utf8(n)
        self.strings3.append(text)
        return text

    def _amf3_array(self, depth: int) -> Any:
        header = self._u29()
        if not header & 1:
            return self._deref(self.objs3, header >> 1, depth)
        dense_count = header >> 1
        self._check_count(dense_count)
        # The array takes its object-table slot before its members are read (§3.11).
        entry: list[Any] = [None, None]
        self.objs3.append(entry)
        saved, before = self._open(depth)
        inner = depth + 1
        assoc: dict[str, Any] = {}
        while True:
            key = self._amf3_string()
            if not key:  # UTF-8-empty ends the associative part
                break
            assoc[key] = self.read_amf3(inner)
        dense = [self.read_amf3(inner) for _ in range(dense_count)]
        result: list[Any] | ECMAArray
        if assoc:
            # A sparse/mixed ActionScript Array; Python has no such type, so expose it like an
            # AMF0 ECMA array with the dense part under its string indices.
            result = ECMAArray((str(i), v) for i, v in enumerate(dense))
            for key, value in assoc.items():
                result.setdefault(key, value)
        else:
            result = dense
        entry[0] = result
        entry[1] = self._close(depth, saved, before)
        return result

    def _amf3_object(self, depth: int) -> Any:
        header = self._u29()
        if not header & 1:  # U29O-ref
            return self._deref(self.objs3, header >> 1, depth)
        traits: _Traits
        if not header & 2:  # U29O-traits-ref
            index = header >> 2
            if index >= len(self.traits3):
                raise AmfError(f"traits reference {index} out of range")
            traits = self.traits3[index]
        elif header & 4:  # U29O-traits-ext: remaining bits are not significant
            traits = _Traits(self._amf3_string(), (), False, True)
            self.traits3.append(traits)
        else:  # U29O-traits: bit 3 = dynamic, bits 4+ = sealed member count
            sealed_count = header >> 4
            self._check_count(sealed_count)
            class_name = self._amf3_string()
            sealed = tuple(self._amf3_string() for _ in range(sealed_count))
            traits = _Traits(class_name, sealed, bool(header & 8), False)
            self.traits3.append(traits)

        entry: list[Any] = [None, None]
        self.objs3.append(entry)
        saved, before = self._open(depth)
        inner = depth + 1
        result: Any
        if traits.externalizable:
            if traits.class_name not in _WRAPPER_CLASSES:
                raise AmfError(
                    f"externalizable class {traits.class_name!r} has a private wire format"
                )
            result = self.read_amf3(inner)
        else:
            fields: dict[str, Any] = {}
            for name in traits.sealed:
                fields[name] = self.read_amf3(inner)
            if traits.dynamic:
                while True:
                    key = self._amf3_string()
                    if not key:
                        break
                    fields[key] = self.read_amf3(inner)
            result = TypedObject(traits.class_name, fields) if traits.class_name else fields
        entry[0] = result
        entry[1] = self._close(depth, saved, before)
        return result

    def _amf3_vector(self, marker: int, depth: int) -> list[Any]:
        header = self._u29()
        if not header & 1:
            value: list[Any] = self._deref(self.objs3, header >> 1, depth)
            return value
        count = header >> 1
        self._u8()  # fixed-vector flag: meaningless for a Python list
        entry: list[Any] = [None, None]
        self.objs3.append(entry)
        saved, before = self._open(depth)
        items: list[Any]
        item_struct = _VECTOR_STRUCTS.get(marker)
        if item_struct is not None:
            # Vector.<int> S32, Vector.<uint> U32, Vector.<Number> DOUBLE, all big-endian.
            self._check_count(count, item_struct.size)
            self._count_nodes(count)  # before the list is built
            size = count * item_struct.size
            pos = self._take(size)
            items = [v for (v,) in item_struct.iter_unpack(self.buf[pos : pos + size])]
        else:
            self._check_count(count)
            self._amf3_string()  # object-type-name, e.g. "String" or "*": informational only
            inner = depth + 1
            items = [self.read_amf3(inner) for _ in range(count)]
        entry[0] = items
        entry[1] = self._close(depth, saved, before)
        return items

    def _amf3_dictionary(self, depth: int) -> dict[Any, Any]:
        header = self._u29()
        if not header & 1:
            value: dict[Any, Any] = self._deref(self.objs3, header >> 1, depth)
            return value
        count = header >> 1
        self._u8()  # weak-keys flag: meaningless here
        self._check_count(count, 2)
        result: dict[Any, Any] = {}
        entry: list[Any] = [result, None]
        self.objs3.append(entry)
        saved, before = self._open(depth)
        inner = depth + 1
        for _ in range(count):
            key = self.read_amf3(inner)
            item = self.read_amf3(inner)
            try:
                result[key] = item
            except TypeError as exc:
                # ActionScript dictionaries key by identity, so objects/arrays are legal keys
                # there; Python cannot hash their decoded forms.
                raise AmfError(f"unhashable dictionary key of type {type(key).__name__}") from exc
        entry[1] = self._close(depth, saved, before)
        return result


def decode_amf0(
    data: bytes | bytearray | memoryview, *, max_depth: int = 32, max_values: int | None = None
) -> list[Any]:
    """Decode every AMF0 value in ``data``; references (§2.9) span the whole buffer.

    ``max_values`` bounds the values decoded in all (every nested value and every
    value a reference expands to counts), so the work is bounded too, not only the size.
    """
    decoder = _Decoder(data, 0, max_depth, max_values)
    values: list[Any] = []
    try:
        while decoder.pos < decoder.end:
            values.append(decoder.read_amf0(0))
    except RecursionError as exc:  # only reachable with a caller-supplied huge max_depth
        raise AmfError("nesting too deep for the interpreter stack") from exc
    return values


def decode_amf0_value(
    data: bytes | bytearray | memoryview, offset: int, *, max_depth: int = 32
) -> tuple[Any, int]:
    """Decode one AMF0 value at ``offset``; return it and the offset just past it."""
    decoder = _Decoder(data, offset, max_depth)
    try:
        value = decoder.read_amf0(0)
    except RecursionError as exc:
        raise AmfError("nesting too deep for the interpreter stack") from exc
    return value, decoder.pos


def decode_amf3(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_depth: int = 32
) -> tuple[Any, int]:
    """Decode one AMF3 value at ``offset`` with fresh reference tables; return value, offset."""
    decoder = _Decoder(data, offset, max_depth)
    try:
        value = decoder.read_amf3(0)
    except RecursionError as exc:
        raise AmfError("nesting too deep for the interpreter stack") from exc
    return value, decoder.pos


def decode_command_payload(
    payload: bytes, amf3: bool, *, max_values: int | None = None
) -> list[Any]:
    """Decode the body of an RTMP command/data message.

    ``amf3=True`` is for message types 17/15: their body starts with a single format-selector
    byte 0x00 (skipped if present), followed by AMF0 values in which marker 0x11 switches to
    AMF3 for one value (AMF0 §3.1). A leading 0x00 cannot start a valid command otherwise,
    since commands begin with their name string (marker 0x02).
    """
    if amf3 and payload[:1] == b"\x00":
        return decode_amf0(memoryview(payload)[1:], max_values=max_values)
    return decode_amf0(payload, max_values=max_values)


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
            raw = _utf8_bytes(value)
            out.append(_A3_XML_DOC)
            out += _u29_length(len(raw), "XML document")
            out += raw
            self.object_count += 1
        elif isinstance(value, str):
            out.append(_A3_STRING)
            self.string(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            out.append(_A3_BYTE_ARRAY)
            out += _u29_length(len(raw), "ByteArray")
            out += raw
            self.object_count += 1
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

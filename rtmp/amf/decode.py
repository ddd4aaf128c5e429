"""The AMF0/AMF3 decoder, written for hostile input (the limits: :mod:`rtmp.amf`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rtmp.amf.values import (
    _A0_AVMPLUS,
    _A0_BOOLEAN,
    _A0_DATE,
    _A0_ECMA_ARRAY,
    _A0_LONG_STRING,
    _A0_MOVIECLIP,
    _A0_NULL,
    _A0_NUMBER,
    _A0_OBJECT,
    _A0_OBJECT_END,
    _A0_RECORDSET,
    _A0_REFERENCE,
    _A0_STRICT_ARRAY,
    _A0_STRING,
    _A0_TYPED_OBJECT,
    _A0_UNDEFINED,
    _A0_UNSUPPORTED,
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
    _A3_VECTOR_OBJECT,
    _A3_XML,
    _A3_XML_DOC,
    _DATE0,
    _DOUBLE,
    _EPOCH,
    _EXPANSION_FACTOR,
    _EXPANSION_SLACK,
    _MAX_DECODE_DEPTH,
    _U16,
    _U32,
    _VECTOR_STRUCTS,
    _WRAPPER_CLASSES,
    UNDEFINED,
    AmfError,
    ECMAArray,
    TypedObject,
    XMLDocument,
)

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
    return _decode_one(data, offset, max_depth, _Decoder.read_amf0)


def decode_amf3(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_depth: int = 32
) -> tuple[Any, int]:
    """Decode one AMF3 value at ``offset`` with fresh reference tables; return value, offset."""
    return _decode_one(data, offset, max_depth, _Decoder.read_amf3)


def _decode_one(
    data: bytes | bytearray | memoryview,
    offset: int,
    max_depth: int,
    read: Callable[[_Decoder, int], Any],
) -> tuple[Any, int]:
    decoder = _Decoder(data, offset, max_depth)
    try:
        value = read(decoder, 0)
    except RecursionError as exc:  # only reachable with a caller-supplied huge max_depth
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

"""AMF value types (public through :mod:`rtmp.amf`) and the wire constants the decoder
and encoder share (AMF0 and AMF3 specs)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

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

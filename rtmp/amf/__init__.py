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

from rtmp.amf.decode import decode_amf0, decode_amf0_value, decode_amf3, decode_command_payload
from rtmp.amf.encode import encode_amf0, encode_amf3, encode_command_payload
from rtmp.amf.values import UNDEFINED, AMF3Value, AmfError, ECMAArray, TypedObject, XMLDocument

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

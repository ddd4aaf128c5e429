"""Sans-I/O RTMP handshake, server and client side.

The handshake is C0+C1 -> S0+S1+S2 -> C2 (client <- server).  C0/S0 is one version byte (3);
C1/S1/C2/S2 are 1536-byte blocks.  Bytes 0..3 of C1/S1 are a timestamp, bytes 4..7 a version:
zero means the plain handshake of the published RTMP spec, non-zero means the Flash Player 9+
"digest" (a.k.a. complex) handshake, in which C1 and S1 carry an HMAC-SHA256 digest at a
position derived from the block itself and C2/S2 end in a signature over the peer's digest.

Why both: Flash Player 11 refuses H.264/AAC playback after a plain handshake and, like ffmpeg
as a player, rejects a server whose S1 digest or S2 signature does not validate; rtmpdump
without -w/-W and old players send a plain C1 and must still be served.

Neither class does I/O: feed received bytes to ``receive_data`` and write whatever
``data_to_send`` returns.  Once ``done`` is set, ``leftover`` holds bytes that followed the
handshake (the first chunk-stream bytes); the caller hands them to the chunk layer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from enum import Enum
from typing import Final

__all__ = [
    "DIGEST_SIZE",
    "FMS_KEY",
    "FMS_KEY_S1",
    "FP_KEY",
    "FP_KEY_C1",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
    "digest_offset",
    "find_digest",
    "make_digest_block",
    "make_response_block",
    "response_block_valid",
]

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
Rng = Callable[[int], bytes]

HANDSHAKE_SIZE: Final = 1536
DIGEST_SIZE: Final = 32  # SHA-256 output
RTMP_VERSION: Final = 3  # the only C0/S0 value of unencrypted RTMP

# Both keys are a readable prefix followed by the same 32 bytes (librtmp handshake.h
# GenuineFPKey/GenuineFMSKey, ffmpeg rtmpproto.c rtmp_player_key/rtmp_server_key).
_KEY_TAIL: Final = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY: Final = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes
FMS_KEY: Final = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes
# C1 and S1 digests are keyed with the readable prefix only (30 resp. 36 bytes); the full keys
# are used for the C2/S2 signatures.
FP_KEY_C1: Final = FP_KEY[:30]
FMS_KEY_S1: Final = FMS_KEY[:36]

# Digest placement: scheme 0 sums bytes 8..11 and places the digest at 12 + sum % 728 (inside
# the first half), scheme 1 sums bytes 772..775 and places it at 776 + sum % 728 (second half).
# Neither digest can overlap the four bytes that position it, so writing it is stable.
_SCHEME_BASE: Final = {0: 8, 1: 772}
_OFFSET_MOD: Final = 728
_RESPONSE_BODY: Final = HANDSHAKE_SIZE - DIGEST_SIZE  # 1504 random bytes, then the signature

_C0C1: Final = 1 + HANDSHAKE_SIZE
_C0C1C2: Final = 1 + 2 * HANDSHAKE_SIZE
_ZERO_VERSION: Final = b"\x00\x00\x00\x00"

_HTTP_METHOD_INITIALS: Final = frozenset(b"CDGHOPT")  # CONNECT DELETE GET HEAD OPTIONS POST ...
_TLS_HANDSHAKE: Final = 0x16


class HandshakeError(Exception):
    """The peer's handshake bytes are unusable; the connection should be closed."""


def _timestamp(time_ms: int) -> bytes:
    # Bytes 0..3 are a 32-bit big-endian millisecond epoch that wraps (RTMP spec 5.2.3).
    return (time_ms & 0xFFFFFFFF).to_bytes(4, "big")


def _random(rng: Rng, size: int) -> bytes:
    data = rng(size)
    if len(data) != size:
        raise ValueError(f"rng returned {len(data)} bytes, expected {size}")
    return bytes(data)


def _check_block(block: Buffer) -> None:
    if len(block) != HANDSHAKE_SIZE:
        raise ValueError(f"handshake block must be {HANDSHAKE_SIZE} bytes, got {len(block)}")


def digest_offset(block: Buffer, scheme: int) -> int:
    """Return where the 32-byte digest of a C1/S1 ``block`` sits under ``scheme`` (0 or 1)."""
    _check_block(block)
    try:
        base = _SCHEME_BASE[scheme]
    except KeyError:
        raise ValueError(f"digest scheme must be 0 or 1, got {scheme!r}") from None
    return base + 4 + sum(block[base : base + 4]) % _OFFSET_MOD


def _block_digest(block: Buffer, offset: int, key: bytes) -> bytes:
    # HMAC-SHA256 over the 1536 bytes minus the 32 digest bytes, fed in two slices so the
    # 1504-byte message is never assembled.
    mac = hmac.new(key, digestmod=hashlib.sha256)
    view = memoryview(block)
    mac.update(view[:offset])
    mac.update(view[offset + DIGEST_SIZE :])
    return mac.digest()


def find_digest(block: Buffer, key: bytes) -> tuple[int, int] | None:
    """Return ``(scheme, offset)`` of a digest in ``block`` that validates with ``key``.

    ``key`` is the HMAC key itself: ``FP_KEY_C1`` for a C1, ``FMS_KEY_S1`` for an S1.  Scheme 1
    is tried first, then scheme 0 (ffmpeg validates S1 in that order); the chance of a random
    block validating by accident is 2**-256, so the order does not matter otherwise.
    """
    _check_block(block)
    for scheme in (1, 0):
        offset = digest_offset(block, scheme)
        if hmac.compare_digest(
            _block_digest(block, offset, key), bytes(block[offset : offset + DIGEST_SIZE])
        ):
            return scheme, offset
    return None


def make_digest_block(
    version: bytes, key: bytes, scheme: int, *, rng: Rng = os.urandom, time_ms: int = 0
) -> tuple[bytes, bytes]:
    """Build a digest-mode C1/S1: time, ``version``, random bytes, digest keyed with ``key``.

    Returns ``(block, digest)``; ``key`` is ``FP_KEY_C1`` for a C1 and ``FMS_KEY_S1`` for an S1.
    """
    if len(version) != 4:
        raise ValueError(f"version must be 4 bytes, got {len(version)}")
    block = bytearray(_timestamp(time_ms))
    block += version
    block += _random(rng, HANDSHAKE_SIZE - 8)
    offset = digest_offset(block, scheme)
    digest = _block_digest(block, offset, key)
    block[offset : offset + DIGEST_SIZE] = digest
    return bytes(block), digest


def _response_signature(body: Buffer, key: bytes, peer_digest: bytes) -> bytes:
    # The signing key is itself an HMAC of the peer's C1/S1 digest under the full 62/68-byte key
    # (ffmpeg rtmp_handshake, librtmp HandShake: digestResp / signatureResp).
    signing_key = hmac.digest(key, peer_digest, "sha256")
    return hmac.digest(signing_key, body, "sha256")


def make_response_block(peer_digest: bytes, key: bytes, *, rng: Rng = os.urandom) -> bytes:
    """Build a digest-mode S2 (``key=FMS_KEY``, C1's digest) or C2 (``key=FP_KEY``, S1's)."""
    body = _random(rng, _RESPONSE_BODY)
    return body + _response_signature(body, key, peer_digest)


def response_block_valid(block: Buffer, peer_digest: bytes, key: bytes) -> bool:
    """Check the signature at the end of a digest-mode S2/C2 (see ``make_response_block``)."""
    _check_block(block)
    view = memoryview(block)
    expected = _response_signature(view[:_RESPONSE_BODY], key, peer_digest)
    return hmac.compare_digest(expected, bytes(view[_RESPONSE_BODY:]))


def _plain_block(rng: Rng, time_ms: int) -> bytes:
    # Plain C1/S1: time, four zero bytes (the "no digest" marker), random filler.
    return _timestamp(time_ms) + _ZERO_VERSION + _random(rng, HANDSHAKE_SIZE - 8)


def _echoes(response: Buffer, original: Buffer) -> bool:
    # A plain C2/S2 echoes the peer's block; bytes 0..7 are time/time2 which the spec lets the
    # peer rewrite (ffmpeg and librtmp echo them verbatim, others may not), so compare 8..1535.
    return memoryview(response)[8:] == memoryview(original)[8:]


def _c0_error(c0: int, side: str) -> HandshakeError:
    if c0 in (6, 8, 9):
        # librtmp/ffmpeg send 6 (or 8/9, FP10 variants) for rtmpe://: RC4 over a DH key
        # exchange that this gateway does not implement.
        return HandshakeError(
            f"{side} requested RTMPE (encrypted RTMP, version byte {c0}), which is not "
            "supported; use plain rtmp://"
        )
    if c0 in _HTTP_METHOD_INITIALS:
        return HandshakeError(
            f"{side} version byte 0x{c0:02x} ({chr(c0)!r}) looks like an HTTP request, not RTMP"
        )
    if c0 == _TLS_HANDSHAKE:
        return HandshakeError(
            f"{side} version byte 0x16 looks like a TLS ClientHello (rtmps:// to a plain port?)"
        )
    return HandshakeError(f"unsupported RTMP version byte 0x{c0:02x} from {side} (expected 3)")


class _State(Enum):
    HELLO = "hello"  # waiting for C0+C1 (server) / S0+S1+S2 (client)
    RESPONSE = "response"  # server: S0+S1+S2 sent, waiting for C2
    DONE = "done"
    FAILED = "failed"


class _Handshake:
    """What both sides share: bytes in, bytes out, and a state that ends in DONE/FAILED."""

    _state: _State
    _out: list[bytes]

    def receive_data(self, data: Buffer) -> None:
        """Consume the peer's bytes; raises HandshakeError on unusable input.

        After ``done`` this raises as well: post-handshake bytes belong to the chunk layer, and
        refusing them keeps this object from buffering an unbounded stream.
        """
        if self._state is _State.DONE:
            raise HandshakeError(
                "handshake already complete; feed further bytes to the chunk layer"
            )
        if self._state is _State.FAILED:
            raise HandshakeError("handshake already failed")
        try:
            self._receive(memoryview(data))
        except HandshakeError:
            self._state = _State.FAILED
            raise

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the peer."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _receive(self, data: memoryview) -> None:
        raise NotImplementedError


class ServerHandshake(_Handshake):
    """Server side: answers C0+C1 with S0+S1+S2 at once, completes on C2.

    Attributes after the relevant input arrived:
      ``digest``: the client sent a digest C1 (non-zero version) whose digest validated, so
      S1/S2 were produced in digest mode; ``scheme``: the scheme its digest used.
      ``client_version``: C1 bytes 4..7 (e.g. 9.0.124.2 for ffmpeg, 10.0.45.2 for rtmpdump -w).
      ``c2_valid``: None until C2 arrived; then whether C2 has a form a genuine client sends
      (digest mode: the signature over S1's digest, or an echo of S1 as ffmpeg sends when
      publishing; plain mode: an echo of S1).  Servers do not reject on it; it is only flagged.
      ``leftover``: bytes received after C2.
    """

    def __init__(
        self,
        *,
        server_version: bytes = bytes([4, 5, 0, 1]),
        rng: Rng = os.urandom,
        time_ms: int = 0,
    ) -> None:
        # ffmpeg (rtmpproto.c) validates the S1 digest and S2 signature only if S1 byte 4 is
        # >= 3, and librtmp drops to the plain handshake if it is 0; an FMS-like 4.5.0.1 makes
        # both check our bytes, which is what Flash Player does too.
        if len(server_version) != 4 or server_version[0] < 3:
            raise ValueError("server_version must be 4 bytes with a first byte >= 3")
        self._server_version = bytes(server_version)
        self._rng = rng
        self._time_ms = time_ms
        self._state = _State.HELLO
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._s1 = b""
        self._s1_digest = b""

        self.done = False
        self.digest = False
        self.scheme: int | None = None
        self.client_version = b""
        self.c2_valid: bool | None = None
        self.leftover = b""

    def _receive(self, data: memoryview) -> None:
        had = len(self._buf)
        # Buffer at most up to the end of C2; whatever follows is the chunk stream and is
        # copied once into ``leftover``.
        take = _C0C1C2 - had
        self._buf += data[:take]
        if had == 0 and self._buf:
            c0 = self._buf[0]
            if c0 != RTMP_VERSION:
                raise _c0_error(c0, "client")
        if self._state is _State.HELLO and len(self._buf) >= _C0C1:
            self._on_c1(bytes(self._buf[1:_C0C1]))
        if self._state is _State.RESPONSE and len(self._buf) == _C0C1C2:
            self._on_c2(memoryview(self._buf)[_C0C1:])
            self.leftover = bytes(data[take:])
            self._buf = bytearray()
            self._state = _State.DONE
            self.done = True

    def _on_c1(self, c1: bytes) -> None:
        self.client_version = c1[4:8]
        found = None if self.client_version == _ZERO_VERSION else find_digest(c1, FP_KEY_C1)
        if found is not None:
            self.digest = True
            self.scheme, offset = found
            # S1's digest goes where the client put its own (same scheme), as FMS does.
            s1, self._s1_digest = make_digest_block(
                self._server_version, FMS_KEY_S1, self.scheme, rng=self._rng, time_ms=self._time_ms
            )
            s2 = make_response_block(c1[offset : offset + DIGEST_SIZE], FMS_KEY, rng=self._rng)
        else:
            if self.client_version != _ZERO_VERSION:
                # A digest client with a key we do not know cannot be served in digest mode;
                # a plain answer (zero S1 version) is what ffmpeg and librtmp fall back to.
                log.info(
                    "C1 announces version %s but carries no valid digest; plain handshake",
                    ".".join(map(str, self.client_version)),
                )
            # Plain clients: S1 with zero version bytes, S2 an exact echo of C1.
            s1 = _plain_block(self._rng, self._time_ms)
            s2 = c1
        self._s1 = s1
        self._out.append(b"".join((bytes([RTMP_VERSION]), s1, s2)))
        self._state = _State.RESPONSE

    def _on_c2(self, c2: memoryview) -> None:
        valid = _echoes(c2, self._s1)
        if self.digest and not valid:
            valid = response_block_valid(c2, self._s1_digest, FP_KEY)
        self.c2_valid = valid
        if not valid:
            log.debug("C2 is neither a signature over S1's digest nor an echo of S1; accepted")


class ClientHandshake(_Handshake):
    """Client side, for our Flash-like test client and the benchmark load generator.

    C0+C1 are queued on construction; C2 is queued once S0+S1+S2 have arrived, which completes
    the handshake.  With ``digest=True`` and ``validate=True`` a server whose S1 digest or S2
    signature does not validate is rejected like Flash Player does.  A server that answers with
    a zero S1 version (plain server) gets a plain C2 instead, as librtmp does; ``digest`` then
    reads False.
    """

    def __init__(
        self,
        *,
        digest: bool = True,
        flash_version: bytes = bytes([11, 2, 202, 235]),
        scheme: int = 1,
        rng: Rng = os.urandom,
        validate: bool = True,
        time_ms: int = 0,
    ) -> None:
        self._rng = rng
        self._validate = validate
        self._state = _State.HELLO
        self._buf = bytearray()
        self._c1_digest = b""
        self._s1 = b""
        self._s1_digest = b""
        if digest:
            if len(flash_version) != 4 or bytes(flash_version) == _ZERO_VERSION:
                # A zero version marks a plain C1; servers would ignore the digest.
                raise ValueError("flash_version must be 4 bytes and non-zero for digest mode")
            c1, self._c1_digest = make_digest_block(
                flash_version, FP_KEY_C1, scheme, rng=rng, time_ms=time_ms
            )
        else:
            c1 = _plain_block(rng, time_ms)
        self._c1 = c1
        self._out: list[bytes] = [bytes([RTMP_VERSION]) + c1]

        self.done = False
        self.digest = digest
        self.s1_digest_valid = False
        self.s2_valid = False
        self.server_version = b""
        self.leftover = b""

    def _receive(self, data: memoryview) -> None:
        had = len(self._buf)
        take = _C0C1C2 - had  # S0+S1+S2; anything after is chunk stream
        self._buf += data[:take]
        if had == 0 and self._buf:
            s0 = self._buf[0]
            if s0 != RTMP_VERSION:
                raise _c0_error(s0, "server")
        # S1 is checked as soon as it is complete so a bad server fails early.
        if had < _C0C1 <= len(self._buf):
            self._on_s1(bytes(self._buf[1:_C0C1]))
        if len(self._buf) == _C0C1C2:
            self._on_s2(memoryview(self._buf)[_C0C1:])
            self.leftover = bytes(data[take:])
            self._buf = bytearray()
            self._state = _State.DONE
            self.done = True

    def _on_s1(self, s1: bytes) -> None:
        self._s1 = s1
        self.server_version = s1[4:8]
        if not self.digest:
            return
        if s1[4] == 0:
            # librtmp HandShake: "if (FP9HandShake && type == 3 && !serversig[4])" -> plain.
            self.digest = False
            return
        found = find_digest(s1, FMS_KEY_S1)
        if found is None:
            if self._validate:
                raise HandshakeError("S1 digest does not validate: server is not FMS-compatible")
            log.warning("S1 digest does not validate; continuing with a plain C2")
            self.digest = False
            return
        self.s1_digest_valid = True
        offset = found[1]
        self._s1_digest = s1[offset : offset + DIGEST_SIZE]

    def _on_s2(self, s2: memoryview) -> None:
        if self.digest:
            self.s2_valid = response_block_valid(s2, self._c1_digest, FMS_KEY)
            if not self.s2_valid and self._validate:
                raise HandshakeError("S2 signature over our C1 digest does not validate")
            c2 = make_response_block(self._s1_digest, FP_KEY, rng=self._rng)
        else:
            self.s2_valid = _echoes(s2, self._c1)
            if not self.s2_valid:
                log.debug("S2 does not echo C1 (plain handshake); accepted")
            # ffmpeg and librtmp answer a plain S1 with an exact echo.
            c2 = self._s1
        self._out.append(c2)

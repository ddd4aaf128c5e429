"""Hostile input against the real server: each bad connection is closed with one log
line naming why, and everyone else keeps working -- an honest consultation (a
:class:`bench.testkit.gwproc.Bystander`: a Spark + Speex stream and its player) runs beside every
attack, and its frames must keep arriving."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayProcess, bystander_stream, handshaken_socket
from rtmp.amf import encode_amf0
from rtmp.client import RtmpClient

pytestmark = pytest.mark.e2e


def _closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _chunk0(
    csid: int, type_id: int, payload: bytes, stream_id: int = 0, length: int | None = None
) -> bytes:
    size = len(payload) if length is None else length
    return (
        bytes([csid])
        + b"\x00\x00\x00"
        + size.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
        + payload
    )


async def _still_serving(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    client = await RtmpClient.open("127.0.0.1", gateway.rtmp_port)
    try:
        result = await client.connect(
            "consult", f"rtmp://127.0.0.1:{gateway.rtmp_port}/consult", session["customer"]["token"]
        )
        assert not result.error
    finally:
        await client.close()


def _closed_for(gw: GatewayProcess, mark: int, reason: str) -> None:
    """The gateway closed the attacked connection with a log line naming ``reason`` (a
    regex), not through its crash path (which the log check fails anyway)."""
    log = gw.log_since(mark)
    assert re.search(rf"rtmp rtmp \[address\]: (closing|refused): .*(?:{reason})", log), log


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP", id="http-before-handshake"),
        pytest.param(b"\x06" + b"\x00" * 1536, "RTMPE", id="rtmpe-requested"),
    ],
)
async def test_garbage_before_handshake(
    gateway: GatewayProcess, attack: bytes, reason: str
) -> None:
    async with bystander_stream(gateway) as bystander:
        mark = gateway.log_mark()

        def attack_and_wait() -> bool:
            sock = socket.create_connection(("127.0.0.1", gateway.rtmp_port), timeout=5)
            sock.sendall(attack)
            closed = _closed_by_server(sock)
            sock.close()
            return closed

        assert await asyncio.to_thread(attack_and_wait)
        await bystander.continues()
        await _still_serving(gateway)
    _closed_for(gateway, mark, reason)


HOSTILE_AFTER_HANDSHAKE = {
    "chunk-size-zero": _chunk0(2, 1, struct.pack(">I", 0)),
    "chunk-size-top-bit": _chunk0(2, 1, struct.pack(">I", 0x80000000)),
    "message-claims-16MB": _chunk0(3, 20, b"\x02\x00\x07connect", length=0xFFFFFF),
    "unknown-message-type": _chunk0(3, 7, b"\x00" * 8),
    "type3-on-fresh-csid": b"\xc9" + b"\x00" * 64,
    "truncated-amf-connect": _chunk0(
        3, 20, b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03ap"
    ),
    # one chunk (raised chunk size): at 128 the bytes past the first chunk would be read as
    # chunk headers and the connection closed for that, never reaching the AMF decoder
    # 200 levels (1 KiB, 200 values) stay inside the pre-connect limits (4 KiB, 256
    # values: issue 11), so it is the nesting bound (32) that must close the connection
    "deeply-nested-amf": _chunk0(2, 1, struct.pack(">I", 65536))
    + _chunk0(3, 20, encode_amf0("connect", 1.0) + b"\x0a\x00\x00\x00\x01" * 200),
    "huge-count-amf-array": _chunk0(3, 20, encode_amf0("connect", 1.0) + b"\x0a\x7f\xff\xff\xff"),
    "garbage-after-handshake": bytes(range(256)) * 4,
}


# why the gateway closes each (a regex over its log line)
REASONS = {
    "chunk-size-zero": "chunk size",
    "chunk-size-top-bit": "chunk size",
    "message-claims-16MB": "message",
    "unknown-message-type": "type",
    "type3-on-fresh-csid": "header",
    "truncated-amf-connect": "truncated",
    "deeply-nested-amf": "AMF|amf|nest|depth",
    "huge-count-amf-array": "AMF|amf|count|length",
    "garbage-after-handshake": ".",
}


@pytest.mark.parametrize("name", list(HOSTILE_AFTER_HANDSHAKE))
async def test_hostile_chunks_close_only_that_connection(
    gateway: GatewayProcess, name: str
) -> None:
    async with bystander_stream(gateway) as bystander:
        mark = gateway.log_mark()

        def attack_and_wait() -> bool:
            sock = handshaken_socket(gateway.rtmp_port)
            # a hostile chunk size needs a second chunk to be parsed with it
            sock.sendall(
                HOSTILE_AFTER_HANDSHAKE[name] + _chunk0(3, 20, encode_amf0("x", 0.0, None))
            )
            closed = _closed_by_server(sock)
            sock.close()
            return closed

        assert await asyncio.to_thread(attack_and_wait), f"{name}: connection left open"
        # the bystander's stream goes on, its connections answer, newcomers get in
        await bystander.continues()
        assert not (await bystander.clients[0].call("createStream")).error
        await _still_serving(gateway)
    _closed_for(gateway, mark, REASONS[name])


async def test_slow_loris_handshake_and_flood_from_one_address(tmp_path: Path) -> None:
    gw = GatewayProcess(
        tmp_path,
        extra=["--limit", "handshake_timeout=1.5", "--limit", "idle_timeout=3"],
    )
    gw.start()
    try:
        async with bystander_stream(gw) as bystander:

            def attack_and_wait() -> float:
                slow = socket.create_connection(("127.0.0.1", gw.rtmp_port), timeout=5)
                slow.sendall(b"\x03" + b"\x00" * 100)  # C0 and a trickle of C1, then nothing
                t0 = time.monotonic()
                assert _closed_by_server(slow, timeout=6)
                slow.close()
                return time.monotonic() - t0

            assert 1.0 <= await asyncio.to_thread(attack_and_wait) <= 5.0
            await bystander.continues()
            await _still_serving(gw)
    finally:
        assert gw.stop() == 0
    _closed_for(gw, 0, "handshake timeout")


async def test_connection_flood_from_one_address_is_capped(tmp_path: Path) -> None:
    # later --limit flags win over the harness's raised loopback limits
    gw = GatewayProcess(tmp_path, extra=["--limit", "max_connections_per_address=5"])
    gw.start()
    try:
        async with bystander_stream(gw) as bystander:  # from 127.0.0.2: its own count
            await asyncio.to_thread(_flood, gw)
            await bystander.continues()
        await _still_serving(gw)
    finally:
        assert gw.stop() == 0
    _closed_for(gw, 0, "too many connections from this address")


def _flood(gw: GatewayProcess) -> None:
    socks = [socket.create_connection(("127.0.0.1", gw.rtmp_port), timeout=5) for _ in range(4)]
    # four are held open (the health check probe came and went); the sixth is refused
    extra = [socket.create_connection(("127.0.0.1", gw.rtmp_port), timeout=5) for _ in range(2)]
    assert _closed_by_server(extra[-1], timeout=3)
    for s in socks:
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(1)  # still open, just waiting for a handshake
    for s in socks + extra:
        s.close()
    # the server frees the address's slots when it reads their EOF: wait for a new
    # connection to be held (not refused) instead of sleeping
    deadline = time.monotonic() + 5
    while True:
        probe = socket.create_connection(("127.0.0.1", gw.rtmp_port), timeout=5)
        refused = _closed_by_server(probe, timeout=0.3)
        probe.close()
        if not refused:
            break
        assert time.monotonic() < deadline, "the closed connections were never released"

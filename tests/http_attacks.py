"""Attacks on the HTTP port from outside, as plain sockets (issue 11 items 1, 8, 10).

Reusable by the attack suite: each function takes the port and, where it matters, the
local address to attack from (any 127.x.y.z reaches a gateway on 127.0.0.1, so one test
machine can play several clients: an attacker and an honest bystander).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading everything it sent on the way),
    or None when it was still open after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:  # reset
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start


def is_open(sock: socket.socket) -> bool:
    """True while the server has not closed ``sock`` (nothing is read from it)."""
    sock.settimeout(0)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return bool(data)


def count_open(socks: list[socket.socket], settle: float = 0.5) -> int:
    """How many of ``socks`` the server kept, ``settle`` seconds after they were opened
    (a refused connection is closed at accept; the keep-alive deadline is longer)."""
    time.sleep(settle)
    return sum(1 for s in socks if is_open(s))


@contextmanager
def trickle(sock: socket.socket, data: bytes, interval: float) -> Iterator[threading.Thread]:
    """Send ``data`` a byte every ``interval`` seconds in the background (slow-loris)
    until the server closes the socket or the block ends."""
    stop = threading.Event()

    def run() -> None:
        for byte in data:
            if stop.wait(interval):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(5)


def head_trickle_request() -> bytes:
    """A request head that never ends (a header line per byte of patience)."""
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000


def body_request_head(path: str, length: int, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def raw_exchange(port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``payload`` and read until the server closes: the raw response."""
    with connect(port, source) as sock:
        sock.sendall(payload)
        chunks = []
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def healthz_from(port: int, source: str, timeout: float = 5.0) -> tuple[int, float]:
    """The honest bystander: ``GET /healthz`` from ``source``; (status, seconds)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - start
    finally:
        conn.close()


def flood(port: int, count: int, source: str) -> list[socket.socket]:
    """Open ``count`` silent connections from ``source`` (refused ones included)."""
    socks = []
    for _ in range(count):
        try:
            socks.append(connect(port, source))
        except OSError:
            break
    return socks

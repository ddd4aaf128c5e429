"""The HTTP port under attack, from outside against the real gateway (issue 11 items 1,
8, 10): caps per address and in total, deadlines for silent, trickling and idle
connections, aiohttp's own 400s, a client leaving mid-body, SIGTERM during a request.

Every test keeps an honest bystander (``/healthz`` from another loopback address) and
checks it was served.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess, flash_client, free_port
from tests import http_attacks as attack

BYSTANDER = "127.0.0.2"


def assert_clean(gw: GatewayProcess) -> None:
    log = gw.log()
    for bad in ("Traceback", "Error handling request", "unhandled error", "Unhandled exception"):
        assert bad not in log, log[-4000:]


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with deadlines short enough to watch them bite."""
    gw = GatewayProcess(
        tmp_path_factory.mktemp("short"),
        extra=[
            "--limit",
            "http_keepalive_timeout=1",
            "--limit",
            "http_body_timeout=1",
        ],
    ).start()
    yield gw
    assert gw.stop() == 0, gw.log()
    assert_clean(gw)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with small connection caps (and the default deadlines)."""
    gw = GatewayProcess(
        tmp_path_factory.mktemp("capped"),
        extra=[
            "--limit",
            "http_max_connections_per_address=20",
            "--limit",
            "http_max_connections=50",
        ],
    ).start()
    yield gw
    assert gw.stop() == 0, gw.log()
    assert_clean(gw)


def bystander_served(gw: GatewayProcess, source: str = BYSTANDER) -> float:
    status, seconds = attack.healthz_from(gw.http_port, source)
    assert status == 200
    assert seconds < 1.0, seconds
    return seconds


# -- deadlines -----------------------------------------------------------------------------
def test_silent_connection_is_closed_after_the_keepalive(short: GatewayProcess) -> None:
    with attack.connect(short.http_port) as sock:
        closed = attack.closed_within(sock, 5)
    assert closed is not None, "a silent connection stayed open"
    assert 0.5 < closed < 3.0, closed
    bystander_served(short)


def test_trickled_request_head_is_closed(short: GatewayProcess) -> None:
    with (
        attack.connect(short.http_port) as sock,
        attack.trickle(sock, attack.head_trickle_request(), 0.2),
    ):
        closed = attack.closed_within(sock, 6)
    assert closed is not None, "a request head trickled a byte at a time held the connection"
    assert closed < 3.0, closed
    bystander_served(short)


def test_idle_keepalive_connection_is_closed(short: GatewayProcess) -> None:
    with attack.connect(short.http_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        closed = attack.closed_within(sock, 5)
    assert closed is not None, "an idle keep-alive connection stayed open"
    assert closed < 3.0, closed


def test_trickled_request_body_is_cut(short: GatewayProcess) -> None:
    head = attack.body_request_head("/api/sessions", 5000, ADVISOR_TOKEN)
    with attack.connect(short.http_port) as sock:
        sock.sendall(head)
        with attack.trickle(sock, b"{" + b" " * 4998 + b"}", 0.2):
            closed = attack.closed_within(sock, 8)
    assert closed is not None, "a body trickled at 5 bytes/s held the connection"
    assert closed < 4.0, closed
    assert "request body slower than" in short.log()
    bystander_served(short)


def test_a_slow_but_honest_body_is_not_cut(short: GatewayProcess) -> None:
    """Above the minimum rate a body may take longer than the grace period."""
    body = b"{" + b" " * 6000 + b"}"  # 6 KiB in ~3 s at 2 KiB/s (the minimum is 1 KiB/s)
    head = attack.body_request_head("/api/sessions", len(body), ADVISOR_TOKEN)
    with attack.connect(short.http_port) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 200):
            sock.sendall(body[i : i + 200])
            time.sleep(0.1)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201"), "the honest upload was cut"


def test_long_lived_websocket_and_event_stream_outlive_the_deadlines(
    short: GatewayProcess,
) -> None:
    """The events WebSocket and the /ops feed are long-lived by design: no body, so no
    body deadline, and a running request is not idle."""
    session = short.create_session()

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(session["advisor"]["events_url"])
            live = await http.get(
                short.base + "/api/ops/live",
                headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"},
            )
            assert live.status == 200
            await asyncio.sleep(3.0)  # three times keep-alive and body deadline
            await ws.send_str(json.dumps({"type": "chat", "text": "noch da?"}))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                if json.loads(msg.data).get("type") == "chat":
                    break
            # the feed still delivers after the deadlines passed
            got = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 5)
            assert got
            live.close()
            await ws.close()

    asyncio.run(run())


# -- caps ----------------------------------------------------------------------------------
def test_per_address_cap_refuses_at_accept_and_spares_others(capped: GatewayProcess) -> None:
    socks = attack.flood(capped.http_port, 60, "127.0.0.3")
    try:
        assert attack.count_open(socks) == 20
        bystander_served(capped)
    finally:
        for s in socks:
            s.close()
    log = capped.log()
    lines = [x for x in log.splitlines() if "refusing connections from" in x]
    assert 1 <= len(lines) <= 2, lines  # one line for a flood, not one per connection
    assert "http_max_connections_per_address" in lines[0]
    # the slots come back
    wait_until(lambda: attack.healthz_from(capped.http_port, "127.0.0.3")[0] == 200)


def test_rtmp_connects_while_http_is_flooded(capped: GatewayProcess) -> None:
    """The bystander of the attack report: RTMP connects failed once HTTP had taken every
    descriptor; now the flood is capped and RTMP is served beside it."""
    session = capped.create_session()
    socks = attack.flood(capped.http_port, 200, "127.0.0.10")
    try:
        assert attack.count_open(socks) == 20

        async def connect() -> None:
            client = await flash_client(capped, session["customer"]["token"])
            await client.close()

        asyncio.run(asyncio.wait_for(connect(), 10))
        bystander_served(capped)
    finally:
        for s in socks:
            s.close()


def test_total_cap_refuses_beyond_it(capped: GatewayProcess) -> None:
    socks: list[socket.socket] = []
    try:
        for source in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):
            socks += attack.flood(capped.http_port, 20, source)
        assert attack.count_open(socks) == 50
        assert "limit http_max_connections)" in capped.log()
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: attack.healthz_from(capped.http_port, BYSTANDER)[0] == 200)


def wait_until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- aiohttp's own answers -----------------------------------------------------------------
MALFORMED = [
    b"GET /<script>alert(1)</script> HTTP/1.1\r\nHost: x\r\nBad<script>Header\r\n\r\n",
    b"GET /\x00<script> HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1<script>\r\n\r\n",
    b"GE<script>T / HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_request_gets_a_quiet_problem_answer(
    capped: GatewayProcess, payload: bytes
) -> None:
    raw = attack.raw_exchange(capped.http_port, payload)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head), raw[:300]
    headers = head.decode("latin-1").lower()
    for name in (
        "content-security-policy:",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
        "content-type: application/problem+json",
    ):
        assert name in headers, headers
    assert "server: videoberatung" in headers
    assert "python" not in headers and "aiohttp" not in headers, headers
    assert b"script" not in body.lower(), body  # the input is not echoed
    assert json.loads(body)["status"] == 400


def test_a_flood_of_malformed_requests_is_one_log_line(capped: GatewayProcess) -> None:
    for _ in range(30):
        attack.raw_exchange(capped.http_port, MALFORMED[0], source="127.0.0.7")
    bystander_served(capped)
    lines = [x for x in capped.log().splitlines() if "malformed request from" in x]
    assert 1 <= len(lines) <= 2, lines
    assert "<script>" not in capped.log()
    assert_clean(capped)


def test_ordinary_answers_carry_no_version_banner(capped: GatewayProcess) -> None:
    status, headers, _ = capped.request("GET", "/healthz")
    assert status == 200
    assert headers["Server"] == "videoberatung"
    status, headers, _ = capped.request("GET", "/no/such/page")
    assert status == 404
    assert headers["Server"] == "videoberatung"
    assert "X-Content-Type-Options" in headers


def test_client_leaving_mid_body_is_not_an_error(capped: GatewayProcess) -> None:
    for path in ("/api/sessions", "/whip/nothing/advisor"):
        with attack.connect(capped.http_port, "127.0.0.8") as sock:
            sock.sendall(attack.body_request_head(path, 10_000, ADVISOR_TOKEN) + b"{ ")
            time.sleep(0.2)  # the handler is reading the body now
    bystander_served(capped)
    wait_until(lambda: "/api/sessions" in capped.access_log())
    assert_clean(capped)
    access = capped.access_log()
    assert not re.search(r'"POST /api/sessions HTTP/1.1" 500', access), access
    assert re.search(r'"POST /api/sessions HTTP/1.1" 499', access), access
    metrics = capped.get_text("/metrics")
    assert 'vb_http_requests_total{status="499"}' in metrics
    assert 'vb_http_requests_total{status="500"}' not in metrics


# -- shutdown ------------------------------------------------------------------------------
def test_sigterm_does_not_wait_for_an_unfinished_body(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    session = gw.create_session()
    cid = session["id"]
    boundary = "b0undary"
    upload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n\x1a\n"
        + bytes(200)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, body = gw.request(
        "POST",
        f"/api/sessions/{cid}/documents",
        upload,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 201, body
    sessions = tmp_path / "data" / "sessions"
    assert any(sessions.rglob("*")), "the upload left no file to delete"
    with attack.connect(gw.http_port) as sock:
        sock.sendall(attack.body_request_head("/api/sessions", 100_000, ADVISOR_TOKEN) + b"{")
        time.sleep(0.3)
        assert gw.proc is not None
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(10)
        took = time.monotonic() - start
    assert gw.stop() == 0, gw.log()
    print(f"SIGTERM to exit with a request body held open: {took:.2f} s")
    assert took < 3.5, f"shutdown took {took:.1f} s"
    assert not [p for p in sessions.rglob("*") if p.is_file()], "documents left on disk"
    assert_clean(gw)


# -- descriptors ---------------------------------------------------------------------------
def _open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def test_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 1024 if hard > 1024 + 4096 else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the child inherits it
    try:
        gw = GatewayProcess(
            tmp_path,
            extra=["--limit", "http_max_connections=100", "--limit", "max_connections=100"],
        ).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert gw.proc is not None
        assert _open_files_limits(gw.proc.pid) == (hard, hard)
        assert f"open-files limit {hard}" in gw.log()
    finally:
        assert gw.stop() == 0, gw.log()


def test_start_is_refused_when_the_caps_exceed_the_open_files_limit(tmp_path: Path) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--http-port",
            str(free_port()),
            "--rtmp-port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        preexec_fn=low_limit,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        env={k: v for k, v in os.environ.items() if not k.startswith("VB_")},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "open-files limit is 512" in proc.stderr, proc.stderr
    assert "http_max_connections" in proc.stderr
    assert "Traceback" not in proc.stderr

"""Application logs: JSON lines as an option, and no client address either way."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayProcess
from gateway.logs import AddressFilter, JsonFormatter, mask_addresses


def test_mask_addresses() -> None:
    assert mask_addresses("rtmp 10.1.2.3: refused") == "rtmp [address]: refused"
    assert mask_addresses("peer 2001:db8::1 gone") == "peer [address] gone"
    assert mask_addresses("peer ::ffff:192.0.2.7") == "peer [address]"
    # times, versions and ids stay
    assert mask_addresses("at 12:30:05, version 4.5.0.1x") == "at 12:30:05, version 4.5.0.1x"
    assert mask_addresses("consultation ab12cd…") == "consultation ab12cd…"


def test_json_formatter_and_filter() -> None:
    record = logging.LogRecord(
        "rtmp", logging.WARNING, "f", 1, "rtmp %s: %s", ("1.2.3.4", "x"), None
    )
    assert AddressFilter().filter(record)
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "rtmp"
    assert data["msg"] == "rtmp [address]: x"
    assert data["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("g", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


@pytest.mark.e2e
def test_json_logs_from_the_real_server_carry_no_address(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "data", extra=["--log-format", "json"]).start()
    try:
        # garbage on the RTMP port makes the server log a warning about this peer
        with socket.create_connection(("127.0.0.1", gw.rtmp_port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            with contextlib.suppress(OSError):  # the server closes (or resets) this one
                while s.recv(4096):
                    pass
        deadline = time.monotonic() + 5
        while "rtmp" not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gw.stop()
    lines = [line for line in gw.log().splitlines() if line.startswith("{")]
    assert lines, gw.log()
    records = [json.loads(line) for line in lines]  # every such line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    warnings = [r for r in records if r["logger"] == "rtmp"]
    assert warnings, records
    assert all("127.0.0.1" not in r["msg"] for r in records), warnings

"""Start the real gateway (``python -m gateway serve``) as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.logs import serious_records
from rtmp.client import RtmpClient

ADVISOR_TOKEN = "test-advisor-token-0123456789"


# Every gateway started in this test process, until its log has been checked to the end
# (tests/conftest.py checks the new lines of each after every test), and the patterns the
# running test allows (its ``gateway_log_allows`` marker).
STARTED: list[GatewayProcess] = []
ALLOWED: list[re.Pattern[str]] = []


class GatewayLogError(AssertionError):
    """The gateway logged a traceback, an "internal error" or an ERROR nobody expected."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    data_dir: Path
    extra: list[str] = field(default_factory=list)
    http_port: int = field(default_factory=free_port)
    rtmp_port: int = field(default_factory=free_port)
    rtmps_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    # regexes for errors this process is expected to log (narrow: name the very error)
    log_allows: list[str] = field(default_factory=list)
    _log_checked: int = 0  # bytes of the output already checked

    @property
    def base(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self.log_path = self.data_dir / "gateway.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--rtmp-port",
            str(self.rtmp_port),
            "--rtmps-port",
            str(self.rtmps_port),
            "--data-dir",
            str(self.data_dir / "data"),
            "--advisor-token",
            ADVISOR_TOKEN,
            "--ice-host",
            "127.0.0.1",
            # loopback tests open many connections from one address
            "--limit",
            "max_connections_per_address=1000",
            "--limit",
            "connection_rate_per_address=1000",
            # every test client is 127.0.0.1: guessing limits per address would add up
            "--limit",
            "pin_max_wrong_per_address=1000",
            "--limit",
            "login_max_failures_per_address=1000",
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")}
        self.log_path.write_bytes(b"")
        # O_APPEND: every writer (the server, a test simulating one) adds at the end
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._log_checked = 0
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.rtmp_port), 0.2):
                    pass
                self.get("/healthz")
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start: {self.log()}")

    def log(self) -> str:
        """Everything the gateway wrote: its output, then its access log files."""
        output = self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
        return output + self.access_log()

    def access_log(self) -> str:
        """The access log (``<data-dir>/logs/access-*.log``, oldest file first)."""
        logs = self.data_dir / "data" / "logs"
        if not logs.is_dir():
            return ""
        return "".join(p.read_text() for p in sorted(logs.glob("access-*.log")))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process; raises :class:`GatewayLogError` when its output (since the
        last check) shows a traceback, an internal error or an unexpected ERROR."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.check_log()
        return int(self.proc.returncode)

    def check_log(self) -> None:
        """Check the output written since the last check (whole lines only)."""
        if self.log_path is None or not self.log_path.exists():
            return
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_checked)
            new = fh.read()
        exited = self.proc is not None and self.proc.poll() is not None
        if not exited:
            new = new[: new.rfind(b"\n") + 1]  # a line being written is checked next time
        self._log_checked += len(new)
        if exited and self in STARTED:
            STARTED.remove(self)
        allowed = [*ALLOWED, *(re.compile(p) for p in self.log_allows)]
        bad = serious_records(new.decode(errors="replace"), allowed)
        if bad:
            shown = "\n".join(r.text for r in bad[:5])
            raise GatewayLogError(
                f"the gateway on port {self.http_port} logged {len(bad)} unexpected "
                f"error(s) (allow a deliberate one with @pytest.mark.gateway_log_allows):\n"
                f"{shown}"
            )

    # -- tiny HTTP helpers (urllib: no extra event loop in sync tests) --------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        token: str | None = ADVISOR_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        context = None
        if self.base.startswith("https"):
            context = ssl.create_default_context()  # the test certificate is self-signed
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def get(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: {status}")
        return json.loads(body)

    def get_text(self, path: str) -> str:
        status, _, body = self.request("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: {status}")
        return body.decode()

    def wait_live(self, session_id: str, role: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until ``role``'s stream is live with a known video codec (its first video
        frame reached the gateway); returns the consultation's state. A condition to wait
        on instead of a sleep before a player joins."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.get(f"/api/sessions/{session_id}")
            stream = state["streams"][role]
            if stream["live"] and stream["video_codec"]:
                return state
            time.sleep(0.05)
        raise AssertionError(f"{role}'s stream never went live: {state}")

    def create_session(self) -> dict[str, Any]:
        status, _, body = self.request("POST", "/api/sessions")
        assert status == 201, body
        return json.loads(body)


async def flash_client(gw: GatewayProcess, token: str | None = None, **caps: float) -> RtmpClient:
    """Our Flash-like client, connected to ``consult`` with ``token`` as the first extra
    ``connect`` argument (what the SWF sends); ``caps`` are connect capabilities such as
    ``video_codecs``."""
    client = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
    extra = (token,) if token is not None else ()
    result = await client.connect(
        "consult", f"rtmp://127.0.0.1:{gw.rtmp_port}/consult", *extra, **caps
    )
    assert not result.error, result
    return client

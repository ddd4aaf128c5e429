"""The real gateway as a subprocess for the attack suite and the soak (``bench/``), and a
small RTMP endpoint helper. (The tests have their own launcher, ``testkit/gwproc.py``, with
the per-test log check; bench code does not import ``tests``.)"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from rtmp.client import RtmpClient

ROOT = Path(__file__).resolve().parent.parent
ADVISOR_TOKEN = "bench-advisor-token-0123456789"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _fd_limit_like_systemd() -> None:
    """Child set-up: soft descriptor limit 1024 (systemd's default for services)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


# -- the gateway under attack ---------------------------------------------------------------
@dataclass
class Gateway:
    workdir: Path
    host: str = "127.0.0.1"
    extra: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the process's environment
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    rtmp_port: int = 0
    _log_seen: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def base(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.http_port}"

    def start(self, timeout: float = 60.0) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.rtmp_port = free_port(self.host), free_port(self.host)
        data = self.data_dir or self.workdir / "data"
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--host",
            self.host,
            "--http-port",
            str(self.http_port),
            "--rtmp-port",
            str(self.rtmp_port),
            "--rtmps-port",
            str(free_port(self.host)),
            "--data-dir",
            str(data),
            "--advisor-token",
            ADVISOR_TOKEN,
            "--ice-host",
            self.host,
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")} | self.env
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=_fd_limit_like_systemd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection((self.host, self.http_port), 0.5) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()  # not left behind when the caller gives up on it
        raise RuntimeError(f"gateway did not start within {timeout:.0f} s")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def new_log(self) -> str:
        """What the gateway wrote since the last call."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_seen)
            data = fh.read()
        self._log_seen += len(data)
        return data.decode(errors="replace")

    def rss(self) -> int:
        return self.usage()["rss"]

    def usage(self) -> dict[str, int]:
        """Resident memory (bytes), open descriptors and threads of the process."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        values = dict(line.split(":", 1) for line in status if ":" in line)
        return {
            "rss": int(values["VmRSS"].split()[0]) * 1024,
            "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd")),
            "threads": int(values["Threads"]),
        }

    async def api(
        self, method: str, path: str, body: Any = None, token: str | None = ADVISOR_TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def create_session(self) -> dict[str, Any]:
        status, body = await self.api("POST", "/api/sessions")
        if status != 201:
            raise RuntimeError(f"POST /api/sessions: {status} {body}")
        return dict(body)


# -- the honest consultation ---------------------------------------------------------------
@dataclass
class RtmpEndpoint:
    host: str
    port: int
    app: str
    name: str
    token: str | None

    @classmethod
    def parse(cls, url: str) -> RtmpEndpoint:
        parts = urlsplit(url)
        app, _, name = parts.path.lstrip("/").partition("/")
        token = parse_qs(parts.query).get("token", [None])[0]
        return cls(parts.hostname or "127.0.0.1", parts.port or 1935, app, name, token)

    async def open(self, *, rcvbuf: int | None = None, **kwargs: Any) -> RtmpClient:
        """Connect and send ``connect``; ``rcvbuf`` sets the receive buffer before the
        TCP handshake. Shrinking it later leaves a window below loopback's 64 KiB MSS and
        under half the largest window seen: the sender's silly-window avoidance then waits
        for its persist timer (backing off up to 2 min), so a player that paused reading
        would seem never to be served again, whatever the server does."""
        if rcvbuf is None:
            client = await RtmpClient.open(self.host, self.port, **kwargs)
        else:
            loop = asyncio.get_running_loop()
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            raw.setblocking(False)
            await loop.sock_connect(raw, (self.host, self.port))
            _, client = await loop.create_connection(lambda: RtmpClient(**kwargs), sock=raw)
        await client.wait_for(lambda: client.handshake)
        extra = (self.token,) if self.token else ()
        tc_url = f"rtmp://{self.host}:{self.port}/{self.app}"
        result = await client.connect(self.app, tc_url, *extra)
        if result.error:
            raise RuntimeError(f"connect refused: {result.args}")
        return client

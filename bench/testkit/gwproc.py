"""The real gateway (``python -m gateway serve``) as a subprocess, for the end-to-end tests
and for ``bench/`` (benchmarks, the attack suite, the soak): one launcher for both.

The tests use it as it comes: per-address limits raised (every test client is 127.0.0.1)
and the per-test log check (``STARTED``, tests/conftest.py). The attack suite and the soak
take :func:`bench_gateway`: the default limits (what the attacks measure), systemd's
descriptor limit and their own log reading (:meth:`GatewayProcess.new_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.logs import serious_records
from rtmp import messages as m
from rtmp.client import RtmpClient
from rtmp.events import MediaReceived
from rtmp.handshake import ClientHandshake

ROOT = Path(__file__).resolve().parents[2]  # the repository: the gateway runs from here
ADVISOR_TOKEN = "test-advisor-token-0123456789"


# Every gateway started in this test process, until its log has been checked to the end
# (tests/conftest.py checks the new lines of each after every test), and the patterns the
# running test allows (its ``gateway_log_allows`` marker).
STARTED: list[GatewayProcess] = []
ALLOWED: list[re.Pattern[str]] = []

# Loopback tests open many connections from one address, and every test client is
# 127.0.0.1: limits per address (connections, PIN and login guesses) would add up.
LOOPBACK_LIMITS = [
    "max_connections_per_address=1000",
    "connection_rate_per_address=1000",
    "pin_max_wrong_per_address=1000",
    "login_max_failures_per_address=1000",
]


class GatewayLogError(AssertionError):
    """The gateway logged a traceback, an "internal error" or an ERROR nobody expected."""


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    """One gateway process. ``data_dir`` is its folder: the output goes to
    ``gateway.log`` there, its data (``--data-dir``) to ``data/`` below it unless
    ``store`` says otherwise."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    # 0: a free port on ``host``, chosen when the object is made
    http_port: int = 0
    rtmp_port: int = 0
    rtmps_port: int = 0
    store: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the process's environment
    # False: the gateway's own per-address limits (the attack suite measures them)
    loopback_limits: bool = True
    # the child's soft descriptor limit (None: inherited)
    fd_limit: int | None = None
    # the per-test log check: registered in STARTED, checked when stopped
    checked: bool = True
    start_timeout: float = 20.0
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    # regexes for errors this process is expected to log (narrow: name the very error)
    log_allows: list[str] = field(default_factory=list)
    _log_checked: int = 0  # bytes of the output already checked
    _log_seen: int = 0  # bytes of the output new_log() has returned

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port(self.host)
        self.rtmp_port = self.rtmp_port or free_port(self.host)
        self.rtmps_port = self.rtmps_port or free_port(self.host)

    @property
    def base(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.http_port}"

    @property
    def data_path(self) -> Path:
        """The gateway's ``--data-dir``."""
        return self.store or self.data_dir / "data"

    def start(self, timeout: float | None = None) -> GatewayProcess:
        timeout = self.start_timeout if timeout is None else timeout
        self.log_path = self.data_dir / "gateway.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        limits = [arg for limit in LOOPBACK_LIMITS for arg in ("--limit", limit)]
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
            str(self.rtmps_port),
            "--data-dir",
            str(self.data_path),
            "--advisor-token",
            ADVISOR_TOKEN,
            "--ice-host",
            self.host,
            *(limits if self.loopback_limits else []),
            *self.extra,  # later --limit flags win over the raised loopback limits
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VB_")} | self.env
        self.log_path.write_bytes(b"")
        # O_APPEND: every writer (the server, a test simulating one) adds at the end
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        fd_limit = self.fd_limit
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
            preexec_fn=None if fd_limit is None else functools.partial(_fd_limit, fd_limit),
        )
        self._log_checked = self._log_seen = 0
        if self.checked:
            STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()[-3000:]}")
            try:
                with socket.create_connection((self.host, self.rtmp_port), 0.2):
                    pass
                self.get("/healthz")
                return self
            except OSError:
                time.sleep(0.1)
        self._end(signal.SIGTERM, 5.0)  # not left behind when the caller gives up on it
        raise RuntimeError(f"gateway did not start within {timeout:.0f} s: {self.log()[-3000:]}")

    def log(self) -> str:
        """Everything the gateway wrote: its output, then its access log files."""
        output = self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
        return output + self.access_log()

    def log_mark(self) -> int:
        """A position in the output; :meth:`log_since` returns what came after it."""
        return self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(mark)
            return fh.read().decode(errors="replace")

    def new_log(self) -> str:
        """What the gateway wrote since the last call (bench code checks it itself)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_seen)
            data = fh.read()
        self._log_seen += len(data)
        return data.decode(errors="replace")

    def access_log(self) -> str:
        """The access log (``<data-dir>/logs/access-*.log``, oldest file first)."""
        logs = self.data_path / "logs"
        if not logs.is_dir():
            return ""
        return "".join(p.read_text() for p in sorted(logs.glob("access-*.log")))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process; for a checked one, raises :class:`GatewayLogError` when its
        output (since the last check) shows a traceback, an internal error or an
        unexpected ERROR."""
        self._end(sig, timeout)
        if self.checked:
            self.check_log()
        assert self.proc is not None
        return int(self.proc.returncode)

    def _end(self, sig: int, timeout: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

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

    def rss(self) -> int:
        return self.usage()["rss"]

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

    async def api(
        self, method: str, path: str, body: Any = None, token: str | None = ADVISOR_TOKEN
    ) -> tuple[int, Any]:
        """The JSON API from a coroutine (bench code): :meth:`request` on a worker thread;
        the answer's JSON, or its text when it is none."""
        data = None if body is None else json.dumps(body).encode()
        headers = None if data is None else {"Content-Type": "application/json"}
        status, _, raw = await asyncio.to_thread(self.request, method, path, data, token, headers)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

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


def _fd_limit(soft: int) -> None:
    """Child set-up: the soft descriptor limit (systemd's default for services is 1024)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


def bench_gateway(workdir: Path, **kwargs: Any) -> GatewayProcess:
    """The gateway as the attack suite and the soak run it: the default per-address
    limits (what they measure), systemd's descriptor limit, 60 s to start on a loaded
    machine, and their own reading of the log (:meth:`GatewayProcess.new_log`) instead
    of the per-test check."""
    options: dict[str, Any] = {
        "loopback_limits": False,
        "fd_limit": 1024,
        "checked": False,
        "start_timeout": 60.0,
    }
    return GatewayProcess(workdir, **(options | kwargs))


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


@functools.cache
def _bystander_tags() -> tuple[tuple[int, int, bytes], ...]:
    """Two seconds of Spark + Speex as Flash's camera sends them: (type, ms, body)."""
    from bench.testkit.media import make_flv, read_flv_tags  # ffmpeg, only when a test needs it

    path = make_flv(Path(tempfile.mkdtemp(prefix="bystander-")) / "b.flv", "spark_speex", seconds=2)
    return tuple((t.type_id, t.timestamp, t.body) for t in read_flv_tags(path) if t.type_id != 18)


@dataclass
class Bystander:
    """An honest consultation beside a hostile-input test: a Flash-like publisher sends a
    real Spark + Speex stream in real time (looping) and the other participant plays it;
    ``frames`` counts the video frames the player received. It connects from 127.0.0.2,
    so per-address limits that meet the attacker on 127.0.0.1 do not meet it."""

    frames: int = 0
    clients: list[RtmpClient] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def _on_media(self, event: MediaReceived) -> None:
        if event.type_id == m.VIDEO:
            self.frames += 1

    async def continues(self, frames: int = 10, timeout: float = 10.0) -> None:
        """The stream goes on: ``frames`` more video frames arrive within ``timeout``."""
        target = self.frames + frames
        deadline = time.monotonic() + timeout
        while self.frames < target:
            assert time.monotonic() < deadline, (
                f"the bystander's video stopped ({self.frames - target + frames} of {frames} "
                f"frames in {timeout:.0f} s)"
            )
            assert self.task is not None and not self.task.done(), "the bystander's publisher died"
            await asyncio.sleep(0.05)

    async def _publish(self, client: RtmpClient, stream_id: int) -> None:
        tags = await asyncio.to_thread(_bystander_tags)
        length = tags[-1][1] + 67  # one frame's worth after the last tag
        start = time.monotonic()
        for loop in range(10_000):  # bounded: hours of media
            for type_id, ts, body in tags:
                due = start + (loop * length + ts) / 1000
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                client.send_media(stream_id, type_id, loop * length + ts, body)


async def _bystander_client(gw: GatewayProcess, token: str, bystander: Bystander) -> RtmpClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: RtmpClient(on_media=bystander._on_media),
        "127.0.0.1",
        gw.rtmp_port,
        local_addr=("127.0.0.2", 0),
    )
    bystander.clients.append(client)
    result = await client.connect("consult", f"rtmp://127.0.0.1:{gw.rtmp_port}/consult", token)
    assert not result.error, result
    return client


@contextlib.asynccontextmanager
async def bystander_stream(gw: GatewayProcess) -> AsyncIterator[Bystander]:
    """Run a :class:`Bystander` consultation on ``gw`` for the body of the ``async with``;
    its video is flowing on entry."""
    session = await asyncio.to_thread(gw.create_session)
    bystander = Bystander()
    try:
        publisher = await _bystander_client(gw, session["customer"]["token"], bystander)
        sid = await publisher.create_stream()
        publisher.publish(sid, "customer")
        await publisher.wait_status("NetStream.Publish.Start")
        player = await _bystander_client(gw, session["advisor"]["token"], bystander)
        player.play(await player.create_stream(), "customer")
        bystander.task = asyncio.get_running_loop().create_task(bystander._publish(publisher, sid))
        await bystander.continues(5, timeout=15)
        yield bystander
    finally:
        if bystander.task is not None:
            bystander.task.cancel()
        for client in bystander.clients:
            await client.close()


def handshaken_socket(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A raw socket past the (digest) handshake, ready for hand-made chunks."""
    sock = socket.create_connection((host, port), timeout=5)
    hs = ClientHandshake(digest=True)
    sock.sendall(hs.data_to_send())
    while not hs.done:
        data = sock.recv(65536)
        assert data, "server closed during the handshake"
        hs.receive_data(data)
        out = hs.data_to_send()
        if out:
            sock.sendall(out)
    return sock


@dataclass
class RtmpEndpoint:
    """An RTMP URL of the API (``rtmp://host:port/app/name?token=...``) to connect to."""

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

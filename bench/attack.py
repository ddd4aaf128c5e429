"""The attack suite of issue 11: ``make attack`` (``python -m bench.attack``).

It starts the real gateway (``python -m gateway serve``) on loopback, runs an honest
Flash-style consultation beside it for the whole run -- ffmpeg publishing Sorenson Spark
+ Speex at 15 fps over RTMP, and a player in its own process counting the video frames
it receives -- and then runs each attack of issue 11 in turn. For every attack it
prints what happened, the bystander's frame rate during the attack against its
baseline, and PASS/FAIL: PASS needs the bystander at >= 95 % of its baseline frame
rate, no traceback / internal error / ERROR in the gateway's log during the attack, and
the attack handled as the issue asks (each check is printed).

Attackers use their own loopback addresses (127.0.0.2 and up; Linux routes all of
127/8 to ``lo``) so that per-address limits meet the attacker, not the bystander on
127.0.0.1. The gateway runs with its default limits (a shorter ``idle_timeout`` would
close the bystander's player, which only sends an acknowledgement per window) and the
descriptor limit a service gets from systemd by default: soft 1024, hard as the machine
allows (``LimitNOFILE=1024:524288``); the issue asks the gateway to raise it itself.

Some attacks need their own gateway: the IPv6 /64 spreading (on ``::1``; a whole /64
on loopback needs ``ip -6 route add local fd00:11::/64 dev lo`` as root, else the
attack is reported NOT RUN; ``make attack`` as root runs the suite in a network namespace
of its own, ``unshare --net``, where it adds that route: only loopback exists there),
the small-disk uploads (a 150 MiB tmpfs: root only) and SIGTERM with an unfinished
body. Every loop is bounded; everything stays on loopback.

``--only NAME`` (repeatable) runs a subset; ``--list`` names them. Exit status 0 only
when every attack that ran passed and none was NOT RUN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.testkit.gwproc import ADVISOR_TOKEN, ROOT, GatewayProcess, RtmpEndpoint, bench_gateway
from gateway.config import Limits
from gateway.logs import serious_records
from rtmp import messages as m
from rtmp.amf import encode_amf0
from rtmp.client import RtmpClientError
from rtmp.events import MediaReceived
from rtmp.handshake import ClientHandshake

BYSTANDER_SHARE = 0.95  # issue 11, "Must reach"
FPS = 15
# The bystander's rate is measured over at least this long (a frame is 1/150 of it); the
# first baseline waits SETTLE seconds past the start-up burst from the keyframe cache.
MIN_WINDOW = 10.0
SETTLE = 3.0
V6_PREFIX = os.environ.get("ATTACK_V6_PREFIX", "fd00:11::")
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h


async def _play_and_count(url: str) -> None:
    """The bystander's player (its own process): prints ``monotonic frames`` lines."""
    frames = 0

    def on_media(event: MediaReceived) -> None:
        nonlocal frames
        if event.type_id == m.VIDEO:
            frames += 1

    while True:  # the publisher may not be up yet: a live play waits, a refusal retries
        try:
            client = await RtmpEndpoint.parse(url).open(on_media=on_media)
            sid = await client.create_stream()
            client.play(sid, RtmpEndpoint.parse(url).name)
            break
        except (OSError, RuntimeError):
            await asyncio.sleep(0.5)
    while not client.closed.is_set():
        print(f"{time.monotonic():.3f} {frames}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.closed.wait(), 0.1)
    print("closed", flush=True)


class Bystander:
    """ffmpeg publishing the customer's camera (Spark + Speex, 15 fps, ~400 kbit/s) and
    the advisor's player in a separate process, so that the attacks' own work in this
    process cannot slow the count down."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.samples: list[tuple[float, int]] = []
        self.closed = False
        publish = session["customer"]["rtmp"]["publish_url"]
        self.play_url = session["advisor"]["rtmp"]["play_url"]
        self.player = subprocess.Popen(
            [sys.executable, "-m", "bench.attack", "--bystander-play", self.play_url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.publisher = subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size=320x240:rate={FPS}",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=16000",
                "-vf",
                "noise=alls=20:allf=t",  # noise: the encoder really uses its bitrate
                "-c:v",
                "flv1",
                "-b:v",
                "400k",
                "-g",
                str(2 * FPS),
                "-c:a",
                "libspeex",
                "-ar",
                "16000",
                "-ac",
                "1",
                "-f",
                "flv",
                publish,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.player.stdout is not None
        for line in self.player.stdout:
            if line.startswith("closed"):
                self.closed = True
                continue
            t, n = line.split()
            self.samples.append((float(t), int(n)))

    def frames_at(self, t: float) -> int:
        before = [n for ts, n in self.samples if ts <= t]
        return before[-1] if before else 0

    def rate(self, t0: float, t1: float) -> float:
        return (self.frames_at(t1) - self.frames_at(t0)) / max(t1 - t0, 1e-6)

    async def steady(self, baseline: float, timeout: float = 20.0) -> None:
        """Wait (bounded) until the last 2 s ran at the baseline rate again: late frames
        after one attack must not count for the next."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if 0.9 * baseline <= self.rate(now - 2.0, now) <= 1.1 * baseline:
                return

    async def wait_flowing(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.frames_at(time.monotonic()) > 2 * FPS:
                return
            if self.publisher.poll() is not None:
                err = self.publisher.stderr.read().decode() if self.publisher.stderr else ""
                raise RuntimeError(f"bystander publisher exited: {err}")
            await asyncio.sleep(0.25)
        raise RuntimeError("the bystander's frames do not arrive")

    def stop(self) -> None:
        for proc in (self.publisher, self.player):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()


# -- building blocks for attackers ----------------------------------------------------------
def _source_socket(source: str) -> socket.socket:
    """A socket bound to ``source``. IP_FREEBIND lets it use any address of a prefix
    routed to ``lo`` (``ip -6 route add local PREFIX dev lo``) without assigning each."""
    sock = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def connect_from(
    host: str, port: int, source: str, timeout: float = 5.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = _source_socket(source)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def is_closed(reader: asyncio.StreamReader, wait: float = 0.05) -> bool:
    """True when the server closed (EOF or reset); data it sent is read and dropped."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), wait)
            if not data:
                return True
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True


async def count_open(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    states = await asyncio.gather(*(is_closed(r) for r, _ in conns))
    return sum(1 for closed in states if not closed)


async def open_many(
    host: str, port: int, sources: list[str], per_source: int
) -> tuple[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], int]:
    """Open ``per_source`` connections from each source; returns those that opened and
    the number refused at once."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    for source in sources:
        for _ in range(per_source):
            try:
                conns.append(await connect_from(host, port, source))
            except (OSError, TimeoutError):
                refused += 1
    return conns, refused


def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, w in conns:
        w.transport.abort()


async def rtmp_handshake(
    host: str, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connect_from(host, port, source)
    hs = ClientHandshake(digest=True)
    writer.write(hs.data_to_send())
    while not hs.done:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            raise ConnectionError("closed during the handshake")
        hs.receive_data(data)
        out = hs.data_to_send()
        if out:
            writer.write(out)
    await writer.drain()
    return reader, writer


def chunk0(csid: int, type_id: int, length: int, stream_id: int = 0) -> bytes:
    """A type-0 chunk header (RTMP spec 5.3.1.2.1) for a message of ``length`` bytes."""
    return (
        bytes([csid])
        + b"\x00\x00\x00"
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
    )


def set_chunk_size(size: int) -> bytes:
    return chunk0(2, m.SET_CHUNK_SIZE, 4) + struct.pack(">I", size)


class HealthProbe:
    """GET /healthz from 127.0.0.1 every 100 ms on a fresh connection: the latency shows
    a blocked event loop, a failure shows an exhausted gateway."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.latencies: list[float] = []
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.gw.host, self.gw.http_port), 5
                )
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = await asyncio.wait_for(reader.read(12), 5)
                writer.close()
                if not head.startswith(b"HTTP/1.1 200"):
                    self.failures += 1
                else:
                    self.latencies.append(time.monotonic() - t0)
            except (OSError, TimeoutError):
                self.failures += 1
            await asyncio.sleep(0.1)

    def __enter__(self) -> HealthProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("inf"))

    def describe(self) -> str:
        return (
            f"/healthz: {len(self.latencies)} ok, {self.failures} failed, "
            f"worst {self.worst * 1000:.0f} ms"
        )


# -- results --------------------------------------------------------------------------------
@dataclass
class Outcome:
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_run: str | None = None
    allowed_log: list[str] = field(default_factory=list)  # regexes of expected log errors

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append((what, ok))
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        return self.not_run is None and all(ok for _, ok in self.checks)


@dataclass
class Context:
    gw: GatewayProcess
    work: Path
    bystander: Bystander
    session: dict[str, Any]


Attack = Callable[[Context, Outcome], Awaitable[None]]
ATTACKS: dict[str, tuple[str, Attack]] = {}


def attack(name: str, item: str) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        ATTACKS[name] = (item, fn)
        return fn

    return register


async def service_works(gw: GatewayProcess) -> bool:
    """An honest newcomer can still create a consultation and connect over RTMP."""
    try:
        session = await asyncio.wait_for(asyncio.to_thread(gw.create_session), 10)
        client = await asyncio.wait_for(
            RtmpEndpoint.parse(session["customer"]["rtmp"]["publish_url"]).open(), 10
        )
        await client.close()
        await gw.api("DELETE", f"/api/sessions/{session['id']}")
        return True
    except (OSError, RuntimeError, TimeoutError, aiohttp.ClientError, RtmpClientError):
        return False


# -- item 1: HTTP connection floods ---------------------------------------------------------
@attack("http-floods", "1")
async def http_floods(ctx: Context, out: Outcome) -> None:
    """Phase 1, from single addresses: nobody else may notice. Phase 2, 1200 silent
    connections from 40 addresses (what a total cap is for): RTMP keeps working (its own
    port: no descriptor exhaustion), and the HTTP port is back within the deadline."""
    gw, port = ctx.gw, ctx.gw.http_port
    watch = 30.0
    with HealthProbe(gw) as probe:
        silent, silent_refused = await open_many(gw.host, port, ["127.0.0.2"], 300)
        header, _ = await open_many(gw.host, port, ["127.0.0.3"], 20)
        body, _ = await open_many(gw.host, port, ["127.0.0.4"], 20)
        idle, _ = await open_many(gw.host, port, ["127.0.0.5"], 20)
        try:
            for _, w in header:
                w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for _, w in body:  # the login form: a body anyone may send, and it is read
                w.write(
                    b"POST /login HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 100000\r\n\r\nname="
                )
            for _, w in idle:
                w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
            t0 = time.monotonic()
            await asyncio.sleep(3.0)
            early = await count_open(silent)
            out.note(
                f"one address: 300 silent connections, {silent_refused} refused at once, "
                f"{early} still open after 3 s"
            )
            out.check("per-address cap (< 300 of one address held)", early < 300)
            out.check("a newcomer creates a consultation and connects", await service_works(gw))
            tick = 0
            while time.monotonic() - t0 < watch:  # the trickles: one byte a second
                tick += 1
                for _, w in header:
                    if not w.is_closing():
                        w.write(b"X-Trickle-%d: 1\r\n" % tick)
                for _, w in body:
                    if not w.is_closing():
                        w.write(b" ")
                await asyncio.sleep(1.0)
            left = {
                "silent": await count_open(silent),
                "header-trickle": await count_open(header),
                "body-trickle (1 byte/s)": await count_open(body),
                "idle keep-alive": await count_open(idle),
            }
            for kind, n in left.items():
                out.check(f"{kind}: none left open after {watch:.0f} s (left: {n})", n == 0)
            out.note("single addresses: " + probe.describe())
            out.check("/healthz answered throughout", probe.failures == 0)
        finally:
            for conns in (silent, header, body, idle):
                close_all(conns)
    # phase 2: spread over 40 addresses
    spread_sources = [f"127.0.1.{i}" for i in range(1, 41)]
    # 1200: past the soft descriptor limit of 1024 the gateway starts with, unless it
    # raised it (and past any total cap, which must then refuse the rest)
    spread, spread_refused = await open_many(gw.host, port, spread_sources, 30)
    try:
        t0 = time.monotonic()
        rtmp_ok = False
        with contextlib.suppress(
            OSError, RuntimeError, TimeoutError, aiohttp.ClientError, RtmpClientError
        ):
            client = await asyncio.wait_for(RtmpEndpoint.parse(ctx.bystander.play_url).open(), 10)
            rtmp_ok = True
            await client.close()
        out.check("RTMP connects during 1200 HTTP connections from 40 addresses", rtmp_ok)
        recovered = None
        while time.monotonic() - t0 < watch:
            if await service_works(gw):
                recovered = time.monotonic() - t0
                break
            await asyncio.sleep(1.0)
        held = await count_open(spread)
        out.note(
            f"40 addresses x 30: {spread_refused} refused at once, {held} still open after "
            f"{time.monotonic() - t0:.0f} s; the HTTP port served newcomers again after "
            + (f"{recovered:.1f} s" if recovered is not None else f"more than {watch:.0f} s")
        )
        out.check(
            f"the HTTP port serves newcomers again within {watch:.0f} s", recovered is not None
        )
    finally:
        close_all(spread)


# -- items 2, 3, 4: unauthenticated RTMP -------------------------------------------------------
@attack("amf-null-8mib", "2")
async def amf_null_flood(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    size = 8 * 1024 * 1024
    message = chunk0(3, 18, size) + b"\x05" * size  # AMF0 null is one byte (0x05)
    sent = 0
    with HealthProbe(gw) as probe:
        await asyncio.sleep(1.0)
        calm = probe.worst
        try:
            reader, writer = await rtmp_handshake(gw.host, gw.rtmp_port, "127.0.0.6")
            writer.write(set_chunk_size(size + 1024))
            for _ in range(4):  # 32 MiB of nulls, as fast as loopback takes them
                writer.write(message)
                await asyncio.wait_for(writer.drain(), 15)
                sent += 1
            closed = await is_closed(reader, 5.0)
            writer.transport.abort()
        except (OSError, TimeoutError) as exc:
            closed = True
            out.note(f"connection ended by the server ({type(exc).__name__})")
        await asyncio.sleep(1.0)
    out.note(f"{sent} of 4 messages of 8 MiB accepted; connection closed: {closed}")
    out.note(probe.describe() + f" (calm before: {calm * 1000:.0f} ms)")
    out.check(
        "/healthz always answered, never slower than 500 ms (loop not frozen)",
        probe.worst < 0.5 and not probe.failures,
    )


@attack("partial-messages", "3")
async def partial_messages(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    before = gw.rss()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    part = 2 * 1024 * 1024
    header = set_chunk_size(65536) + chunk0(3, 20, 8 * 1024 * 1024)
    piece = b"\x00" * 65536 + b"\xc3"  # full chunk, then a type-3 header for the next
    body = header + piece * (part // 65536)
    for a in range(4):
        for _ in range(25):
            try:
                reader, writer = await rtmp_handshake(gw.host, gw.rtmp_port, f"127.0.2.{a + 1}")
                writer.write(body)
                conns.append((reader, writer))
            except (OSError, TimeoutError, ConnectionError):
                pass
    await asyncio.sleep(3.0)
    held = await count_open(conns)
    grown = gw.rss() - before
    out.note(
        f"{len(conns)} unauthenticated connections sent 2 MiB of an 8 MiB message each; "
        f"{held} still open; gateway RSS +{grown / 2**20:.0f} MiB"
    )
    out.check("partial-message memory stays small (< 32 MiB for 100 connections)", grown < 32 << 20)
    close_all(conns)


@attack("rtmp-slots", "4")
async def rtmp_slots(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    no_connect = [await rtmp_handshake(gw.host, gw.rtmp_port, "127.0.0.8") for _ in range(10)]
    slow = [await rtmp_handshake(gw.host, gw.rtmp_port, "127.0.0.9") for _ in range(10)]
    connect = encode_amf0("connect", 1.0, {"app": "consult", "tcUrl": "rtmp://x/consult"})
    trickle = chunk0(3, 20, len(connect)) + connect
    t0 = time.monotonic()
    i = 0
    watch = 30.0  # the handshake timeout is 10 s; a connect deadline of that order fits
    while time.monotonic() - t0 < watch and i < len(trickle):
        for _, w in slow:
            if not w.is_closing():
                w.write(trickle[i : i + 1])  # a byte a second: never a whole message
        i += 1
        await asyncio.sleep(1.0)
    left_nc, left_slow = await count_open(no_connect), await count_open(slow)
    out.check(
        f"no connect after the handshake: closed within {watch:.0f} s (left {left_nc})", not left_nc
    )
    out.check(
        f"a byte a second, no message: closed within {watch:.0f} s (left {left_slow})",
        not left_slow,
    )
    close_all(no_connect + slow)


def _v6_sources(count: int) -> list[str] | None:
    """Addresses of one /64 usable as source on this machine (an AnyIP route on lo)."""
    sources = [f"{V6_PREFIX}{i + 2:x}" for i in range(count)]
    for addr in sources:
        try:
            with _source_socket(addr) as s, socket.socket(socket.AF_INET6) as listener:
                listener.bind(("::1", 0))
                listener.listen()
                s.setblocking(True)
                s.settimeout(1.0)
                s.connect(listener.getsockname()[:2])  # routed back to us over lo
        except OSError:
            return None
    return sources


@attack("ipv6-slash64", "4")
async def ipv6_spread(ctx: Context, out: Outcome) -> None:
    sources = _v6_sources(5)
    if sources is None:
        out.not_run = (
            f"no /64 on loopback ({V6_PREFIX}/64); as root: "
            f"ip -6 route add local {V6_PREFIX}/64 dev lo (only ::1 exists, which "
            "cannot show spreading)"
        )
        return
    gw6 = bench_gateway(ctx.work / "v6", host="::1").start()
    try:
        cap = Limits().max_connections_per_address
        conns, refused = await open_many("::1", gw6.rtmp_port, sources, cap)
        await asyncio.sleep(2.0)
        held = await count_open(conns)
        out.note(f"5 addresses of one /64 x {cap}: {refused} refused at once, {held} held")
        out.check(f"one /64 holds at most {cap} connections (held {held})", held <= cap)
        close_all(conns)
    finally:
        gw6.stop()
    out.check("nothing serious in that gateway's log", not serious_records(gw6.new_log()))


# -- item 5: a stalled player -------------------------------------------------------------------
@attack("stalled-player", "5")
async def stalled_player(ctx: Context, out: Outcome) -> None:
    frames: list[tuple[float, int, int]] = []  # (arrival, timestamp, size)

    def on_media(event: MediaReceived) -> None:
        if event.type_id == m.VIDEO:
            frames.append((time.monotonic(), event.timestamp, len(event.payload)))

    ep = RtmpEndpoint.parse(ctx.bystander.play_url)
    # a small receive buffer from the first byte: what waits in the player's own kernel
    # buffer counts as delivered for any server
    client = await ep.open(on_media=on_media, rcvbuf=16384)
    assert client.transport is not None
    sid = await client.create_stream()
    client.play(sid, ep.name)
    await client.wait_for(lambda: len(frames) > FPS, 15)
    stall = 20.0
    wall_a, ts_a, _ = frames[-1]
    client.transport.pause_reading()
    await asyncio.sleep(stall)
    resumed = time.monotonic()
    client.transport.resume_reading()
    await asyncio.sleep(4.0)
    after = [f for f in frames if f[0] >= resumed]
    # how far behind live each frame arrived (the source runs in real time)
    stale = [f for f in after if (f[0] - wall_a) * 1000 - (f[1] - ts_a) > 2000]
    stale_bytes = sum(size for _, _, size in stale)
    limit = Limits().socket_send_buffer + 64 * 1024  # what kernel buffers may hold
    if client.closed.is_set():
        out.note("the gateway closed the stalled player's connection")
    out.note(
        f"player stopped reading for {stall:.0f} s: afterwards {len(after)} frames, "
        f"{len(stale)} of them > 2 s behind live ({stale_bytes / 1024:.0f} KiB)"
    )
    out.check(
        f"stale video after the stall <= socket buffers ({limit // 1024} KiB)", stale_bytes <= limit
    )
    fresh = [
        f for f in after if f[0] >= resumed + 2 and (f[0] - wall_a) * 1000 - (f[1] - ts_a) < 2000
    ]
    out.check("back to live (< 2 s behind) within 2 s", bool(fresh))
    await client.close()


# -- item 6: malformed SDP -----------------------------------------------------------------------
async def _real_offer() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def sdp_mutations(offer: str, rng: random.Random, count: int) -> dict[str, str]:
    lines = offer.strip().split("\r\n")
    first_m = next(i for i, line in enumerate(lines) if line.startswith("m="))
    named = {
        "bundle-names-absent-mid": offer.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"),
        "no-a=mid": "\r\n".join(x for x in lines if not x.startswith("a=mid:")) + "\r\n",
        "no-m-line": "\r\n".join(lines[:first_m]) + "\r\n",
        "truncated": offer[: len(offer) // 2],
        "bad-port": offer.replace("m=video 9", "m=video x", 1),
        "not-sdp": "hello\r\n",
        "empty": "",
        "binary": bytes(range(256)).decode("latin-1"),
    }
    for n in range(count):
        mutated = list(lines)
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(("drop", "dup", "swap", "garble"))
            i, j = rng.randrange(len(mutated)), rng.randrange(len(mutated))
            if op == "drop" and len(mutated) > 1:
                del mutated[i]
            elif op == "dup":
                mutated.insert(j, mutated[i])
            elif op == "swap":
                mutated[i], mutated[j] = mutated[j], mutated[i]
            else:
                mutated[i] = mutated[i][: rng.randrange(len(mutated[i]) + 1)] + "\x00:;"
        named[f"random-{n}"] = "\r\n".join(mutated) + "\r\n"
    return named


@attack("malformed-sdp", "6")
async def malformed_sdp(ctx: Context, out: Outcome) -> None:
    session = await asyncio.to_thread(ctx.gw.create_session)
    offer = await _real_offer()
    statuses: dict[str, list[str]] = {}
    bad: list[str] = []
    async with aiohttp.ClientSession() as http:
        for name, sdp in sdp_mutations(offer, random.Random(11), 40).items():
            for kind in ("whip_url", "whep_url"):
                headers = {
                    "Authorization": f"Bearer {session['customer']['token']}",
                    "Content-Type": "application/sdp",
                }
                async with http.post(
                    session["customer"][kind], data=sdp.encode("utf-8", "replace"), headers=headers
                ) as resp:
                    await resp.read()
                    ctype = resp.headers.get("Content-Type", "")
                    statuses.setdefault(str(resp.status), []).append(name)
                    if resp.status == 201 and "Location" in resp.headers:
                        location = resp.headers["Location"]
                        async with http.delete(
                            ctx.gw.base + location if location.startswith("/") else location,
                            headers={"Authorization": headers["Authorization"]},
                        ):
                            pass
                    elif resp.status >= 500 or (resp.status >= 400 and "problem+json" not in ctype):
                        bad.append(f"{kind[:4]} {name}: {resp.status} {ctype}")
    await asyncio.sleep(2.0)
    await ctx.gw.api("DELETE", f"/api/sessions/{session['id']}")
    out.note("answers: " + ", ".join(f"{s} x{len(v)}" for s, v in sorted(statuses.items())))
    out.check(
        "every malformed offer a 4xx problem+json, never 5xx" + (f" ({bad[:4]})" if bad else ""),
        not bad,
    )


# -- item 7: parallel uploads on a small disk --------------------------------------------------
def _multipart(name: str, size: int) -> aiohttp.FormData:
    form = aiohttp.FormData()
    body = b"%PDF-1.4\n" + b"\x00" * (size - 16) + b"\n%%EOF\n"  # sniffed as a PDF
    form.add_field("file", body, filename=name, content_type="application/pdf")
    return form


@attack("small-disk-uploads", "7")
async def small_disk(ctx: Context, out: Outcome) -> None:
    if os.geteuid() != 0:
        out.not_run = "needs root to mount a 150 MiB tmpfs"
        return
    mount = ctx.work / "small-disk"
    mount.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        out.not_run = f"mount failed: {done.stderr.decode().strip()}"
        return
    gw = bench_gateway(ctx.work / "disk-gw", store=mount / "data").start()
    try:
        sessions = [await asyncio.to_thread(gw.create_session) for _ in range(10)]
        async with aiohttp.ClientSession() as http:

            async def upload(s: dict[str, Any]) -> int:
                async with http.post(
                    f"{gw.base}/api/sessions/{s['id']}/documents",
                    data=_multipart("big.pdf", 19 * 1024 * 1024),
                    headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"},
                ) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(upload(s) for s in sessions))
        free = os.statvfs(mount)
        free_bytes = free.f_bavail * free.f_frsize
        floor = Limits().document_min_free_bytes
        out.note(f"10 parallel uploads of 19 MiB on 150 MiB: {sorted(statuses)}")
        out.check("each upload 201 or 507", all(s in (201, 507) for s in statuses))
        out.check(
            f"free space stays above the floor ({free_bytes >> 20} MiB >= {floor >> 20} MiB)",
            free_bytes >= floor,
        )
        # the disk 100 % full: a finished consultation still gets its statistics row
        filler = mount / "filler"
        with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as fh:
            for _ in range(200):
                fh.write(b"\x00" * (1 << 20))
        _, before = await gw.api("GET", "/api/stats")
        await gw.api("DELETE", f"/api/sessions/{sessions[0]['id']}")
        await asyncio.sleep(1.0)
        filler.unlink()
        await asyncio.sleep(1.0)
        _, after = await gw.api("GET", "/api/stats")
        n0 = len(before.get("rows", [])) if isinstance(before, dict) else -1
        n1 = len(after.get("rows", [])) if isinstance(after, dict) else -1
        out.check(f"statistics row kept on a full disk (rows {n0} -> {n1})", n1 == n0 + 1)
        bad = serious_records(gw.new_log(), [re.compile(r"No space left")])
        out.check("no traceback in that gateway's log", not bad)
    finally:
        gw.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


# -- item 8: SIGTERM with an unfinished body -----------------------------------------------------
@attack("sigterm-unfinished-body", "8")
async def sigterm_body(ctx: Context, out: Outcome) -> None:
    gw = bench_gateway(ctx.work / "term-gw").start()
    session = await asyncio.to_thread(gw.create_session)
    _, writer = await connect_from(gw.host, gw.http_port, "127.0.0.10")
    writer.write(
        f"POST /api/sessions/{session['id']}/documents HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {ADVISOR_TOKEN}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 10000000\r\n\r\n--b\r\n".encode()
        + b"x" * 1000
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    assert gw.proc is not None
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(gw.proc.wait, 20)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t0
    writer.transport.abort()
    gw.stop()
    out.note(f"SIGTERM with a request body outstanding: exit {code} after {took:.1f} s")
    out.check("exits 0 within 5 s", code == 0 and took <= 5.0)


# -- item 9: deep JSON ---------------------------------------------------------------------------
@attack("deep-json", "9")
async def deep_json(ctx: Context, out: Outcome) -> None:
    session = await asyncio.to_thread(ctx.gw.create_session)
    # nesting within the size cap must be refused for its depth (400), and a deep
    # document past the size cap for its size (413); neither may reach the parser
    bodies = {
        "deep": "[" * 20_000 + "]" * 20_000,
        "deep and large": "[" * 100_000 + "]" * 100_000,
    }
    results = []
    async with aiohttp.ClientSession() as http:
        for label, body in bodies.items():
            for path in (f"/api/sessions/{session['id']}/forms", "/api/sessions"):
                async with http.post(
                    ctx.gw.base + path,
                    data=body,
                    headers={
                        "Authorization": f"Bearer {ADVISOR_TOKEN}",
                        "Content-Type": "application/json",
                    },
                ) as resp:
                    await resp.read()
                    content_type = resp.headers.get("Content-Type", "")
                    results.append((f"{label} {path}", resp.status, content_type))
        async with http.ws_connect(
            session["advisor"]["events_url"],
            headers={"Authorization": f"Bearer {session['advisor']['token']}"},
        ) as ws:
            await ws.send_str('{"type":"chat","text":' + bodies["deep"] + "}")
            await asyncio.sleep(1.0)
    await ctx.gw.api("DELETE", f"/api/sessions/{session['id']}")
    out.note("answers: " + "; ".join(f"{p}: {s} {c}" for p, s, c in results))
    out.check(
        "problem+json for each: 400 for depth, 413 past the size cap (no 500)",
        all(
            s == (413 if p.startswith("deep and large") else 400) and "problem+json" in c
            for p, s, c in results
        ),
    )


# -- item 10: malformed HTTP requests -------------------------------------------------------------
MALFORMED_HTTP = {
    "bad-header-line": b"GET /x HTTP/1.1\r\nHost: x\r\nBad <script>alert(1)</script>\r\n\r\n",
    "bad-method": b"G<script>T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "bad-version": b"GET / HTTP/9.<script>\r\nHost: x\r\n\r\n",
}


async def _raw_request(gw: GatewayProcess, data: bytes, source: str) -> bytes:
    reader, writer = await connect_from(gw.host, gw.http_port, source)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(1 << 20), 5)
    except (TimeoutError, ConnectionError):
        return b""
    finally:
        writer.transport.abort()


@attack("malformed-http", "10")
async def malformed_http(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    gw.new_log()
    for name, data in MALFORMED_HTTP.items():
        answer = await _raw_request(gw, data, "127.0.0.11")
        head, _, body = answer.partition(b"\r\n\r\n")
        head_l = head.lower()
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        out.note(f"{name}: {status or 'no answer'}")
        out.check(f"{name}: answered 4xx", bool(re.match(rb"HTTP/1\.[01] 4\d\d", head)))
        out.check(
            f"{name}: security headers",
            b"x-content-type-options: nosniff" in head_l and b"content-security-policy:" in head_l,
        )
        out.check(
            f"{name}: no version banner", b"python" not in head_l and b"aiohttp" not in head_l
        )
        out.check(f"{name}: input not echoed", b"<script>" not in body)
    # a client dropping mid-body
    await _raw_request(
        gw,
        b'POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"a":',
        "127.0.0.11",
    )
    for _ in range(100):  # a flood of malformed requests: a rate-limited log line
        await _raw_request(gw, MALFORMED_HTTP["bad-header-line"], "127.0.0.12")
    await asyncio.sleep(1.0)
    lines = [x for x in gw.new_log().splitlines() if x.strip()]
    out.note(f"101 malformed requests and a dropped body: {len(lines)} log lines")
    out.check("at most 10 log lines, no traceback", len(lines) <= 10)


# -- item 11: /metrics and a connect with 300 000 properties ------------------------------------
@attack("metrics-and-connect-properties", "11")
async def metrics_and_props(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    # /metrics: open on the web port unless the operator protects it (issue 11: "bindable
    # to a separate address/port or protected by a scrape token"): a gateway with a scrape
    # token must refuse a scrape without it and serve one with it
    scrape = "attack-suite-scrape-token-0123456789"
    try:
        mgw = bench_gateway(ctx.work / "metrics-gw", extra=["--metrics-token", scrape]).start()
    except RuntimeError as exc:
        out.check(f"--metrics-token accepted ({str(exc)[-160:].strip()})", False)
    else:
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(mgw.base + "/metrics") as resp:
                    without = resp.status
                bearer = {"Authorization": f"Bearer {scrape}"}
                async with http.get(mgw.base + "/metrics", headers=bearer) as resp:
                    with_token = resp.status
            out.note(f"/metrics with --metrics-token: {without} without it, {with_token} with it")
            out.check("/metrics refused without the scrape token", without in (401, 403, 404))
            out.check("/metrics served with the scrape token", with_token == 200)
        finally:
            mgw.stop()
    props = {f"p{i}": 1.0 for i in range(300_000)}
    payload = encode_amf0("connect", 1.0, props)
    with HealthProbe(gw) as probe:
        await asyncio.sleep(1.0)
        calm = probe.worst
        closed = False
        try:
            reader, writer = await rtmp_handshake(gw.host, gw.rtmp_port, "127.0.0.13")
            writer.write(set_chunk_size(len(payload) + 16) + chunk0(3, 20, len(payload)) + payload)
            await writer.drain()
            closed = await is_closed(reader, 5.0)
            writer.transport.abort()
        except (OSError, TimeoutError, ConnectionError):
            closed = True
        await asyncio.sleep(1.0)
    out.note(
        f"connect with 300 000 properties ({len(payload) >> 20} MiB): closed {closed}; "
        + probe.describe()
        + f" (calm before: {calm * 1000:.0f} ms)"
    )
    out.check(
        "/healthz always answered, never slower than 250 ms",
        probe.worst < 0.25 and not probe.failures,
    )


# -- item 12: five wrong PINs ----------------------------------------------------------------------
async def _enter_pin(http: aiohttp.ClientSession, page_url: str, pin: str) -> int:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
    async with http.post(
        page_url, data={"pin": pin}, headers={"Origin": origin}, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp.status


@attack("five-wrong-pins", "12")
async def wrong_pins(ctx: Context, out: Outcome) -> None:
    gw = ctx.gw
    session = await asyncio.to_thread(gw.create_session)
    customer = session["customer"]
    wrong = "000000" if customer["pin"] != "000000" else "111111"
    told: list[str] = []
    async with aiohttp.ClientSession() as advisor_http:
        ws = await advisor_http.ws_connect(
            session["advisor"]["events_url"],
            headers={"Authorization": f"Bearer {session['advisor']['token']}"},
        )

        async def listen() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and re.search(
                    r"pin|lock", msg.data, re.IGNORECASE
                ):
                    told.append(msg.data)

        listener = asyncio.create_task(listen())
        async with aiohttp.ClientSession() as attacker:
            codes = [await _enter_pin(attacker, customer["page_url"], wrong) for _ in range(5)]
        await asyncio.sleep(2.0)
        out.note(f"5 wrong PINs: {codes}; advisor events about it: {len(told)}")
        out.check("the advisor is told at once (an event about the PIN)", bool(told))
        # recoverable: the right PIN after a back-off, or a new PIN from the advisor
        async with aiohttp.ClientSession() as customer_http:
            status = await _enter_pin(customer_http, customer["page_url"], customer["pin"])
            how = "the right PIN at once"
            if status != 303:
                code, fresh = await gw.api("POST", f"/api/sessions/{session['id']}/access")
                how = f"a new PIN and link from the advisor (POST …/access: {code})"
                if code == 200 and isinstance(fresh, dict) and "pin" in fresh:
                    status = await _enter_pin(
                        customer_http, fresh.get("page_url", customer["page_url"]), fresh["pin"]
                    )
            out.check(f"the customer gets in again ({how}: {status})", status == 303)
        listener.cancel()
        await ws.close()
    await gw.api("DELETE", f"/api/sessions/{session['id']}")


# -- the run ---------------------------------------------------------------------------------------
async def run(names: list[str]) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker's own sockets
    work = Path(tempfile.mkdtemp(prefix="vb-attack-"))
    gw = bench_gateway(work / "gw").start()
    bystander: Bystander | None = None
    results: list[tuple[str, str, Outcome, float]] = []
    try:
        session = await asyncio.to_thread(gw.create_session)
        bystander = Bystander(session)
        await bystander.wait_flowing()
        await asyncio.sleep(SETTLE)  # past the start-up burst from the keyframe cache
        t0 = time.monotonic()
        await asyncio.sleep(MIN_WINDOW)
        baseline = bystander.rate(t0, time.monotonic())
        print(f"bystander baseline: {baseline:.2f} fps (publishing {FPS} fps)\n", flush=True)
        gw.new_log()
        ctx = Context(gw, work, bystander, session)
        for name in names:
            item, fn = ATTACKS[name]
            out = Outcome()
            if not await service_works(gw):  # say so: this attack's result is not its own
                out.note("the gateway was NOT serving newcomers before this attack")
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(fn(ctx, out), 180)
            except Exception as exc:  # an attack that breaks the harness is a FAIL, not a crash
                out.check(f"attack ran to the end ({type(exc).__name__}: {exc})", False)
            t1 = max(time.monotonic(), t0 + MIN_WINDOW)
            await asyncio.sleep(max(0.0, t1 - time.monotonic()) + 0.3)
            rate = bystander.rate(t0, t1)
            share = rate / baseline if baseline else 0.0
            out.check(
                f"bystander {rate:.2f} fps = {share:.0%} of baseline (>= {BYSTANDER_SHARE:.0%})",
                share >= BYSTANDER_SHARE and not bystander.closed,
            )
            allowed = [re.compile(p) for p in out.allowed_log]
            logged = serious_records(gw.new_log(), allowed)
            out.check(
                "no traceback / internal error / ERROR in the gateway's log"
                + (f" ({len(logged)}: {logged[0].text.splitlines()[0][:120]})" if logged else ""),
                not logged,
            )
            verdict = "NOT RUN" if out.not_run else ("PASS" if out.ok else "FAIL")
            results.append((name, item, out, share))
            print(f"[{verdict}] {name} (issue 11 item {item})", flush=True)
            for note in out.notes:
                print(f"    {note}")
            if out.not_run:
                print(f"    not run: {out.not_run}")
            for what, ok in out.checks:
                print(f"    {'ok ' if ok else 'BAD'} {what}")
            print(flush=True)
            await bystander.steady(baseline)
    finally:
        if bystander is not None:
            bystander.stop()
        code = gw.stop()
        print(f"gateway exit status {code}")
    print("summary:")
    for name, item, out, share in results:
        verdict = "NOT RUN" if out.not_run else ("PASS" if out.ok else "FAIL")
        print(f"  {verdict:8} {name:32} item {item:3} bystander {share:.0%}")
    passed = all(out.ok for _, _, out, _ in results)
    return 0 if passed and results else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=list(ATTACKS), help="run this one")
    parser.add_argument("--list", action="store_true", help="name the attacks")
    parser.add_argument("--bystander-play", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bystander_play:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_play_and_count(args.bystander_play))
        return 0
    if args.list:
        for name, (item, _) in ATTACKS.items():
            print(f"{name:32} issue 11 item {item}")
        return 0
    return asyncio.run(run(args.only or list(ATTACKS)))


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite: ``make bench`` (or ``.venv/bin/python -m bench.run``).

Every scenario measures the gateway and its yardstick, nginx-rtmp (Debian nginx +
libnginx-mod-rtmp), in the same run, one after the other on the same input, and prints
the gateway's figure as a ratio to the yardstick's. Figures from another day or
another machine are not comparable; ratios from one run are.

Scenarios (``--only NAME``, repeatable):

* ``relay720p`` -- a 4 Mbit/s 720p30 H.264/AAC FLV published in real time by
  ``ffmpeg -re`` to one ``ffmpeg`` player: server CPU seconds during the publish.
* ``pairs50``   -- 50 publishers + 50 players at 1 Mbit/s from one load-generator
  process (bench/loadgen.py): CPU, memory per connection, drops, generator lag.
* ``chunk``     -- bench/chunk_micro.py, the chunk parser alone (no yardstick).
* ``profile``   -- not run by default: relay720p against the gateway once more with
  py-spy attached, summarised as the functions the CPU goes to.

Results: a table on stdout and JSON in bench/out/ (git-ignored). Nothing else is
written; docs/benchmarks.md is updated by hand from a run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.media import PAIR_360P, RELAY_720P, FlvCounter, flv_totals, make_flv
from bench.nginx_rtmp import NginxRtmp, free_port
from bench.procstat import cpu_delta, cpu_sample, rss_bytes
from bench.testkit.gwproc import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent

OUT_DIR = ROOT / "bench" / "out"
GW_ASYNCIO = "gateway/asyncio-loop"
SCENARIOS = (
    "relay720p",
    "relay720p-flash",
    "relay720p-chunkwise",
    "pairs50",
    "session",
    "chunk",
    # issue 14's figures: time to first frame for a joining receiver (bench/join.py),
    # and issue 3's bridge and capacities (bench/bridge.py; these take minutes and load
    # both cores)
    "join",
    "bridge",
    "bridge-capacity",
    "bridge-capacity-passthrough",
    # issue 14: added latency including the receive buffering (bench/latency.py)
    "latency",
    # issue 16: cluster mode with redis-server and PostgreSQL (bench/cluster.py)
    "cluster",
    # issue 15: telephone legs from SIPp (bench/phone.py)
    "phone",
)
# Not in the default set: the py-spy profiles.
OPTIONAL = ("profile", "profile-bridge")
PY = sys.executable
MAX_LAG_P99_MS = 20.0  # the pacing tick is 5 ms; p99 lag beyond this is a stalled generator
# a gateway starting while neighbours' test suites load the machine can need more than
# the tests' 20 s (imports of aiortc, PyAV, aiohttp)
START_TIMEOUT = 120.0
IDLE_PROBE_SECONDS = 3.0  # a server with nobody connected, before each relay720p run


@dataclass
class Durations:
    relay: float  # relay720p (the issue asks for at least 30 s)
    flash: float  # relay720p-flash and relay720p-chunkwise
    pairs: float
    pairs_count: int
    profile: float
    repeat: int  # rounds: every row once per round, ratios are medians over rounds
    # relay720p rows to run besides nginx-rtmp (None: all); --rows
    rows: tuple[str, ...] | None = None


FULL = Durations(relay=32.0, flash=20.0, pairs=20.0, pairs_count=50, profile=30.0, repeat=3)
QUICK = Durations(relay=8.0, flash=8.0, pairs=8.0, pairs_count=50, profile=8.0, repeat=1)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- servers -----------------------------------------------------------------------------
@dataclass
class Server:
    """A server under test: its pid and how to get a (publish URL, play URL) pair."""

    name: str
    pid: int
    new_pair: Callable[[int], tuple[str, str]]


@contextlib.contextmanager
def nginx_server() -> Iterator[Server]:
    with NginxRtmp() as ng:
        yield Server("nginx-rtmp", ng.pid, lambda i: (ng.url(f"s{i}"), ng.url(f"s{i}")))


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def gateway_has_option(flag: str) -> bool:
    """Whether ``python -m gateway serve`` knows ``flag`` (variants of older trees skip)."""
    proc = subprocess.run(
        [PY, "-m", "gateway", "serve", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    return flag in proc.stdout


def gateway_variants() -> list[str]:
    """The gateway rows this tree supports: default, then the knobs' off positions."""
    names = ["gateway"]
    if gateway_has_option("--event-loop"):
        names.append(GW_ASYNCIO)
    return names


@contextlib.contextmanager
def gateway_server(name: str = "gateway", extra: tuple[str, ...] = ()) -> Iterator[Server]:
    data = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    gw = GatewayProcess(data, extra=list(extra))
    try:
        gw.start(timeout=START_TIMEOUT)
        assert gw.proc is not None

        def new_pair(i: int) -> tuple[str, str]:
            # Each pair is its own consultation: the customer publishes "customer", the
            # advisor plays it; both URLs carry their participant's token.
            doc = gw.create_session()
            return doc["customer"]["rtmp"]["publish_url"], doc["advisor"]["rtmp"]["play_url"]

        yield Server(name, gw.proc.pid, new_pair)
    finally:
        if gw.proc is not None:
            with contextlib.suppress(AssertionError):  # testkit's log check: logged below
                gw.stop()
            problems = [
                line for line in gw.log().splitlines() if " ERROR " in line or "Traceback" in line
            ]
            if problems:
                log("gateway log has errors:\n  " + "\n  ".join(problems[:20]))
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def forward_floor(uvloop: bool = False) -> Iterator[Server]:
    """nginx-rtmp behind bench/tcp_forward.py on the publisher's leg; the pid is the forwarder's.

    The player connects to nginx directly, so the forwarder carries exactly one copy of
    the stream in and one out: the same bytes, reads and wake-ups as the gateway.
    """
    with NginxRtmp() as ng:
        port = free_port()
        cmd = [PY, "-m", "bench.tcp_forward", str(port), str(ng.port)]
        proc = subprocess.Popen(
            [*cmd, "--uvloop"] if uvloop else cmd, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("tcp_forward did not start")
            name = "asyncio-forward+uvloop" if uvloop else "asyncio-forward"
            yield Server(
                name,
                proc.pid,
                lambda i: (f"rtmp://127.0.0.1:{port}/consult/s{i}", ng.url(f"s{i}")),
            )
        finally:
            proc.terminate()
            proc.wait(10)


SERVERS: dict[str, Callable[[], contextlib.AbstractContextManager[Server]]] = {
    "nginx-rtmp": nginx_server,
    "gateway": gateway_server,
    # The gateway runs on uvloop by default; this row is the same code on asyncio's own
    # selector loop, to show what the loop is worth.
    GW_ASYNCIO: lambda: gateway_server(GW_ASYNCIO, ("--event-loop", "asyncio")),
    "asyncio-forward": forward_floor,
    "asyncio-forward+uvloop": lambda: forward_floor(uvloop=True),
}


# -- rounds ------------------------------------------------------------------------------
def run_rows(
    label: str,
    names: list[str],
    once: Callable[[Server], dict[str, Any]],
    cpu_key: str,
    repeat: int,
    extra_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run every row once per round, nginx-rtmp first; summarise by medians.

    Other processes on a shared machine make single runs scatter by tens of per cent
    (wake-ups are what both servers pay for, and a busy neighbour makes them dearer).
    Rounds keep each gateway run next to an nginx run in time; the ratio reported is
    the median of the per-round ratios, each row's figures those of its median round.
    """
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names:
            log(f"{label}: {name}" + (f" (round {r + 1}/{repeat})" if repeat > 1 else ""))
            with SERVERS[name]() as server:
                rounds[name].append(once(server))
    result: dict[str, Any] = {}
    for name in names:
        runs = rounds[name]
        median_run = sorted(runs, key=lambda x: float(x[cpu_key]))[len(runs) // 2]
        result[name] = {**median_run, "rounds_cpu_seconds": [x[cpu_key] for x in runs]}
    ratios, spans, singles = round_ratios(rounds, names, cpu_key)
    result["ratios"] = ratios
    result["ratio_spans"] = spans
    result["ratio_rounds"] = singles
    for key in extra_keys:
        ratios, spans, singles = round_ratios(rounds, names, key)
        result[f"ratios_{key}"] = ratios
        result[f"ratio_spans_{key}"] = spans
        result[f"ratio_rounds_{key}"] = singles
    result["rounds"] = repeat
    return result


def round_ratios(
    rounds: dict[str, list[dict[str, Any]]], names: list[str], key: str
) -> tuple[dict[str, float | None], dict[str, tuple[float, float] | None], dict[str, list[float]]]:
    """Per row: the median of the per-round ratios to the yardstick (``names[0]``), their
    range, and the single-round ratios themselves."""
    base = rounds[names[0]]
    ratios: dict[str, float | None] = {}
    spans: dict[str, tuple[float, float] | None] = {}
    singles: dict[str, list[float]] = {}
    for name in names[1:]:
        pairs = [(g, n) for g, n in zip(rounds[name], base, strict=True) if n[key] > 0]
        # Rounds whose load generator fell behind are left out while valid ones exist.
        valid = [(g, n) for g, n in pairs if g.get("valid", True) and n.get("valid", True)]
        per = [g[key] / n[key] for g, n in (valid or pairs)]
        ratios[name] = statistics.median(per) if per else None
        spans[name] = (min(per), max(per)) if per else None
        singles[name] = [round(x, 3) for x in per]
    return ratios, spans, singles


# -- relay720p ---------------------------------------------------------------------------
class Player:
    """``ffmpeg -i PLAY_URL -c copy -f flv -`` with its output counted tag by tag.

    ``-max_interleave_delta 0`` makes the muxer write each packet at once: by default it
    holds packets back to interleave audio and video, and the last ones would be lost
    when the player is stopped (it is stopped: neither server's UnpublishNotify makes
    ffmpeg exit).
    """

    def __init__(self, url: str) -> None:
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-i", url, "-c", "copy", "-max_interleave_delta", "0", "-f", "flv", "-",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.counter = FlvCounter()
        self.last_data = time.monotonic()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.counter.feed(chunk)
            self.last_data = time.monotonic()

    def finish(self, quiet: float = 1.5, timeout: float = 15.0) -> str:
        """Wait until no data came for ``quiet`` s, then stop ffmpeg; return its stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if time.monotonic() - self.last_data > quiet:
                break
            time.sleep(0.1)
        if self.proc.poll() is None:
            # SIGINT lets ffmpeg close its output cleanly; a player blocked in a network
            # read may ignore it, hence the kill after a grace period.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        return err


def relay_once(server: Server, flv: Path, seconds: float) -> dict[str, Any]:
    publish_url, play_url = server.new_pair(0)
    # Two windows (issue 14): the publish alone (``cpu_seconds``: set-up and tear-down
    # outside), and the whole client life as measured from outside, from the player's
    # connect to its exit (``whole_cpu_seconds``). The difference is what a server
    # spends while a player waits for the stream and after the stream ends: for the
    # gateway its periodic timers (1 s RTMP tick, 1 s monitor) and the connection's
    # own set-up and tear-down; ``idle_cpu_per_second`` measures the first alone.
    i0 = cpu_sample(server.pid, time.monotonic())
    time.sleep(IDLE_PROBE_SECONDS)
    i1 = cpu_sample(server.pid, time.monotonic())
    c0 = cpu_sample(server.pid, time.monotonic())
    player = Player(play_url)
    # The player connects first and waits for the stream: then it is owed every frame
    # (nginx-rtmp has no GOP cache; a late player would start at a different frame).
    time.sleep(2.0)
    if player.proc.poll() is not None:
        raise RuntimeError(f"player exited early: {player.finish()}")
    rss0 = rss_bytes(server.pid)
    s0 = cpu_sample(server.pid, time.monotonic())
    pub = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(flv),
         "-c", "copy", "-f", "flv", publish_url],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    s1 = cpu_sample(server.pid, time.monotonic())
    rss1 = rss_bytes(server.pid)
    player_err = player.finish()
    c1 = cpu_sample(server.pid, time.monotonic())
    got = player.counter.totals
    window = s1.wall - s0.wall
    cpu = cpu_delta(s0, s1)
    idle = cpu_delta(i0, i1) / max(i1.wall - i0.wall, 1e-9)
    return {
        "server": server.name,
        "window_seconds": window,
        "cpu_seconds": cpu,
        "whole_window_seconds": c1.wall - c0.wall,
        "whole_cpu_seconds": cpu_delta(c0, c1),
        "before_publish_cpu_seconds": cpu_delta(c0, s0),
        "after_publish_cpu_seconds": cpu_delta(s1, c1),
        "idle_cpu_per_second": idle,
        "cpu_ticks_seconds": s1.total - s0.total,
        "cpu_user_seconds": s1.user - s0.user,
        "cpu_system_seconds": s1.system - s0.system,
        "cpu_percent_of_core": 100 * cpu / window if window else 0.0,
        "rss_bytes": rss1,
        "rss_growth_bytes": rss1 - rss0,
        "publisher_rc": pub.returncode,
        "publisher_stderr": pub.stderr[-500:],
        "player_stderr": player_err[-500:],
        "delivered_video_frames": got.video_frames,
        "delivered_audio_frames": got.audio_frames,
        "delivered_video_bytes": got.video_frame_bytes,
        "delivered_audio_bytes": got.audio_frame_bytes,
        "delivered_stream_bytes": got.stream_bytes,
    }


def scenario_relay720p(d: Durations) -> dict[str, Any]:
    flv = make_flv(RELAY_720P, d.relay)
    src = flv_totals(flv)
    result: dict[str, Any] = {
        "input": {
            "file": flv.name,
            "seconds": d.relay,
            "mbit_per_s": src.stream_bytes * 8 / d.relay / 1e6,
            "video_frames": src.video_frames,
            "audio_frames": src.audio_frames,
            "video_bytes": src.video_frame_bytes,
            "audio_bytes": src.audio_frame_bytes,
        }
    }
    # The floor rows say what a CPython asyncio server pays for this stream before any
    # RTMP work, on asyncio's selector loop and on uvloop.
    names = ["nginx-rtmp", *gateway_variants(), "asyncio-forward"]
    if uvloop_available():
        names.append("asyncio-forward+uvloop")
    if d.rows is not None:
        names = ["nginx-rtmp", *[n for n in names[1:] if n in d.rows]]

    def once(server: Server) -> dict[str, Any]:
        side = relay_once(server, flv, d.relay)
        side["video_frames_missing"] = src.video_frames - side["delivered_video_frames"]
        side["audio_frames_missing"] = src.audio_frames - side["delivered_audio_frames"]
        return side

    result.update(
        run_rows("relay720p", names, once, "cpu_seconds", d.repeat, ("whole_cpu_seconds",))
    )
    result["ratio"] = result["ratios"]["gateway"]
    result["ratio_whole"] = result["ratios_whole_cpu_seconds"]["gateway"]
    return result


# -- pairs50 -----------------------------------------------------------------------------
def pairs_once(
    server: Server, flv: Path, count: int, seconds: float, chunkwise: bool = False
) -> dict[str, Any]:
    pairs = [server.new_pair(i) for i in range(count)]
    plan = {
        "server_pid": server.pid,
        "seconds": seconds,
        "chunkwise": chunkwise,
        "flv": str(flv),
        "pairs": [{"publish": p, "play": q} for p, q in pairs],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(plan, fh)
        plan_path = fh.name
    try:
        proc = subprocess.run(
            [PY, "-m", "bench.loadgen", plan_path],
            capture_output=True, text=True, cwd=ROOT, timeout=seconds + 120,
        )  # fmt: skip
    finally:
        os.unlink(plan_path)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["server"] = server.name
    # A generator that fell behind sent a lighter, burstier load than the other row got:
    # the ratio is then not comparable. Other processes on the machine cause this.
    late = result["send_lag_ms_p99"] > MAX_LAG_P99_MS
    result["valid"] = not late and result["setup_failed"] == 0
    if not result["valid"]:
        log(
            f"{server.name}: load generator {'fell behind' if late else 'failed set-up'} "
            f"(lag p99 {result['send_lag_ms_p99']:.1f} ms, {result['setup_failed']} failed): "
            "run again on a quiet machine"
        )
    return result


def scenario_pairs50(d: Durations) -> dict[str, Any]:
    # A clip of 10 s is looped by the load generator; keyframes every 2 s.
    flv = make_flv(PAIR_360P, 10.0)
    src = flv_totals(flv)
    result: dict[str, Any] = {
        "input": {
            "file": flv.name,
            "mbit_per_s": src.stream_bytes * 8 / 10.0 / 1e6,
            "pairs": d.pairs_count,
            "seconds": d.pairs,
        }
    }
    names = ["nginx-rtmp", *gateway_variants()]
    result.update(
        run_rows(
            "pairs50",
            names,
            lambda server: pairs_once(server, flv, d.pairs_count, d.pairs),
            "server_cpu_seconds",
            d.repeat,
        )
    )
    g, n = result["gateway"], result["nginx-rtmp"]
    result["ratio"] = result["ratios"]["gateway"]
    nr, gr = n["rss_per_connection_bytes"], g["rss_per_connection_bytes"]
    result["rss_ratio"] = gr / nr if nr > 0 else None
    return result


def scenario_relay720p_flash(d: Durations, chunkwise: bool = False) -> dict[str, Any]:
    """relay720p with the publisher Flash Player is: 128-byte chunks.

    ffmpeg as a publisher echoes the server's Set Chunk Size (rtmpproto.c,
    handle_chunk_size), so against both servers (4096) relay720p ingests 4096-byte
    chunks. Flash Player keeps 128: 32 times the chunks for the same bytes, which is
    where a Python chunk parser pays. One load-generator pair sends the same file,
    each message with one write, or (``chunkwise``) each chunk with its own.
    """
    label = "relay720p-chunkwise" if chunkwise else "relay720p-flash"
    flv = make_flv(RELAY_720P, d.flash)
    src = flv_totals(flv)
    result: dict[str, Any] = {
        "input": {
            "file": flv.name,
            "seconds": d.flash,
            "mbit_per_s": src.stream_bytes * 8 / d.flash / 1e6,
            "chunk_size": 128,
            "chunkwise": chunkwise,
        }
    }
    names = ["nginx-rtmp", *gateway_variants()]
    result.update(
        run_rows(
            label,
            names,
            lambda server: pairs_once(server, flv, 1, d.flash, chunkwise),
            "server_cpu_seconds",
            d.repeat,
        )
    )
    result["ratio"] = result["ratios"]["gateway"]
    return result


# -- session ---------------------------------------------------------------------------
def scenario_session(d: Durations) -> dict[str, Any]:
    seconds = min(d.relay, 8.0)
    log(f"session: bench/session_micro.py, {seconds:g} s of relay720p in memory")
    proc = subprocess.run(
        [PY, "-m", "bench.session_micro", "--seconds", f"{seconds:g}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"session_micro failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- chunk -------------------------------------------------------------------------------
def scenario_chunk(d: Durations) -> dict[str, Any]:
    log("chunk: bench/chunk_micro.py")
    proc = subprocess.run(
        [PY, "-m", "bench.chunk_micro"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"chunk_micro failed: {proc.stderr[-2000:]}")
    variants: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        # "<name> <MB> MB <ms> ms <us> us/chunk <MBps> MB/s (...)"
        if len(words) > 7 and words[2] == "MB" and words[6] == "us/chunk":
            variants[words[0]] = {"us_per_chunk": float(words[5]), "mb_per_s": float(words[7])}
    return {"output": proc.stdout, "variants": variants}


# -- profile -----------------------------------------------------------------------------
def summarise_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [f.strip() for f in stack.split(";")]
        # The first frame names the thread/process; drop it, keep function (file:line).
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        total += count
        own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            incl[name] += count
    areas: Counter[str] = Counter()
    for name, c in own.items():
        areas[_area(name)] += c
    # Frames on every stack (runpy, asyncio.run, run_forever...) say nothing: leave out
    # what is in more than 97 % of the samples.
    inclusive = [(n, c) for n, c in incl.most_common() if c < 0.97 * total][:top]
    return {
        "samples": total,
        "areas": [(name, 100 * c / total) for name, c in areas.most_common()] if total else [],
        "self": [(name, 100 * c / total) for name, c in own.most_common(top)] if total else [],
        "inclusive": [(name, 100 * c / total) for name, c in inclusive] if total else [],
    }


def _area(name: str) -> str:
    """Which layer a function belongs to, for the per-area summary of the profile."""
    file = name.rpartition("(")[2].rstrip(")")
    if file.startswith(("rtmp/", "gateway/", "web/", "webrtc/")):
        return file.split("/", 1)[0] + "/ (project code)"
    if file == "selectors.py":
        # py-spy counts a thread as busy from the moment the kernel wakes it: the
        # wake-up and the epoll syscall land here.
        return "epoll wait + wake-up (selectors)"
    if name.startswith("0x") or file.endswith((".c", ".h")) or ".so" in file:
        # Native frames: uvloop/libuv (loop.c, core.c, linux.c, stream.c), libc syscall
        # stubs (epoll_pwait, read, write); the kernel's share is billed to them too.
        if "epoll" in name or "io_poll" in name:
            return "native: epoll wait + wake-up"
        if any(k in name for k in ("read", "recv")):
            return "native: recv (syscall + copy)"
        if any(k in name for k in ("write", "send", "try_write")):
            return "native: send (syscall + copy)"
        return "native: other (uvloop/libuv/libc/CPython)"
    if name.startswith("Runner.run "):
        # Without native frames a uvloop loop's C time lands on this Python frame.
        return "event loop in C (uvloop), not broken down"
    if file.startswith("asyncio/selector_events"):
        return "asyncio transports (incl. send/recv syscalls)"
    if file.startswith("asyncio/"):
        return "asyncio event loop"
    return "other"


def _short(frame: str) -> str:
    """``deliver (rtmp/session.py:71)`` -> ``deliver (rtmp/session.py)``: group lines."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for prefix in (str(ROOT) + "/", "/usr/lib/python3", sys.prefix):
        if file.startswith(prefix):
            file = file[len(prefix) :].lstrip("/")
    if "/asyncio/" in file:
        file = "asyncio/" + file.rsplit("/asyncio/", 1)[1]
    return f"{name} ({file})"


def scenario_profile(d: Durations) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("py-spy not installed: .venv/bin/pip install py-spy")
    flv = make_flv(RELAY_720P, d.profile)
    out = OUT_DIR / "profile-relay720p.txt"
    out.unlink(missing_ok=True)  # a failed py-spy must not leave the last run's stacks
    log(f"profile: relay720p on the gateway under py-spy, {d.profile:g} s")
    with gateway_server() as server:
        # --nonblocking: py-spy reads the interpreter's memory without stopping it, so
        # the profile costs the gateway (almost) nothing; without --idle only on-CPU
        # samples are kept. (--native would break down uvloop's C time but needs blocking
        # mode, in which py-spy counts the stopped thread in epoll_pwait as busy.)
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--rate", "1000", "--nonblocking",
             "--format", "raw", "--output", str(out), "--duration", str(int(d.profile + 10))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)
        relay = relay_once(server, flv, d.profile)
        spy_proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy_proc.wait(30)
        except subprocess.TimeoutExpired:
            spy_proc.kill()
            spy_proc.wait()
    if not out.exists():
        err = spy_proc.stderr.read().decode() if spy_proc.stderr else ""
        raise RuntimeError(f"py-spy wrote nothing: {err[-1000:]}")
    summary = summarise_collapsed(out)
    summary["collapsed_stacks"] = str(out.relative_to(ROOT))
    summary["relay"] = {k: relay[k] for k in ("cpu_seconds", "window_seconds")}
    return summary


def scenario_bridge(
    d: Durations, capacity: bool = False, passthrough: bool = False
) -> dict[str, Any]:
    """bench/bridge.py in its own process (it starts gateways and client workers itself)."""
    quick = d == QUICK
    cmd = [PY, "-m", "bench.bridge"]
    if capacity and passthrough:
        cmd += ["capacity", "--passthrough", "--seconds", "8" if quick else "15"]
        cmd += ["--steps", "2,4" if quick else "8,10,12,14,16,18,20,24"]
    elif capacity:
        cmd += ["capacity", "--seconds", "8" if quick else "15"]
        cmd += ["--steps", "1,2,4" if quick else "4,5,6,7,8,9,10"]
    else:
        cmd += ["bridge", "--seconds", "8" if quick else "20"]
    cmd += ["--rounds", str(d.repeat)]
    return json_of(cmd, 1800)


def json_of(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a bench module in its own process; it prints its JSON alone on stdout."""
    log(" ".join(cmd[1:]))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def scenario_join(d: Durations) -> dict[str, Any]:
    """bench/join.py in its own process: time to first frame for a joining receiver."""
    joins = "3" if d == QUICK else "5"
    return json_of([PY, "-m", "bench.join", "--rounds", str(d.repeat), "--joins", joins], 900)


RUNNERS: dict[str, Callable[[Durations], dict[str, Any]]] = {
    "join": scenario_join,
    "relay720p": scenario_relay720p,
    "relay720p-flash": scenario_relay720p_flash,
    "relay720p-chunkwise": lambda d: scenario_relay720p_flash(d, chunkwise=True),
    "pairs50": scenario_pairs50,
    "session": scenario_session,
    "chunk": scenario_chunk,
    "profile": scenario_profile,
    "bridge": scenario_bridge,
    "bridge-capacity": lambda d: scenario_bridge(d, capacity=True),
    "bridge-capacity-passthrough": lambda d: scenario_bridge(d, True, True),
    "latency": lambda d: scenario_latency(d),
    "cluster": lambda d: scenario_cluster(d),
    "phone": lambda d: scenario_phone(d),
}


def scenario_phone(d: Durations) -> dict[str, Any]:
    """bench/phone.py in its own process: SIPp legs with G.711 RTP against consultations
    with an RTMP advisor, 10 legs and the issue's 50 (its exit code says whether all
    held; the figures are kept either way)."""
    out: dict[str, Any] = {}
    for legs in (5,) if d == QUICK else (10, 50):
        cmd = [
            PY,
            "-m",
            "bench.phone",
            "--legs",
            str(legs),
            "--window",
            "8" if d == QUICK else "20",
        ]
        log(" ".join(cmd[1:]))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, timeout=1200)
        out[f"{legs}_legs"] = json.loads(proc.stdout)
    return out


def phone_lines(r: dict[str, Any]) -> list[str]:
    out = [
        "phone (SIPp G.711 legs, Speex advisor over RTMP; yardstick: ffmpeg CLI Speex -> A-law):"
    ]
    for p in r.values():
        if not isinstance(p, dict) or "legs" not in p:
            continue
        lat = next(iter(p.get("latency_to_phone", {}).values()), {})
        out.append(
            f"  {p['legs']} legs: joined {p['joined']}, still joined {p.get('still_joined')}; "
            f"gateway {100 * p['gateway_cpu_per_leg']:.2f} % of a core per leg against "
            f"ffmpeg {100 * p['ffmpeg_cpu_per_leg']:.2f} % ({p['ratio']}x); added latency "
            f"p50/p95 {lat.get('p50_ms')}/{lat.get('p95_ms')} ms"
        )
    return out


def scenario_cluster(d: Durations) -> dict[str, Any]:
    """bench/cluster.py in its own process: POST /api/sessions through a 3-node cluster
    against one gateway, Redis commands per consultation, failover, and the capacity of 2
    nodes against 1 (H.264 passthrough)."""
    cmd = [PY, "-m", "bench.cluster", "all", "--rounds", str(d.repeat)]
    if d == QUICK:
        cmd += ["--seconds", "8", "--steps", "2,4"]
    return json_of(cmd, 3600)


def scenario_latency(d: Durations) -> dict[str, Any]:
    """bench/latency.py (issue 14) in its own process: Chromium and a Flash-like client
    through the gateway, per receive mode (aiortc's buffer = the yardstick)."""
    seconds = "6" if d == QUICK else "15"
    cmd = [PY, "-m", "bench.latency", "--seconds", seconds, "--rounds", str(d.repeat)]
    return json_of(cmd, 1800)


# -- report ------------------------------------------------------------------------------
def _ratio_cell(r: dict[str, Any], name: str) -> str:
    """``  2.95× (2.61–3.30)``: median over rounds and the range, or the yardstick mark."""
    ratio = r.get("ratios", {}).get(name)
    if ratio is None:
        return "  (yardstick)"
    span = r.get("ratio_spans", {}).get(name)
    if span and r.get("rounds", 1) > 1:
        return f"  {_ratio(ratio)} ({span[0]:.2f}–{span[1]:.2f})"
    return f"  {_ratio(ratio)}"


def _ratio(x: float | None) -> str:
    return f"{x:.2f}×" if x is not None else "n/a"


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    if "relay720p" in results and "error" not in results["relay720p"]:
        r = results["relay720p"]
        i = r["input"]
        add(
            f"relay720p: {i['seconds']:g} s of {i['mbit_per_s']:.2f} Mbit/s 720p30 H.264/AAC, "
            "ffmpeg -re publisher -> 1 ffmpeg player"
        )
        add(f"  {'server':22s} {'CPU s':>8s} {'% core':>7s} {'video frames':>13s} "
            f"{'audio frames':>13s} {'frame bytes':>11s}  vs nginx")  # fmt: skip
        for name in [k for k in SERVERS if k in r]:
            s = r[name]
            add(
                f"  {name:22s} {s['cpu_seconds']:8.3f} {s['cpu_percent_of_core']:6.2f}% "
                f"{s['delivered_video_frames']:>6d}/{i['video_frames']:<6d} "
                f"{s['delivered_audio_frames']:>6d}/{i['audio_frames']:<6d} "
                f"{s['delivered_video_bytes'] + s['delivered_audio_bytes']:11d}"
                + _ratio_cell(r, name)
            )
        add(f"  ratio gateway/nginx-rtmp CPU: {_ratio(r['ratio'])} (goal <= 1.5×, bar <= 2.5×)")
        add(
            "  whole client life (player connect -> exit): CPU s, before/after the publish, "
            "idle CPU ms/s, vs nginx"
        )
        wr = {
            "ratios": r.get("ratios_whole_cpu_seconds", {}),
            "ratio_spans": r.get("ratio_spans_whole_cpu_seconds", {}),
            "rounds": r.get("rounds", 1),
        }
        for name in [k for k in SERVERS if k in r]:
            s = r[name]
            if "whole_cpu_seconds" not in s:
                continue
            add(
                f"  {name:22s} {s['whole_cpu_seconds']:8.3f} "
                f"{s['before_publish_cpu_seconds']:7.3f} {s['after_publish_cpu_seconds']:7.3f} "
                f"{1000 * s['idle_cpu_per_second']:7.2f}" + _ratio_cell(wr, name)
            )
        add(f"  ratio gateway/nginx-rtmp CPU, whole: {_ratio(r.get('ratio_whole'))}")
    for label in ("relay720p-flash", "relay720p-chunkwise"):
        if label not in results or "error" in results[label]:
            continue
        r = results[label]
        i = r["input"]
        how = "a write per chunk" if i.get("chunkwise") else "a write per message"
        add(
            f"{label}: the same file from a Flash-like publisher (128-byte chunks, {how}, "
            f"load generator) -> 1 player, {i['seconds']:g} s"
        )
        add(
            f"  {'server':22s} {'CPU s':>8s} {'% core':>7s} {'video msgs':>13s} {'missing':>8s}"
            "  vs nginx"
        )
        for name in [k for k in SERVERS if k in r]:
            s = r[name]
            add(
                f"  {name:22s} {s['server_cpu_seconds']:8.3f} "
                f"{s['server_cpu_percent_of_core']:6.2f}% "
                f"{s['video_received']:>6d}/{s['video_sent']:<6d} {s['video_missing_total']:8d}"
                + _ratio_cell(r, name)
                + ("" if s.get("valid", True) else "  INVALID: generator fell behind")
            )
        add(f"  ratio gateway/nginx-rtmp CPU: {_ratio(r['ratio'])}")
    if "pairs50" in results and "error" not in results["pairs50"]:
        r = results["pairs50"]
        i = r["input"]
        add(
            f"pairs50: {i['pairs']} publish+play pairs at {i['mbit_per_s']:.2f} Mbit/s, "
            f"{i['seconds']:g} s, one load-generator process"
        )
        add(
            f"  {'server':22s} {'CPU s':>7s} {'% core':>7s} {'ms/conn/s':>9s} {'RSS/conn':>9s} "
            f"{'(stream)':>9s} {'missing':>8s} {'lag p99':>8s} {'gen CPU':>8s}  vs nginx"
        )
        for name in [k for k in SERVERS if k in r]:
            s = r[name]
            add(
                f"  {name:22s} {s['server_cpu_seconds']:7.3f} "
                f"{s['server_cpu_percent_of_core']:6.1f}% "
                f"{s['server_cpu_ms_per_connection_second']:9.3f} "
                f"{s['rss_per_connection_bytes'] / 1024:7.1f}kB "
                f"{s['rss_streaming_per_connection_bytes'] / 1024:7.1f}kB "
                f"{s['video_missing_total']:8d} {s['send_lag_ms_p99']:6.1f}ms "
                f"{s['loadgen_cpu_percent_of_core']:7.1f}%"
                + _ratio_cell(r, name)
                + ("" if s.get("valid", True) else "  INVALID: generator fell behind")
            )
        add(f"  ratio gateway/nginx-rtmp CPU: {_ratio(r['ratio'])}, "
            f"RSS per connection: {_ratio(r['rss_ratio'])}")  # fmt: skip
    if "session" in results and "error" not in results["session"]:
        r = results["session"]
        add(
            f"session (bench/session_micro.py): {r['seconds_of_media']:g} s of relay720p through "
            f"two RtmpSessions in memory, {r['reads']} reads"
        )
        add(
            f"  hot (back to back): {1000 * r['hot_cpu_seconds']:7.1f} ms CPU "
            f"({r['hot_us_per_read']:.1f} us/read)"
        )
        add(
            f"  paced (a read every {1000 * r['interval_seconds']:g} ms): "
            f"{1000 * r['paced_cpu_seconds']:7.1f} ms CPU ({r['paced_us_per_read']:.1f} us/read; "
            f"sleeping alone: {1000 * r['sleep_only_cpu_seconds']:.1f} ms)"
        )
    if "chunk" in results and "error" not in results["chunk"]:
        add("chunk (bench/chunk_micro.py, no yardstick):")
        for line in results["chunk"]["output"].splitlines():
            add("  " + line)
    if "profile" in results and "error" not in results["profile"]:
        p = results["profile"]
        add(f"profile: gateway in relay720p, {p['samples']} py-spy samples (on-CPU only)")
        add("  by area (self time):")
        for name, pct in p["areas"]:
            add(f"    {pct:5.1f}%  {name}")
        add("  self time:")
        for name, pct in p["self"][:15]:
            add(f"    {pct:5.1f}%  {name}")
        add("  inclusive:")
        for name, pct in p["inclusive"][:15]:
            add(f"    {pct:5.1f}%  {name}")
    if "join" in results and "error" not in results["join"]:
        j = results["join"]
        add("join (bench/join.py): time to first frame for a receiver joining a running stream")
        for server, keys in (
            ("nginx-rtmp", ("first_video_ms", "first_keyframe_ms")),
            ("gateway", ("first_video_ms", "first_keyframe_ms")),
            ("gateway whep", ("first_rtp_ms", "first_frame_ms")),
        ):
            cells = [
                f"{key[:-3]} {j[server][key]['median_ms']:.1f} ms "
                f"(rounds {', '.join(f'{x:.1f}' for x in j[server][key]['round_medians_ms'])})"
                for key in keys
                if key in j.get(server, {})
            ]
            add(f"  {server:14s} " + "; ".join(cells))
        rk = j["ratio_first_keyframe_ms"]
        add(
            f"  gateway/nginx-rtmp, first key frame: {_ratio(rk['median'])} (rounds {rk['rounds']})"
        )
    if "bridge" in results and "error" not in results["bridge"]:
        b = results["bridge"]
        add(
            f"bridge (bench/bridge.py), {b['seconds']:g} s per direction, "
            f"{b.get('rounds', 1)} rounds:"
        )
        for direction in ("flash->webrtc", "webrtc->flash"):
            g, f = b[direction]["gateway"], b[direction]["ffmpeg"]
            client = g["clients"][0][direction]
            lat = client.get("lat_rtp") or client.get("lat") or {}
            median = b[direction].get("ratio_median", g["ratio"])
            behind = not b[direction].get("valid_rounds", 1)
            add(
                f"  {direction}: ×ffmpeg CLI {_ratio(median)} "
                f"(rounds {b[direction].get('ratio_rounds')}"
                f"{', NO VALID ROUND: the gateway fell behind' if behind else ''}"
                "); whole lives "
                f"{_ratio(b[direction].get('ratio_whole_median', g.get('ratio_whole')))} "
                f"(rounds {b[direction].get('ratio_whole_rounds')})"
            )
            add(
                f"    median round: gateway {g['gateway_cpu_percent_of_core']:.1f}% of a core "
                f"(main thread {g['main_thread_cpu_s']:.2f} s, worker threads "
                f"{g['other_threads_cpu_s']:.2f} s of {g['gateway_cpu_s']:.2f} s), "
                f"ffmpeg {f['cpu_percent_of_core']:.1f}%; whole lives "
                f"{g.get('whole_cpu_percent_of_core')}% / {f.get('whole_cpu_percent_of_core')}%; "
                f"inside PyAV codecs {100 * g.get('codec_share', 0):.0f}%; "
                f"{client['video_fps']:.1f} fps; end-to-end latency p50/p95 "
                f"{lat.get('p50')}/{lat.get('p95')} ms"
            )
            add(f"    gateway's own: {_own_latency(g)}")
        for direction in ("flash->webrtc h264 passthrough", "webrtc->flash h264 passthrough"):
            if direction not in b:
                continue
            g = b[direction]["gateway"]
            add(f"  {direction}: gateway {g['gateway_cpu_percent_of_core']:.1f}% of a core")
            add(f"    gateway's own: {_own_latency(g)}")
    for name in ("bridge-capacity", "bridge-capacity-passthrough"):
        if name not in results or "error" in results[name]:
            continue
        c = results[name]
        add(
            f"{name}: held {c['held']} consultations (median; rounds {c.get('held_rounds')}, "
            f"{c['seconds']:g} s steps)"
        )
        if "per_core_median" in c:
            add(
                f"  consultations per core of gateway CPU: {c['per_core_median']:.1f} "
                f"(rounds {c['per_core_rounds']}); ffmpeg CLI, audio transcodes alone: "
                f"{c['yardstick_per_core_median']:.1f}; ratio {c['ratio_median']:.2f} "
                f"(rounds {c['ratio_rounds']})"
            )
        elif "yardstick_held_median" in c:
            add(
                f"  ffmpeg CLI with the same clients would hold {c['yardstick_held_median']:.1f} "
                f"(rounds {c['yardstick_held_rounds']}); ratio {c['ratio_median']:.2f} "
                f"(rounds {c['ratio_rounds']})"
            )
        for step in c["steps"]:
            add(
                f"  {step['consultations']:3d}: {'ok  ' if step['ok'] else 'FAIL'} gateway "
                f"{step['gateway_cpu_percent_of_core']:6.1f}%, clients "
                f"{step['clients_cpu_percent_of_core']:5.1f}% of a core; "
                f"{_own_latency(step)}"
            )
    if "phone" in results and "error" not in results["phone"]:
        lines.extend(phone_lines(results["phone"]))
    if "cluster" in results and "error" not in results["cluster"]:
        lines.extend(cluster_lines(results["cluster"]))
    if "latency" in results and "error" not in results["latency"]:
        from bench.latency import report_lines

        lines.extend(report_lines(results["latency"]))
    for name, r in results.items():
        if isinstance(r, dict) and "error" in r:
            add(f"{name}: FAILED: {r['error']}")
    return "\n".join(lines)


def cluster_lines(c: dict[str, Any]) -> list[str]:
    """bench/cluster.py's figures, each beside its yardstick of the same run."""
    out = []
    if "placement" in c:
        p = c["placement"]
        post, single = p["cluster_post_ms"], p["single_node_post_ms"]
        out += [
            f"cluster: POST /api/sessions through 1 of 3 nodes p50/p95 {post['p50']:.1f}/"
            f"{post['p95']:.1f} ms; one gateway without cluster mode {single['p50']:.1f}/"
            f"{single['p95']:.1f} ms (yardstick; ratio p95 {p['cluster_vs_single_p95']})",
            f"  {p['cluster_concurrent_post_ms']['clients']} clients at once: cluster p50/p95 "
            f"{p['cluster_concurrent_post_ms']['p50']:.1f}/{p['cluster_concurrent_post_ms']['p95']:.1f}"
            f" ms, one gateway {p['single_node_concurrent_post_ms']['p50']:.1f}/"
            f"{p['single_node_concurrent_post_ms']['p95']:.1f} ms",
            f"  Redis commands per consultation lifetime {p['redis_commands_per_consultation']} "
            f"({p['redis_commands_by_purpose']}); heartbeat "
            f"{p['heartbeat_commands_per_node_second']} per node and second",
            f"  failover (heartbeat {p['heartbeat_s']} s): gone from the registry after "
            f"{p['failover_registry_s']} s, from placement after {p['failover_placement_s']} s",
        ]
    if "capacity" in c:
        k = c["capacity"]
        out.append(
            f"cluster capacity, H.264 passthrough, clients on the same 2 cores: held "
            f"1 node {k['held_1_node_median']} (yardstick; rounds {k['held_1_node_rounds']}), "
            f"2 nodes {k['held_2_node_median']} (rounds {k['held_2_node_rounds']}); ratio "
            f"{k['ratio_median']} (rounds {k['ratio_rounds']})"
        )
    return out


def _own_latency(step: dict[str, Any]) -> str:
    """The gateway's own added latency (p50/p95 ms per direction and path) and aiortc's
    jitter buffer beside it, from bench/bridge.py's in-process snapshot."""
    latency = step.get("gateway_latency") or {}
    parts = [
        f"{key} {v['p50_ms']:.2f}/{v['p95_ms']:.2f}"
        for key, v in sorted(latency.get("added", {}).items())
    ]
    parts += [
        f"jitter buffer {kind} {v['p50_ms']:.1f}/{v['p95_ms']:.1f}"
        for kind, v in sorted(latency.get("jitter_buffer", {}).items())
    ]
    return "p50/p95 ms: " + ", ".join(parts) if parts else "no latency samples"


def wakeup_cost_us(n: int = 200, interval: float = 0.01) -> float:
    """CPU time one sleep/wake-up costs this interpreter, in microseconds.

    Real-time media wakes a server for every frame, and on a VM each wake-up is billed
    tens of microseconds of CPU before any work is done (a C nanosleep loop: ~40 us on
    the machine these figures come from; bare metal: a few). That fixed cost is a large
    part of both servers' CPU in relay720p, so it is recorded with every run.
    """
    t0 = time.process_time()
    for _ in range(n):
        time.sleep(interval)
    return 1e6 * (time.process_time() - t0) / n


def git_commit() -> str:
    """The tree under test (``-dirty``: with uncommitted changes, e.g. others' work)."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for cmd in (["nginx", "-v"], ["ffmpeg", "-version"]):
        with contextlib.suppress(OSError):
            p = subprocess.run(cmd, capture_output=True, text=True)
            versions[cmd[0]] = (p.stdout + p.stderr).splitlines()[0]
    return {
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "python_wakeup_cpu_us": wakeup_cost_us(),
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short durations (smoke run)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS + OPTIONAL,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS + OPTIONAL)}",
    )
    parser.add_argument("--profile", action="store_true", help="also run the profile scenario")
    parser.add_argument("--relay-seconds", type=float, help="override relay720p duration")
    parser.add_argument("--pairs-seconds", type=float, help="override pairs50 duration")
    parser.add_argument(
        "--repeat", type=int, help="rounds per scenario (default 3, --quick 1); medians"
    )
    parser.add_argument(
        "--rows",
        help="relay720p: the rows to run besides nginx-rtmp, comma-separated "
        "(e.g. gateway,asyncio-forward+uvloop)",
    )
    args = parser.parse_args(argv)
    d = QUICK if args.quick else FULL
    if args.rows:
        d = dataclasses.replace(d, rows=tuple(x.strip() for x in args.rows.split(",")))
    if args.relay_seconds:
        d = dataclasses.replace(
            d, relay=args.relay_seconds, flash=args.relay_seconds, profile=args.relay_seconds
        )
    if args.pairs_seconds:
        d = dataclasses.replace(d, pairs=args.pairs_seconds)
    if args.repeat:
        d = dataclasses.replace(d, repeat=max(1, args.repeat))
    names = list(args.only or SCENARIOS)
    if args.profile and "profile" not in names:
        names.append("profile")
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    # SIGTERM (make interrupted, CI timeout) must still run the context managers that
    # stop nginx and the gateway: turn it into an exception.
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # Taken first: the commit under test, and the wake-up calibration on a quiet machine.
    host = machine()
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.monotonic()
        try:
            results[name] = RUNNERS[name](d)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except Exception as exc:  # one failing scenario must not hide the others
            log(f"{name} failed: {exc!r}")
            results[name] = {"error": repr(exc)}
        results[name]["elapsed_seconds"] = time.monotonic() - t0
    document = {
        "started": started,
        "quick": args.quick,
        "durations": vars(d),
        "machine": host,
        "commit_at_end": git_commit(),
        "results": results,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = OUT_DIR / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    text = json.dumps(document, indent=2, default=str)
    path.write_text(text)
    (OUT_DIR / "latest.json").write_text(text)
    print(report(results))
    print(f"\nJSON: {path.relative_to(ROOT)}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

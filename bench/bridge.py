"""Bridge benchmarks (issue 3): the gateway transcoding between a Flash customer and a
WebRTC advisor, against the ffmpeg command line doing the same transcodes.

Run through bench/run.py (``--only bridge``, ``--only bridge-capacity``) or alone:

    .venv/bin/python -m bench.bridge bridge [--seconds 20]
    .venv/bin/python -m bench.bridge capacity [--seconds 15] [--steps 1,2,4,6,8]

Directions (one consultation each, the gateway in its own process, tests/gwproc.py):

* ``flash->webrtc``: a Python RTMP publisher (rtmp.client, 128-byte chunks like Flash)
  sends a Spark 640x480@15 + Speex 16 kHz FLV in real time as the customer; an aiortc
  WHEP client (VP8 + Opus) receives as the advisor.
* ``webrtc->flash``: an aiortc WHIP client sends VP8 640x480@30 + Opus as the advisor;
  it sends the packets of a WebM file made beforehand (aiortc's ``pack()`` path, no
  encoding in the client); a Python RTMP player (H.264 + AAC) receives as the customer.

Every video frame carries its number in 12 black/white 40x40 blocks at the top, so the
receiving side can tell which source frame it got (latency needs no clock mapping).
The yardsticks are ``ffmpeg -re -i <the same file> <the gateway's encoder settings>
-f null -`` (bench/transcode_micro.py's settings, which mirror gateway/transcode/).

Clients run in worker subprocesses (``worker`` mode, one per consultation) so they can
use the other core; only the gateway's process tree is measured, but the workers' CPU
is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.procstat import cpu_delta, cpu_sample
from bench.transcode_micro import TO_H264_AAC, TO_VP8_OPUS

ROOT = Path(__file__).resolve().parent.parent

OUT_DIR = ROOT / "bench" / "out"
FFMPEG = "/usr/bin/ffmpeg"
W, H = 640, 480
BITS, BLOCK, PITCH = 12, 40, 48
FPS = {"flash->webrtc": 15, "webrtc->flash": 30}  # the source frame rates
MEDIA_SECONDS = 40  # long enough for a 20 s window plus set-up; replayed in a loop if not


# -- media with frame numbers --------------------------------------------------------------
def _frame(n: int) -> bytes:
    """One yuv420p 640x480 frame: grey, a moving bright bar, frame number in blocks."""
    x = (n * 8) % (W - 40)
    row = bytes([90] * x + [220] * 40 + [90] * (W - x - 40))
    marker = bytearray([16] * W)
    for bit in range(BITS):
        if n >> bit & 1:
            start = 8 + bit * PITCH
            marker[start : start + BLOCK] = bytes([235] * BLOCK)
    luma = bytes(marker) * (BLOCK + 8) + row * (H - BLOCK - 8)
    return luma + bytes([128]) * (W * H // 2)


def read_marker(luma: bytes, stride: int) -> int:
    n = 0
    for bit in range(BITS):
        cx = 8 + bit * PITCH + BLOCK // 2
        vals = [luma[y * stride + cx + dx] for y in (16, 20, 24) for dx in (-4, 0, 4)]
        if sum(vals) / len(vals) > 128:
            n |= 1 << bit
    return n


def make_media(path: Path, fps: int, out_args: list[str]) -> Path:
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tmp-" + path.name)
    rate = 16000 if path.suffix == ".flv" else 48000
    cmd = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}", "-r", str(fps), "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}",
        "-t", str(MEDIA_SECONDS), "-vf", "noise=alls=12:allf=t", *out_args, str(tmp),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for n in range(MEDIA_SECONDS * fps):
        proc.stdin.write(_frame(n))
    proc.stdin.close()
    if proc.wait(300) != 0:
        raise RuntimeError(f"ffmpeg failed making {path}")
    tmp.rename(path)
    return path


FLASH_FLV = OUT_DIR / "bridge-spark640x480p15-speex.flv"
BROWSER_WEBM = OUT_DIR / "bridge-vp8-640x480p30-opus.webm"
# Passthrough: H.264 constrained baseline without B-frames both ways (what Flash 11's
# camera sends and what browsers send when H.264 is negotiated); audio is still
# transcoded (Flash's microphone has no Opus, Flash plays no Opus).
FLASH_H264_FLV = OUT_DIR / "bridge-h264b640x480p15-speex.flv"
BROWSER_H264_TS = OUT_DIR / "bridge-h264b640x480p30-opus.ts"


def ensure_passthrough_media() -> tuple[Path, Path]:
    flv = make_media(
        FLASH_H264_FLV, 15,
        ["-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "15",
         "-preset", "veryfast", "-b:v", "500k",
         "-c:a", "libspeex", "-ar", "16000", "-ac", "1", "-f", "flv"],
    )  # fmt: skip
    ts = make_media(
        BROWSER_H264_TS, 30,
        ["-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "90",
         "-preset", "veryfast", "-b:v", "1M",
         "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-f", "mpegts"],
    )  # fmt: skip
    return flv, ts


def ensure_media() -> tuple[Path, Path]:
    flv = make_media(
        FLASH_FLV, 15,
        ["-c:v", "flv1", "-g", "15", "-b:v", "500k",
         "-c:a", "libspeex", "-ar", "16000", "-ac", "1", "-f", "flv"],
    )  # fmt: skip
    webm = make_media(
        BROWSER_WEBM, 30,
        ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
         "-g", "90", "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-f", "webm"],
    )  # fmt: skip
    return flv, webm


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def is_picture(tag: Any) -> bool:
    """A video tag with a picture (not an AVC sequence header or end of sequence)."""
    body = tag.body
    return bool(tag.type_id == 9 and body and (body[0] & 0x0F != 7 or body[1:2] == b"\x01"))


# -- worker: the clients of one consultation ----------------------------------------------
async def worker(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    import av
    from aiortc import MediaStreamTrack
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    from bench.testkit import webrtc_client as wc
    from bench.testkit.media import read_flv_tags
    from rtmp.client import RtmpClient
    from webrtc import seams

    session = json.loads(args.session)
    rtmp_port = int(args.rtmp_port)
    decode = args.decode
    res: dict[str, Any] = {}
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()

    # RTP arrival per raw timestamp at the WHEP receiver (before its jitter buffer)
    arrivals: dict[int, float] = {}
    first_raw: list[int] = []
    original = RTCRtpReceiver._handle_rtp_packet

    async def handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        if self is video_receiver[0] if video_receiver else False:
            arrivals[packet.timestamp] = time.monotonic()
            if not first_raw:
                first_raw.append(packet.timestamp)
        await original(self, packet, arrival_time_ms)

    video_receiver: list[Any] = []
    RTCRtpReceiver._handle_rtp_packet = handle  # type: ignore[method-assign]

    async def poster(http: aiohttp.ClientSession, url: str, token: str) -> Any:
        async def post(sdp: str) -> tuple[int, dict[str, str], str]:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
            async with http.post(url, data=sdp, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.text()

        return post

    tasks: list[asyncio.Task[Any]] = []
    pcs: list[Any] = []
    rtmp_clients: list[RtmpClient] = []
    window = {"start": 0.0, "end": 0.0}
    measuring = asyncio.Event()

    def in_window(t: float) -> bool:
        return (
            measuring.is_set()
            and window["start"] <= t
            and (window["end"] == 0.0 or t <= window["end"])
        )

    async with aiohttp.ClientSession() as http:
        # -- flash -> webrtc ------------------------------------------------------------------
        if args.direction in ("flash", "both"):
            tags = [t for t in read_flv_tags(Path(args.flv)) if t.type_id in (8, 9)]
            pub = await RtmpClient.open("127.0.0.1", rtmp_port)
            rtmp_clients.append(pub)
            tc = f"rtmp://127.0.0.1:{rtmp_port}/consult"
            result = await pub.connect("consult", tc, session["customer"]["token"])
            assert not result.error, result
            sid = await pub.create_stream()
            pub.publish(sid, "customer")
            await pub.wait_status("NetStream.Publish.Start")
            sent: dict[int, float] = {}  # frame number -> monotonic time its message went out

            async def publish() -> None:
                loop_ms = tags[-1].timestamp + 67
                base = time.monotonic()
                rep = 0
                n = 0
                while True:
                    for tag in tags:
                        ts = tag.timestamp + rep * loop_ms
                        delay = base + ts / 1000 - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        pub.send_media(sid, tag.type_id, ts & 0xFFFFFFFF, tag.body)
                        if is_picture(tag):
                            sent[n] = time.monotonic()
                            n += 1
                    rep += 1

            tasks.append(asyncio.create_task(publish()))
            post = await poster(http, session["advisor"]["whep_url"], session["advisor"]["token"])
            pc = wc.new_peer()
            pcs.append(pc)
            vt = pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            wc.prefer(vt, args.video_codec)
            recv_a: dict[str, Any] = {"video": 0, "audio": 0, "lat_rtp": [], "lat_frame": []}
            nframes_per_loop = sum(1 for t in tags if is_picture(t))

            async def consume(track: MediaStreamTrack) -> None:
                while True:
                    frame = await track.recv()
                    now = time.monotonic()
                    if not in_window(now):
                        continue
                    recv_a[track.kind] += 1
                    if track.kind != "video" or not decode:
                        continue
                    marker = read_marker(bytes(frame.planes[0]), frame.planes[0].line_size)
                    # frames replay in a loop: the newest send of that number
                    cands = [k for k in (marker + i * nframes_per_loop for i in range(4))
                             if k in sent]  # fmt: skip
                    if not cands:
                        continue
                    src = sent[max(cands)]
                    recv_a["lat_frame"].append((now - src) * 1000)
                    raw = (frame.pts + first_raw[0]) & 0xFFFFFFFF if first_raw else None
                    if raw in arrivals:
                        recv_a["lat_rtp"].append((arrivals[raw] - src) * 1000)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                tasks.append(asyncio.create_task(consume(track)))

            seams.install()
            video_receiver.append(vt.receiver)
            if not decode:  # count packets, do not decode (capacity: cheaper clients)
                for t in pc.getTransceivers():
                    seams.register_passthrough(t.receiver)
            status, _, body = await wc.negotiate(pc, post)
            assert status == 201, body
            res["flash->webrtc"] = recv_a

        # -- webrtc -> flash ------------------------------------------------------------------
        if args.direction in ("webrtc", "both"):
            with av.open(args.webm) as container:
                packets = [
                    (p.stream.type, bytes(p), float(p.pts * p.time_base), p.is_keyframe)
                    for p in container.demux()
                    if p.size and p.pts is not None
                ]
            first_pts = min(p[2] for p in packets)  # MPEG-TS starts at 1.4 s
            packets = [(k, d, pts - first_pts, key) for k, d, pts, key in packets]
            duration = max(p[2] for p in packets) + 0.04
            bsent: dict[int, float] = {}

            class PacketTrack(MediaStreamTrack):
                def __init__(self, kind: str) -> None:
                    super().__init__()
                    self.kind = kind
                    self.items = [p for p in packets if p[0] == kind]
                    self.i = 0
                    self.start: float | None = None
                    self.clock = 90000 if kind == "video" else 48000

                async def recv(self) -> Any:
                    if self.start is None:
                        self.start = time.monotonic()
                    rep, idx = divmod(self.i, len(self.items))
                    _, data, pts, key = self.items[idx]
                    t = pts + rep * duration
                    delay = self.start + t - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    packet = av.Packet(data)
                    packet.pts = round(t * self.clock)
                    packet.time_base = fractions.Fraction(1, self.clock)
                    packet.is_keyframe = key
                    if self.kind == "video":
                        bsent[self.i] = time.monotonic()
                    self.i += 1
                    return packet

            post = await poster(http, session["advisor"]["whip_url"], session["advisor"]["token"])
            pc = wc.new_peer()
            pcs.append(pc)
            vt = pc.addTransceiver(PacketTrack("video"), direction="sendonly")
            pc.addTransceiver(PacketTrack("audio"), direction="sendonly")
            wc.prefer(vt, args.video_codec)
            status, _, body = await wc.negotiate(pc, post)
            assert status == 201, body
            nvideo = sum(1 for p in packets if p[0] == "video")
            recv_b: dict[str, Any] = {"video": 0, "audio": 0, "lat": [], "errors": 0}
            dec: dict[str, Any] = {"ctx": None}

            def on_media(ev: Any) -> None:
                now = time.monotonic()
                kind = "video" if ev.type_id == 9 else "audio"
                p = ev.payload
                if kind == "video" and len(p) > 5 and p[1] == 0:
                    if decode:
                        ctx = av.CodecContext.create("h264", "r")
                        ctx.extradata = p[5:]
                        dec["ctx"] = ctx
                    return
                if kind == "audio" and len(p) > 1 and p[1] == 0:
                    return
                if not in_window(now):
                    return
                recv_b[kind] += 1
                if kind != "video" or dec["ctx"] is None:
                    return
                try:
                    frames = dec["ctx"].decode(av.Packet(p[5:]))
                except av.FFmpegError:
                    recv_b["errors"] += 1
                    return
                for frame in frames:
                    marker = read_marker(bytes(frame.planes[0]), frame.planes[0].line_size)
                    cands = [k for k in (marker + i * nvideo for i in range(4)) if k in bsent]
                    if cands:
                        recv_b["lat"].append((now - bsent[max(cands)]) * 1000)

            player = await RtmpClient.open("127.0.0.1", rtmp_port, on_media=on_media)
            rtmp_clients.append(player)
            tc = f"rtmp://127.0.0.1:{rtmp_port}/consult"
            result = await player.connect("consult", tc, session["customer"]["token"])
            assert not result.error, result
            psid = await player.create_stream()
            player.play(psid, "advisor")
            res["webrtc->flash"] = recv_b

        # warm-up: the transcoders start, key frames come, then the window
        await asyncio.sleep(args.warmup)
        print("ready", flush=True)
        # every worker's window starts and ends at once: the caller says "go" to all
        await asyncio.to_thread(sys.stdin.readline)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        window["start"] = time.monotonic()
        measuring.set()
        await asyncio.sleep(args.seconds)
        window["end"] = time.monotonic()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        print("done", flush=True)

        def summary() -> dict[str, Any]:
            return _summary(window, cpu0, cpu1, start_cpu, t0, res)

        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # the result first: closing aiortc peers can hang, and the caller waits for it
        print(json.dumps(summary()), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "close" (all windows are over)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                for pc in pcs:
                    await pc.close()
                for c in rtmp_clients:
                    await c.close()
    return summary()


def _summary(
    window: dict[str, float],
    cpu0: Any,
    cpu1: Any,
    start_cpu: Any,
    t0: float,
    res: dict[str, Any],
) -> dict[str, Any]:
    span = window["end"] - window["start"]
    out: dict[str, Any] = {
        "window_s": round(span, 3),
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
        "client_setup_cpu_s": round(
            (cpu0.ru_utime + cpu0.ru_stime) - (start_cpu.ru_utime + start_cpu.ru_stime), 3
        ),
        "setup_wall_s": round(window["start"] - t0, 2),
    }
    for name, r in res.items():
        d: dict[str, Any] = {
            "video_fps": round(r["video"] / span, 2),
            "audio_per_s": round(r["audio"] / span, 2),
        }
        for key in ("lat_rtp", "lat_frame", "lat"):
            if r.get(key):
                d[key] = {"n": len(r[key]), "p50": pct(r[key], 0.5), "p95": pct(r[key], 0.95),
                          "min": round(min(r[key]), 2), "max": round(max(r[key]), 2)}  # fmt: skip
        if "errors" in r:
            d["decode_errors"] = r["errors"]
        out[name] = d
    return out


# -- the measuring side -------------------------------------------------------------------
def thread_split(pid: int) -> dict[int, float]:
    """CPU seconds (scheduler runtime) per thread of ``pid``."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
    return out


def switches(pid: int, tid: int) -> int:
    """Context switches of one thread so far (voluntary + involuntary): each voluntary
    one is a sleep and a wake-up, which on this VM costs tens of microseconds of CPU."""
    total = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def start_workers(
    gw: Any,
    sessions: list[dict[str, Any]],
    direction: str,
    seconds: float,
    decode: bool | None,
    flv: Path,
    webm: Path,
    warmup: float,
    video_codec: str = "vp8",
) -> list[subprocess.Popen[str]]:
    procs = []
    for i, s in enumerate(sessions):
        probe = decode is True or (decode is None and i == 0)
        # the consultation's own node (cluster mode places it; bench/cluster.py)
        port = urlsplit(s["customer"]["rtmp"]["connect_url"]).port or gw.rtmp_port
        cmd = [sys.executable, "-m", "bench.bridge", "worker",
               "--session", json.dumps(s), "--rtmp-port", str(port),
               "--direction", direction, "--seconds", str(seconds), "--flv", str(flv),
               "--webm", str(webm), "--warmup", str(warmup),
               "--video-codec", video_codec]  # fmt: skip
        if probe:
            cmd.append("--decode")
        pipe = subprocess.PIPE
        procs.append(
            subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, text=True, cwd=ROOT)
        )
    return procs


def _line(proc: subprocess.Popen[str], want: str, timeout: float) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != want:
        proc.kill()
        err = proc.stderr.read()[-3000:] if proc.stderr else ""
        raise RuntimeError(f"worker said {line!r}: {err}")


def run_step(
    gw: Any,
    n: int,
    direction: str,
    seconds: float,
    decode: bool | None,
    flv: Path,
    webm: Path,
    warmup: float = 4.0,
    video_codec: str = "vp8",
    nodes: list[Any] | None = None,
) -> dict[str, Any]:
    """n consultations at once; the gateway's CPU over the workers' common window, and
    the latency the gateway measured itself over the same window (gateway/latency.py).

    ``nodes``: the gateway processes of a cluster (bench/cluster.py), whose CPU is summed;
    the consultations are created through ``gw``, one of them, and placed by the cluster.
    The latency figures are then ``gw``'s own."""
    pids = [g.proc.pid for g in nodes or [gw]]

    def sample() -> list[Any]:
        now = time.monotonic()
        return [cpu_sample(pid, now) for pid in pids]

    def spent(a: list[Any], b: list[Any]) -> float:
        return sum(cpu_delta(x, y) for x, y in zip(a, b, strict=True))

    def threads() -> dict[int, float]:
        return {tid: s for pid in pids for tid, s in thread_split(pid).items()}

    sessions = [gw.create_session() for _ in range(n)]
    # The whole client life as seen from outside (issue 14): from the clients' start
    # (connect, WHIP/WHEP negotiation, warm-up) to their exit, beside the window.
    w0 = sample()
    procs = start_workers(gw, sessions, direction, seconds, decode, flv, webm, warmup, video_codec)
    for p in procs:
        _line(p, "ready", 90)

    def say(word: str) -> None:
        for p in procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.write(word + "\n")
                p.stdin.flush()

    say("go")
    c0, t0 = sample(), threads()
    x0 = sum(switches(pid, pid) for pid in pids)
    firsts = [g.get("/api/ops/snapshot") for g in nodes or [gw]]
    first = firsts[0] if nodes is None else gw.get("/api/ops/snapshot")
    clock = first["latency"]["clock"]
    for p in procs:
        _line(p, "done", seconds + 30)
    c1, t1 = sample(), threads()
    x1 = sum(switches(pid, pid) for pid in pids)
    lasts = [g.get("/api/ops/snapshot") for g in nodes or [gw]]
    snapshot = gw.get(f"/api/ops/snapshot?since={clock}")
    codec_s = sum(_codec_seconds(b) - _codec_seconds(a) for a, b in zip(firsts, lasts, strict=True))
    results = []
    for p in procs:
        assert p.stdout is not None
        results.append(p.stdout.readline())  # the result line follows "done" at once
    say("close")
    for p, out in zip(procs, results, strict=True):
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if not out.strip():
            assert p.stderr is not None
            raise RuntimeError(f"worker failed rc={p.returncode}: {p.stderr.read()[-3000:]}")
    w1 = sample()
    results = [json.loads(out) for out in results]
    whole = spent(w0, w1)
    cpu = spent(c0, c1)
    wall = c1[0].wall - c0[0].wall
    main = sum(t1.get(pid, 0.0) - t0.get(pid, 0.0) for pid in pids)
    others = sum(v - t0.get(k, 0.0) for k, v in t1.items() if k not in pids)
    whole_wall = w1[0].wall - w0[0].wall
    return {
        "consultations": n,
        "nodes": len(pids),
        "gateway_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 2),
        "gateway_cpu_percent_of_core": round(100 * cpu / wall, 1),
        "whole_cpu_s": round(whole, 3),
        "whole_wall_s": round(whole_wall, 2),
        "whole_cpu_percent_of_core": round(100 * whole / whole_wall, 1),
        "main_thread_cpu_s": round(main, 3),
        "main_thread_switches_per_s": round((x1 - x0) / wall, 1),
        "other_threads_cpu_s": round(others, 3),
        "threads_end": len(t1),
        "clients_cpu_percent_of_core": round(
            100 * sum(r["client_cpu_s"] for r in results) / wall, 1
        ),
        "clients": results,
        "gateway_latency": snapshot["latency"],
        # time inside PyAV's decode/encode calls (TranscoderStats), over the window
        "codec_cpu_s": round(codec_s, 3),
        "transcoders": [
            {k: t[k] for k in ("direction", "codec", "dropped", "realtime_factor", "queue_depth")}
            for last in lasts
            for t in last["transcoders"]
        ],
    }


def _codec_seconds(snapshot: dict[str, Any]) -> float:
    """Seconds the transcoders spent inside PyAV decode/encode calls, summed by number."""
    return sum(t["decode_seconds"] + t["encode_seconds"] for t in snapshot["transcoders"])


def ffmpeg_yardstick(src: Path, out_args: list[str], seconds: float) -> dict[str, Any]:
    """``ffmpeg -re`` over the same file, CPU of the middle ``seconds`` (after 3 s)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(src),
           "-t", str(seconds + 6), *out_args, "-f", "null", "-"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(cmd)
    time.sleep(3)
    c0 = cpu_sample(proc.pid, time.monotonic())
    time.sleep(seconds)
    c1 = cpu_sample(proc.pid, time.monotonic())
    proc.wait(60)
    life = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the whole process, exec to exit (opening the codecs, the last frames, closing)
    whole = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu = cpu_delta(c0, c1)
    return {"cpu_s": round(cpu, 3), "wall_s": round(c1.wall - c0.wall, 2),
            "cpu_percent_of_core": round(100 * cpu / (c1.wall - c0.wall), 1),
            "whole_cpu_s": round(whole, 3), "whole_wall_s": round(life, 2),
            "whole_cpu_percent_of_core": round(100 * whole / life, 1),
            "cmd": " ".join(cmd)}  # fmt: skip


def gateway_log_counts(gw: Any) -> dict[str, int]:
    text = gw.log()
    return {
        "falling_behind": text.count("falling behind"),
        "errors": sum(1 for x in text.splitlines() if " ERROR " in x or "Traceback" in x),
    }


def with_gateway(fn: Any) -> Any:
    from bench.testkit.gwproc import GatewayProcess

    data = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    gw = GatewayProcess(data)
    try:
        gw.start(timeout=120.0)  # a loaded shared machine starts slowly
        result = fn(gw)
        result["gateway_log"] = gateway_log_counts(gw)
        return result
    finally:
        if gw.proc is not None:
            try:
                gw.stop()
            except AssertionError as exc:
                # testkit's log check: the errors are counted in the result (gateway_log)
                # and printed here; one gateway's log must not lose the whole run
                print(f"[bench] gateway log: {str(exc)[:2000]}", file=sys.stderr, flush=True)
        shutil.rmtree(data, ignore_errors=True)


def bridge(seconds: float, rounds: int = 1, passthrough: bool = True) -> dict[str, Any]:
    """Each direction ``rounds`` times, the gateway and its ffmpeg yardstick one after
    the other in each round; the ratio is the median of the per-round ratios (the
    single-round ratios are kept beside it), the figures those of the median round."""
    flv, webm = ensure_media()
    out: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "load_average_at_start": os.getloadavg(),
    }
    for name, direction, src, yard in (
        ("flash->webrtc", "flash", flv, TO_VP8_OPUS),
        ("webrtc->flash", "webrtc", webm, TO_H264_AAC),
    ):
        runs: list[dict[str, Any]] = []
        for r in range(rounds):
            gwr = with_gateway(lambda gw, d=direction: run_step(gw, 1, d, seconds, True, flv, webm))
            ff = ffmpeg_yardstick(src, yard, seconds)
            gwr["ratio"] = round(
                gwr["gateway_cpu_percent_of_core"] / max(ff["cpu_percent_of_core"], 0.01), 2
            )
            # whole lives: share of a core over each side's whole client / process life
            gwr["ratio_whole"] = round(
                gwr["whole_cpu_percent_of_core"] / max(ff["whole_cpu_percent_of_core"], 0.01), 2
            )
            gwr["codec_share"] = round(gwr["codec_cpu_s"] / max(gwr["gateway_cpu_s"], 1e-9), 3)
            # A gateway that could not keep up (its neighbours took the CPU) transcoded
            # fewer frames and looks cheap: such a round is not comparable.
            fps = gwr["clients"][0][name]["video_fps"]
            gwr["valid"] = fps >= 0.9 * FPS[name] and gwr["gateway_log"]["falling_behind"] == 0
            runs.append({"gateway": gwr, "ffmpeg": ff})
            print(f"[bridge] {name} round {r + 1}/{rounds}: "
                  f"gateway {gwr['gateway_cpu_percent_of_core']}% "
                  f"(main thread {100 * gwr['main_thread_cpu_s'] / gwr['wall_s']:.1f}%, "
                  f"{gwr['main_thread_switches_per_s']} switches/s) "
                  f"ffmpeg {ff['cpu_percent_of_core']}% ratio {gwr['ratio']}x "
                  f"(whole lives: {gwr['whole_cpu_percent_of_core']}% / "
                  f"{ff['whole_cpu_percent_of_core']}% = {gwr['ratio_whole']}x) "
                  f"codec share {gwr['codec_share']} "
                  f"{'' if gwr['valid'] else 'INVALID: fell behind '}"
                  f"latency {_latency_line(gwr['gateway_latency'])} "
                  f"client {gwr['clients'][0]}", file=sys.stderr, flush=True)  # fmt: skip
        out[name] = summarise_rounds(runs)
    if not passthrough:
        return out
    # H.264 passed through (audio still transcoded: Speex > Opus, Opus > AAC)
    pflv, pts = ensure_passthrough_media()
    for name, direction in (
        ("flash->webrtc h264 passthrough", "flash"),
        ("webrtc->flash h264 passthrough", "webrtc"),
    ):
        gwr = with_gateway(
            lambda gw, d=direction: run_step(gw, 1, d, seconds, True, pflv, pts, 4.0, "h264")
        )
        out[name] = {"gateway": gwr}
        print(f"[bridge] {name}: gateway {gwr['gateway_cpu_percent_of_core']}% "
              f"latency {_latency_line(gwr['gateway_latency'])} "
              f"client {gwr['clients'][0]}", file=sys.stderr, flush=True)  # fmt: skip
    return out


def summarise_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round's figures, with the median and the single-round ratios; rounds
    in which the gateway fell behind are left out while valid ones exist."""
    valid = [x for x in runs if x["gateway"].get("valid", True)]
    use = valid or runs
    ordered = sorted(use, key=lambda x: float(x["gateway"]["ratio"]))
    middle = ordered[len(ordered) // 2]
    ratios = [x["gateway"]["ratio"] for x in use]
    wholes = [x["gateway"]["ratio_whole"] for x in use]
    return {
        **middle,
        "valid_rounds": len(valid),
        "all_rounds_ratio": [x["gateway"]["ratio"] for x in runs],
        "ratio_median": statistics.median(ratios),
        "ratio_rounds": ratios,
        "ratio_whole_median": statistics.median(wholes),
        "ratio_whole_rounds": wholes,
    }


def profile_bridge(seconds: float) -> dict[str, Any]:
    """Each transcoded direction once with py-spy attached to the gateway (1000 Hz,
    ``--nonblocking``, on-CPU samples, per thread): where the main thread's time goes."""
    from bench.run import summarise_collapsed

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("py-spy not installed: .venv/bin/pip install py-spy")
    flv, webm = ensure_media()
    out: dict[str, Any] = {}
    for name, direction in (("flash->webrtc", "flash"), ("webrtc->flash", "webrtc")):
        path = OUT_DIR / f"profile-{direction}.txt"
        path.unlink(missing_ok=True)

        def measured(gw: Any, d: str = direction, path: Path = path) -> dict[str, Any]:
            spy_proc = subprocess.Popen(
                [spy, "record", "--pid", str(gw.proc.pid), "--rate", "1000", "--nonblocking",
                 "--threads", "--format", "raw", "--output", str(path),
                 "--duration", str(int(seconds + 40))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                return run_step(gw, 1, d, seconds, True, flv, webm)
            finally:
                spy_proc.send_signal(2)  # py-spy writes its output on SIGINT
                spy_proc.wait(60)

        step = with_gateway(measured)
        main = path.with_name(f"profile-{direction}-main.txt")
        # --threads puts "thread (0x…)" first; the event loop is the process's first thread
        lines = path.read_text().splitlines() if path.exists() else []
        tids = [ln.split(";", 1)[0] for ln in lines]
        first = next((t for t in tids if "MainThread" in t), tids[0] if tids else "")
        main.write_text("\n".join(ln for ln, t in zip(lines, tids, strict=True) if t == first))
        out[name] = {
            "gateway_cpu_percent_of_core": step["gateway_cpu_percent_of_core"],
            "main_thread_cpu_s": step["main_thread_cpu_s"],
            "all_threads": summarise_collapsed(path),
            "main_thread": summarise_collapsed(main),
        }
        print(f"[profile] {name}: {path}", file=sys.stderr, flush=True)
    return out


def _latency_line(latency: dict[str, Any]) -> str:
    parts = [f"{k} p50 {v['p50_ms']} p95 {v['p95_ms']} ms (n={v['count']})"
             for k, v in latency["added"].items()]  # fmt: skip
    parts += [f"jitter buffer {k} p50 {v['p50_ms']} p95 {v['p95_ms']} ms"
              for k, v in latency["jitter_buffer"].items()]  # fmt: skip
    return "; ".join(parts)


def step_ok(r: dict[str, Any]) -> bool:
    """Whether every consultation of a capacity step was held: frame and audio rates at
    90 % of the source's, no backlog building up, no transcoder falling behind."""
    for c in r["clients"]:
        if c["flash->webrtc"]["video_fps"] < 0.9 * 15:
            return False
        if c["webrtc->flash"]["video_fps"] < 0.9 * 30:
            return False
        if c["flash->webrtc"]["audio_per_s"] < 0.9 * 50:  # Opus, 20 ms
            return False
        if c["webrtc->flash"]["audio_per_s"] < 0.9 * 43:  # AAC 44.1 kHz, 1024 samples
            return False
        for key in ("lat_frame", "lat"):
            for d in ("flash->webrtc", "webrtc->flash"):
                lat = c[d].get(key)
                if lat and lat["p95"] > 1000:  # a backlog building up
                    return False
    return r["gateway_log"]["falling_behind"] == 0


def _ladder(seconds: float, steps: list[int], passthrough: bool) -> dict[str, Any]:
    """One climb up the steps, stopping at the first that fails."""
    flv, webm = ensure_passthrough_media() if passthrough else ensure_media()
    codec = "h264" if passthrough else "vp8"
    out: dict[str, Any] = {"steps": []}

    for n in steps:
        # consultation 0 decodes (latency under load); the others only count packets
        r = with_gateway(
            lambda gw, n=n: run_step(gw, n, "both", seconds, None, flv, webm, 4.0, codec)
        )
        r["ok"] = step_ok(r)
        out["steps"].append(r)
        fps = [(c["flash->webrtc"]["video_fps"], c["webrtc->flash"]["video_fps"])
               for c in r["clients"]]  # fmt: skip
        print(f"[capacity] {n}: ok={r['ok']} gateway {r['gateway_cpu_percent_of_core']}% "
              f"clients {r['clients_cpu_percent_of_core']}% fps {fps} "
              f"latency {_latency_line(r['gateway_latency'])} "
              f"log {r['gateway_log']}", file=sys.stderr, flush=True)  # fmt: skip
        if not r["ok"]:
            break
    held = [s["consultations"] for s in out["steps"] if s["ok"]]
    out["held"] = max(held) if held else 0
    return out


def audio_only(args: list[str]) -> list[str]:
    """The audio half of a yardstick's settings (``-vn``, then ``-c:a`` on)."""
    return ["-threads", "1", "-vn", *args[args.index("-c:a") :]]


def capacity(
    seconds: float, steps: list[int], passthrough: bool = False, rounds: int = 1
) -> dict[str, Any]:
    """``rounds`` climbs, each followed by its yardstick: the ffmpeg CLI doing one
    consultation's transcodes (both directions; passed through: the audio ones alone,
    the only codec work left). Figures, with the median and every round's:

    * transcoded: ``held`` against what the ffmpeg CLI could hold on the same 2 cores
      with the same clients: 200 % / (ffmpeg's two directions + the clients' CPU per
      consultation measured at the held step);
    * passed through: consultations per core of gateway CPU (N / gateway share at the
      highest step held) against 100 % / ffmpeg's two audio transcodes.
    """
    flv, webm = ensure_passthrough_media() if passthrough else ensure_media()
    if passthrough:
        yards = ((flv, audio_only(TO_VP8_OPUS)), (webm, audio_only(TO_H264_AAC)))
    else:
        yards = ((flv, TO_VP8_OPUS), (webm, TO_H264_AAC))
    out: dict[str, Any] = {
        "passthrough": passthrough,
        "seconds": seconds,
        "rounds": [],
        "load_average_at_start": os.getloadavg(),
    }
    for r in range(rounds):
        ladder = _ladder(seconds, steps, passthrough)
        ff = [ffmpeg_yardstick(src, args, min(seconds, 15.0)) for src, args in yards]
        ff_pct = sum(f["cpu_percent_of_core"] for f in ff)
        held_steps = [st for st in ladder["steps"] if st["ok"]]
        top = held_steps[-1] if held_steps else None
        entry: dict[str, Any] = {**ladder, "ffmpeg": ff, "ffmpeg_percent_per_consultation": ff_pct}
        if top is not None and passthrough:
            per_core = 100 * top["consultations"] / max(top["gateway_cpu_percent_of_core"], 0.01)
            entry["per_core"] = round(per_core, 2)
            entry["yardstick_per_core"] = round(100 / max(ff_pct, 0.01), 2)
            entry["ratio"] = round(per_core / entry["yardstick_per_core"], 3)
        elif top is not None:
            clients = top["clients_cpu_percent_of_core"] / top["consultations"]
            bound = 200 / max(ff_pct + clients, 0.01)
            entry["clients_percent_per_consultation"] = round(clients, 2)
            entry["yardstick_held"] = round(bound, 2)
            entry["ratio"] = round(ladder["held"] / bound, 3)
        out["rounds"].append(entry)
        print(f"[capacity] round {r + 1}/{rounds}: held {ladder['held']} "
              f"ffmpeg {ff_pct:.1f}% per consultation; "
              + ", ".join(f"{k} {entry[k]}" for k in
                          ("per_core", "yardstick_per_core", "yardstick_held", "ratio")
                          if k in entry), file=sys.stderr, flush=True)  # fmt: skip
    helds = [e["held"] for e in out["rounds"]]
    out["held"] = statistics.median_low(helds)
    out["held_rounds"] = helds
    out["steps"] = out["rounds"][helds.index(out["held"])]["steps"]
    for key in ("per_core", "yardstick_per_core", "yardstick_held", "ratio"):
        vals = [e[key] for e in out["rounds"] if key in e]
        if vals:
            out[f"{key}_median"] = statistics.median(vals)
            out[f"{key}_rounds"] = vals
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("bridge", "capacity", "profile", "worker"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--steps", default="1,2,4,6,8,10")
    ap.add_argument("--session")
    ap.add_argument("--rtmp-port")
    ap.add_argument("--direction", default="both")
    ap.add_argument("--flv")
    ap.add_argument("--webm")
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--video-codec", default="vp8", choices=("vp8", "h264"))
    ap.add_argument("--passthrough", action="store_true", help="capacity: H.264 both ways")
    ap.add_argument(
        "--transcoded-only", action="store_true", help="bridge: leave out the passthrough runs"
    )
    ap.add_argument("--rounds", type=int, default=1, help="rounds (medians over them)")
    args = ap.parse_args()
    if args.mode == "worker":
        asyncio.run(worker(args))  # prints its result
        os._exit(0)  # aiortc's threads would hold the exit
    if args.mode == "bridge":
        result = bridge(args.seconds, max(1, args.rounds), not args.transcoded_only)
    elif args.mode == "profile":
        result = profile_bridge(args.seconds)
    else:
        steps = [int(x) for x in args.steps.split(",")]
        result = capacity(args.seconds, steps, args.passthrough, max(1, args.rounds))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=1 if args.mode == "bridge" else None))


if __name__ == "__main__":
    main()

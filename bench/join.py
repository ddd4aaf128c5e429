"""Time to first frame for a receiver joining a running stream (issue 14).

A publisher (``ffmpeg -re -stream_loop -1 -c copy``, relay720p's 720p30 H.264 + AAC FLV,
key frame every 2 s) runs; receivers then join one after the other and each measures,
on one monotonic clock, from its first byte out (TCP connect; for WHEP creating the
offer) to:

* RTMP (rtmp.client as the player): the first video message, and the first video
  message that is a key frame (the first picture a player can show);
* WHEP (an aiortc client, H.264 offered, so the gateway passes the camera through):
  the first video RTP packet, and the first frame out of the client's decoder.

The yardstick for RTMP is nginx-rtmp in the same run (no GOP cache: a player joining
waits for the next key frame, up to 2 s here; the gateway replays its cached GOP). WHEP
has no yardstick on this machine; it is reported.

Run alone: ``.venv/bin/python -m bench.join --rounds 3 --joins 5`` (or through
bench/run.py ``--only join``). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.media import RELAY_720P, make_flv
from bench.nginx_rtmp import NginxRtmp


def log(msg: str) -> None:
    print(f"[join {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def rtmp_join(url: str, timeout: float = 10.0) -> dict[str, float]:
    """ms from connect to the first video message and to the first key frame."""
    from rtmp.client import RtmpClient
    from rtmp.events import MediaReceived

    parts = urlsplit(url)
    app, _, name = parts.path.lstrip("/").partition("/")
    if parts.query:
        name += "?" + parts.query
    got: dict[str, float] = {}
    done = asyncio.Event()

    def on_media(ev: MediaReceived) -> None:
        if ev.type_id != 9 or len(ev.payload) < 2:
            return
        now = time.monotonic()
        got.setdefault("first_video_ms", 1000 * (now - t0))
        is_header = ev.payload[0] & 0x0F == 7 and ev.payload[1] == 0
        if ev.payload[0] >> 4 == 1 and not is_header:
            got.setdefault("first_keyframe_ms", 1000 * (now - t0))
            done.set()

    t0 = time.monotonic()
    host, port = parts.hostname or "127.0.0.1", parts.port or 1935
    client = await RtmpClient.open(host, port, on_media=on_media)
    try:
        result = await client.connect(app, f"rtmp://{host}:{port}/{app}")
        if result.error:
            raise RuntimeError(f"connect refused: {result}")
        sid = await client.create_stream()
        client.play(sid, name)
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await client.close()
    return got


async def whep_join(url: str, token: str, timeout: float = 10.0) -> dict[str, float]:
    """ms from creating the offer to the first video RTP packet and the first decoded
    frame, H.264 offered (the gateway passes an H.264 camera through)."""
    import aiohttp
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    from bench.testkit import webrtc_client as wc

    got: dict[str, float] = {}
    first_frame = asyncio.Event()
    original = RTCRtpReceiver._handle_rtp_packet
    t0 = time.monotonic()

    async def handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        if self is receiver:
            got.setdefault("first_rtp_ms", 1000 * (time.monotonic() - t0))
        await original(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = handle  # type: ignore[method-assign]
    pc = wc.new_peer()
    try:
        vt = pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        wc.prefer(vt, "h264")
        receiver = vt.receiver

        async def consume(track: Any) -> None:
            await track.recv()
            got.setdefault("first_frame_ms", 1000 * (time.monotonic() - t0))
            first_frame.set()

        tasks: list[asyncio.Task[None]] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                tasks.append(asyncio.create_task(consume(track)))

        async with aiohttp.ClientSession() as http:
            status, _, body = await wc.negotiate(pc, wc.http_poster(http, url, token))
            if status != 201:
                raise RuntimeError(f"WHEP {status}: {body[:200]}")
            await asyncio.wait_for(first_frame.wait(), timeout)
        for t in tasks:
            t.cancel()
    finally:
        RTCRtpReceiver._handle_rtp_packet = original  # type: ignore[method-assign]
        await pc.close()
    return got


def _publisher(flv: Path, url: str) -> subprocess.Popen[bytes]:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
           "-stream_loop", "-1", "-i", str(flv), "-c", "copy", "-f", "flv", url]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _joins(make: Any, joins: int, gap: float) -> list[dict[str, float]]:
    out = []
    # one join first that is not counted: the client's own first-time costs (imports,
    # codec set-up in this process) are not the server's
    await make()
    await asyncio.sleep(gap)
    for _ in range(joins):
        out.append(await make())
        # joins land at different places in the GOP (2 s): 0.7 s apart
        await asyncio.sleep(gap)
    return out


def one_round(flv: Path, joins: int, gap: float = 0.7) -> dict[str, Any]:
    from bench.testkit.gwproc import GatewayProcess

    res: dict[str, Any] = {}
    with NginxRtmp() as ng:
        pub = _publisher(flv, ng.url("s0"))
        try:
            time.sleep(3.0)
            res["nginx-rtmp"] = asyncio.run(_joins(lambda: rtmp_join(ng.url("s0")), joins, gap))
        finally:
            _stop(pub)
    gw = GatewayProcess(Path(tempfile.mkdtemp(prefix="bench-join-")))
    gw.start(timeout=120.0)
    try:
        doc = gw.create_session()
        pub = _publisher(flv, doc["customer"]["rtmp"]["publish_url"])
        try:
            time.sleep(3.0)
            play = doc["advisor"]["rtmp"]["play_url"]
            res["gateway"] = asyncio.run(_joins(lambda: rtmp_join(play), joins, gap))
            whep, token = doc["advisor"]["whep_url"], doc["advisor"]["token"]
            res["gateway whep"] = asyncio.run(_joins(lambda: whep_join(whep, token), joins, gap))
        finally:
            _stop(pub)
    finally:
        try:
            gw.stop()
        except AssertionError as exc:  # testkit's log check: said, not fatal to the run
            log(f"gateway log: {str(exc)[:2000]}")
    return res


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server and measure: the median of each round's median join, every round's
    median, and every single join; RTMP ratios gateway / nginx-rtmp per round."""
    out: dict[str, Any] = {"rounds": rounds}
    for server in ("nginx-rtmp", "gateway", "gateway whep"):
        keys = sorted({k for r in rounds for j in r[server] for k in j})
        out[server] = {}
        for key in keys:
            per_round = [statistics.median(j[key] for j in r[server] if key in j) for r in rounds]
            out[server][key] = {
                "median_ms": round(statistics.median(per_round), 2),
                "round_medians_ms": [round(x, 2) for x in per_round],
                "single_ms": [round(j[key], 2) for r in rounds for j in r[server] if key in j],
            }
    for key in ("first_video_ms", "first_keyframe_ms"):
        per = [
            statistics.median(j[key] for j in r["gateway"])
            / statistics.median(j[key] for j in r["nginx-rtmp"])
            for r in rounds
        ]
        out[f"ratio_{key}"] = {"median": round(statistics.median(per), 3),
                               "rounds": [round(x, 3) for x in per]}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--joins", type=int, default=5)
    args = ap.parse_args()
    flv = make_flv(RELAY_720P, 32.0)
    rounds = []
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}")
        rounds.append(one_round(flv, args.joins))
    print(json.dumps(summarise(rounds)))


if __name__ == "__main__":
    main()

"""Added latency including the gateway's receive buffering (issue 14), before and after.

Run through bench/run.py (``--only latency``) or alone:

    .venv/bin/python -m bench.latency [--seconds 15] [--modes aiortc,reorder,forward]

One gateway process per receive mode (``--rtp-receive``), one after the other in the same
run, with the same clients:

* ``aiortc``  – aiortc's own receive jitter buffer (the path before issue 14: about
  80 ms audio, a frame interval video): the yardstick of this benchmark;
* ``reorder`` – the reorder-only buffer, every WebRTC receiver packetizes again;
* ``forward`` – the reorder-only buffer, and browser-to-browser media forwarded in the
  RTP payloads it arrived in (the default).

Clients, on loopback:

* browser ↔ browser: Chromium (fake camera 320x240 and microphone, VP8 + Opus; small
  so that the browsers leave the shared cores to the gateway) publishes as the
  customer over WHIP; the same Chromium plays it as the advisor over WHEP;
* browser → Flash: Chromium publishes H.264 + Opus as the advisor in a second
  consultation, and a Flash-like RTMP client (rtmp/client.py, Flash 11 capabilities:
  H.264 passes through, Opus becomes AAC) plays it as the customer;
* Flash → browser: the Flash-like client publishes H.264 baseline + Speex 320x240@15 as
  that customer (as Flash 11's camera and microphone do), Chromium plays it as the
  advisor (H.264 passes through, Speex becomes Opus).

Only the audio of the mixed consultation is transcoded: the benchmark is about the
receive path, and on a shared 2-core machine every transcoder's backlog would show up
as latency of its own.

The figures are the gateway's own (``/api/ops/snapshot``, gateway/latency.py): from the
arrival of the last RTP packet of a frame (WebRTC) or the read completing an RTMP message,
to the frame's packets handed to the socket, so they include the receive buffer. Beside
them Chromium's own view of each WHEP stream (``jitterBufferDelay`` per emitted frame,
``getStats``): what the browser buffers itself. Output: JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from bench.procstat import cpu_delta, cpu_sample
from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import make_flv, read_flv_tags
from rtmp import messages as m
from rtmp.client import RtmpClient
from rtmp.events import MediaReceived

MODES = ("aiortc", "reorder", "forward")
CHROMIUM_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
]

NEGOTIATE_JS = """
async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
  const resp = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", Authorization: "Bearer " + token}});
  const answer = await resp.text();
  if (resp.status !== 201) throw new Error(resp.status + " " + answer);
  await pc.setRemoteDescription({type: "answer", sdp: answer});
}
"""

PUBLISH_JS = (
    "async ([name, url, token, codec]) => {"
    + NEGOTIATE_JS
    + """
  const media = await navigator.mediaDevices.getUserMedia(
    {video: {width: 320, height: 240}, audio: true});
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  for (const track of media.getTracks()) {
    const t = pc.addTransceiver(track, {direction: "sendonly"});
    if (track.kind === "video") {
      t.setCodecPreferences(RTCRtpSender.getCapabilities("video").codecs.filter(
        (c) => c.mimeType.toLowerCase() === "video/" + codec || c.mimeType === "video/rtx"));
    }
  }
  window[name] = pc;
  await negotiate(pc, url, token);
}"""
)

PLAY_JS = (
    "async ([name, url, token, codec]) => {"
    + NEGOTIATE_JS
    + """
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  pc.addTransceiver("video", {direction: "recvonly"}).setCodecPreferences(
    RTCRtpReceiver.getCapabilities("video").codecs.filter(
      (c) => c.mimeType.toLowerCase() === "video/" + codec || c.mimeType === "video/rtx"));
  pc.addTransceiver("audio", {direction: "recvonly"});
  const stream = new MediaStream();
  const video = document.createElement("video");
  video.autoplay = true;
  document.body.appendChild(video);
  pc.addEventListener("track", (e) => { stream.addTrack(e.track); video.srcObject = stream; });
  window[name] = pc;
  await negotiate(pc, url, token);
}"""
)

# Chromium's own receive buffering per WHEP stream: jitterBufferDelay / emitted count
STATS_JS = """
async (name) => {
  const out = {};
  (await window[name].getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = {
      delay: s.jitterBufferDelay || 0, emitted: s.jitterBufferEmittedCount || 0,
      frames: s.framesDecoded || 0, packets: s.packetsReceived || 0,
      lost: s.packetsLost || 0, nack: s.nackCount || 0, pli: s.pliCount || 0};
  });
  return out;
}
"""


def log(msg: str) -> None:
    print(f"[latency] {msg}", file=sys.stderr, flush=True)


def camera_tags() -> list[tuple[int, int, bytes]]:
    """Four seconds of H.264 + Speex as Flash 11's camera and microphone send them."""
    path = Path(tempfile.mkdtemp(prefix="vb-latency-media-")) / "camera.flv"
    make_flv(path, "h264_speex", seconds=4)
    return [(t.type_id, t.timestamp, t.body) for t in read_flv_tags(path) if t.type_id != 18]


class FlashLike:
    """The Flash-like side of the second consultation: publishes Spark + Speex in real
    time and plays the advisor's stream, counting what arrives."""

    def __init__(self) -> None:
        self.video = 0
        self.audio = 0
        self.clients: list[RtmpClient] = []
        self.task: asyncio.Task[None] | None = None

    def _on_media(self, event: MediaReceived) -> None:
        if event.type_id == m.VIDEO:
            self.video += 1
        elif event.type_id == m.AUDIO:
            self.audio += 1

    async def _client(self, gw: GatewayProcess, token: str, **kwargs: Any) -> RtmpClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: RtmpClient(**kwargs), "127.0.0.1", gw.rtmp_port
        )
        self.clients.append(client)
        result = await client.connect("consult", f"rtmp://127.0.0.1:{gw.rtmp_port}/consult", token)
        if result.error:
            raise RuntimeError(f"connect refused: {result}")
        return client

    async def start(self, gw: GatewayProcess, token: str) -> None:
        player = await self._client(gw, token, on_media=self._on_media)
        player.play(await player.create_stream(), "advisor")
        publisher = await self._client(gw, token)
        stream_id = await publisher.create_stream()
        publisher.publish(stream_id, "customer")
        await publisher.wait_status("NetStream.Publish.Start")
        tags = await asyncio.to_thread(camera_tags)
        self.task = asyncio.ensure_future(self._publish(publisher, stream_id, tags))

    @staticmethod
    async def _publish(client: RtmpClient, stream_id: int, tags: Any) -> None:
        length = tags[-1][1] + 67
        start = time.monotonic()
        for loop in range(100_000):
            for type_id, ts, body in tags:
                delay = start + (loop * length + ts) / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                client.send_media(stream_id, type_id, loop * length + ts, body)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for client in self.clients:
            await client.close()


async def wait_frames(page: Page, name: str, frames: int, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = await page.evaluate(STATS_JS, name)
        if stats.get("video", {}).get("frames", 0) >= frames:
            return stats
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{name}: fewer than {frames} frames decoded: {stats}")


def browser_buffer(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Chromium's mean jitter-buffer delay (ms) per kind over the window."""
    out: dict[str, Any] = {}
    for kind, b in after.items():
        a = before.get(kind, {})
        emitted = b["emitted"] - a.get("emitted", 0)
        if emitted > 0:
            out[kind] = {
                "jitter_buffer_ms": round(1000 * (b["delay"] - a.get("delay", 0)) / emitted, 1),
                "lost": b["lost"] - a.get("lost", 0),
                "nack": b["nack"] - a.get("nack", 0),
                "pli": b["pli"] - a.get("pli", 0),
            }
    return out


async def run_mode(browser: Browser, mode: str, seconds: float, root: Path) -> dict[str, Any]:
    gw = GatewayProcess(root / mode, extra=["--rtp-receive", mode]).start(timeout=90)
    page = await browser.new_page()
    flash = FlashLike()
    try:
        await page.goto(gw.base + "/healthz")
        b2b, mixed = gw.create_session(), gw.create_session()
        c1, c2 = b2b["id"], mixed["id"]
        await page.evaluate(
            PUBLISH_JS, ["pub1", f"/whip/{c1}/customer", b2b["customer"]["token"], "vp8"]
        )
        await asyncio.to_thread(gw.wait_live, c1, "customer")
        await page.evaluate(
            PLAY_JS, ["play1", f"/whep/{c1}/advisor", b2b["advisor"]["token"], "vp8"]
        )
        await page.evaluate(
            PUBLISH_JS, ["pub2", f"/whip/{c2}/advisor", mixed["advisor"]["token"], "h264"]
        )
        await asyncio.to_thread(gw.wait_live, c2, "advisor")
        await flash.start(gw, mixed["customer"]["token"])
        await asyncio.to_thread(gw.wait_live, c2, "customer")
        await page.evaluate(
            PLAY_JS, ["play2", f"/whep/{c2}/advisor", mixed["advisor"]["token"], "h264"]
        )
        await wait_frames(page, "play1", 30)
        await wait_frames(page, "play2", 15)
        # warm-up done: the window opens
        clock = (await asyncio.to_thread(gw.get, "/api/ops/snapshot"))["latency"]["clock"]
        browsers0 = {n: await page.evaluate(STATS_JS, n) for n in ("play1", "play2")}
        flash0 = (flash.video, flash.audio)
        assert gw.proc is not None
        cpu0 = cpu_sample(gw.proc.pid, time.monotonic())
        await asyncio.sleep(seconds)
        gateway_cpu = cpu_delta(cpu0, cpu_sample(gw.proc.pid, time.monotonic()))
        snapshot = await asyncio.to_thread(gw.get, f"/api/ops/snapshot?since={clock}")
        latency = snapshot["latency"]
        browsers1 = {n: await page.evaluate(STATS_JS, n) for n in ("play1", "play2")}
        return {
            "mode": mode,
            "seconds": seconds,
            "gateway_latency": latency,
            "chromium_whep": {
                "browser_to_browser": browser_buffer(browsers0["play1"], browsers1["play1"]),
                "flash_to_browser": browser_buffer(browsers0["play2"], browsers1["play2"]),
            },
            "flash_player_received": {
                "video": flash.video - flash0[0],
                "audio": flash.audio - flash0[1],
            },
            "gateway_cpu_seconds": round(gateway_cpu, 2),
            "load_average": os.getloadavg(),
        }
    finally:
        await flash.close()
        await page.close()
        gw.stop()
        # what the receive side had to skip or drop, and frames dropped for lag
        notes = [
            line.split(" INFO ", 1)[-1]
            for line in gw.log().splitlines()
            if "receive buffer:" in line or "behind; dropping" in line
        ]
        log(f"{mode}: " + " | ".join(notes))
        gw.check_log()


async def run(seconds: float, modes: list[str], rounds: int) -> dict[str, Any]:
    """Every mode once per round, the order rotated each round (a machine that gets
    busier during the run must not favour one mode)."""
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vb-latency-", ignore_cleanup_errors=True) as tmp:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
            )
            try:
                for n in range(rounds):
                    results: dict[str, Any] = {}
                    order = modes[n % len(modes) :] + modes[: n % len(modes)]
                    for mode in order:
                        log(f"round {n + 1}, mode {mode}: {seconds:g} s window")
                        where = Path(tmp) / f"r{n}"
                        results[mode] = await run_mode(browser, mode, seconds, where)
                        log(summary_line(results[mode]))
                    per_round.append(results)
            finally:
                await browser.close()
    return {
        "rounds": per_round,
        "table": table(per_round),
        "receive_buffer": receive_buffer(per_round),
    }


KEYS = (
    ("webrtc_to_webrtc", "audio"),
    ("webrtc_to_webrtc", "video"),
    ("webrtc_to_flash", "audio"),
    ("webrtc_to_flash", "video"),
    ("flash_to_webrtc", "audio"),
    ("flash_to_webrtc", "video"),
)


def table(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (direction, kind): per mode the path it took, the median over rounds
    of p50 and p95, and each round's p95 (the single-run figures)."""
    rows = []
    for direction, kind in KEYS:
        row: dict[str, Any] = {"direction": direction, "kind": kind}
        for mode in rounds[0]:
            found = []
            for results in rounds:
                for key, v in results[mode]["gateway_latency"]["added"].items():
                    d, path, k = key.split("/")
                    if d == direction and k == kind:
                        found.append((path, v))
            if found:
                row[mode] = {
                    "path": found[0][0],
                    "p50_ms": round(statistics.median(v["p50_ms"] for _, v in found), 2),
                    "p95_ms": round(statistics.median(v["p95_ms"] for _, v in found), 2),
                    "p95_each_ms": [v["p95_ms"] for _, v in found],
                    "count": sum(v["count"] for _, v in found),
                }
        rows.append(row)
    return rows


def receive_buffer(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The receive buffer's own share (last packet in → frame out), median p95 per mode."""
    out: dict[str, Any] = {}
    for mode in rounds[0]:
        for kind in ("audio", "video"):
            values = [
                r[mode]["gateway_latency"]["jitter_buffer"][kind]["p95_ms"]
                for r in rounds
                if kind in r[mode]["gateway_latency"]["jitter_buffer"]
            ]
            if values:
                out.setdefault(mode, {})[kind] = {
                    "p95_ms": round(statistics.median(values), 3),
                    "p95_each_ms": values,
                }
    return out


def report_lines(result: dict[str, Any]) -> list[str]:
    """The p95 figures for bench/run.py's report: per direction and kind, each mode's
    median p95 over the rounds (single runs in brackets), and the receive buffer's share."""
    rounds = len(result["rounds"])
    lines = [
        f"latency: added p95 ms incl. receive buffering, median of {rounds} round(s) "
        "[each round]; aiortc = the old receive buffer (yardstick, same run)"
    ]
    for row in result["table"]:
        cells = []
        for mode in MODES:
            v = row.get(mode)
            if v:
                each = ", ".join(f"{x:.1f}" for x in v["p95_each_ms"])
                cells.append(f"{mode} ({v['path']}) {v['p95_ms']:.1f} [{each}]")
        lines.append(f"  {row['direction']:17} {row['kind']:5}  " + "; ".join(cells))
    for mode, kinds in result["receive_buffer"].items():
        parts = [f"{k} {v['p95_ms']:.2f}" for k, v in kinds.items()]
        lines.append(f"  receive buffer alone, {mode}: p95 ms " + ", ".join(parts))
    return lines


def summary_line(r: dict[str, Any]) -> str:
    parts = [
        f"{key} p95 {v['p95_ms']:.1f} ms (n={v['count']})"
        for key, v in sorted(r["gateway_latency"]["added"].items())
    ]
    return f"{r['mode']}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    modes = [x for x in args.modes.split(",") if x]
    result = asyncio.run(run(args.seconds, modes, max(1, args.rounds)))
    for line in report_lines(result):
        log(line)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

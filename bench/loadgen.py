"""One-process RTMP load generator: N publishers and N players, paced in real time.

Run by ``bench/run.py`` (scenario ``pairs50``) as ``python -m bench.loadgen PLAN.json``;
prints one JSON object with the results. The plan names the server's pid so the CPU and
RSS samples are taken here, at the exact moments the load changes.

What keeps one Python process able to drive 100 streams on a 2-core machine where the
server under test needs the other core:

* The FLV is read and *chunked once*: every publisher sends the same messages on the
  same message stream id, so the chunk bytes are identical and a publisher's whole
  media path is one ``transport.write`` of precomputed bytes. The bytes use 128-byte
  chunks, as Flash Player and ffmpeg publish them, so the server pays the full
  per-chunk cost.
* One pacing task serves all publishers on a 5 ms tick instead of one timer per
  message; how late each message went out (against its FLV timestamp) is measured and
  reported, so a load generator that could not keep up is visible rather than silently
  turning into a lower load.
* Players parse with the sans-I/O core (they must: acknowledgements and pings are
  protocol duties) but only count what arrives.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.procstat import cpu_delta, cpu_sample, rss_bytes
from bench.testkit.media import read_flv_tags
from rtmp import messages as m
from rtmp.chunk_writer import ChunkWriter
from rtmp.client import RtmpClient
from rtmp.connection import CSID_AUDIO, CSID_VIDEO
from rtmp.events import MediaReceived
from rtmp.messages import Message

TICK = 0.005
CHUNK = 128
CONNECT_CONCURRENCY = 10


@dataclass(slots=True)
class Schedule:
    """The messages every publisher sends: due time (s) and pre-chunked bytes."""

    due: list[float]
    wire: list[list[bytes]]  # one write per element: the whole message, or each chunk
    is_video: list[bool]
    payload_len: list[int]

    @property
    def video_count(self) -> int:
        return sum(self.is_video)


def split_chunks(wire: bytes, length: int) -> list[bytes]:
    """One message's chunks, each with its header (128-byte chunks, 1-byte type-3 headers,
    timestamps below 0xFFFFFF so no extended timestamp)."""
    n_chunks = max(1, -(-length // CHUNK))
    first = len(wire) - length - (n_chunks - 1) + min(CHUNK, length)
    pieces = [wire[:first]]
    pieces += [wire[i : i + 1 + CHUNK] for i in range(first, len(wire), 1 + CHUNK)]
    return pieces


def build_schedule(flv: Path, seconds: float, stream_id: int, chunkwise: bool = False) -> Schedule:
    """Loop the FLV's audio/video tags to ``seconds`` and chunk them at 128 bytes.

    Sequence headers (AVC/AAC config) go out once, at the start, as an encoder does;
    each further loop shifts the timestamps by the clip length so they keep rising.
    ``chunkwise`` sends every chunk with its own write (asyncio sets TCP_NODELAY, so
    each becomes its own segment): the pattern the gateway's read rest is made for.
    """
    tags = [t for t in read_flv_tags(flv) if t.type_id in (m.AUDIO, m.VIDEO)]
    if not tags:
        raise SystemExit(f"{flv}: no audio/video tags")

    def is_config(type_id: int, body: bytes) -> bool:
        if type_id == m.VIDEO:
            return len(body) > 1 and body[0] & 0x0F == 7 and body[1] == 0
        return len(body) > 1 and body[0] >> 4 == 10 and body[1] == 0

    video_ts = [t.timestamp for t in tags if t.type_id == m.VIDEO]
    frame_ms = (video_ts[-1] - video_ts[0]) / max(1, len(video_ts) - 1)
    clip_ms = max(t.timestamp for t in tags) + round(frame_ms)
    limit_ms = seconds * 1000
    writer = ChunkWriter()  # default 128-byte chunks, never changed
    sched = Schedule([], [], [], [])
    loop = 0
    while True:
        base = loop * clip_ms
        for tag in tags:
            if loop and is_config(tag.type_id, tag.body):
                continue
            ts = base + tag.timestamp
            if ts >= limit_ms:
                return sched
            csid = CSID_VIDEO if tag.type_id == m.VIDEO else CSID_AUDIO
            sched.due.append(ts / 1000)
            wire = writer.write(Message(tag.type_id, stream_id, ts, tag.body, csid))
            sched.wire.append(split_chunks(wire, len(tag.body)) if chunkwise else [wire])
            sched.is_video.append(tag.type_id == m.VIDEO)
            sched.payload_len.append(len(tag.body))
        loop += 1


@dataclass
class Endpoint:
    host: str
    port: int
    app: str
    tc_url: str
    name: str
    token: str | None


def parse_url(url: str) -> Endpoint:
    """``rtmp://h:p/app/name?token=T`` -> connect to app with T (Flash puts it in connect)."""
    parts = urlsplit(url)
    app, _, name = parts.path.lstrip("/").partition("/")
    token = parse_qs(parts.query).get("token", [None])[0]
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 1935
    return Endpoint(host, port, app, f"rtmp://{host}:{port}/{app}", name, token)


@dataclass
class Pair:
    index: int
    publish: Endpoint
    play: Endpoint
    offset: float = 0.0
    publisher: RtmpClient | None = None
    player: RtmpClient | None = None
    pub_stream: int = 0
    next_index: int = 0
    sent_video: int = 0
    sent_video_at_play: int = 0
    sent_video_bytes: int = 0
    sent_audio: int = 0
    recv_video: int = 0
    recv_audio: int = 0
    recv_video_bytes: int = 0
    max_write_buffer: int = 0
    errors: list[str] = field(default_factory=list)

    def on_media(self, event: MediaReceived) -> None:
        if event.type_id == m.VIDEO:
            self.recv_video += 1
            self.recv_video_bytes += len(event.payload)
        else:
            self.recv_audio += 1


async def open_client(ep: Endpoint, **kwargs: Any) -> RtmpClient:
    client = await RtmpClient.open(ep.host, ep.port, **kwargs)
    # Flash sends connect only after S2. (An earlier RtmpClient wrote it straight after
    # C0+C1; nginx-rtmp then read it as part of C2 and closed the connection.)
    await client.wait_for(lambda: client.handshake)
    extra = (ep.token,) if ep.token else ()
    result = await client.connect(ep.app, ep.tc_url, *extra)
    if result.error:
        raise RuntimeError(f"connect refused: {result.args}")
    return client


async def start_pair(pair: Pair) -> None:
    # The player first: then every message the publisher sends is owed to the player,
    # and "no drops" means exactly "received == sent".
    player = await open_client(pair.play, on_media=pair.on_media)
    sid = await player.create_stream()
    player.play(sid, pair.play.name)
    await player.wait_status("NetStream.Play.Start")
    pair.player = player
    pair.sent_video_at_play = pair.sent_video
    publisher = await open_client(pair.publish, on_media=lambda ev: None)
    pair.pub_stream = await publisher.create_stream()
    publisher.publish(pair.pub_stream, pair.publish.name)
    await publisher.wait_status("NetStream.Publish.Start")
    pair.publisher = publisher


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pace(pairs: list[Pair], schedules: dict[int, Schedule], lags: list[float]) -> float:
    """Send every publisher's messages on time; return when the last one is out."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    active = list(pairs)
    while active:
        now = loop.time() - t0
        still: list[Pair] = []
        for pair in active:
            sched = schedules[pair.pub_stream]
            publisher = pair.publisher
            assert publisher is not None and publisher.transport is not None
            transport = publisher.transport
            due, wire, is_video, plen = sched.due, sched.wire, sched.is_video, sched.payload_len
            i = pair.next_index
            n = len(due)
            offset = pair.offset
            while i < n and due[i] + offset <= now:
                if transport.is_closing():
                    pair.errors.append("publisher connection closed")
                    i = n
                    break
                for piece in wire[i]:
                    transport.write(piece)
                lags.append(now - (due[i] + offset))
                if is_video[i]:
                    pair.sent_video += 1
                    pair.sent_video_bytes += plen[i]
                else:
                    pair.sent_audio += 1
                i += 1
            pair.next_index = i
            buffered = transport.get_write_buffer_size()
            if buffered > pair.max_write_buffer:
                pair.max_write_buffer = buffered
            if i < n:
                still.append(pair)
        active = still
        if active:
            # Sleep to the next tick boundary, not a fixed TICK: the loop's own overrun
            # then does not accumulate into ever-later sends.
            elapsed = loop.time() - t0
            await asyncio.sleep(TICK - (elapsed % TICK))
    return loop.time()


async def drain(pairs: list[Pair], timeout: float) -> None:
    """Wait until every player has what its publisher sent, or nothing moves for 1 s."""
    deadline = time.monotonic() + timeout
    last = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        got = sum(p.recv_video for p in pairs)
        if all(p.recv_video >= p.sent_video - p.sent_video_at_play for p in pairs):
            return
        if got != last:
            last = got
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        await asyncio.sleep(0.05)


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    server_pid = int(plan["server_pid"])
    seconds = float(plan["seconds"])
    flv = Path(plan["flv"])
    spread = float(plan.get("start_spread", 1.0))
    pairs = [
        Pair(i, parse_url(p["publish"]), parse_url(p["play"])) for i, p in enumerate(plan["pairs"])
    ]
    n = len(pairs)
    for pair in pairs:
        # Stagger the publishers across ``spread`` seconds: 50 cameras are not in phase,
        # and 50 keyframes written in the same millisecond would measure a burst.
        pair.offset = spread * pair.index / n

    result: dict[str, Any] = {
        "pairs": n,
        "seconds": seconds,
        "chunkwise": bool(plan.get("chunkwise")),
    }
    rss_before = rss_bytes(server_pid)
    t_connect = time.monotonic()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def guarded(pair: Pair) -> None:
        async with sem:
            try:
                await start_pair(pair)
            except Exception as exc:  # reported per pair, the run goes on
                pair.errors.append(f"setup: {exc!r}")

    await asyncio.gather(*(guarded(p) for p in pairs))
    ready = [p for p in pairs if p.publisher is not None and p.player is not None]
    result["setup_seconds"] = time.monotonic() - t_connect
    result["setup_failed"] = n - len(ready)
    await asyncio.sleep(1.0)  # let the server settle before the memory sample
    rss_connected = rss_bytes(server_pid)

    schedules: dict[int, Schedule] = {}
    for pair in ready:
        if pair.pub_stream not in schedules:
            schedules[pair.pub_stream] = build_schedule(
                flv, seconds, pair.pub_stream, bool(plan.get("chunkwise"))
            )

    lags: list[float] = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = cpu_sample(server_pid, time.monotonic())
    await pace(ready, schedules, lags)
    cpu1 = cpu_sample(server_pid, time.monotonic())
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    rss_streaming = rss_bytes(server_pid)
    await drain(ready, timeout=10.0)

    window = cpu1.wall - cpu0.wall
    server_cpu = cpu_delta(cpu0, cpu1)
    conns = 2 * len(ready)
    missing = [max(0, p.sent_video - p.sent_video_at_play - p.recv_video) for p in ready]
    extra = [max(0, p.recv_video - (p.sent_video - p.sent_video_at_play)) for p in ready]
    sched0 = next(iter(schedules.values()), None)
    result.update(
        {
            "connections": conns,
            "window_seconds": window,
            "server_cpu_seconds": server_cpu,
            "server_cpu_ticks_seconds": cpu1.total - cpu0.total,
            "server_cpu_percent_of_core": 100 * server_cpu / window if window else 0.0,
            "server_cpu_ms_per_connection_second": 1000 * server_cpu / window / conns
            if window and conns
            else 0.0,
            "rss_before_bytes": rss_before,
            "rss_connected_bytes": rss_connected,
            "rss_streaming_bytes": rss_streaming,
            "rss_per_connection_bytes": (rss_connected - rss_before) / conns if conns else 0.0,
            "rss_streaming_per_connection_bytes": (rss_streaming - rss_before) / conns
            if conns
            else 0.0,
            "video_messages_per_publisher": sched0.video_count if sched0 else 0,
            "video_sent": sum(p.sent_video for p in ready),
            "video_received": sum(p.recv_video for p in ready),
            "video_bytes_sent": sum(p.sent_video_bytes for p in ready),
            "video_bytes_received": sum(p.recv_video_bytes for p in ready),
            "audio_sent": sum(p.sent_audio for p in ready),
            "audio_received": sum(p.recv_audio for p in ready),
            # Not a drop criterion: the gateway holds back audio that precedes a player's
            # first video keyframe (gateway/media.py, so players start in sync), which is
            # one AAC frame per player here; nginx-rtmp forwards it.
            "audio_missing_total": sum(max(0, p.sent_audio - p.recv_audio) for p in ready),
            "video_missing_total": sum(missing),
            "players_missing_video": sum(1 for x in missing if x),
            "video_extra_total": sum(extra),
            "max_publisher_write_buffer_bytes": max((p.max_write_buffer for p in ready), default=0),
            "send_lag_ms_p50": 1000 * percentile(lags, 0.50),
            "send_lag_ms_p99": 1000 * percentile(lags, 0.99),
            "send_lag_ms_max": 1000 * max(lags, default=0.0),
            "loadgen_cpu_seconds": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "errors": [f"pair {p.index}: {e}" for p in pairs for e in p.errors][:20],
        }
    )
    result["loadgen_cpu_percent_of_core"] = (
        100 * result["loadgen_cpu_seconds"] / window if window else 0.0
    )
    closers = [c.close() for p in pairs for c in (p.publisher, p.player) if c is not None]
    await asyncio.gather(*closers, return_exceptions=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.loadgen PLAN.json", file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    result = asyncio.run(run(plan))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

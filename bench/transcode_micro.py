"""Micro-benchmark: gateway.transcode against the ffmpeg command line doing the same job.

Two jobs, each 10 s of media:

* ``flash->webrtc``: Spark 640x480@15 + Speex 16 kHz (as Flash Player's camera and
  microphone publish) -> VP8 (libvpx realtime, cpu-used 8, CBR 500k) + Opus 48 kHz.
* ``webrtc->flash``: VP8 640x480@30 + Opus stereo (as a browser publishes) -> H.264
  (libx264 veryfast, zerolatency, baseline, 500k VBV) + AAC 44.1 kHz.

The gateway side gets the source as ready-made units (demuxed before the clock starts)
and runs a real Transcoder on an asyncio loop: units pushed into a PublishedStream, the
worker thread decoding/encoding, results pushed into the output stream. Its cost is the
process CPU time (``time.process_time``: all threads, user + system). The yardstick is
Debian's ``/usr/bin/ffmpeg`` with the same codecs and settings, one thread per codec,
writing to the null muxer; its cost is ``RUSAGE_CHILDREN``. Both report CPU seconds per
media second; the ratio is gateway / ffmpeg. Each side runs ``--runs`` times and the
median counts.

Caveats: Debian's ffmpeg links its own libvpx/x264/opus builds (possibly other versions
than PyAV's bundled ones), and the ffmpeg side also demuxes its input file. Another
benchmark running on the machine skews both sides; the script says so when it sees one.

Run: ``.venv/bin/python -m bench.transcode_micro [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import av

from gateway.media import AUDIO, VIDEO, AudioParams, MediaUnit, PublishedStream
from gateway.transcode import TargetFormat, Transcoder
from rtmp.flv import audio_unit, video_unit

OUT_DIR = Path(__file__).resolve().parent / "out"
SECONDS = 10
FFMPEG = "/usr/bin/ffmpeg"


@dataclass(frozen=True)
class Job:
    name: str
    source: Path
    make: list[str]  # ffmpeg arguments producing the source file
    target: TargetFormat
    ffmpeg_out: list[str]  # ffmpeg arguments for the equivalent transcode


def _lavfi(size: str, fps: int, rate: int) -> list[str]:
    return [
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}",
        "-t", str(SECONDS),
    ]  # fmt: skip


SPARK_SPEEX_SOURCE = [
    *_lavfi("640x480", 15, 16000),
    "-c:v", "flv1", "-g", "15", "-b:v", "500k",
    "-c:a", "libspeex", "-ar", "16000", "-ac", "1",
    "-f", "flv",
]  # fmt: skip
TO_VP8_OPUS = [  # what gateway.transcode configures for VP8 + Opus
    "-threads", "1",
    "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-lag-in-frames", "0",
    "-auto-alt-ref", "0", "-error-resilient", "default", "-max-intra-rate", "300",
    "-b:v", "500k", "-minrate", "500k", "-maxrate", "500k", "-bufsize", "500k", "-g", "45",
    "-c:a", "libopus", "-b:a", "32k", "-ar", "16000", "-ac", "1",  # Speex's rate, as the gateway
    "-application", "voip", "-frame_duration", "20",
]  # fmt: skip
VP8_OPUS_SOURCE = [
    *_lavfi("640x480", 30, 48000),
    "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M", "-g", "90",
    "-c:a", "libopus", "-b:a", "64k", "-ac", "2",
    "-f", "webm",
]  # fmt: skip
TO_H264_AAC = [  # what gateway.transcode configures for H.264 + AAC
    "-threads", "1",
    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
    "-profile:v", "baseline", "-bf", "0", "-forced-idr", "1",
    "-b:v", "500k", "-maxrate", "500k", "-bufsize", "500k",
    "-x264-params", "repeat-headers=1:scenecut=0", "-g", "60",
    "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2",  # Opus's rate, as the gateway
]  # fmt: skip

JOBS = [
    Job(
        "flash->webrtc",
        OUT_DIR / "spark640x480p15_speex_10s.flv",
        SPARK_SPEEX_SOURCE,
        TargetFormat("vp8", "opus", video_bitrate=500_000, audio_bitrate=32_000),
        TO_VP8_OPUS,
    ),
    Job(
        "webrtc->flash",
        OUT_DIR / "vp8_640x480p30_opus_10s.webm",
        VP8_OPUS_SOURCE,
        TargetFormat("h264", "aac", video_bitrate=500_000, audio_bitrate=32_000),
        TO_H264_AAC,
    ),
]


def ensure_source(job: Job) -> Path:
    if job.source.exists() and job.source.stat().st_size > 0:
        return job.source
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = job.source.with_name("tmp-" + job.source.name)
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *job.make, str(tmp)]
    subprocess.run(cmd, check=True, timeout=300)
    tmp.rename(job.source)
    return job.source


def load_units(path: Path) -> list[MediaUnit]:
    """The source as the front-ends would deliver it: FLV tags or WebRTC packets."""
    units: list[MediaUnit] = []
    if path.suffix == ".flv":
        from bench.testkit.media import read_flv_tags

        for tag in read_flv_tags(path):
            if tag.type_id == 9:
                units.append(video_unit(tag.body, tag.timestamp))
            elif tag.type_id == 8:
                units.append(audio_unit(tag.body, tag.timestamp))
        return units
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue
            ms = int(packet.pts * packet.time_base * 1000)
            if packet.stream.type == "video":
                units.append(MediaUnit(VIDEO, "vp8", ms, bytes(packet), bool(packet.is_keyframe)))
            else:
                params = AudioParams(sample_rate=48000, channels=2)
                units.append(MediaUnit(AUDIO, "opus", max(0, ms), bytes(packet), audio=params))
    units.sort(key=lambda u: (u.timestamp, u.kind != VIDEO))
    return units


class _Sink:
    def __init__(self) -> None:
        self.units = 0
        self.bytes = 0

    def deliver(self, unit: MediaUnit) -> bool:
        self.units += 1
        self.bytes += len(unit.payload)
        return True

    def stream_started(self, stream: PublishedStream) -> None:
        pass

    def stream_stopped(self, stream: PublishedStream) -> None:
        pass


async def _gateway_run(units: list[MediaUnit], target: TargetFormat) -> tuple[float, float, str]:
    source = PublishedStream("bench")
    source.start("rtmp")
    transcoder = Transcoder(source, target)
    sink = _Sink()
    transcoder.output.add_receiver(sink)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for unit in units:
        source.push(unit)
        while transcoder.pending() > 16:
            await asyncio.sleep(0.001)
    while transcoder.pending():
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stats = transcoder.stats
    transcoder.close()
    note = (
        f"out {stats.video_out}v/{stats.audio_out}a units, {sink.bytes * 8 / SECONDS / 1000:.0f}"
        f" kbit/s, decode {stats.decode_seconds:.2f}s encode {stats.encode_seconds:.2f}s,"
        f" dropped {stats.dropped}, errors {stats.decode_errors + stats.encode_errors}"
    )
    return cpu, wall, note


def _ffmpeg_run(job: Job) -> tuple[float, float]:
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1"]
    cmd += ["-i", str(job.source), *job.ffmpeg_out, "-f", "null", "-"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=300)
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _other_benchmark_running() -> bool:
    found = subprocess.run(["pgrep", "-f", "bench/run.py"], capture_output=True, check=False)
    return bool(found.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if _other_benchmark_running():
        print("warning: bench/run.py is running; numbers are skewed by its load")
    print(f"{SECONDS} s of media per run, median of {args.runs} runs; CPU s per media s")
    for job in JOBS:
        units = load_units(ensure_source(job))
        gw = [asyncio.run(_gateway_run(units, job.target)) for _ in range(args.runs)]
        ff = [_ffmpeg_run(job) for _ in range(args.runs)]
        gw_cpu = statistics.median(r[0] for r in gw) / SECONDS
        gw_wall = statistics.median(r[1] for r in gw)
        ff_cpu = statistics.median(r[0] for r in ff) / SECONDS
        ff_wall = statistics.median(r[1] for r in ff)
        print(f"\n{job.name}: {len(units)} source units")
        print(f"  gateway (PyAV) {gw_cpu:.4f} CPU s/s  (wall {gw_wall:.2f} s)  {gw[-1][2]}")
        print(f"  ffmpeg CLI     {ff_cpu:.4f} CPU s/s  (wall {ff_wall:.2f} s)")
        print(f"  ratio gateway/ffmpeg: {gw_cpu / ff_cpu:.2f}x")


if __name__ == "__main__":
    main()

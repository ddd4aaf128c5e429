"""Test media made on the fly with ffmpeg (no committed media files) and analysed with PyAV."""

from __future__ import annotations

import array
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import av

# (video args, audio args) as Flash Player 11's camera/microphone or an encoder sends them
PROFILES: dict[str, tuple[list[str], list[str]]] = {
    "spark_speex": (
        ["-c:v", "flv1", "-g", "15", "-b:v", "300k"],
        ["-c:a", "libspeex", "-ar", "16000", "-ac", "1"],
    ),
    "spark_nellymoser": (
        ["-c:v", "flv1", "-g", "15", "-b:v", "300k"],
        ["-c:a", "nellymoser", "-ar", "16000", "-ac", "1"],
    ),
    "h264_aac": (
        [
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "30",
            "-b:v",
            "500k",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "veryfast",
        ],
        ["-c:a", "aac", "-ar", "44100", "-ac", "2", "-b:a", "96k"],
    ),
    "h264_speex": (
        [
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "15",
            "-b:v",
            "400k",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "veryfast",
        ],
        ["-c:a", "libspeex", "-ar", "16000", "-ac", "1"],
    ),
}


def ffmpeg_publish(
    path: Path, url: str, *output_args: str, loop: bool = False
) -> subprocess.Popen[bytes]:
    """ffmpeg sending an FLV in real time to an RTMP URL (``-c copy``), as a Flash
    camera would; ``loop`` replays it until killed; ``output_args`` go before ``-f flv``."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(path), "-c", "copy", *output_args, "-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_flv(
    path: Path,
    profile: str,
    *,
    seconds: float = 6.0,
    size: str = "320x240",
    rate: int = 15,
    video_bitrate: str | None = None,
) -> Path:
    vargs, aargs = PROFILES[profile]
    if video_bitrate is not None:
        # testsrc compresses to almost nothing: noise makes the encoder use the bitrate
        vargs = [
            *vargs,
            "-vf",
            "noise=alls=30:allf=t",
            "-b:v",
            video_bitrate,
            "-maxrate",
            video_bitrate,
            "-bufsize",
            "1M",
        ]
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        *vargs,
        *aargs,
        "-f",
        "flv",
        str(path),
    ]
    subprocess.run(cmd, check=True, timeout=120)
    return path


@dataclass
class Analysis:
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int = 0
    height: int = 0
    video_frames: int = 0
    audio_frames: int = 0
    audio_rms: float = 0.0
    first_video_keyframe: bool = False
    decode_errors: list[str] = field(default_factory=list)


def analyse(path: Path) -> Analysis:
    """Decode every frame; report sizes, counts and the loudness of the audio."""
    result = Analysis()
    squares = 0.0
    samples = 0
    with av.open(str(path)) as container:
        vstreams = container.streams.video
        astreams = container.streams.audio
        if vstreams:
            result.video_codec = vstreams[0].codec_context.name
        if astreams:
            result.audio_codec = astreams[0].codec_context.name
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        first_video = True
        for packet in container.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video" and first_video:
                result.first_video_keyframe = bool(packet.is_keyframe)
                first_video = False
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # counted, the test decides
                result.decode_errors.append(str(exc))
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    result.video_frames += 1
                    result.width, result.height = frame.width, frame.height
                elif isinstance(frame, av.AudioFrame):
                    result.audio_frames += 1
                    for out in resampler.resample(frame):
                        pcm = array.array("h", bytes(out.planes[0])[: out.samples * 2])
                        squares += sum(s * s for s in pcm)
                        samples += len(pcm)
    result.audio_rms = math.sqrt(squares / samples) if samples else 0.0
    return result


@dataclass
class FlvTag:
    type_id: int  # 8 audio, 9 video, 18 script data
    timestamp: int
    body: bytes


def read_flv_tags(path: Path) -> list[FlvTag]:
    """Split an FLV file into tags (FLV spec E.3), the bodies RTMP carries as messages."""
    data = path.read_bytes()
    if data[:3] != b"FLV":
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    tags = []
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        if len(body) < size:
            break
        tags.append(FlvTag(type_id, ts, body))
        pos += 11 + size + 4
    return tags

"""Benchmark media: H.264/AAC FLV files made with ffmpeg once and cached in bench/out/.

x264 in ABR mode undershoots badly on synthetic test patterns (testsrc2 compresses to a
fraction of the target), which would make the "4 Mbit/s" relay a 1 Mbit/s one and the
server look cheap. ``nal-hrd=cbr`` makes x264 pad every frame with filler NAL units up
to the HRD rate, so the stream really is 4 Mbit/s on the wire; the relay treats the
bytes as opaque either way.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    size: str
    fps: int
    video_kbps: int
    audio_kbps: int
    gop: int


RELAY_720P = Profile("720p30", "1280x720", 30, 3900, 128, 60)
PAIR_360P = Profile("360p30", "640x360", 30, 880, 96, 60)


def flv_path(profile: Profile, seconds: float) -> Path:
    return OUT_DIR / f"{profile.name}_{profile.video_kbps}k_{seconds:g}s.flv"


def make_flv(profile: Profile, seconds: float) -> Path:
    """The cached FLV for ``profile`` and ``seconds``, encoded on first use."""
    path = flv_path(profile, seconds)
    if path.exists() and path.stat().st_size > 0:
        return path
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flv")
    v = f"{profile.video_kbps}k"
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={profile.size}:rate={profile.fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", f"{seconds:g}",
        # Constrained baseline without B-frames: what Flash Player 11's camera sends.
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", str(profile.gop),
        "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-b:v", v, "-minrate", v, "-maxrate", v, "-bufsize", v, "-x264-params", "nal-hrd=cbr",
        "-c:a", "aac", "-b:a", f"{profile.audio_kbps}k", "-ar", "44100", "-ac", "2",
        "-f", "flv", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600)
    tmp.rename(path)
    return path


@dataclass(slots=True)
class FlvTotals:
    """Tag counts of an FLV stream; ``*_frames`` count coded frames only.

    Frames are what a comparison must use: a remuxing player (ffmpeg ``-c copy -f flv``)
    writes the sequence headers from its own extradata and an AVC end-of-sequence tag
    only if it is stopped cleanly, so whole-tag counts differ by one or two for reasons
    that have nothing to do with the relay.
    """

    video_tags: int = 0
    audio_tags: int = 0
    data_tags: int = 0
    video_bytes: int = 0
    audio_bytes: int = 0
    video_frames: int = 0
    audio_frames: int = 0
    video_frame_bytes: int = 0
    audio_frame_bytes: int = 0
    stream_bytes: int = 0


def flv_totals(path: Path) -> FlvTotals:
    counter = FlvCounter()
    counter.feed(path.read_bytes())
    return counter.totals


class FlvCounter:
    """Counts the tags of an FLV byte stream as it arrives (FLV spec E.2, E.3).

    Used on a player's ``-f flv`` output: tag counts and payload bytes show whether the
    relay delivered everything (a relay that drops frames would look cheap).
    """

    def __init__(self) -> None:
        self.totals = FlvTotals()
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> None:
        t = self.totals
        t.stream_bytes += len(data)
        buf = self._buf
        buf += data
        pos = 0
        if not self._header_done:
            if len(buf) < 9:
                return
            pos = int.from_bytes(buf[5:9], "big") + 4  # header, PreviousTagSize0
            if len(buf) < pos:
                return
            self._header_done = True
        n = len(buf)
        while pos + 11 <= n:
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            end = pos + 11 + size + 4
            if end > n:
                break
            kind = buf[pos] & 0x1F
            b0 = buf[pos + 11] if size else 0
            b1 = buf[pos + 12] if size > 1 else 0
            if kind == 9:
                t.video_tags += 1
                t.video_bytes += size
                # AVC (codec 7) NALU packet (type 1), or any frame of another codec
                # (frame type 5 is a command frame, not a picture).
                if (b0 & 0x0F == 7 and b1 == 1) or (b0 & 0x0F != 7 and b0 >> 4 != 5):
                    t.video_frames += 1
                    t.video_frame_bytes += size
            elif kind == 8:
                t.audio_tags += 1
                t.audio_bytes += size
                if b0 >> 4 != 10 or b1 == 1:  # AAC raw frame, or any non-AAC packet
                    t.audio_frames += 1
                    t.audio_frame_bytes += size
            else:
                t.data_tags += 1
            pos = end
        del buf[:pos]

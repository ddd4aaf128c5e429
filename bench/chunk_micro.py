"""Micro-benchmark for rtmp.chunk.ChunkReader on a realistic publisher stream.

Builds 10 s of a 4 Mbit/s stream the way ffmpeg/Flash publish it with the default
128-byte chunk size (spec 5.4.1): H.264-sized video messages (5-60 KB, 30 fps) on
chunk stream 6 and small AAC-sized audio messages (64-400 B, ~43/s) on chunk stream 4.

Variants:

* ``whole``       -- messages are never interleaved (what ffmpeg does);
* ``interleaved`` -- the chunks of audio messages are slotted in between the chunks of
                     the video message being sent (what Flash/FMS may do).

The stream is fed to ChunkReader in 64 KiB pieces; the script reports microseconds
per 128-byte chunk and MB/s.  Run: ``.venv/bin/python -m bench.chunk_micro``.
"""

from __future__ import annotations

import random
import time

from rtmp.chunk import ChunkReader
from rtmp.chunk_writer import ChunkWriter
from rtmp.messages import AUDIO, VIDEO, Message

SECONDS = 10
BITRATE = 4_000_000
FPS = 30
AUDIO_RATE = 44100 / 1024  # AAC frames per second, ~43
CHUNK = 128
PIECE = 64 * 1024
VIDEO_CSID = 6
AUDIO_CSID = 4
STREAM_ID = 1


def make_messages(rng: random.Random) -> tuple[list[Message], list[Message]]:
    """Video and audio messages (timestamp-ordered each) totalling ~BITRATE."""
    audio: list[Message] = []
    n_audio = int(SECONDS * AUDIO_RATE)
    for i in range(n_audio):
        size = rng.randint(64, 400)
        audio.append(Message(AUDIO, STREAM_ID, round(i * 1000 / AUDIO_RATE), rng.randbytes(size)))
    audio_bytes = sum(len(m.payload) for m in audio)
    video_budget = BITRATE // 8 * SECONDS - audio_bytes
    n_video = SECONDS * FPS
    # Keyframe every 2 s at 60 KB, the rest scaled into 5..60 KB to meet the budget.
    weights = [60_000 if i % (2 * FPS) == 0 else rng.randint(5_000, 30_000) for i in range(n_video)]
    key_total = sum(w for w in weights if w == 60_000)
    scale = (video_budget - key_total) / (sum(weights) - key_total)
    video: list[Message] = []
    for i, w in enumerate(weights):
        size = w if w == 60_000 else max(5_000, min(60_000, int(w * scale)))
        video.append(Message(VIDEO, STREAM_ID, round(i * 1000 / FPS), rng.randbytes(size)))
    for m in audio:
        m.csid = AUDIO_CSID
    for m in video:
        m.csid = VIDEO_CSID
    return video, audio


def split_chunks(wire: bytes, length: int) -> list[bytes]:
    """Split one message's chunks (1-byte basic headers, no extended timestamps)."""
    n_chunks = max(1, -(-length // CHUNK))
    first_hdr = len(wire) - length - (n_chunks - 1)
    chunks = [wire[: first_hdr + min(CHUNK, length)]]
    pos = len(chunks[0])
    while pos < len(wire):
        chunks.append(wire[pos : pos + 1 + CHUNK])
        pos += 1 + CHUNK
    return chunks


def build_whole(video: list[Message], audio: list[Message]) -> bytes:
    writer = ChunkWriter()
    ordered = sorted(video + audio, key=lambda m: (m.timestamp, m.csid))
    return writer.write_many(ordered)


def build_interleaved(video: list[Message], audio: list[Message]) -> bytes:
    """Audio chunks due during a video frame are spread across that frame's chunks."""
    writer = ChunkWriter()
    out: list[bytes] = []
    ai = 0
    for v in video:
        frame_end = v.timestamp + 1000 / FPS
        due: list[bytes] = []
        while ai < len(audio) and audio[ai].timestamp < frame_end:
            a = audio[ai]
            due.extend(split_chunks(writer.write(a), len(a.payload)))
            ai += 1
        vchunks = split_chunks(writer.write(v), len(v.payload))
        # Spread the audio chunks evenly between video chunks (never before the first
        # video chunk, so the video message really is interrupted).
        step = max(1, len(vchunks) // (len(due) + 1))
        slots: dict[int, list[bytes]] = {}
        for k, c in enumerate(due):
            slots.setdefault(min(len(vchunks) - 1, (k + 1) * step), []).append(c)
        for i, c in enumerate(vchunks):
            out.extend(slots.get(i, ()))
            out.append(c)
    for a in audio[ai:]:
        out.append(writer.write(a))
    return b"".join(out)


def count_chunks(msgs: list[Message]) -> int:
    return sum(max(1, -(-len(m.payload) // CHUNK)) for m in msgs)


def verify(wire: bytes, video: list[Message], audio: list[Message]) -> None:
    """Untimed: the parse must reproduce both message sequences exactly."""
    reader = ChunkReader()
    got: list[Message] = []
    for i in range(0, len(wire), PIECE):
        got.extend(reader.feed(wire[i : i + PIECE]))
    if [m for m in got if m.csid == VIDEO_CSID] != video:
        raise SystemExit("video messages differ")
    if [m for m in got if m.csid == AUDIO_CSID] != audio:
        raise SystemExit("audio messages differ")


def run(wire: bytes, expected: int, repeat: int = 7) -> float:
    """Best wall time of ``repeat`` full parses, checking the message count."""
    pieces = [wire[i : i + PIECE] for i in range(0, len(wire), PIECE)]
    best = float("inf")
    for _ in range(repeat):
        reader = ChunkReader()
        got = 0
        t0 = time.perf_counter()
        for piece in pieces:
            got += len(reader.feed(piece))
        elapsed = time.perf_counter() - t0
        if got != expected:
            raise SystemExit(f"parsed {got} messages, expected {expected}")
        best = min(best, elapsed)
    return best


def main() -> None:
    rng = random.Random(20240611)
    video, audio = make_messages(rng)
    chunks = count_chunks(video) + count_chunks(audio)
    n_msgs = len(video) + len(audio)
    print(
        f"stream: {SECONDS} s, {len(video)} video + {len(audio)} audio messages, "
        f"{chunks} chunks of {CHUNK} B"
    )
    for name, wire in (
        ("whole", build_whole(video, audio)),
        ("interleaved", build_interleaved(video, audio)),
    ):
        verify(wire, video, audio)
        elapsed = run(wire, n_msgs)
        mbps = len(wire) / elapsed / 1e6
        print(
            f"{name:12s} {len(wire) / 1e6:6.2f} MB  {elapsed * 1e3:7.2f} ms  "
            f"{elapsed / chunks * 1e6:6.3f} us/chunk  {mbps:8.1f} MB/s  "
            f"({len(wire) * 8 / SECONDS / 1e6:.2f} Mbit/s stream, "
            f"{elapsed / SECONDS * 100:.3f} % of one core)"
        )


if __name__ == "__main__":
    main()

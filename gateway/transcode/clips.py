"""Short clips for the telephone leg's announcements: any audio file PyAV reads (the
speech synthesizer's WAV) → the telephone codecs' bytes (docs/phone.md, "Prompts").

Here, not in ``gateway/phone/``, because the gateway has one place that transcodes
(docs/architecture.md). Runs once per clip at start-up, off the event loop.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.codec.context import CodecContext

from gateway.transcode.formats import AUDIO_ENCODERS, AUDIO_RATES

PHONE_CODECS = ("alaw", "mulaw", "g722")


def decode_to_pcm(data: bytes, rate: int) -> bytes:
    """Mono signed 16-bit PCM at ``rate`` of an audio file's first audio stream."""
    resampler = AudioResampler(format="s16", layout="mono", rate=rate)
    out = bytearray()
    with av.open(io.BytesIO(data), "r") as container:
        for frame in container.decode(audio=0):
            for converted in resampler.resample(frame):
                out += bytes(converted.planes[0])[: converted.samples * 2]
    for converted in resampler.resample(None):
        out += bytes(converted.planes[0])[: converted.samples * 2]
    return bytes(out)


def encode_clip(pcm: bytes, rate: int, codec: str) -> bytes:
    """Mono s16 PCM at ``rate`` → ``codec`` (``alaw``, ``mulaw``, ``g722``) as one byte
    string, resampled to the codec's rate (8 kHz, 16 kHz for G.722)."""
    if codec not in PHONE_CODECS:
        raise ValueError(f"not a telephone codec: {codec!r}")
    target = AUDIO_RATES[codec]
    if rate != target:
        resampler = AudioResampler(format="s16", layout="mono", rate=target)
        pcm = b"".join(
            bytes(f.planes[0])[: f.samples * 2]
            for f in [*resampler.resample(_frame(pcm, rate)), *resampler.resample(None)]
        )
    ctx = CodecContext.create(AUDIO_ENCODERS[codec], "w")
    assert isinstance(ctx, AudioCodecContext)
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.sample_rate = target
    ctx.time_base = Fraction(1, target)
    ctx.open()
    step = (ctx.frame_size or 160) * 2
    out = bytearray()
    for start in range(0, len(pcm), step):
        chunk = pcm[start : start + step]
        if len(chunk) < step and ctx.frame_size:
            chunk = chunk + bytes(step - len(chunk))  # G.722 encodes whole frames
        frame = _frame(chunk, target)
        frame.pts = start // 2
        for packet in ctx.encode(frame):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return bytes(out)


def _frame(pcm: bytes, rate: int) -> AudioFrame:
    frame = AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm[: (len(pcm) // 2) * 2])
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    return frame

"""aiortc as a real WHIP/WHEP client for the tests (a normal peer: it encodes and decodes).

Clients are built with an explicit empty ``iceServers`` (never aiortc's default public
STUN server) and gather on 127.0.0.1 only (``webrtc.seams.ice_hosts``), like the gateway
under ``--ice-host 127.0.0.1``.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from webrtc import seams

WIDTH, HEIGHT = 320, 240
FPS = 30
SAMPLE_RATE = 48000
SAMPLES = 960  # 20 ms

# (status, headers, body) for POST offer
Poster = Callable[[str], Awaitable[tuple[int, dict[str, str], str]]]


class PatternVideoTrack(MediaStreamTrack):
    """Moving bars, WIDTH×HEIGHT at FPS, paced in real time."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n / FPS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        # a bright bar moving over a mid-grey picture, so every frame differs
        x = (self._n * 4) % (WIDTH - 20)
        row = bytes([64] * x + [235] * 20 + [64] * (WIDTH - x - 20))
        luma = frame.planes[0]
        luma.update(row.ljust(luma.line_size, b"\x00") * HEIGHT)
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = self._n * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class SineAudioTrack(MediaStreamTrack):
    """A 440 Hz tone (or ``freq``), 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float = 440.0) -> None:
        super().__init__()
        self.freq = freq
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n * SAMPLES / SAMPLE_RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        base = self._n * SAMPLES
        wave = array.array(
            "h",
            (
                int(0.3 * 32767 * math.sin(2 * math.pi * self.freq * (base + i) / SAMPLE_RATE))
                for i in range(SAMPLES)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(wave.tobytes())
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._n += 1
        return frame


def new_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def negotiate(pc: RTCPeerConnection, post: Poster) -> tuple[int, dict[str, str], str]:
    """Create the offer (all candidates on 127.0.0.1), POST it, apply a 201's answer."""
    seams.install()
    offer = await pc.createOffer()
    with seams.ice_hosts(["127.0.0.1"]):
        await pc.setLocalDescription(offer)
    status, headers, body = await post(pc.localDescription.sdp)
    if status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return status, headers, body


async def publisher(
    post: Poster, video_codec: str | None = None, audio_freq: float = 440.0
) -> tuple[RTCPeerConnection, int, dict[str, str], str]:
    """A send-only client: moving bars and a 440 Hz tone (or ``audio_freq``)."""
    pc = new_peer()
    video = pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
    pc.addTransceiver(SineAudioTrack(audio_freq), direction="sendonly")
    if video_codec is not None:
        prefer(video, video_codec)
    status, headers, body = await negotiate(pc, post)
    return pc, status, headers, body


@dataclass
class Received:
    video: list[av.VideoFrame] = field(default_factory=list)
    audio: list[av.AudioFrame] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ended: dict[str, bool] = field(default_factory=dict)

    def audio_peak(self, last: int | None = 25) -> int:
        """The loudest sample in the last ``last`` audio frames (all with None)."""
        peak = 0
        for frame in self.audio[-last:] if last else self.audio:
            size = frame.samples * len(frame.layout.channels) * frame.format.bytes
            samples = array.array("h", bytes(frame.planes[0])[:size])
            peak = max(peak, max((abs(v) for v in samples), default=0))
        return peak


async def player(
    post: Poster, video_codec: str | None = None
) -> tuple[RTCPeerConnection, Received, int, dict[str, str], str]:
    """A receive-only client that decodes what it gets."""
    pc = new_peer()
    received = Received()
    video = pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    if video_codec is not None:
        prefer(video, video_codec)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        received.tasks.append(asyncio.ensure_future(_consume(track, received)))

    status, headers, body = await negotiate(pc, post)
    return pc, received, status, headers, body


def http_poster(http: aiohttp.ClientSession, url: str, token: str) -> Poster:
    """A WHIP/WHEP ``Poster`` over an aiohttp session, with the participant's token."""

    async def post(sdp: str) -> tuple[int, dict[str, str], str]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with http.post(url, data=sdp, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.text()

    return post


def prefer(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Offer only ``codec`` (and RTX) for video."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences(
        [c for c in caps if c.mimeType.lower() in (f"video/{codec}", "video/rtx")]
    )


async def _consume(track: MediaStreamTrack, received: Received) -> None:
    sink: list[Any] = received.video if track.kind == "video" else received.audio
    try:
        while True:
            sink.append(await track.recv())
    except MediaStreamError:
        received.ended[track.kind] = True


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def close_all(*pcs: RTCPeerConnection, received: Received | None = None) -> None:
    for pc in pcs:
        await pc.close()
    if received is not None:
        for task in received.tasks:
            task.cancel()
        await asyncio.gather(*received.tasks, return_exceptions=True)

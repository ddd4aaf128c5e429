"""A player that stops reading for seconds gets live video again when it resumes, not
the seconds it missed (issue 11, item 5): the gateway bounds what a player may be
behind live by time (player_max_lag, 1.5 s), then skips to the next keyframe, audio
with it; the publisher and the other players never wait."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtmp import messages as m
from rtmp.client import RtmpClient
from rtmp.events import MediaReceived
from tests.test_rtmp_limits import attacked

pytestmark = pytest.mark.e2e

MAX_LAG = 1.5  # player_max_lag, the default
STALL = 6.0


@dataclass
class Frame:
    arrived: float
    ts: float  # media time, seconds
    keyframe: bool


async def test_a_stalled_player_resumes_at_a_fresh_keyframe_not_at_its_backlog(
    tmp_path: Path,
) -> None:
    async with attacked(tmp_path) as (gw, bystander):
        frames: list[Frame] = []

        def on_media(event: MediaReceived) -> None:
            p = event.payload
            if event.type_id == m.VIDEO and len(p) > 1 and not (p[0] == 0x17 and p[1] == 0):
                frames.append(Frame(time.monotonic(), event.timestamp / 1000, p[0] >> 4 == 1))

        # What sits in the player's own receive buffer was delivered as far as the
        # gateway can know (acknowledged); keep it small from the first byte (the window
        # never grows past it) so the test sees what the gateway itself queues.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", gw.rtmp_port))
        _, player = await asyncio.get_running_loop().create_connection(RtmpClient, sock=raw)
        result = await player.connect(
            "consult", f"rtmp://127.0.0.1:{gw.rtmp_port}/consult", bystander.advisor_token
        )
        assert not result.error
        assert player.transport is not None
        player.on_media = on_media
        player.keep_media = False
        player.play(await player.create_stream(), "customer")
        await player.wait_for(lambda: len(frames) >= 45, timeout=20)  # ~3 s of reading
        # media time -> arrival time while reading: the player's view of "live"
        offset = min(f.arrived - f.ts for f in frames)

        t0 = time.monotonic()
        player.transport.pause_reading()
        await asyncio.sleep(STALL)
        resumed = time.monotonic()
        before = len(frames)
        player.transport.resume_reading()
        await player.wait_for(lambda: len(frames) >= before + 45, timeout=20)
        after = frames[before:]

        def behind(f: Frame) -> float:
            return f.arrived - (offset + f.ts)

        stale = [f for f in after if behind(f) > MAX_LAG + 0.5]
        fresh = [f for f in after if behind(f) <= MAX_LAG + 0.5]
        # what was on its way when the player stopped: at most the bound's worth
        span = (stale[-1].ts - stale[0].ts) if stale else 0.0
        assert span <= MAX_LAG + 0.5, (
            f"{len(stale)} stale frames ({span:.1f} s of media) after the stall"
        )
        # and then live again, starting at a keyframe
        assert fresh, "no live video after the stall"
        assert fresh[0].keyframe, "the first live frame after the stall is not a keyframe"
        assert fresh[0].arrived - resumed < 4.0  # within a GOP (2 s) and some
        # the publisher never waited: the other player kept its frame rate throughout
        assert await bystander.kept_rate_since(t0, at_least=STALL + 2) >= 0.95
        await player.close()
    assert "a receiver fell behind; dropping until the next keyframe" in gw.log()

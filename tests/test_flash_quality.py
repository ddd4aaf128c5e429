"""A Flash/RTMP customer's connection as the advisor sees it (issue 10, item 6): the
gateway counts what arrives from the customer's RTMP publish and sends the same
``quality`` events as for a WHIP customer (docs/webrtc.md), with ``stalled`` while the
connection stays open but nothing arrives, and the round trip from RTMP pings."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from bench.testkit.gwproc import GatewayProcess, flash_client
from bench.testkit.media import FlvTag
from rtmp.client import RtmpClient
from tests.test_flash_client import _publishing, h264_tags

__all__ = ["h264_tags"]


class Events:
    """The advisor's events socket, read in the background."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.seen.append(msg.json())
                self.changed.set()

    async def next_quality(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first customer ``quality`` event from now on that satisfies ``predicate``."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.seen[start:]:
                if ev.get("type") == "quality" and ev.get("role") == "customer" and predicate(ev):
                    return ev
            start = len(self.seen)
            left = deadline - time.monotonic()
            assert left > 0, f"no such quality event; saw {self.seen[-6:]}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


async def _send_in_real_time(
    client: RtmpClient, sid: int, tags: list[FlvTag], seconds: float, offset: int
) -> int:
    """Send ``tags`` again and again, paced by their timestamps, for ``seconds``; the
    timestamps continue from ``offset`` (ms). Returns the next offset."""
    length = max(t.timestamp for t in tags) + 40
    start = time.monotonic()
    base = offset
    while time.monotonic() - start < seconds:
        for tag in tags:
            due = start + (base - offset + tag.timestamp) / 1000
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client.send_media(sid, tag.type_id, base + tag.timestamp, tag.body)
            if time.monotonic() - start >= seconds:
                break
        base += length
    return base + length


async def test_flash_customer_uplink_is_measured_and_a_stall_is_reported(
    gateway: GatewayProcess, h264_tags: list[FlvTag]
) -> None:
    session = gateway.create_session()
    events = Events()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(session["advisor"]["events_url"]) as ws,
    ):
        reader = asyncio.create_task(events.read(ws))
        flash = await flash_client(gateway, session["customer"]["token"])
        try:
            sid = await _publishing(flash)
            sending = asyncio.create_task(_send_in_real_time(flash, sid, h264_tags, 7.0, 0))
            # what arrives: the file's rate (about 400 kbit/s of video and speex), the
            # round trip from the gateway's RTMP ping, nothing lost on TCP
            # the first event already carries a rate (counted from the publish on)
            first = await events.next_quality(lambda e: True, timeout=6)
            assert first["sending"] and first["kbps"] > 50, first
            flowing = await events.next_quality(
                lambda e: e["sending"] and e["kbps"] > 50 and e["rtt_ms"] is not None,
                timeout=12,
            )
            assert flowing["stalled"] is False and flowing["loss_pct"] == 0
            assert 0 <= flowing["rtt_ms"] < 1000
            assert flowing["quality"] in ("good", "fair")
            offset = await sending

            # the connection stays open, nothing arrives (an outage): stalled
            stalled = await events.next_quality(lambda e: e["stalled"], timeout=8)
            assert stalled["sending"] is True and stalled["kbps"] == 0
            assert stalled["quality"] == "poor"
            assert not flash.closed.is_set()

            # it flows again
            sending = asyncio.create_task(_send_in_real_time(flash, sid, h264_tags, 6.0, offset))
            again = await events.next_quality(
                lambda e: not e["stalled"] and e["kbps"] > 50, timeout=10
            )
            assert again["sending"] is True
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        finally:
            await flash.close()
        # the connection is gone: one last event says the customer sends nothing
        gone = await events.next_quality(lambda e: not e["sending"], timeout=8)
        assert set(gone) == {"type", "role", "sending"}
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def test_a_flash_advisor_is_not_measured_as_the_customer(
    gateway: GatewayProcess, h264_tags: list[FlvTag]
) -> None:
    session = gateway.create_session()
    events = Events()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(session["advisor"]["events_url"]) as ws,
    ):
        reader = asyncio.create_task(events.read(ws))
        flash = await flash_client(gateway, session["advisor"]["token"])
        try:
            sid = await _publishing(flash, "advisor")
            await _send_in_real_time(flash, sid, h264_tags, 4.5, 0)
        finally:
            await flash.close()
        assert not [e for e in events.seen if e.get("type") == "quality"]
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

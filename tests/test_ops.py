"""The operations monitor (issue 6): the monitor's sampling and admission as units,
/metrics and the ops API against the real gateway during a bridged consultation, and
admission refusing the next consultation under load while the running one keeps real
time."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess
from bench.testkit.media import ffmpeg_publish, make_flv
from gateway.media import AUDIO, VIDEO, MediaUnit, PublishedStream
from gateway.monitor import Monitor
from gateway.routing import CapacityRefused, Route, SinkCaps
from gateway.transcode import TranscoderStats
from tests.conftest import require_tool
from tests.test_routing import Sink

# -- units: the monitor ---------------------------------------------------------------------


@dataclass
class FakeTarget:
    video: str | None = "vp8"
    audio: str | None = None


@dataclass
class FakeSource:
    name: str = "abcdefgh123/customer"


@dataclass
class FakeTranscoder:
    number: int
    stats: TranscoderStats = field(default_factory=TranscoderStats)
    source: FakeSource = field(default_factory=FakeSource)
    target: FakeTarget = field(default_factory=FakeTarget)
    video_bitrate: int = 500_000

    def labels(self) -> dict[str, str]:
        return {"direction": "flash_to_webrtc", "kind": "video", "codec": "spark>vp8"}


class Clock:
    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self) -> float:
        return self.cpu


def test_monitor_rates_alarms_and_short_ids() -> None:
    t = FakeTranscoder(1)
    cpu = Clock()
    monitor = Monitor(lambda: [t], cores=2, cpu_seconds=cpu)
    first = monitor.sample(now=100.0)
    row = first["transcoders"][0]
    assert row["consultation"] == "abcdef"  # short ids only
    assert row["fps"] == 0 and row["alarms"] == []
    # one second: 15 frames, 60 kB, 0.1 s of work for 1 s of media
    t.stats.video_out, t.stats.bytes_out = 15, 60_000
    t.stats.busy_seconds, t.stats.video_media_seconds = 0.1, 1.0
    cpu.cpu = 0.3
    row = monitor.sample(now=101.0)["transcoders"][0]
    assert row["fps"] == 15.0
    assert row["bitrate"] == 480_000
    assert row["realtime_factor"] == 10.0
    assert row["cpu_share"] == 0.1
    assert row["alarms"] == []
    # the next second the worker needs 1.5 s of work per second of media and drops 3
    t.stats.video_out, t.stats.busy_seconds, t.stats.video_media_seconds = 30, 1.6, 2.0
    t.stats.dropped = 3
    cpu.cpu = 1.3
    sample = monitor.sample(now=102.0)
    kinds = sorted(a["kind"] for a in sample["alarms"])
    assert kinds == ["dropping", "slower_than_realtime"]
    assert "spark>vp8" in sample["alarms"][0]["transcoder"]
    assert sample["process"]["cpu_cores"] == pytest.approx(0.65)  # 1.3 s over 2 s
    assert len(monitor.history) == 3
    # a transcoder that is gone leaves the table
    monitor._transcoders = lambda: []
    assert monitor.sample(now=103.0)["transcoders"] == []


def test_admission_by_measured_load() -> None:
    cpu = Clock()
    count = {"n": 0}
    monitor = Monitor(
        lambda: [],
        cores=2,
        cpu_budget=0.5,  # 1 core
        consultation_cost=0.3,
        cpu_seconds=cpu,
        transcoding_consultations=lambda: count["n"],
    )
    monitor.sample(now=0.0)
    cpu.cpu = 0.2  # 0.2 cores busy
    monitor.sample(now=1.0)
    monitor.check_new_consultation()  # 0.2 + 0.3 <= 1.0
    assert monitor.admission()["accepting_consultations"]
    # two transcoding consultations make 0.8 cores: each costs 0.4, one more would not fit
    count["n"] = 2
    cpu.cpu = 1.0
    monitor.sample(now=2.0)
    assert monitor.load() == pytest.approx(0.5)  # (1.0 - 0.0) over 2 s
    cpu.cpu = 1.6
    monitor.sample(now=3.0)
    assert monitor.load() == pytest.approx(1.6 / 3)
    cpu.cpu = 4.0
    monitor.sample(now=5.0)  # 0.8 cores over the last 5 s: 0.4 per consultation
    assert monitor.load() == pytest.approx(0.8)
    assert monitor.consultation_cost() == pytest.approx(0.4)
    with pytest.raises(CapacityRefused):
        monitor.check_new_consultation()
    monitor.check_new_transcoder()  # still under the budget: running ones may grow
    cpu.cpu = 9.0
    monitor.sample(now=7.0)
    with pytest.raises(CapacityRefused):
        monitor.check_new_transcoder()
    admission = monitor.admission()
    assert admission["refused_consultations"] == 1
    assert admission["refused_transcoders"] == 1
    assert not admission["accepting_transcoders"]


class RefusingPool:
    def __init__(self) -> None:
        self.refuse = True
        self.acquired = 0

    def acquire(self, source: PublishedStream, target: object) -> Any:
        if self.refuse:
            raise CapacityRefused("full")
        self.acquired += 1
        return FakeOutput()

    def release(self, transcoder: Any) -> None:
        pass

    def offer_video_bitrate(self, transcoder: Any, offerer: object, bps: int | None) -> None:
        pass


class FakeOutput:
    def __init__(self) -> None:
        self.output = PublishedStream("out")

    def request_keyframe(self) -> None:
        pass

    def set_video_bitrate(self, bps: int) -> None:
        pass


def test_route_refused_for_capacity_tells_once_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.routing as routing

    now = [1000.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: now[0])
    source = PublishedStream("c/customer")
    source.start("rtmp")
    sink = Sink()
    refused: list[str] = []
    pool = RefusingPool()
    caps = SinkCaps(frozenset({"vp8"}), frozenset({"opus"}), "vp8", "opus")
    route = Route(source, sink, caps, pool, on_refused=refused.append)
    for i in range(5):
        source.push(MediaUnit(VIDEO, "spark", i * 66, b"x", keyframe=(i == 0)))
        source.push(MediaUnit(AUDIO, "speex", i * 20, b"a"))
    assert sink.units == []  # nothing undeliverable leaks through
    assert refused == ["video", "audio"]  # told once per kind
    assert route.describe()["video"] == "spark>vp8 refused (capacity)"
    # capacity returns: the next keyframe after the retry interval gets a transcoder
    pool.refuse = False
    now[0] += routing.REFUSAL_RETRY_SECONDS + 0.1
    source.push(MediaUnit(VIDEO, "spark", 400, b"y"))  # not a keyframe: no retry yet
    assert pool.acquired == 0
    source.push(MediaUnit(VIDEO, "spark", 466, b"k", keyframe=True))
    source.push(MediaUnit(AUDIO, "speex", 480, b"a"))
    assert pool.acquired == 2
    assert route.describe()["video"] == "spark>vp8"
    assert refused == ["video", "audio"]


# -- end to end ---------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{re.escape(name)}(\{{| )", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.e2e
async def test_metrics_move_during_a_bridged_consultation(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    require_tool("ffmpeg")
    src = make_flv(tmp_path / "spark.flv", "spark_speex", seconds=6)
    session = gateway.create_session()
    publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"], loop=True)
    try:
        async with aiohttp.ClientSession() as http:
            post = wc.http_poster(http, session["advisor"]["whep_url"], session["advisor"]["token"])
            pc, received, status, _, body = await wc.player(post)
            assert status == 201, body
            try:
                await wc.wait_for(lambda: len(received.video) >= 20, 20, "video")
                first = await asyncio.to_thread(gateway.get_text, "/metrics")
                await asyncio.sleep(2.5)
                second = await asyncio.to_thread(gateway.get_text, "/metrics")
                snap = await asyncio.to_thread(gateway.get, "/api/ops/snapshot")
            finally:
                await wc.close_all(pc, received=received)
    finally:
        publisher.kill()
        publisher.communicate()
    # transcoders counted and moving, with their labels (direction, codec)
    out1 = _metric(first, "vb_transcoder_frames_out_total", codec="spark>vp8")
    out2 = _metric(second, "vb_transcoder_frames_out_total", codec="spark>vp8")
    assert out1 is not None and out2 is not None and out2 > out1 + 20, (out1, out2)
    assert _metric(second, "vb_transcoder_frames_out_total", direction="flash_to_webrtc")
    fps = _metric(second, "vb_transcoder_fps", codec="spark>vp8")
    assert fps is not None and 10 <= fps <= 20, fps  # 15 fps source
    assert (_metric(second, "vb_transcoder_bitrate_bps", codec="spark>vp8") or 0) > 10_000
    assert _metric(second, "vb_transcoder_realtime_factor", codec="spark>vp8")
    assert _metric(second, "vb_transcoder_queue_depth", codec="spark>vp8") is not None
    enc1 = _metric(first, "vb_transcoder_codec_seconds_count", stage="encode", codec="vp8")
    enc2 = _metric(second, "vb_transcoder_codec_seconds_count", stage="encode", codec="vp8")
    assert enc1 is not None and enc2 is not None and enc2 > enc1
    lat = _metric(
        second, "vb_added_latency_seconds_count", direction="flash_to_webrtc", path="transcoded"
    )
    assert lat is not None and lat > 0
    # who is connected, by kind; HTTP requests by status; process figures
    assert _metric(second, "vb_participants", client_kind="flash") == 1.0
    assert _metric(second, "vb_participants", client_kind="webrtc") == 1.0
    assert (_metric(second, "vb_connections", transport="rtmp") or 0) >= 1
    assert (_metric(second, "vb_connections", transport="webrtc") or 0) >= 1
    assert (_metric(second, "vb_http_requests_total", status="201") or 0) >= 2
    assert _sum(second, "process_resident_memory_bytes") > 10_000_000
    assert _metric(second, "vb_consultations") is not None
    # no personal data: no token, no full consultation id
    for secret in (session["customer"]["token"], session["advisor"]["token"], session["id"]):
        assert secret not in second
    # the JSON snapshot the ops page uses: short ids only
    assert all(len(c["id"]) == 6 for c in snap["consultations"])
    assert session["id"] not in str(snap)


@pytest.mark.e2e
def test_ops_api_refuses_anonymous_and_participants(gateway: GatewayProcess) -> None:
    session = gateway.create_session()
    for path in ("/api/ops/snapshot", "/api/ops/live"):
        status, _, _ = gateway.request("GET", path, token=None)
        assert status == 401, path
        status, _, _ = gateway.request("GET", path, token=session["customer"]["token"])
        assert status == 403, path
    status, _, body = gateway.request("GET", "/ops", token=None)
    # the sign-in form, coming back to the monitor
    assert status == 401 and b"Anmeldung erforderlich" in body
    assert b'name="next" value="/ops"' in body and b"ops-transcoders" not in body
    status, _, body = gateway.request("GET", "/ops", token=session["customer"]["token"])
    assert status == 403 and b"ops-transcoders" not in body
    status, _, body = gateway.request("GET", "/ops", token=ADVISOR_TOKEN)
    assert status == 200 and b"ops-transcoders" in body


@pytest.mark.e2e
async def test_shutdown_ends_live_feeds_at_once(tmp_path: Path) -> None:
    """SIGTERM with an ops page open: the feed ends and the gateway exits 0 promptly
    (aiohttp waits for running handlers)."""
    gw = GatewayProcess(tmp_path / "data").start()
    headers = {"Authorization": f"Bearer {ADVISOR_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.base + "/api/ops/live", headers=headers) as resp,
    ):
        assert (await resp.content.readline()).startswith(b"event: history")
        began = time.monotonic()
        code = await asyncio.to_thread(gw.stop)
        assert code == 0
        assert time.monotonic() - began < 5


@pytest.mark.e2e
async def test_live_feed_sends_history_then_samples(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {ADVISOR_TOKEN}"}
    events: list[str] = []
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.base + "/api/ops/live", headers=headers) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        deadline = time.monotonic() + 10
        while len([e for e in events if e == "sample"]) < 2:
            assert time.monotonic() < deadline, events
            line = (await resp.content.readline()).decode()
            if line.startswith("event: "):
                events.append(line[7:].strip())
    assert events[0] == "history"


# -- admission under load --------------------------------------------------------------------


@pytest.mark.e2e
async def test_overload_refuses_the_next_consultation_running_one_keeps_real_time(
    tmp_path: Path,
) -> None:
    """A budget far below one bridged consultation's cost: the first is admitted (the
    gateway is idle), the next is refused with 503 and /readyz says so, while the first
    keeps delivering its 15 fps."""
    require_tool("ffmpeg")
    src = make_flv(tmp_path / "spark.flv", "spark_speex", seconds=6)
    gw = GatewayProcess(
        tmp_path / "data",
        extra=["--limit", "cpu_budget=0.02", "--limit", "consultation_cost=0.005"],
    ).start()
    try:
        session = gw.create_session()
        publisher = ffmpeg_publish(src, session["customer"]["rtmp"]["publish_url"], loop=True)
        try:
            async with aiohttp.ClientSession() as http:
                post = wc.http_poster(
                    http, session["advisor"]["whep_url"], session["advisor"]["token"]
                )
                pc, received, status, _, body = await wc.player(post)
                assert status == 201, body
                try:
                    await wc.wait_for(lambda: len(received.video) >= 15, 20, "video")

                    def refused() -> bool:
                        status, _, _ = gw.request("GET", "/readyz", token=None)
                        return status == 503

                    deadline = time.monotonic() + 15
                    while not await asyncio.to_thread(refused):
                        assert time.monotonic() < deadline, "never reached capacity"
                        await asyncio.sleep(0.5)
                    status, headers, answer = await asyncio.to_thread(
                        gw.request, "POST", "/api/sessions"
                    )
                    assert status == 503, answer
                    assert headers["Content-Type"].startswith("application/problem+json")
                    assert b"capacity" in answer and headers.get("Retry-After") == "30"
                    # the running consultation keeps real time meanwhile
                    before = len(received.video)
                    await asyncio.sleep(3.0)
                    rate = (len(received.video) - before) / 3.0
                    assert rate >= 13.5, rate  # 90 % of 15 fps
                    # a new receiver needing a new transcoder (H.264 for this browser) is
                    # refused, and its participant is told on the events socket
                    async with http.ws_connect(session["advisor"]["events_url"]) as ws:
                        pc2, received2, status, _, body = await wc.player(post, "h264")
                        assert status == 201, body
                        try:
                            async with asyncio.timeout(10):
                                async for msg in ws:
                                    event = msg.json()
                                    if event.get("type") == "notice":
                                        break
                            assert event == {
                                "type": "notice",
                                "code": "capacity",
                                "role": "advisor",
                                "kind": "video",
                            }
                            state = await asyncio.to_thread(
                                gw.get, f"/api/sessions/{session['id']}"
                            )
                            routes = state["streams"]["customer"]["routes"]
                            assert any(
                                "refused (capacity)" in r.get("video", "") for r in routes
                            ), routes
                            assert received2.video == []
                        finally:
                            await wc.close_all(pc2, received=received2)
                finally:
                    await wc.close_all(pc, received=received)
        finally:
            publisher.kill()
            publisher.communicate()
        metrics = gw.get_text("/metrics")
        assert (_metric(metrics, "vb_admission_refused_total", what="consultation") or 0) >= 1
        assert (_metric(metrics, "vb_admission_refused_total", what="transcoder") or 0) >= 1
        assert "refusing a new consultation" in gw.log()
    finally:
        gw.stop()

"""No recording (issue 5 item 6; terms of use: "Die von Ihnen geführten Gespräche (Bild,
Ton sowie Textchat) werden nicht aufgezeichnet oder gespeichert").

A bridged conversation through the real gateway: a Flash customer (ffmpeg publishing
FLV, our Flash-like client playing and chatting over RTMP) and a WebRTC advisor
(aiortc publishing and playing, chatting over the events socket). Chat messages carry a
marker made for this run. During and after it nothing of the conversation is on disk:

- the data dir holds no file with the chat marker, a token or a media container;
- files created or changed during the test in the temp dirs (``tempfile.gettempdir()``,
  ``/tmp``, ``/var/tmp``) hold neither the marker nor a token (other programs' files
  there are ignored by content, as the marker and tokens are unique to this run), and
  the gateway's own temp dir (``TMPDIR`` pointed at an empty folder) stays empty;
- the gateway's output and its access log hold neither the marker nor a token;
- every file the gateway process held open for writing during the conversation (its
  descriptors sampled from ``/proc``) is one of the expected ones (statistics, access
  log, its own output), and none of them starts like a media container (FLV, WebM/
  Matroska, MP4/ISO BMFF, Ogg, RIFF, IVF).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import ffmpeg_publish, make_flv
from rtmp.client import RtmpClient
from tests.conftest import require_tool

pytestmark = pytest.mark.e2e

# (name, offset, bytes): how media containers start
MAGIC = (
    ("FLV", 0, b"FLV\x01"),
    ("WebM/Matroska", 0, b"\x1a\x45\xdf\xa3"),
    ("MP4/ISO BMFF", 4, b"ftyp"),
    ("Ogg", 0, b"OggS"),
    ("RIFF (WAV/AVI)", 0, b"RIFF"),
    ("IVF (VP8)", 0, b"DKIF"),
)
MAX_SCAN = 64 * 1024 * 1024


def container_of(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for name, offset, magic in MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def files_under(root: Path, since: float | None = None) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(root, onerror=lambda err: None):
        for filename in filenames:
            path = Path(dirpath) / filename
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SCAN:
                continue
            if since is not None and max(st.st_mtime, st.st_ctime) < since:
                continue
            yield path


def secrets_in(path: Path, secrets: dict[str, bytes]) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return [name for name, value in secrets.items() if value in data]


class OpenFiles:
    """Samples ``/proc/PID/fd`` of the gateway: every regular file it holds open, and
    whether for writing (``fdinfo`` flags)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[str, bool] = {}  # path -> ever open for writing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OpenFiles:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        fd_dir = Path(f"/proc/{self.pid}/fd")
        while not self._stop.is_set():
            try:
                fds = list(fd_dir.iterdir())
            except OSError:
                return
            for fd in fds:
                try:
                    target = os.readlink(fd)
                    flags = (Path(f"/proc/{self.pid}/fdinfo") / fd.name).read_text()
                except OSError:
                    continue
                if not target.startswith("/") or target.startswith(("/dev/", "/proc/")):
                    continue  # sockets, pipes, anon inodes, devices
                match = re.search(r"flags:\s*([0-7]+)", flags)
                writable = bool(match and int(match.group(1), 8) & (os.O_WRONLY | os.O_RDWR))
                self.seen[target] = self.seen.get(target, False) or writable
            self._stop.wait(0.02)

    @property
    def written(self) -> list[str]:
        return sorted(path for path, writable in self.seen.items() if writable)


async def _chat_from_ws(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        async for msg in ws:
            event = msg.json()
            if event.get("type") == "chat" and event.get("text") == text:
                return dict(event)
    raise AssertionError("chat not received")


def test_the_scanners_find_what_they_look_for(tmp_path: Path) -> None:
    """The checks below would fail if the gateway did write: each finds its target."""
    make_flv(tmp_path / "a.flv", "spark_speex", seconds=1)
    (tmp_path / "b.webm").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(60))
    (tmp_path / "c.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(60))
    (tmp_path / "chat.txt").write_bytes(b"... vertraulich-42 ...")
    found = {p.name: container_of(p) for p in files_under(tmp_path)}
    assert found == {"a.flv": "FLV", "b.webm": "WebM/Matroska", "c.mp4": "MP4/ISO BMFF",
                     "chat.txt": None}  # fmt: skip
    assert secrets_in(tmp_path / "chat.txt", {"marker": b"vertraulich-42"}) == ["marker"]
    assert list(files_under(tmp_path, since=time.time() + 60)) == []
    with (tmp_path / "held.bin").open("wb") as held, OpenFiles(os.getpid()) as open_files:
        held.write(b"x")
        time.sleep(0.1)
    assert str(tmp_path / "held.bin") in open_files.written


async def test_a_bridged_conversation_leaves_nothing_on_disk(tmp_path: Path) -> None:
    require_tool("ffmpeg")
    source = make_flv(tmp_path / "camera.flv", "spark_speex", seconds=15)  # before `since`
    gateway_tmp = tmp_path / "gateway-tmp"
    gateway_tmp.mkdir()
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(gateway_tmp)  # the gateway's tempfile.gettempdir()
    try:
        gw = GatewayProcess(tmp_path / "gw").start()
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
    data_dir = gw.data_dir / "data"
    since = time.time() - 1.0
    marker = f"vertraulich-{uuid.uuid4().hex}"
    session = await asyncio.to_thread(gw.create_session)
    secrets = {
        "chat marker": marker.encode(),
        "customer token": session["customer"]["token"].encode(),
        "advisor token": session["advisor"]["token"].encode(),
    }
    assert gw.proc is not None
    try:
        with OpenFiles(gw.proc.pid) as open_files:
            await _converse(gw, session, source, marker, data_dir, secrets)
        status, _, _ = await asyncio.to_thread(
            gw.request, "DELETE", f"/api/sessions/{session['id']}"
        )
        assert status == 204
    finally:
        assert gw.stop() == 0, gw.log()

    # -- the data dir: statistics, access log; nothing of the conversation ----------------
    found = {str(p): secrets_in(p, secrets) for p in files_under(data_dir)}
    assert {p: s for p, s in found.items() if s} == {}
    media = {str(p): container_of(p) for p in files_under(data_dir)}
    assert {p: m for p, m in media.items() if m} == {}
    assert not any((data_dir / "sessions").glob("*")), "the consultation's folder is gone"

    # -- temp dirs: nothing with the marker or a token; the gateway's own one empty -----
    assert list(files_under(gateway_tmp)) == []
    roots = {Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")}
    leaks = {}
    for root in roots:
        for path in files_under(root, since=since):
            if path == gw.log_path:
                continue  # the gateway's output: checked below, as "logs"
            hits = secrets_in(path, secrets)
            if hits:
                leaks[str(path)] = hits
    assert leaks == {}

    # -- logs: the gateway's output and its access log ----------------------------------
    log = gw.log()
    assert "CONNECT" in gw.access_log() and "/api/sessions" in gw.access_log()
    for name, value in secrets.items():
        assert value.decode() not in log, f"{name} in the gateway's log"

    # -- what the gateway wrote to while the conversation ran ---------------------------
    allowed = (
        re.escape(str(gw.log_path)),
        re.escape(str(data_dir / "stats.sqlite")) + r"(-journal|-wal|-shm)?",
        re.escape(str(data_dir / "logs")) + r"/access-\d{4}-\d\d-\d\d\.log",
    )
    # the sampling saw the gateway's files (so an empty list below means something)
    assert any("/logs/access-" in p for p in open_files.written), open_files.seen
    unexpected = [p for p in open_files.written if not any(re.fullmatch(a, p) for a in allowed)]
    assert unexpected == [], unexpected
    for path in open_files.written:
        if Path(path).exists():
            assert container_of(Path(path)) is None, path


async def _converse(
    gw: GatewayProcess,
    session: dict[str, Any],
    source: Path,
    marker: str,
    data_dir: Path,
    secrets: dict[str, bytes],
) -> None:
    """Both directions of media and chat, bridged (Flash <-> WebRTC), checked arriving;
    the data dir checked while it runs."""
    customer, advisor = session["customer"], session["advisor"]
    publisher = ffmpeg_publish(source, customer["rtmp"]["publish_url"])
    flash = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
    try:
        async with aiohttp.ClientSession() as http:
            post_play = wc.http_poster(http, advisor["whep_url"], advisor["token"])
            play_pc, received, status, _, body = await wc.player(post_play)
            assert status == 201, body
            post_send = wc.http_poster(http, advisor["whip_url"], advisor["token"])
            send_pc, status, _, body = await wc.publisher(post_send, "vp8")
            assert status == 201, body
            ws = await http.ws_connect(advisor["events_url"])
            try:
                # the Flash customer plays the advisor's camera (VP8 -> H.264) and chats
                result = await flash.connect("consult", customer["rtmp"]["connect_url"],
                                             customer["token"])  # fmt: skip
                assert not result.error
                sid = await flash.create_stream()
                flash.play(sid, "advisor")
                await flash.wait_for(
                    lambda: sum(1 for e in flash.media if e.type_id == 9) >= 30, timeout=30
                )
                await flash.call("chat", f"Kunde: {marker} IBAN DE02120300000000202051")
                await _chat_from_ws(ws, f"Kunde: {marker} IBAN DE02120300000000202051")
                await ws.send_json({"type": "chat", "text": f"Berater: {marker}"})
                await flash.wait_for(
                    lambda: any(
                        c.name == "onChat" and f"Berater: {marker}" in map(str, c.args)
                        for c in flash.calls
                    ),
                    timeout=10,
                )
                # the advisor sees and hears the Flash customer (Spark/Speex -> VP8/Opus)
                await wc.wait_for(lambda: len(received.video) >= 60, 30, "video at the advisor")
                await wc.wait_for(lambda: len(received.audio) >= 100, 10, "audio")
                state = await asyncio.to_thread(gw.get, f"/api/sessions/{session['id']}")
                routes = state["streams"]["customer"]["routes"]
                assert any(r.get("video") == "spark>vp8" for r in routes), routes
                # mid-conversation: nothing of it under the data dir
                for path in files_under(data_dir):
                    assert secrets_in(path, secrets) == [], path
                    assert container_of(path) is None, path
            finally:
                await ws.close()
                await wc.close_all(play_pc, send_pc, received=received)
    finally:
        await flash.close()
        publisher.kill()
        publisher.communicate()

"""RTMPT and RTMPTS end to end: the real gateway process, real tunnelling clients
(ffmpeg's own rtmpt/rtmpts, librtmp's rtmpdump), a WebRTC advisor (aiortc), and
hand-made hostile requests.

The plain gateway runs with a short ``rtmpt_idle_timeout`` so that a client that never
sends ``/close`` is seen cleaned up within seconds.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit import webrtc_client as wc
from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import analyse, ffmpeg_publish, make_flv
from rtmp.connection import RtmpConnection
from rtmp.events import CommandReceived, ResultReceived
from tests.conftest import require_tool
from tests.test_rtmp_peers import _self_signed

pytestmark = pytest.mark.e2e

IDLE_TIMEOUT = 3
FCS = "application/x-fcs"
_TUNNEL_ID = re.compile(rb"[0-9a-f]{32}\n")


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("ffmpeg")
    return tmp_path_factory.mktemp("rtmpt-media")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(
        tmp_path_factory.mktemp("rtmpt-gw"),
        extra=["--limit", f"rtmpt_idle_timeout={IDLE_TIMEOUT}"],
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require_tool("openssl")
    tmp = tmp_path_factory.mktemp("rtmpts-gw")
    cert, key = _self_signed(tmp)
    proc = GatewayProcess(tmp, extra=["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    yield proc
    assert proc.stop() == 0, proc.log()


# -- helpers -----------------------------------------------------------------------------------


def tunnel_url(gw: GatewayProcess, scheme: str, role: str, token: str) -> str:
    return f"{scheme}://127.0.0.1:{gw.http_port}/consult/{role}?token={token}"


def play(url: str, out: Path, seconds: float) -> subprocess.CompletedProcess[bytes]:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", url,
           "-t", str(seconds), "-c", "copy", "-f", "flv", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, timeout=60)


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def wait_state(
    gw: GatewayProcess, session_id: str, predicate: Any, timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = gw.get(f"/api/sessions/{session_id}")
        if predicate(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {state}")


def post(gw: GatewayProcess, path: str, body: bytes = b"\x00") -> tuple[int, dict[str, str], bytes]:
    # what ffmpeg and librtmp send with every tunnel request
    headers = {"Content-Type": FCS, "User-Agent": "Shockwave Flash"}
    return gw.request("POST", path, body, token=None, headers=headers)


class Tunnel:
    """A hand-made RTMPT client: a client RtmpConnection carried by ``/send``/``/idle``."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        status, headers, body = post(gw, "/open/1")
        assert status == 200 and headers["Content-Type"] == FCS, (status, body)
        assert _TUNNEL_ID.fullmatch(body), body
        self.id = body.decode().strip()
        self.seq = 0
        self.conn = RtmpConnection(is_client=True)
        self.events: list[Any] = []

    def request(self, command: str, body: bytes = b"\x00") -> tuple[int, bytes]:
        status, headers, answer = post(self.gw, f"/{command}/{self.id}/{self.seq}", body)
        self.seq += 1
        assert headers["Content-Type"] == FCS
        return status, answer

    def pump(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            out = self.conn.data_to_send()
            status, answer = self.request("send", out) if out else self.request("idle")
            assert status == 200, answer
            assert answer[0] in (0x01, 0x03, 0x05, 0x09, 0x11, 0x21), answer[:1]
            if answer[1:]:
                self.conn.receive_data(answer[1:])
                self.events.extend(self.conn.events())
            elif not out and self.conn.handshake_done:
                return

    def result(self, tid: float) -> ResultReceived:
        for _ in range(20):
            found = [
                e for e in self.events if isinstance(e, ResultReceived) and e.transaction_id == tid
            ]
            if found:
                return found[0]
            self.pump(3)
        raise AssertionError(f"no answer to {tid}: {self.events}")

    def statuses(self) -> list[str]:
        return [
            e.args[0]["code"]
            for e in self.events
            if isinstance(e, CommandReceived) and e.name == "onStatus"
        ]


def check_media(out: Path, vcodec: str, acodec: str, min_frames: int) -> None:
    result = analyse(out)
    assert (result.video_codec, result.audio_codec) == (vcodec, acodec), result
    assert (result.width, result.height) == (320, 240), result
    assert result.first_video_keyframe, result
    assert result.video_frames >= min_frames, result
    assert not result.decode_errors, result
    assert result.audio_rms > 1000, result  # the sine, not silence


# -- ffmpeg and librtmp through the tunnel --------------------------------------------------


@pytest.mark.parametrize("scheme", ["rtmpt", "rtmpts"])
def test_ffmpeg_publishes_and_plays_through_the_tunnel(
    request: pytest.FixtureRequest, media_dir: Path, scheme: str
) -> None:
    gw: GatewayProcess = request.getfixturevalue("gw" if scheme == "rtmpt" else "tls_gw")
    src = make_flv(media_dir / f"{scheme}.flv", "h264_aac", seconds=8)
    session = gw.create_session()
    publisher = ffmpeg_publish(
        src, tunnel_url(gw, scheme, "customer", session["customer"]["token"])
    )
    try:
        state = wait_state(
            gw,
            session["id"],
            lambda s: s["streams"]["customer"]["live"] and s["streams"]["customer"]["video_codec"],
            10,
            "the tunnelled publisher",
        )
        # GET /api/sessions/{id} says how the customer is connected
        # INTERFACE.md's words: Flash's rtmps:// (RTMPTS) shows as rtmps, the detail in
        # the connection's kind
        via = {"rtmpt": "rtmpt", "rtmpts": "rtmps"}[scheme]
        assert state["participants"]["customer"]["via"] == [via]
        kinds = [c["kind"] for c in state["participants"]["customer"]["connections"]]
        assert kinds == [scheme]
        time.sleep(1.0)  # join late: the player starts at the cached keyframe
        out = media_dir / f"{scheme}-played.flv"
        played = play(tunnel_url(gw, scheme, "customer", session["advisor"]["token"]), out, 4)
        assert played.returncode == 0, played.stderr.decode()
    finally:
        err = finish(publisher)
    assert publisher.returncode == 0, err
    check_media(out, "h264", "aac", 40)  # ~4 s at 15 fps
    log = all_logs(gw)
    assert session["customer"]["token"] not in log and session["advisor"]["token"] not in log


def test_rtmpdump_plays_over_rtmpt(gw: GatewayProcess, media_dir: Path) -> None:
    """librtmp (another RTMPT client family) plays what ffmpeg publishes over RTMPT."""
    require_tool("rtmpdump")
    src = make_flv(media_dir / "dump.flv", "spark_speex", seconds=8)
    session = gw.create_session()
    publisher = ffmpeg_publish(src, tunnel_url(gw, "rtmpt", "advisor", session["advisor"]["token"]))
    out = media_dir / "rtmpdump-rtmpt.flv"
    try:
        gw.wait_live(session["id"], "advisor")
        cmd = ["rtmpdump", "-q", "--live", "-r", f"rtmpt://127.0.0.1:{gw.http_port}/consult",
               "-y", f"advisor?token={session['customer']['token']}", "-o", str(out),
               "-B", "3"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, timeout=60)
    finally:
        publisher.kill()
        finish(publisher)
    assert done.returncode == 0, done.stderr
    check_media(out, "flv", "speex", 25)


async def test_rtmpt_media_reaches_a_webrtc_advisor(gw: GatewayProcess, media_dir: Path) -> None:
    src = make_flv(media_dir / "bridge.flv", "spark_speex", seconds=12)
    session = gw.create_session()
    publisher = ffmpeg_publish(
        src, tunnel_url(gw, "rtmpt", "customer", session["customer"]["token"])
    )
    try:
        async with aiohttp.ClientSession() as http:
            whep = wc.http_poster(http, session["advisor"]["whep_url"], session["advisor"]["token"])
            pc, received, status, _, body = await wc.player(whep)
            assert status == 201, body
            try:
                await wc.wait_for(lambda: len(received.video) >= 45, 20, "45 video frames")
                await wc.wait_for(lambda: len(received.audio) >= 100, 10, "audio")
                frame = received.video[-1]
                assert (frame.width, frame.height) == (320, 240)
                assert received.audio_peak() > 3000, "the sine is audible, not silence"
                state = await asyncio.to_thread(gw.get, f"/api/sessions/{session['id']}")
                assert state["participants"]["customer"]["via"] == ["rtmpt"]
                assert state["participants"]["advisor"]["via"] == ["webrtc"]
                routes = state["streams"]["customer"]["routes"]
                assert any(r.get("video") == "spark>vp8" for r in routes), routes
            finally:
                await wc.close_all(pc, received=received)
    finally:
        publisher.kill()
        finish(publisher)


def test_a_client_that_never_closes_is_cleaned_up(gw: GatewayProcess, media_dir: Path) -> None:
    """ffmpeg killed mid-stream sends no /close: after the idle timeout its RTMP session
    is gone (participant detached, stream released) and the role can publish again."""
    src = make_flv(media_dir / "killed.flv", "spark_speex", seconds=20)
    session = gw.create_session()
    url = tunnel_url(gw, "rtmpt", "customer", session["customer"]["token"])
    publisher = ffmpeg_publish(src, url)
    try:
        wait_state(
            gw,
            session["id"],
            lambda s: s["streams"]["customer"]["live"],
            10,
            "the tunnelled publisher",
        )
    finally:
        publisher.send_signal(signal.SIGKILL)
        finish(publisher)
    killed_at = time.monotonic()
    state = wait_state(
        gw,
        session["id"],
        lambda s: not s["participants"]["customer"]["connections"],
        IDLE_TIMEOUT + 5,
        "the abandoned tunnel to be cleaned up",
    )
    assert time.monotonic() - killed_at >= IDLE_TIMEOUT - 1.5, "not before the idle timeout"
    assert not state["streams"]["customer"]["live"]
    assert state["participants"]["customer"]["via"] == []
    assert "idle timeout (no RTMPT request)" in gw.log()
    # the role publishes again (a new tunnel, nothing left over from the old one)
    again = ffmpeg_publish(src, url)
    try:
        state = wait_state(
            gw,
            session["id"],
            lambda s: s["streams"]["customer"]["live"],
            10,
            "the new publisher",
        )
        assert state["participants"]["customer"]["via"] == ["rtmpt"]
        assert len(state["participants"]["customer"]["connections"]) == 1
    finally:
        again.kill()
        finish(again)


# -- the protocol and hostile input ----------------------------------------------------------


def test_ident_open_and_unknown_sessions(gw: GatewayProcess) -> None:
    status, headers, _ = post(gw, "/fcs/ident2")
    assert status == 404 and headers["Content-Type"] == FCS
    status, headers, body = post(gw, "/open/1")
    assert status == 200 and headers["Content-Type"] == FCS
    assert _TUNNEL_ID.fullmatch(body), body  # the id and a newline, no polling byte
    tunnel_id = body.decode().strip()
    status, headers, body = post(gw, f"/idle/{tunnel_id}/0")
    assert status == 200 and headers["Content-Type"] == FCS and body == b"\x01"
    for path in (f"/idle/{'0' * 32}/1", f"/send/{'a' * 32}/1", "/close/123/1", "/idle/x/0"):
        status, headers, body = post(gw, path)
        assert status == 404 and headers["Content-Type"] == FCS, (path, status)
        assert b"no such RTMPT session" in body
    status, _, body = post(gw, f"/close/{tunnel_id}/1")
    assert status == 200
    status, _, _ = post(gw, f"/idle/{tunnel_id}/2")
    assert status == 404, "closed means gone"


def _raw_post(port: int, path: str, headers: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_hostile_requests_get_clear_errors_and_the_server_keeps_serving(
    gw: GatewayProcess,
) -> None:
    # garbage instead of an RTMP handshake: the session is refused, the tunnel gone
    victim = Tunnel(gw)
    status, body = victim.request("send", b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 20)
    assert status == 400 and b"closed by the server" in body
    assert victim.request("idle")[0] == 404

    # a body far over the cap: 413 on the declared length, before it is sent
    tunnel = Tunnel(gw)
    answer = _raw_post(
        gw.http_port,
        f"/send/{tunnel.id}/0",
        f"Content-Type: {FCS}\r\nContent-Length: {10**10}\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"Content-Type: {FCS}".encode() in answer
    status, _, body = post(gw, f"/send/{tunnel.id}/1", b"x" * (2 * 1024 * 1024 + 1))
    assert status == 413 and b"over" in body

    # bad sequence numbers are refused; the tunnel itself survives them
    tunnel.seq = 5
    tunnel.pump()  # handshake through the tunnel, sequence now past 5
    for bad in ("abc", "-1", "99999999999", "0", str(tunnel.seq - 1)):
        status, _, body = post(gw, f"/send/{tunnel.id}/{bad}", b"\x03\x00\x00")
        assert status == 400 and b"sequence" in body, (bad, status, body)
    for bad in ("abc", "1e3", str(2**31)):
        status, _, body = post(gw, f"/idle/{tunnel.id}/{bad}")
        assert status == 400 and b"sequence" in body, (bad, status, body)
    tid = tunnel.conn.connect("consult", f"rtmpt://127.0.0.1:{gw.http_port}/consult")
    assert tunnel.result(tid).args[0]["code"] == "NetConnection.Connect.Success"

    # a connect with a wrong token: the rejection reaches the client, then the tunnel ends
    rejected = Tunnel(gw)
    rejected.pump()
    tid = rejected.conn.connect(
        "consult", f"rtmpt://127.0.0.1:{gw.http_port}/consult", "not-a-valid-token"
    )
    out = rejected.conn.data_to_send()
    status, body = rejected.request("send", out)
    assert status == 200, body
    rejected.conn.receive_data(body[1:])
    events = rejected.conn.events()
    error = [e for e in events if isinstance(e, ResultReceived) and e.transaction_id == tid]
    assert error and error[0].args[0]["code"] == "NetConnection.Connect.Rejected"
    assert rejected.request("idle")[0] == 404

    # the server is fine: health, and a full tunnelled publish in a fresh consultation
    assert gw.proc is not None and gw.proc.poll() is None
    assert gw.get("/healthz")
    session = gw.create_session()
    client = Tunnel(gw)
    client.pump()
    tid = client.conn.connect(
        "consult", f"rtmpt://127.0.0.1:{gw.http_port}/consult", session["customer"]["token"]
    )
    assert client.result(tid).args[0]["code"] == "NetConnection.Connect.Success"
    tid = client.conn.call("createStream")
    sid = int(client.result(tid).args[0])
    client.conn.send_command(sid, "publish", 0.0, None, "customer", "live", csid=8)
    client.pump(5)
    assert "NetStream.Publish.Start" in client.statuses()
    state = gw.get(f"/api/sessions/{session['id']}")
    assert state["participants"]["customer"]["via"] == ["rtmpt"]
    assert client.request("close")[0] == 200


def all_logs(gw: GatewayProcess) -> str:
    """The process output and the access log files (``<data-dir>/logs/access-*.log``)."""
    files = sorted((gw.data_dir / "data").glob("logs/access-*.log"))
    return gw.log() + "".join(f.read_text() for f in files)


def test_polls_are_not_logged_one_by_one_and_ids_never(gw: GatewayProcess) -> None:
    client = Tunnel(gw)
    for _ in range(20):
        assert client.request("idle")[0] == 200
    assert client.request("close")[0] == 200
    deadline = time.monotonic() + 5
    while '"POST /close/…/20 HTTP/1.1" 200' not in all_logs(gw):
        assert time.monotonic() < deadline, "the /close is in the access log"
        time.sleep(0.1)
    log = all_logs(gw)
    assert client.id not in log, "tunnel ids are secrets: redacted in the access log"
    assert '"POST /open/1 HTTP/1.1" 200' in log
    for line in log.splitlines():
        if '"POST /idle/' in line or '"POST /send/' in line:
            assert '" 200 ' not in line, line  # only failed polls are logged

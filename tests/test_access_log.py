"""The access log (issue 5 item 8; terms of use: "Die von Ihrem Browser übertragenen
technischen Daten werden für kurze Zeit gespeichert"): address, time, browser, page and
status of HTTP requests and RTMP/RTMPT connects, in daily files under
``<data-dir>/logs``, never a token, kept ``--access-log-days`` days and purged by itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import stat
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import make_flv
from gateway.accesslog import HTTP_LOGGER, RTMP_LOGGER, AccessLog, purge_daily
from gateway.redact import redact_url
from rtmp.client import RtmpClient
from tests.conftest import require_tool

DAY = 86400.0
# 2026-03-10 12:00:00 UTC
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ 127\.0\.0\.1 \"")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def names(access_log: AccessLog) -> list[str]:
    return [p.name for p in access_log.files()]


# -- retention with a moved clock -----------------------------------------------------------


def test_one_file_per_utc_day_private_to_the_service(tmp_path: Path) -> None:
    clock = Clock(NOON)
    access_log = AccessLog(tmp_path / "logs", 7, clock=clock)
    access_log.write('127.0.0.1 "GET / HTTP/1.1" 303 0 "UA" 0.001')
    clock.now += 12 * 3600 - 1  # 23:59:59
    access_log.write("b")
    clock.now += 1  # midnight UTC: a new file
    access_log.write("c")
    access_log.close()
    assert names(access_log) == ["access-2026-03-10.log", "access-2026-03-11.log"]
    first = (tmp_path / "logs" / "access-2026-03-10.log").read_text().splitlines()
    assert first == [
        '2026-03-10T12:00:00Z 127.0.0.1 "GET / HTTP/1.1" 303 0 "UA" 0.001',
        "2026-03-10T23:59:59Z b",
    ]
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    for path in access_log.files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_kept_days_and_automatic_purge_as_time_moves(tmp_path: Path) -> None:
    clock = Clock(NOON)
    access_log = AccessLog(tmp_path, 3, clock=clock)
    for _ in range(6):  # six days with traffic, 2026-03-10 .. 2026-03-15
        access_log.write("entry")
        clock.now += DAY
    # each new day's first entry purged what had grown too old: today and 2 before
    assert names(access_log) == [
        "access-2026-03-13.log",
        "access-2026-03-14.log",
        "access-2026-03-15.log",
    ]
    # no traffic for days: the daily purge (or the next start) still deletes
    clock.now += DAY  # 2026-03-17 12:00 (the loop left the clock at the 16th)
    removed = access_log.purge()
    assert [p.name for p in removed] == ["access-2026-03-13.log", "access-2026-03-14.log"]
    assert names(access_log) == ["access-2026-03-15.log"]
    clock.now += DAY
    access_log.purge()
    assert names(access_log) == []


def test_no_entry_outlives_the_retention(tmp_path: Path) -> None:
    """Kept from the start of the oldest kept day: nothing is older than N days."""
    clock = Clock(NOON)
    access_log = AccessLog(tmp_path, 7, clock=clock)
    access_log.write("first")
    for hours in range(1, 24 * 10):
        clock.now = NOON + hours * 3600
        access_log.purge()
        if clock.now - NOON >= 7 * DAY:
            assert names(access_log) == [], f"entry still kept after {hours} h"
    assert access_log.oldest_kept_day(NOON) == "2026-03-04"


def test_zero_days_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "access-2026-03-09.log").write_text("old\n")
    access_log = AccessLog(tmp_path, 0, clock=Clock(NOON))
    access_log.write("never written")
    assert access_log.purge() == [tmp_path / "access-2026-03-09.log"]
    assert list(tmp_path.iterdir()) == []


def test_purge_leaves_other_files_alone(tmp_path: Path) -> None:
    (tmp_path / "access-2020-01-01.log").write_text("old\n")
    (tmp_path / "notes.txt").write_text("not ours\n")
    (tmp_path / "access-2020-01-01.log.bak").write_text("not ours either\n")
    AccessLog(tmp_path, 7, clock=Clock(NOON)).purge()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access-2020-01-01.log.bak", "notes.txt"]


def test_next_purge_is_just_after_utc_midnight() -> None:
    access_log = AccessLog(Path("/nonexistent"), 7)
    assert access_log.seconds_to_next_purge(NOON) == 12 * 3600 + 1
    assert access_log.seconds_to_next_purge(NOON + 12 * 3600 - 0.5) == 1.5


async def test_the_daily_timer_purges_on_days_without_traffic(tmp_path: Path) -> None:
    clock = Clock(NOON)
    access_log = AccessLog(tmp_path, 2, clock=clock)
    access_log.write("the only entry")
    access_log.close()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes at once
        slept.append(seconds)
        if len(slept) > 3:
            raise asyncio.CancelledError
        clock.now += seconds

    with pytest.raises(asyncio.CancelledError):
        await purge_daily(access_log, sleep)
    assert slept[0] == 12 * 3600 + 1  # until just after midnight UTC
    assert all(abs(s - DAY) < 2 for s in slept[1:])  # then once a day
    assert names(access_log) == [], "gone after two days without a single request"


def test_access_loggers_write_only_to_the_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    access_log = AccessLog(tmp_path, 7, clock=Clock(NOON))
    detach = access_log.attach()
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger(HTTP_LOGGER).info('1.2.3.4 "GET /x HTTP/1.1" 200 0 "UA" 0.1')
            logging.getLogger(RTMP_LOGGER).info('1.2.3.4 "CONNECT rtmp://h/consult RTMP" ok')
    finally:
        detach()
    assert caplog.records == [], "nothing reaches the application log (stderr)"
    text = (tmp_path / "access-2026-03-10.log").read_text()
    assert "GET /x" in text and "CONNECT rtmp://h/consult" in text
    assert logging.getLogger(HTTP_LOGGER).propagate  # detached: as before


def test_rtmp_urls_are_redacted() -> None:
    token = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo"
    assert redact_url(f"rtmp://127.0.0.1:1935/consult?token={token}") == (
        "rtmp://127.0.0.1:1935/consult?…"
    )
    assert redact_url(f"rtmp://h/consult/{token}") == "rtmp://h/consult/…"
    assert redact_url(f"/consult?token={token}") == "/consult?…"
    assert redact_url("rtmpt://h:8080/consult") == "rtmpt://h:8080/consult"


# -- end to end: the real gateway ------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    base = tmp_path_factory.mktemp("access-log")
    logs = base / "data" / "logs"
    logs.mkdir(parents=True)
    # leftovers of an earlier run: far too old, and one inside the retention
    (logs / "access-2020-01-01.log").write_text("1.2.3.4 old\n")
    yesterday = datetime.fromtimestamp(datetime.now(UTC).timestamp() - DAY, UTC)
    (logs / f"access-{yesterday:%Y-%m-%d}.log").write_text("1.2.3.4 recent\n")
    proc = GatewayProcess(base, extra=["--access-log-days", "3"]).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def wait_for_log(gw: GatewayProcess, done: Callable[[str], bool], timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = gw.access_log()
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _output(gw: GatewayProcess) -> str:
    assert gw.log_path is not None
    return gw.log_path.read_text()


def test_old_files_are_purged_at_start_up(gw: GatewayProcess) -> None:
    files = sorted(p.name for p in (gw.data_dir / "data" / "logs").iterdir())
    assert "access-2020-01-01.log" not in files
    assert len(files) >= 1 and all(f.startswith("access-") for f in files)
    assert "recent" in gw.access_log()


def test_http_requests_are_logged_with_redacted_targets(gw: GatewayProcess) -> None:
    session = gw.create_session()
    token = session["customer"]["token"]
    advisor_token = session["advisor"]["token"]
    agent = "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0"
    gw.request(
        "GET", f"/k/{session['id']}?token={token}", token=None, headers={"User-Agent": agent}
    )
    gw.request("GET", f"/api/sessions/{session['id']}", token=token)
    gw.request("GET", f"/k/{token}", token=None)
    gw.request("GET", f"/login?token={advisor_token}", token=None)
    # aiohttp writes the entry just after the answer has gone out
    log = wait_for_log(gw, lambda text: '"GET /login?… HTTP/1.1" 403 ' in text)
    lines = log.splitlines()
    line = next(x for x in lines if "TestBrowser/1.0" in x)
    # time, address, request (query dropped), status, size, browser, duration
    assert LINE.match(line), line
    assert f'"GET /k/{session["id"]}?… HTTP/1.1" 200 ' in line
    assert any('"GET /k/… HTTP/1.1" 404 ' in x for x in lines)
    assert any('"GET /login?… HTTP/1.1" 403 ' in x for x in lines)
    for secret in (token, advisor_token, session["customer"]["pin"]):
        assert secret not in log
    # the application log (stderr) has no access lines and no addresses
    output = _output(gw)
    assert "HTTP/1.1" not in output and "TestBrowser" not in output


async def test_rtmp_connects_are_logged_with_the_player_version(gw: GatewayProcess) -> None:
    session = await asyncio.to_thread(gw.create_session)
    token = session["customer"]["token"]
    client = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
    try:
        tc_url = f"{session['customer']['rtmp']['connect_url']}?token={token}"
        await client.connect("consult", tc_url, token)
    finally:
        await client.close()
    bad = await RtmpClient.open("127.0.0.1", gw.rtmp_port)
    try:
        result = await bad.connect("consult", tc_url, "not-a-token-of-this-gateway-xxxxxxx")
        assert result.error
    finally:
        await bad.close()
    log = await asyncio.to_thread(
        wait_for_log, gw, lambda text: "NetConnection.Connect.Rejected" in text
    )
    accepted = [x for x in log.splitlines() if "NetConnection.Connect.Success" in x]
    assert accepted, log
    assert LINE.match(accepted[-1]), accepted[-1]
    assert f'"CONNECT rtmp://127.0.0.1:{gw.rtmp_port}/consult?… RTMP"' in accepted[-1]
    assert re.search(r'"[A-Z]{3} \d+,\d+,\d+,\d+"$', accepted[-1]), accepted[-1]  # flashVer
    assert any("NetConnection.Connect.Rejected" in x for x in log.splitlines())
    assert token not in log and "not-a-token-of-this-gateway" not in log


def test_ffmpeg_publish_is_logged_as_a_connect(gw: GatewayProcess, tmp_path: Path) -> None:
    require_tool("ffmpeg")
    src = make_flv(tmp_path / "a.flv", "spark_speex", seconds=1)
    session = gw.create_session()
    url = session["customer"]["rtmp"]["publish_url"]
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(src),
         "-c", "copy", "-f", "flv", url],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    # the same through the RTMPT tunnel on the web port (what Flash falls back to)
    tunnelled = url.replace(
        f"rtmp://127.0.0.1:{gw.rtmp_port}/", f"rtmpt://127.0.0.1:{gw.http_port}/"
    )
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(src),
         "-c", "copy", "-f", "flv", tunnelled],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    log = wait_for_log(gw, lambda text: "/close/" in text)
    lines = log.splitlines()
    rtmp = [x for x in lines if "CONNECT" in x and x.endswith('"') and ' RTMP" ' in x]
    assert any("FMLE/" in x for x in rtmp), log  # librtmp's flashVer, as the "browser"
    rtmpt = [x for x in lines if ' RTMPT" NetConnection.Connect.Success' in x]
    assert rtmpt and "FMLE/" in rtmpt[-1], log
    assert any('"POST /open/1 HTTP/1.1" 200' in x for x in lines)
    # the tunnel's polls are not logged one by one (only failed ones would be)
    assert not [x for x in lines if re.search(r'"POST /(idle|send)/\S+ HTTP/1.1" 200 ', x)]
    assert session["customer"]["token"] not in log

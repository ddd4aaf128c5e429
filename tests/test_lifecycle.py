"""The end of a consultation (issue 5, item 5), against the real gateway: DELETE, expiry
and "everyone gone past the grace period" delete every document, revoke the tokens and
tell both kinds of client; SIGTERM does the same for all; after SIGKILL the next start
sweeps what the crashed process left."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit.gwproc import GatewayProcess, flash_client
from gateway.consultation import Connection, Directory, Role
from rtmp.client import RtmpClient

pytestmark = pytest.mark.e2e


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def marked_pdf(marker: bytes) -> bytes:
    return b"%PDF-1.4\n" + marker + secrets.token_bytes(20_000) + marker


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Own gateway: a short grace period so abandoned consultations end within a test."""
    proc = GatewayProcess(
        tmp_path_factory.mktemp("lifecycle"), extra=["--session-grace", "1"]
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()


async def upload(
    http: aiohttp.ClientSession, gw: GatewayProcess, sid: str, token: str, data: bytes, name: str
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=name, content_type="application/pdf")
    async with http.post(
        f"{gw.base}/api/sessions/{sid}/documents", data=form, headers=bearer(token)
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


def files_under(root: Path) -> list[Path]:
    return [Path(d, f) for d, _, names in os.walk(root) for f in names]


def holding(root: Path, needle: bytes) -> list[Path]:
    """Every file below ``root`` whose bytes contain ``needle``."""
    return [p for p in files_under(root) if needle in p.read_bytes()]


def ended_calls(client: RtmpClient) -> list[dict[str, Any]]:
    return [
        c.args[0]
        for c in client.calls
        if c.name == "onSessionEvent" and c.args[0].get("type") == "session_ended"
    ]


async def test_delete_removes_every_byte_and_tells_both_kinds_of_client(
    gw: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gw.create_session()
    sid = session["id"]
    marker = secrets.token_hex(16).encode()
    await upload(http, gw, sid, session["customer"]["token"], marked_pdf(marker), "Konto.pdf")
    await upload(http, gw, sid, session["advisor"]["token"], marked_pdf(marker), "Antwort.pdf")
    folder = gw.data_dir / "data" / "sessions" / sid
    assert len(list(folder.iterdir())) == 2
    flash = await flash_client(gw, session["customer"]["token"])
    try:
        async with http.ws_connect(session["advisor"]["events_url"]) as ws:
            await ws.send_json({"type": "chat", "text": "Bitte unterschreiben Sie hier."})
            status, _, _ = await asyncio.to_thread(gw.request, "DELETE", f"/api/sessions/{sid}")
            assert status == 204
            # the WebSocket client: session_ended, then a normal close
            seen = []
            async with asyncio.timeout(5):
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        seen.append(json.loads(msg.data)["type"])
            assert seen[-1] == "session_ended"
            # the Flash client: onSessionEvent(session_ended), then the server closes
            await asyncio.wait_for(flash.closed.wait(), 5)
            assert ended_calls(flash)
    finally:
        await flash.close()
    # every byte gone: the folder, and the content nowhere under the data dir or the log
    assert not folder.exists()
    assert list((gw.data_dir / "data" / "sessions").iterdir()) == []
    assert holding(gw.data_dir, marker) == []
    assert holding(gw.data_dir, b"unterschreiben") == []  # chat never touched disk
    # tokens revoked
    for token in (session["customer"]["token"], session["advisor"]["token"]):
        status, _, _ = await asyncio.to_thread(
            gw.request, "GET", f"/api/sessions/{sid}/documents", None, token
        )
        assert status == 401


async def test_everyone_gone_past_the_grace_period_ends_it(
    gw: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gw.create_session()
    sid = session["id"]
    await upload(http, gw, sid, session["customer"]["token"], marked_pdf(b"x"), "a.pdf")
    async with http.ws_connect(session["customer"]["events_url"]) as ws:
        await ws.receive_json(timeout=5)
    # nobody is connected now; --session-grace 1 (the sweep runs every 0.25 s)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        status, _, _ = await asyncio.to_thread(gw.request, "GET", f"/api/sessions/{sid}")
        if status == 404:
            break
        await asyncio.sleep(0.2)
    assert status == 404
    assert not (gw.data_dir / "data" / "sessions" / sid).exists()


async def test_a_consultation_nobody_joined_is_not_abandoned(gw: GatewayProcess) -> None:
    session = gw.create_session()
    await asyncio.sleep(2.0)  # twice the grace period
    status, _, _ = await asyncio.to_thread(gw.request, "GET", f"/api/sessions/{session['id']}")
    assert status == 200


async def test_expiry_ends_the_consultation_and_deletes_its_documents(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = GatewayProcess(tmp_path, extra=["--session-ttl", "3"]).start()
    try:
        session = proc.create_session()
        sid = session["id"]
        await upload(http, proc, sid, session["customer"]["token"], marked_pdf(b"y"), "a.pdf")
        async with http.ws_connect(session["customer"]["events_url"]) as ws:
            last = None
            async with asyncio.timeout(12):
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        last = json.loads(msg.data)
            assert last == {"type": "session_ended", "reason": "expired"}
        assert not (tmp_path / "data" / "sessions" / sid).exists()
    finally:
        assert proc.stop() == 0, proc.log()


async def test_sigterm_ends_every_consultation_and_deletes_the_files(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = GatewayProcess(tmp_path).start()
    session = proc.create_session()
    await upload(http, proc, session["id"], session["customer"]["token"], marked_pdf(b"z"), "a.pdf")
    assert files_under(tmp_path / "data" / "sessions")
    assert proc.stop(signal.SIGTERM) == 0, proc.log()
    assert list((tmp_path / "data" / "sessions").iterdir()) == []


async def test_sigkill_then_restart_sweeps_the_leftovers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = GatewayProcess(tmp_path).start()
    marker = secrets.token_hex(16).encode()
    session = proc.create_session()
    await upload(
        http, proc, session["id"], session["customer"]["token"], marked_pdf(marker), "a.pdf"
    )
    proc.stop(signal.SIGKILL)
    sessions = tmp_path / "data" / "sessions"
    assert holding(sessions, marker), "a crash leaves the file behind"
    # the next start, on the same data dir, removes it before serving
    again = GatewayProcess(tmp_path).start()
    try:
        assert list(sessions.iterdir()) == []
        assert holding(tmp_path / "data", marker) == []
        assert again.get("/healthz") == {"status": "ok"}
    finally:
        assert again.stop() == 0, again.log()


# -- the presence bookkeeping behind "abandoned", without a server ---------------------------


def test_directory_ends_only_consultations_that_were_joined_and_left() -> None:
    directory = Directory(grace=60.0)
    joined = directory.create()
    untouched = directory.create()
    conn = Connection(kind="events", close=lambda: None)
    joined.attach(Role.CUSTOMER, conn)
    joined.detach(Role.CUSTOMER, conn)
    assert joined.empty_since is not None
    later = joined.empty_since + 61
    assert directory.expire(now=later) == [joined.id]
    assert joined.end_reason == "abandoned"
    assert untouched.id in directory.consultations


def test_together_time_counts_only_while_both_are_there() -> None:
    consultation = Directory().create()
    advisor = Connection(kind="webrtc", close=lambda: None)
    customer = Connection(kind="rtmp", close=lambda: None)
    consultation.attach(Role.ADVISOR, advisor)
    assert consultation.together_since is None  # alone
    consultation.attach(Role.CUSTOMER, customer)
    assert consultation.together_since is not None
    consultation.detach(Role.CUSTOMER, customer)
    assert consultation.together_since is None
    assert 0 <= consultation.together_seconds < 5
    assert consultation.empty_since is None  # the advisor is still there

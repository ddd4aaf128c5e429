"""Anonymous statistics (issue 5, item 7): one row per consultation with the hour it
started, its duration, client kinds and features, and nothing personal; ``GET
/api/stats`` as JSON and CSV; the schema is versioned."""

from __future__ import annotations

import asyncio
import calendar
import csv
import io
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess, flash_client
from bench.testkit.media import FlvTag, make_flv, read_flv_tags
from gateway.consultation import Connection, Directory, Role
from gateway.stats import (
    SCHEMA_VERSION,
    Statistics,
    StatsRow,
    aggregate,
    client_kind,
    hour_of,
    row_for,
    to_csv,
)

# -- units -----------------------------------------------------------------------------------


def test_start_is_rounded_down_to_the_hour() -> None:
    ts = calendar.timegm((2026, 11, 26, 9, 59, 59, 0, 0, 0))
    assert hour_of(ts) == "2026-11-26T09:00Z"


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (set(), "none"),
        ({"events"}, "chat-only"),
        ({"events", "rtmp"}, "flash"),
        ({"rtmpt"}, "flash"),
        ({"events", "webrtc"}, "webrtc"),
        ({"rtmp", "webrtc", "events"}, "flash+webrtc"),
    ],
)
def test_client_kind(kinds: set[str], expected: str) -> None:
    assert client_kind(kinds) == expected


def test_row_holds_counters_not_identities() -> None:
    directory = Directory()
    consultation = directory.create()
    consultation.attach(Role.CUSTOMER, Connection(kind="events", close=lambda: None))
    consultation.attach(Role.ADVISOR, Connection(kind="webrtc", close=lambda: None))
    consultation.chat(Role.CUSTOMER, "Mein Name ist Erika Mustermann")
    consultation.streams[Role.ADVISOR].stats.video_units = 10
    consultation.streams[Role.ADVISOR].stats.transcodes = 1
    consultation.features.add("documents")
    directory.end(consultation.id)
    row = row_for(consultation)
    assert row.customer_client == "chat-only" and row.advisor_client == "webrtc"
    assert (row.video, row.audio, row.chat, row.documents, row.forms, row.transcoding) == (
        True,
        False,
        True,
        True,
        False,
        True,
    )
    assert row.end_reason == "ended"
    text = repr(row)
    for secret in (
        consultation.id,
        consultation.participants[Role.CUSTOMER].token,
        consultation.participants[Role.ADVISOR].token,
        "Erika",
    ):
        assert secret not in text


def _row(**overrides: Any) -> StatsRow:
    values: dict[str, Any] = {
        "started_hour": "2026-11-26T09:00Z",
        "duration_s": 600,
        "together_s": 540,
        "customer_client": "flash",
        "advisor_client": "webrtc",
        "video": True,
        "audio": True,
        "chat": False,
        "documents": False,
        "forms": False,
        "transcoding": True,
        "end_reason": "ended",
    }
    values.update(overrides)
    return StatsRow(**values)


def test_aggregates_and_csv() -> None:
    rows = [
        _row(),
        _row(started_hour="2026-11-27T10:00Z", duration_s=100, customer_client="chat-only"),
        _row(duration_s=4000, documents=True, end_reason="abandoned"),
    ]
    agg = aggregate(rows)
    assert agg["count"] == 3
    assert agg["per_day"] == {"2026-11-26": 2, "2026-11-27": 1}
    assert agg["duration_s"]["buckets"] == {
        "under 5 min": 1,
        "5-15 min": 1,
        "15-30 min": 0,
        "30-60 min": 0,
        "over 60 min": 1,
    }
    assert agg["duration_s"]["median"] == 600
    assert agg["clients"] == {"flash": 2, "webrtc": 3, "chat-only": 1, "phone": 0}
    assert agg["features"]["transcoding"] == 3 and agg["features"]["documents"] == 1
    assert agg["end_reasons"] == {"abandoned": 1, "ended": 2}
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(table) == 3 and table[0]["video"] == "1" and table[1]["chat"] == "0"


def test_schema_is_versioned_and_a_newer_one_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite"
    stats = Statistics(path)
    stats.record(_row()).result()
    stats.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM consultations").fetchone()[0] == 1
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = Statistics(path)
    with pytest.raises(RuntimeError, match="newer"):
        newer.record(_row()).result()
    newer.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM consultations").fetchone()[0] == 1


async def test_rows_are_read_off_the_event_loop(tmp_path: Path) -> None:
    stats = Statistics(tmp_path / "s.sqlite")
    for day in ("2026-11-25", "2026-11-26"):
        stats.record(_row(started_hour=f"{day}T08:00Z"))
    assert len(await stats.rows()) == 2
    assert [r.started_hour for r in await stats.rows(since="2026-11-26T00:00Z")] == [
        "2026-11-26T08:00Z"
    ]
    await asyncio.to_thread(stats.close)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("stats")).start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def h264_tags(tmp_path_factory: pytest.TempPathFactory) -> list[FlvTag]:
    path = make_flv(tmp_path_factory.mktemp("media") / "cam.flv", "h264_speex", seconds=2)
    return [t for t in read_flv_tags(path) if t.type_id in (8, 9)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.e2e
async def test_a_consultation_leaves_one_anonymous_row(
    gw: GatewayProcess, http: aiohttp.ClientSession, h264_tags: list[FlvTag]
) -> None:
    session = gw.create_session()
    sid = session["id"]
    customer_token, advisor_token = session["customer"]["token"], session["advisor"]["token"]
    user_agent = "Mozilla/5.0 (Erika Mustermanns Laptop) Firefox/999"
    # the advisor in a browser with chat, the customer on Flash with camera and mic
    async with (
        aiohttp.ClientSession(headers={"User-Agent": user_agent}) as browser,
        browser.ws_connect(session["advisor"]["events_url"]) as ws,
    ):
        await ws.send_json({"type": "chat", "text": "Guten Tag, Frau Mustermann"})
        customer = await flash_client(gw, customer_token)
        # an old player without H.264: the gateway transcodes for it
        old_player = await flash_client(gw, advisor_token, video_codecs=0.0)
        try:
            stream = await customer.create_stream()
            customer.publish(stream, "customer")
            await customer.wait_status("NetStream.Publish.Start")
            play = await old_player.create_stream()
            old_player.play(play, "customer")
            await old_player.wait_status("NetStream.Play.Start")
            for tag in h264_tags:
                customer.send_media(stream, tag.type_id, tag.timestamp, tag.body)
            await old_player.wait_for(
                lambda: any(e.type_id == 9 for e in old_player.media), timeout=20
            )
            form = aiohttp.FormData()
            form.add_field(
                "file",
                io.BytesIO(b"%PDF-1.4\nMustermann-Vertrag"),
                filename="Erika Mustermann Vertrag.pdf",
            )
            async with browser.post(
                f"{gw.base}/api/sessions/{sid}/documents",
                data=form,
                headers=bearer(customer_token),
            ) as resp:
                assert resp.status == 201
                doc_id = (await resp.json())["id"]
            status, _, _ = await asyncio.to_thread(gw.request, "DELETE", f"/api/sessions/{sid}")
            assert status == 204
        finally:
            await customer.close()
            await old_player.close()
    # the row is written off the loop: wait for it
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        async with http.get(f"{gw.base}/api/stats", headers=bearer(ADVISOR_TOKEN)) as resp:
            assert resp.status == 200
            body = await resp.json()
        rows = [r for r in body["rows"] if r["documents"] and r["transcoding"]]
        if rows:
            break
        await asyncio.sleep(0.1)
    assert len(rows) == 1, body
    row = rows[0]
    assert row["customer_client"] == "flash"
    assert row["advisor_client"] == "flash"  # events socket + RTMP player
    assert row["video"] and row["audio"] and row["chat"] and row["documents"]
    assert not row["forms"]
    assert row["end_reason"] == "ended"
    assert row["started_hour"].endswith(":00Z")
    assert body["count"] >= 1 and body["features"]["transcoding"] >= 1
    # nothing personal in the database file, byte for byte
    raw = (gw.data_dir / "data" / "stats.sqlite").read_bytes()
    for needle in (
        sid,
        doc_id,
        customer_token,
        advisor_token,
        session["customer"]["pin"],
        ADVISOR_TOKEN,
        "127.0.0.1",
        "Mustermann",
        "Firefox",
        "Mozilla",
        "Vertrag",
    ):
        assert needle.encode() not in raw, needle
        assert needle.encode("utf-16-le") not in raw, needle


@pytest.mark.e2e
async def test_stats_as_csv_for_advisors_only(
    gw: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    session = gw.create_session()
    status, _, _ = await asyncio.to_thread(gw.request, "DELETE", f"/api/sessions/{session['id']}")
    assert status == 204
    url = f"{gw.base}/api/stats"
    for attempt in range(50):
        async with http.get(url + "?format=csv", headers=bearer(ADVISOR_TOKEN)) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/csv"
            assert resp.headers["Content-Disposition"].startswith("attachment;")
            table = list(csv.DictReader(io.StringIO(await resp.text())))
        if table or attempt == 49:
            break
        await asyncio.sleep(0.1)
    assert table and set(table[0]) >= {"started_hour", "duration_s", "customer_client", "chat"}
    headers = {**bearer(ADVISOR_TOKEN), "Accept": "text/csv"}
    async with http.get(url, headers=headers) as resp:
        assert resp.content_type == "text/csv"
    async with http.get(url + "?from=2999-01-01", headers=bearer(ADVISOR_TOKEN)) as resp:
        assert (await resp.json())["count"] == 0
    async with http.get(url + "?from=gestern", headers=bearer(ADVISOR_TOKEN)) as resp:
        assert resp.status == 400
    other = gw.create_session()
    async with http.get(url, headers=bearer(other["customer"]["token"])) as resp:
        assert resp.status == 403
    async with http.get(url) as resp:
        assert resp.status == 401


def test_every_client_kind_has_a_label_on_ops_in_both_languages() -> None:
    """/ops draws the statistics' access kinds with ``ops.client.<kind>`` (static/ops.js);
    a kind without it showed its raw key in the chart (the telephone's "phone" did)."""
    from gateway.stats import CLIENT_KINDS
    from web import i18n

    for lang in ("de", "en"):
        missing = [k for k in CLIENT_KINDS if f"ops.client.{k}" not in i18n.TABLES[lang]]
        assert missing == [], (lang, missing)

"""The customer's anonymous rating (gateway/feedback.py, web/feedback.py), its column in
the statistics (schema v2) and the bank contact of the end screen (gateway/config.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import config as config_mod
from gateway.config import Config
from gateway.consultation import Role
from gateway.feedback import FeedbackDesk, Rated
from gateway.main import build_app, build_parser
from gateway.service import Gateway
from gateway.stats import Statistics, StatsRow, aggregate, to_csv
from gateway.store.sqlite import _STATS_V1 as _SCHEMA_V1
from web.auth import CUSTOMER_COOKIE
from web.templates import View, customer_room

ADVISOR_TOKEN = "static-advisor-token-for-feedback"
Client = TestClient[web.Request, web.Application]


def _row(**overrides: Any) -> StatsRow:
    values: dict[str, Any] = {
        "started_hour": "2026-12-01T09:00Z",
        "duration_s": 600,
        "together_s": 500,
        "customer_client": "webrtc",
        "advisor_client": "webrtc",
        "video": True,
        "audio": True,
        "chat": True,
        "documents": False,
        "forms": False,
        "transcoding": False,
        "end_reason": "ended",
    }
    values.update(overrides)
    return StatsRow(**values)


# -- statistics --------------------------------------------------------------------------------


def test_a_version_1_database_gains_the_feedback_column(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_V1)
        db.execute(
            "INSERT INTO consultations VALUES "
            "('2026-11-30T08:00Z', 60, 30, 'flash', 'webrtc', 1, 1, 0, 0, 0, 1, 'ended')"
        )
        db.execute("PRAGMA user_version = 1")
    stats = Statistics(path)
    try:
        row = stats.record(_row(feedback=5))
        assert stats.rate(row, 1).result() is False  # it has one: kept
        old, new = stats._executor.submit(stats._select, None, None).result()
    finally:
        stats.close()
    assert old.feedback is None and old.customer_client == "flash"
    assert new.feedback == 5


def test_a_row_is_rated_once(tmp_path: Path) -> None:
    stats = Statistics(tmp_path / "s.sqlite")
    try:
        row = stats.record(_row())
        assert stats.rate(row, 4).result() is True
        assert stats.rate(row, 2).result() is False
        with pytest.raises(ValueError):
            stats.rate(row, 6)
        rows = stats._executor.submit(stats._select, None, None).result()
    finally:
        stats.close()
    assert [r.feedback for r in rows] == [4]


def test_feedback_in_aggregates_and_csv() -> None:
    rows = [_row(feedback=5), _row(feedback=3), _row()]
    agg = aggregate(rows)
    assert agg["feedback"] == {
        "count": 2,
        "mean": 4.0,
        "ratings": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 1},
    }
    assert aggregate([])["feedback"]["mean"] is None
    lines = to_csv(rows).splitlines()
    assert lines[0].endswith(",feedback")
    assert lines[1].endswith(",5") and lines[3].endswith(",")


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway.from_config(Config(advisor_token=ADVISOR_TOKEN, data_dir=tmp_path))
    gw.open_storage()
    yield gw
    assert gw.statistics is not None and gw.documents is not None
    gw.documents.close()
    gw.statistics.close()


@pytest.fixture
async def client(aiohttp_client: Any, gateway: Gateway) -> Client:
    return await aiohttp_client(build_app(gateway))


async def _consultation(client: Client) -> dict[str, Any]:
    resp = await client.post("/api/sessions", headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"})
    assert resp.status == 201
    body: dict[str, Any] = await resp.json()
    return body


async def _rate(client: Client, body: dict[str, Any], rating: object, **headers: str) -> int:
    cookie = f"{CUSTOMER_COOKIE}={body['customer']['token']}"
    sent = {"Origin": f"http://{client.host}:{client.port}", "Cookie": cookie, **headers}
    resp = await client.post(f"/k/{body['id']}/feedback", json={"rating": rating}, headers=sent)
    await resp.read()
    return resp.status


async def _rows(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/api/stats", headers={"Authorization": f"Bearer {ADVISOR_TOKEN}"})
    rows: list[dict[str, Any]] = (await resp.json())["rows"]
    return rows


async def test_rating_after_the_end_updates_its_row_once(client: Client, gateway: Gateway) -> None:
    body = await _consultation(client)
    other = await _consultation(client)
    assert gateway.directory.end(body["id"])
    assert await _rate(client, body, 5) == 201
    assert await _rate(client, body, 1) == 409
    # another consultation's customer cannot rate this one
    stranger = {**body, "customer": other["customer"]}
    assert await _rate(client, stranger, 3) == 403
    rows = await _rows(client)
    assert [r["feedback"] for r in rows] == [5]


async def test_rating_before_the_end_is_written_with_the_row(
    client: Client, gateway: Gateway
) -> None:
    body = await _consultation(client)
    assert await _rate(client, body, 2) == 201
    assert await _rate(client, body, 4) == 409
    assert await _rows(client) == []  # nothing written while it runs
    assert gateway.directory.end(body["id"])
    assert [r["feedback"] for r in await _rows(client)] == [2]
    assert await _rate(client, body, 4) == 409  # and not again after the end


@pytest.mark.parametrize("rating", [0, 6, 2.5, "5", True, None])
async def test_only_whole_stars_count(client: Client, rating: object) -> None:
    body = await _consultation(client)
    assert await _rate(client, body, rating) == 400


async def test_rating_needs_the_customer_and_our_origin(client: Client) -> None:
    body = await _consultation(client)
    assert await _rate(client, body, 4, Origin="https://evil.example") == 403
    no_cookie = {**body, "customer": {"token": "not-a-token"}}
    assert await _rate(client, no_cookie, 4) == 403
    resp = await client.post(
        f"/k/{body['id']}/feedback",
        data=b"{not json",
        headers={"Origin": f"http://{client.host}:{client.port}"},
    )
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"


def test_the_window_for_a_late_rating_closes(tmp_path: Path) -> None:
    stats = Statistics(tmp_path / "s.sqlite")
    gw = Gateway.from_config(Config())
    consultation = gw.directory.create()
    desk = FeedbackDesk(stats, window=60)
    try:
        desk.row_written(consultation, stats.record(_row()), rated=False, now=1000.0)
        token = consultation.participants[Role.CUSTOMER].token
        late = asyncio.run(desk.rate_ended(consultation.id, token, 3, now=1061.0))
    finally:
        stats.close()
    assert late is Rated.UNKNOWN


# -- the bank's contact ------------------------------------------------------------------------


def _load(argv: list[str], env: dict[str, str] | None = None) -> Config:
    return config_mod.load(build_parser().parse_args(["serve", *argv]), env or {})


def test_bank_contact_from_toml_environment_and_flags(tmp_path: Path) -> None:
    assert _load([]).bank == config_mod.Bank()  # neutral by default
    toml = tmp_path / "gw.toml"
    toml.write_text(
        '[bank]\nname = "Musterbank"\nphone = "0221 1234"\nwebsite = "https://bank.example"\n'
    )
    cfg = _load(["--config", str(toml)], {"VB_BANK_PHONE": "0221 9999"})
    assert (cfg.bank.name, cfg.bank.phone, cfg.bank.website) == (
        "Musterbank",
        "0221 9999",
        "https://bank.example",
    )
    cfg = _load(["--config", str(toml), "--bank-name", "Andere Bank"], {})
    assert cfg.bank.name == "Andere Bank" and cfg.bank.phone == "0221 1234"
    flat = tmp_path / "flat.toml"
    flat.write_text('bank_email = "service@bank.example"\n')  # keys as the flag names
    assert _load(["--config", str(flat)]).bank.email == "service@bank.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[bank]\nfax = "1"\n', "unknown bank setting"),
        ('[bank]\nwebsite = "javascript:alert(1)"\n', "http"),
        ("[bank]\nphone = 221\n", "must be text"),
    ],
)
def test_bad_bank_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(text)
    with pytest.raises(ValueError, match=message):
        _load(["--config", str(toml)])


def test_end_screen_without_a_contact_names_no_one() -> None:
    limits = {"max_bytes": 1, "quota_bytes": 2, "max_files": 3, "extensions": ["pdf"]}
    page = customer_room(View("de"), "a", "tok", [], documents=limits, bank=config_mod.Bank())
    assert 'data-t="end.contact.none"' in page and "tel:" not in page
    named = config_mod.Bank(name="Bank <b>", phone="+49 (221) 12-34")
    page = customer_room(View("de"), "a", "tok", [], documents=limits, bank=named)
    assert 'href="tel:+4922112 34"' not in page and 'href="tel:+492211234"' in page
    assert "Bank &lt;b&gt;" in page and "<b>" not in page

"""``/metrics`` closed to strangers when the operator asks (issue 11 item 11): a scrape
token (``--metrics-token``) or a listener of its own (``--metrics-listen``)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from bench.testkit.gwproc import GatewayProcess, free_port

TOKEN = "scrape-secret-0123456789"


def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_token_is_required_when_configured(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra=["--metrics-token", TOKEN]).start()
    try:
        status, body = scrape(gw.base + "/metrics")
        assert status == 401, body
        assert "vb_" not in body  # no figures without the token
        assert scrape(gw.base + "/metrics", "wrong")[0] == 401
        # the advisor's token is not a scrape token
        assert scrape(gw.base + "/metrics", "test-advisor-token-0123456789")[0] == 401
        status, body = scrape(gw.base + "/metrics", TOKEN)
        assert status == 200
        assert "vb_added_latency_seconds" in body
        assert gw.get("/healthz")
    finally:
        assert gw.stop() == 0, gw.log()
    assert TOKEN not in gw.log()  # tokens never in logs


def test_metrics_on_their_own_listener(tmp_path: Path) -> None:
    port = free_port()
    gw = GatewayProcess(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{port}"]).start()
    try:
        assert scrape(gw.base + "/metrics")[0] == 404  # not on the web port any more
        status, body = scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "vb_added_latency_seconds" in body
        # nothing else is served there
        assert scrape(f"http://127.0.0.1:{port}/healthz")[0] == 404
        assert scrape(f"http://127.0.0.1:{port}/api/sessions")[0] in (404, 405)
    finally:
        assert gw.stop() == 0, gw.log()


def test_metrics_stay_open_by_default(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        status, body = scrape(gw.base + "/metrics")
        assert status == 200 and "vb_added_latency_seconds" in body
    finally:
        assert gw.stop() == 0, gw.log()

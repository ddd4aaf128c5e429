"""The /ops page in headless Chromium during a bridged consultation: a Flash customer
(ffmpeg, Spark + Speex) seen by the advisor's browser page, so a Spark > VP8 and a
Speex > Opus transcoder run; the ops page shows them live, draws its charts, requests
nothing from another origin, and a screenshot is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import ffmpeg_publish, make_flv
from tests.conftest import require_tool
from tests.test_pages import (  # noqa: F401  (fixtures used by name)
    DESKTOP,
    Opener,
    advisor_state,
    browser,
    gw,
    opener,
    playwright,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_ops_page_shows_transcoders_live(
    gw: GatewayProcess,  # noqa: F811
    opener: Opener,  # noqa: F811
    artifacts: Path,
    tmp_path: Path,
) -> None:
    require_tool("ffmpeg")
    src = make_flv(tmp_path / "spark.flv", "spark_speex", seconds=6)
    body = gw.create_session()
    publisher = ffmpeg_publish(src, body["customer"]["rtmp"]["publish_url"], loop=True)
    try:
        advisor = opener.advisor(body["id"])
        # the advisor's page receives the Flash customer through the transcoders
        wait_until(
            advisor.page,
            lambda: advisor.page.evaluate(
                "(() => { const v = document.querySelector('#remote-video');"
                " return !!v && v.videoWidth > 0; })()"
            ),
            timeout=20,
        )
        context = opener.context(storage_state=opener.advisor_state, viewport=DESKTOP)
        ops = opener._watch(context.new_page())
        page = ops.page
        page.goto(f"{gw.base}/ops")
        expect(page.locator("h1")).to_have_text("Betriebsmonitor")
        expect(page.locator("#ops-state")).to_have_text("Live – Aktualisierung jede Sekunde")
        rows = page.locator("#ops-transcoders tbody tr")
        expect(rows.filter(has_text="spark>vp8")).to_have_count(1, timeout=15_000)
        expect(rows.filter(has_text="speex>opus")).to_have_count(1)
        expect(rows.filter(has_text="spark>vp8")).to_contain_text("Flash → Browser")
        short = body["id"][:6]
        expect(page.locator("#ops-consultations tbody")).to_contain_text(short)
        assert body["id"] not in page.content()  # short ids only
        # fps settles near the source's 15 over a few samples
        wait_until(
            page,
            lambda: (
                10
                <= float(
                    rows.filter(has_text="spark>vp8")
                    .locator("td")
                    .nth(4)
                    .inner_text()
                    .replace(",", ".")
                )
                <= 20
            ),
            timeout=10,
        )
        # the charts were drawn: the fps canvas is not blank
        painted = page.evaluate(
            "(() => { const c = document.getElementById('chart-fps');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()"
        )
        assert painted > 500, painted
        page.wait_for_timeout(1500)  # a few more points on the lines
        page.screenshot(path=str(artifacts / "ops-monitor.png"), full_page=True)
        ops.assert_clean()
        # English is there too
        page.goto(f"{gw.base}/ops?lang=en")
        expect(page.locator("h1")).to_have_text("Operations monitor")
    finally:
        publisher.kill()
        publisher.communicate()

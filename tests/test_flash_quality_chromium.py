# ruff: noqa: F811  (pytest fixtures imported from tests.test_pages are used by name)
"""The advisor's "Kunde" row for a Flash/RTMP customer, in Chromium (issue 10, item 6):
an RTMP encoder publishes as the customer (ffmpeg, as a Flash camera would); the
advisor's room shows the rate the gateway receives and, while nothing arrives over the
still open connection, "Kunde verbindet neu …"."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.media import ffmpeg_publish, make_flv
from tests.test_pages import (  # noqa: F401  (fixtures used by name)
    Opener,
    advisor_state,
    browser,
    gw,
    opener,
    playwright,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flv(tmp_path_factory.mktemp("flash-quality") / "cam.flv", "h264_speex", seconds=4)


@pytest.fixture
def stopped_later() -> Iterator[list[int]]:
    """ffmpeg processes to end after the test, also when it fails while one is stopped."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break


def test_advisor_sees_a_flash_customers_rate_and_outage(
    gw: GatewayProcess,
    opener: Opener,
    artifacts: Path,
    camera: Path,
    stopped_later: list[int],
) -> None:
    body = gw.create_session()
    advisor = opener.advisor(body["id"])
    a = advisor.page
    expect(a.locator("#status")).to_have_attribute("data-state", "connected")
    encoder = ffmpeg_publish(camera, body["customer"]["rtmp"]["publish_url"], loop=True)
    stopped_later.append(encoder.pid)

    expect(a.locator("#presence")).to_contain_text("Kunde ist da (Flash)", timeout=15_000)
    expect(a.locator("#customer-camera")).to_have_text("Kamera an")
    # the gateway's own measurement of what arrives over RTMP
    expect(a.locator("#uplink-state")).to_have_text("verbunden", timeout=15_000)
    expect(a.locator("#uplink-stats")).to_contain_text("kbit/s", timeout=10_000)
    # a real rate from the first event on (the file is about 400 kbit/s)
    expect(a.locator("#uplink-stats")).not_to_contain_text(re.compile(r"^0 kbit/s"))
    expect(a.locator("#uplink-dot")).not_to_have_attribute("data-quality", "poor")
    a.screenshot(path=str(artifacts / "flash-quality-advisor-flowing.png"), full_page=True)

    # an outage: the encoder freezes, its TCP connection stays open, nothing arrives
    os.kill(encoder.pid, signal.SIGSTOP)
    expect(a.locator("#presence")).to_have_text("Kunde verbindet neu …", timeout=15_000)
    expect(a.locator("#uplink-state")).to_have_text("unterbrochen")
    expect(a.locator("#uplink-dot")).to_have_attribute("data-quality", "poor")
    expect(a.locator("#customer-camera")).not_to_have_text("Kamera an")
    # no round trip either: the frozen encoder answers no ping (none carried over)
    expect(a.locator("#uplink-stats")).to_contain_text("Laufzeit –")
    a.screenshot(path=str(artifacts / "flash-quality-advisor-outage.png"), full_page=True)

    os.kill(encoder.pid, signal.SIGCONT)
    expect(a.locator("#presence")).to_contain_text("Kunde ist da (Flash)", timeout=15_000)
    expect(a.locator("#uplink-state")).to_have_text("verbunden")
    expect(a.locator("#customer-camera")).to_have_text("Kamera an")

    encoder.kill()
    encoder.wait(10)
    # the publish is over: the row says the customer sends nothing
    expect(a.locator("#uplink-state")).to_have_text("aus", timeout=15_000)
    advisor.assert_clean()

"""A small disk (issue 11, item 7): parallel uploads reserve their space before they
write, so each is either stored (201) or refused (507), never a 500 (ENOSPC), and the
free space never falls below the floor; a completely full disk keeps the statistics
row of a consultation that ends. The data dir is a 150 MiB tmpfs of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.testkit.gwproc import ADVISOR_TOKEN, GatewayProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
FLOOR = 64 * MiB  # document_min_free_bytes, the default


@contextlib.contextmanager
def small_disk(path: Path, size: str = "150m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (the test runs as root, as the lead's do)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pdf(size: int) -> bytes:
    head = b"%PDF-1.4\n% Kontoauszug\n"
    return head + secrets.token_bytes(size - len(head))


class FreeSpaceWatch:
    """Samples the free space of ``path`` every 5 ms in a thread; keeps the least."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.least = shutil.disk_usage(path).free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.least = min(self.least, shutil.disk_usage(self.path).free)
            self._stop.wait(0.005)

    def __enter__(self) -> FreeSpaceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def upload(
    http: aiohttp.ClientSession, gw: GatewayProcess, sid: str, token: str, data: bytes
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="auszug.pdf", content_type="application/pdf")
    url = f"{gw.base}/api/sessions/{sid}/documents"
    async with http.post(url, data=form, headers=bearer(token)) as resp:
        return resp.status, json.loads(await resp.read())


def assert_clean(gw: GatewayProcess) -> None:
    log = gw.log()
    assert "Traceback" not in log and "internal error" not in log.lower(), log[-3000:]


async def test_parallel_uploads_on_a_small_disk_are_201_or_507_never_500(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    with small_disk(tmp_path / "gw" / "data") as disk:
        gw.start()
        try:
            sessions = [gw.create_session() for _ in range(5)]
            body = pdf(19 * MiB)
            async with aiohttp.ClientSession() as http:
                with FreeSpaceWatch(disk) as watch:
                    results = await asyncio.gather(
                        *[
                            upload(http, gw, s["id"], s["customer"]["token"], body)
                            for s in sessions
                            for _ in range(2)
                        ]
                    )
            statuses = sorted(status for status, _ in results)
            assert set(statuses) <= {201, 507}, statuses
            assert 201 in statuses and 507 in statuses, statuses
            for status, problem in results:
                if status == 507:
                    assert problem["status"] == 507 and "disk space" in problem["detail"]
            assert watch.least >= FLOOR, f"free space fell to {watch.least / MiB:.1f} MiB"
            # what was stored is complete; the refused left nothing behind
            stored = [p for p in (disk / "sessions").rglob("*") if p.is_file() and p.stat().st_size]
            assert len(stored) == statuses.count(201)
            assert all(p.stat().st_size == len(body) for p in stored)
        finally:
            assert gw.stop() == 0
        assert_clean(gw)


async def test_a_full_disk_keeps_the_statistics_row(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    with small_disk(tmp_path / "gw" / "data", "16m") as disk:
        gw.start()
        filler = disk / "filler"
        try:
            session = gw.create_session()
            async with aiohttp.ClientSession() as http:
                # the disk fills up completely (another program, a runaway log, ...)
                with contextlib.suppress(OSError), open(filler, "wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                with contextlib.suppress(OSError), open(disk / "filler2", "wb") as fh:
                    while True:
                        fh.write(b"\0")
                        fh.flush()
                assert shutil.disk_usage(disk).free < 4096
                status, _, _ = await asyncio.to_thread(
                    gw.request, "DELETE", f"/api/sessions/{session['id']}"
                )
                assert status == 204
                # the row is written off the loop: wait for it, the disk still full
                rows: list[Any] = []
                for _ in range(50):
                    url = f"{gw.base}/api/stats"
                    async with http.get(url, headers=bearer(ADVISOR_TOKEN)) as resp:
                        assert resp.status == 200
                        rows = (await resp.json())["rows"]
                    if rows:
                        break
                    await asyncio.sleep(0.1)
                assert len(rows) == 1, rows
                assert rows[0]["end_reason"] == "ended"
        finally:
            for f in (filler, disk / "filler2"):
                with contextlib.suppress(OSError):
                    os.unlink(f)
            assert gw.stop() == 0
    log = gw.log()
    assert "could not write a statistics row" not in log
    assert "Traceback" not in log

"""The suite notices a gateway that logged a traceback, an internal error or an ERROR
(issue 11, "The tests must notice"): the log reader, and the autouse fixture wired to
every ``GatewayProcess`` (run as an inner pytest so its failure can be observed)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.testkit.gwproc import GatewayLogError, GatewayProcess
from gateway.logs import serious_records

ROOT = Path(__file__).resolve().parent.parent

TEXT_LOG = """\
2026-12-02 04:00:00,001 INFO gateway: serving
2026-12-02 04:00:01,002 WARNING rtmp.server: rtmp tcp [address]: too many connections
2026-12-02 04:00:02,003 ERROR web.problems: unhandled error in GET /api/x
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: boom
2026-12-02 04:00:03,004 INFO rtmp.server: rtmp tcp [address]: internal error; closing
2026-12-02 04:00:04,005 INFO gateway: consultation ab12 ended
"""


def test_reader_finds_errors_tracebacks_and_internal_errors_not_warnings() -> None:
    bad = serious_records(TEXT_LOG)
    assert [r.level for r in bad] == ["ERROR", "INFO"]
    assert "ValueError: boom" in bad[0].text  # the traceback belongs to its record
    assert "internal error" in bad[1].text


def test_reader_reads_json_logs_and_bare_interpreter_output() -> None:
    log = (
        '{"ts": "t", "level": "INFO", "logger": "gateway", "msg": "serving"}\n'
        '{"ts": "t", "level": "ERROR", "logger": "x", "msg": "failed", "exc": "Traceback"}\n'
    )
    assert [r.level for r in serious_records(log)] == ["ERROR"]
    bare = "Exception ignored in: <function X.__del__>\nTraceback (most recent call last):\n"
    assert [r.level for r in serious_records(bare)] == [None]


def test_allow_list_excuses_only_the_named_error() -> None:
    bad = serious_records(TEXT_LOG, [re.compile(r"unhandled error in GET /api/x")])
    assert len(bad) == 1 and "internal error" in bad[0].text


def test_check_log_reports_only_new_lines(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path)
    gw.log_path = tmp_path / "gateway.log"
    gw.log_path.write_text(TEXT_LOG.splitlines(keepends=True)[0])
    gw.check_log()  # clean so far
    with open(gw.log_path, "a") as fh:
        fh.write("".join(TEXT_LOG.splitlines(keepends=True)[2:6]))
    with pytest.raises(GatewayLogError, match="ValueError: boom"):
        gw.check_log()
    gw.check_log()  # reported once, not again


INNER = """
import pytest
from bench.testkit.gwproc import GatewayProcess

CRASH = "2026-12-02 04:00:02,003 ERROR rtmp.server: crash\\nTraceback (most recent call last):\\n"

def _write_crash(gw):
    # what a crashing handler would print: appended to the real server's output
    with open(gw.log_path, "a") as fh:
        fh.write(CRASH)

def test_shared_gateway_crash(gateway):
    gateway.get("/healthz")
    _write_crash(gateway)

def test_shared_gateway_clean_afterwards(gateway):
    gateway.get("/healthz")

@pytest.mark.gateway_log_allows(r"ERROR rtmp\\.server: crash")
def test_declared_error(gateway):
    _write_crash(gateway)

def test_own_gateway_crash(tmp_path):
    gw = GatewayProcess(tmp_path).start()
    try:
        _write_crash(gw)
    finally:
        gw.stop()
"""


@pytest.mark.e2e
def test_fixture_fails_the_test_whose_gateway_logged_a_crash(tmp_path: Path) -> None:
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent(INNER))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-rfE", str(inner)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    # the crash fails the test during which it was logged, not its neighbours
    assert re.search(r"(FAILED|ERROR) .*test_shared_gateway_crash", out), out
    assert re.search(r"(FAILED|ERROR) .*test_own_gateway_crash", out), out
    assert "test_shared_gateway_clean_afterwards" not in out, out
    assert "test_declared_error" not in out, out
    assert "1 failed, 3 passed, 1 error" in out, out

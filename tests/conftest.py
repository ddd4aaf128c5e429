from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gwproc
from tests.gwproc import GatewayProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway_log_allows(*patterns): regexes of errors the test deliberately makes a "
        "gateway log (searched in the whole log record); anything else it logs at ERROR, "
        "a traceback or an 'internal error' fails the test",
    )


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # `make test` installs every tool; a missing one is a broken set-up, not a skip.
        pytest.fail(f"{name} is not installed (run `make deps`)")
    return path


@pytest.fixture(autouse=True)
def _gateway_log_is_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail every test during which a gateway it talks to (its own or a shared one)
    logged a traceback, an internal error or an ERROR the test did not declare.

    Autouse, so it is set up before and torn down after the test's other function-scoped
    fixtures: lines a gateway writes while such a fixture stops it are checked too, and
    ``GatewayProcess.stop`` checks whatever a module- or session-scoped one writes later.
    """
    for proc in list(gwproc.STARTED):
        proc.check_log()  # lines from before this test (e.g. another module's teardown)
    patterns = [
        re.compile(p) for mark in request.node.iter_markers("gateway_log_allows") for p in mark.args
    ]
    gwproc.ALLOWED[:] = patterns
    try:
        yield
        errors = []
        for proc in list(gwproc.STARTED):
            try:
                proc.check_log()
            except gwproc.GatewayLogError as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)
    finally:
        gwproc.ALLOWED.clear()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One real gateway for the end-to-end tests; each test makes its own consultation."""
    proc = GatewayProcess(tmp_path_factory.mktemp("gateway")).start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

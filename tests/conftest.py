from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gwproc import GatewayProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # `make test` installs every tool; a missing one is a broken set-up, not a skip.
        pytest.fail(f"{name} is not installed (run `make deps`)")
    return path


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

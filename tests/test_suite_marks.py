"""The suite says what it is (issue 13.8): tests/conftest.py marks a test ``e2e`` when it,
a fixture it uses or a helper of ours they call starts a process, and refuses
``subprocess.Popen`` to every unmarked test."""

from __future__ import annotations

import subprocess

import pytest

from bench.testkit import gwproc
from tests import conftest

HOME = __name__


def _pure() -> int:
    return sum(range(3))


def _runs_ffmpeg() -> None:
    subprocess.run(["ffmpeg", "-version"], check=True)


def _calls_a_helper_that_runs_ffmpeg() -> None:
    _runs_ffmpeg()


def _starts_a_gateway(tmp: object) -> None:
    gwproc.GatewayProcess(tmp).start()  # type: ignore[arg-type]


def _only_mentions_it() -> None:
    """Not GatewayProcess, nor subprocess.Popen: words in a docstring start nothing."""


@pytest.mark.parametrize(
    ("function", "spawns"),
    [
        (_pure, False),
        (_only_mentions_it, False),
        (_runs_ffmpeg, True),
        (_calls_a_helper_that_runs_ffmpeg, True),
        (_starts_a_gateway, True),
        (gwproc.flash_client, False),  # an RTMP client in this process
        (gwproc.bystander_stream, True),  # ffmpeg makes its media
    ],
)
def test_what_starts_a_process_is_found(function: object, spawns: bool) -> None:
    assert conftest._spawns(function, set(), HOME) is spawns


def test_the_gateway_fixture_makes_a_test_e2e(request: pytest.FixtureRequest) -> None:
    items = [i for i in request.session.items if "gateway" in getattr(i, "fixturenames", ())]
    for item in items:
        assert item.get_closest_marker("e2e"), item.nodeid


def test_an_unmarked_test_may_not_start_a_process(request: pytest.FixtureRequest) -> None:
    # Popen looked up by a string, so the scan leaves this test unmarked and the guard of
    # this very call phase is on too (the inner one below catches the attempt first)
    popen = vars(subprocess)["Popen"]
    assert not request.node.get_closest_marker("e2e")
    guard = conftest._guarded(request.node)
    next(guard)
    with pytest.raises(conftest._ProcessStarted):
        popen(["true"])
    with pytest.raises(pytest.fail.Exception, match="not marked e2e but started a process"):
        guard.send(None)

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import aiortc  # noqa: F401  (see below)
import pytest

import tests.fuzzing  # noqa: F401  (loads the hypothesis profile for make unit)
from bench.testkit import gwproc
from bench.testkit.gwproc import GatewayProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def pytest_configure(config: pytest.Config) -> None:
    # also in pyproject.toml; registered here for a test file run from elsewhere
    # (tests/test_gateway_log_check.py runs one with ``-p tests.conftest``)
    config.addinivalue_line("markers", "e2e: starts a process or a browser (make unit skips it)")
    config.addinivalue_line(
        "markers",
        "gateway_log_allows(*patterns): regexes of errors the test deliberately makes a "
        "gateway log (searched in the whole log record); anything else it logs at ERROR, "
        "a traceback or an 'internal error' fails the test",
    )


# --- The suite says what it is (issue 13.8) -------------------------------------------------
# A test that starts a process (the gateway, Chromium through Playwright, ffmpeg, rtmpdump,
# nginx, haxe, node, ...) is an end-to-end test: marked ``e2e`` so ``make unit``
# (``pytest -m "not e2e"``) runs only what stays in this process. The mark is found at
# collection by reading the source of the test, of every fixture it uses and, transitively,
# of the helpers they call that live in tests/ or bench/testkit/; a guard around every unmarked
# test's setup, call and teardown fails it if it starts a process anyway, so a missed
# helper shows up as a failing unit test instead of a slow unit run.

# What starts a process, as names the code uses (not text, so a docstring mentioning
# GatewayProcess does not count): the gateway runner, Playwright, asyncio's subprocesses,
# and subprocess's functions (ffmpeg, rtmpdump, nginx, haxe, node go through these).
_SPAWNERS = {"GatewayProcess", "async_playwright", "sync_playwright"}
_ASYNC_SPAWNS = {"create_subprocess_exec", "create_subprocess_shell"}
_SUBPROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output"}
_OWN_MODULES = ("tests", "bench.testkit")


def _own(obj: object, home: str) -> bool:
    """Ours: from tests/ or bench/testkit/, or from the test's own module (``home``; a
    test file run from elsewhere, as tests/test_gateway_log_check.py does)."""
    module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
    return isinstance(module, str) and (_is_own_module(module) or module == home)


def _is_own_module(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in _OWN_MODULES)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _spawns(obj: Any, seen: set[int], home: str) -> bool:
    """Does this function or class of ours (or anything of ours it names) start a process?"""
    obj = inspect.unwrap(obj)
    if id(obj) in seen or not _own(obj, home) or getattr(obj, "_starts_nothing", False):
        return False
    seen.add(id(obj))
    if isinstance(obj, type):
        members = [v for v in vars(obj).values() if inspect.isfunction(v)]
        return any(_spawns(v, seen, home) for v in members)
    code = getattr(obj, "__code__", None)
    if code is None:
        return False
    names = _code_names(code)
    if names & (_SPAWNERS | _ASYNC_SPAWNS) or ("subprocess" in names and names & _SUBPROCESS_CALLS):
        return True
    space: dict[str, Any] = getattr(obj, "__globals__", {})
    found = [space[n] for n in names if n in space]
    # ``from bench.testkit.media import make_flv`` inside a function: the module by its name
    found += [
        sys.modules.get(n) or importlib.import_module(n)
        for n in names
        if n in sys.modules or (_is_own_module(n) and "." in n)
    ]
    # ``gwproc.flash_client(...)``: a module of ours named, then an attribute of it
    for module in [v for v in found if isinstance(v, types.ModuleType) and _own(v, home)]:
        found += [getattr(module, n) for n in names if hasattr(module, n)]
    found = [inspect.unwrap(v) if callable(v) else v for v in found]  # functools.cache too
    return any(_spawns(v, seen, home) for v in found if inspect.isfunction(v) or inspect.isclass(v))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("e2e"):
            continue
        seen: set[int] = set()
        candidates: list[Any] = [item.function]
        for defs in item._fixtureinfo.name2fixturedefs.values():
            candidates += [d.func for d in defs]
        home = item.module.__name__ if item.module is not None else ""
        if any(_spawns(c, seen, home) for c in candidates):
            item.add_marker(pytest.mark.e2e)


# aiortc's import runs ``ldconfig -p`` once (aioice -> ifaddr -> ctypes.util.find_library):
# importing it here, at collection, keeps that library lookup out of the guard below, so
# a unit test that is the first to import aiortc is not taken for one starting a process.


class _ProcessStarted(Exception):
    pass


def _guarded(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run one phase of an unmarked test with subprocess.Popen refused (asyncio's
    subprocesses and Playwright's driver go through it too)."""
    if item.get_closest_marker("e2e"):
        return (yield)
    started: list[str] = []
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        started.append(repr(args))
        raise _ProcessStarted(f"a unit test started a process: {args!r}")

    subprocess.Popen.__init__ = refuse  # type: ignore[assignment,method-assign]
    try:
        result = yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
    if started:
        pytest.fail(
            f"{item.nodeid} is not marked e2e but started a process: {started[0]} "
            "(mark it @pytest.mark.e2e, or teach tests/conftest.py's _SPAWNS the helper)",
            pytrace=False,
        )
    return result


# it refuses processes: the scan must not take its Popen for starting one
_guarded._starts_nothing = True  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


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

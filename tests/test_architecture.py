"""The dependency rule of docs/architecture.md, read from each module's compiled imports.

* ``rtmp/`` never imports ``webrtc/`` or ``web/``;
* ``webrtc/`` never imports ``rtmp/`` or ``web/``;
* ``gateway/`` imports none of ``rtmp/``, ``webrtc/``, ``web/`` -- except its composition
  root (``gateway/main.py``, ``gateway/__main__.py``), which wires everything together;
* the telephone front-end ``gateway/phone/`` is a front-end too, though it lives under
  ``gateway/`` (the top level is fixed): nothing outside it imports it but the
  composition root, and it imports none of ``rtmp/``, ``webrtc/``, ``web/`` (the rule for
  ``gateway/`` above already says so).

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a deferred
import is still a dependency a reader has to know about.
"""

from __future__ import annotations

import dis
import functools
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, set[str]] = {
    "rtmp": {"webrtc", "web"},
    "webrtc": {"rtmp", "web"},
    "gateway": {"rtmp", "webrtc", "web"},
}
COMPOSITION_ROOT = {"gateway/main.py", "gateway/__main__.py"}

# Violations in the tree today, as (importing file, imported top-level package). A
# shrinking list: delete an entry when the import goes (the test fails while a listed
# entry no longer occurs, so the list cannot go stale), never add one.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _import_statements(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every absolute import in a module as (module, names of a ``from`` import), read
    from its compiled bytecode (``IMPORT_NAME`` with its level and fromlist), nested
    functions and classes included. Not ``ast.parse``: CPython 3.11.7's raised "AST
    constructor recursion depth mismatch" (a SystemError) when this file ran after the
    Playwright tests in one process; compiling to bytecode makes no AST objects."""
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
    found: list[tuple[str, tuple[str, ...]]] = []
    pending = [code]
    while pending:
        unit = pending.pop()
        ops = list(dis.get_instructions(unit))
        for i, op in enumerate(ops):
            if op.opname == "IMPORT_NAME" and ops[i - 2].argval == 0:  # level 0: absolute
                found.append((op.argval, tuple(ops[i - 1].argval or ())))
        pending += [c for c in unit.co_consts if isinstance(c, types.CodeType)]
    return found


def _imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports (absolute imports; relative ones stay in
    the module's own package)."""
    return {module.split(".")[0] for module, _ in _import_statements(path)}


@functools.cache  # the tree does not change during a run; two tests read it
def _violations() -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in COMPOSITION_ROOT:
                continue
            out |= {(rel, dep) for dep in _imported_packages(path) & forbidden}
    return frozenset(out)


def test_dependency_rule() -> None:
    new = _violations() - KNOWN_VIOLATIONS
    assert not new, "imports against the dependency rule (docs/architecture.md): " + ", ".join(
        f"{f} imports {d}/" for f, d in sorted(new)
    )


def test_known_violations_still_exist() -> None:
    gone = KNOWN_VIOLATIONS - _violations()
    assert not gone, f"fixed, so remove from KNOWN_VIOLATIONS: {sorted(gone)}"


@pytest.mark.parametrize(
    ("source", "package"),
    [
        ("import webrtc.sink\n", "webrtc"),
        ("from web.app import create_app\n", "web"),
        ("def f():\n    from rtmp import flv\n", "rtmp"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import web\n", "web"),
    ],
)
def test_every_import_form_is_seen(tmp_path: Path, source: str, package: str) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert package in _imported_packages(module)


def test_relative_import_is_not_a_top_level_package(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from .web import x\nfrom . import rtmp\n")
    assert _imported_packages(module) == set()


# Front-ends living inside gateway/ (the repository's top level is fixed): module prefix ->
# the only files outside the subpackage that may import it.
SUBPACKAGE_FRONT_ENDS = {"gateway.phone": COMPOSITION_ROOT}


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from a.b import c`` gives ``a.b`` and
    ``a.b.c``: c may be a module)."""
    found: set[str] = set()
    for module, names in _import_statements(path):
        found.add(module)
        found |= {f"{module}.{name}" for name in names if name != "*"}
    return found


def _subpackage_violations() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for prefix, allowed in SUBPACKAGE_FRONT_ENDS.items():
        home = prefix.replace(".", "/") + "/"
        for package in ("gateway", "rtmp", "webrtc", "web"):
            for path in sorted((ROOT / package).rglob("*.py")):
                rel = path.relative_to(ROOT).as_posix()
                if rel.startswith(home) or rel in allowed:
                    continue
                hits = {
                    m for m in _imported_modules(path) if m == prefix or m.startswith(prefix + ".")
                }
                out |= {(rel, prefix) for _ in hits}
    return out


def test_only_the_composition_root_imports_the_telephone_front_end() -> None:
    found = _subpackage_violations()
    assert not found, "imports of a front-end inside gateway/ (docs/architecture.md): " + ", ".join(
        f"{f} imports {d}" for f, d in sorted(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import gateway.phone.server\n",
        "from gateway.phone import leg\n",
        "from gateway import phone\n",
        "def f():\n    from gateway.phone.rtp import parse_rtp\n",
    ],
)
def test_every_form_of_importing_the_phone_package_is_seen(tmp_path: Path, source: str) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert any(
        m == "gateway.phone" or m.startswith("gateway.phone.") for m in _imported_modules(module)
    )


def test_bench_imports_nothing_of_tests_and_patches_no_import_path() -> None:
    """bench/ and the helpers it shares with the tests (bench/testkit/) stand on their own:
    the tests import ``bench.testkit``, never the other way round, and nothing reaches a
    module by editing ``sys.path``."""
    offenders = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "tests" in _imported_packages(path):
            offenders.append(f"{rel} imports tests/")
        if "sys.path" in path.read_text(encoding="utf-8"):
            offenders.append(f"{rel} patches sys.path")
    assert not offenders, ", ".join(offenders)
    assert not (ROOT / "testkit").exists(), "the shared helpers live in bench/testkit/"


# Issue 13's reader check, kept: "no module over ~600 lines in the media path". The media
# path is every front-end (RTMP, WebRTC, the telephone leg) and the core a frame crosses
# (units, routing, transcoding, bitstream helpers, latency).
MEDIA_PATH = (
    "rtmp",
    "webrtc",
    "gateway/phone",
    "gateway/transcode",
    "gateway/codecs",
    "gateway/media.py",
    "gateway/routing.py",
    "gateway/latency.py",
    "gateway/channel.py",
)
MEDIA_MODULE_MAX_LINES = 620


def test_no_module_in_the_media_path_grows_past_about_600_lines() -> None:
    too_long = []
    for entry in MEDIA_PATH:
        path = ROOT / entry
        assert path.exists(), f"{entry} moved: update MEDIA_PATH"
        for module in [path] if path.is_file() else sorted(path.rglob("*.py")):
            lines = len(module.read_text(encoding="utf-8").splitlines())
            if lines > MEDIA_MODULE_MAX_LINES:
                too_long.append(f"{module.relative_to(ROOT).as_posix()} ({lines} lines)")
    assert not too_long, "split along a seam: " + ", ".join(too_long)

"""CPU time and memory of a server's process tree, read from /proc (Linux only).

The benchmarks compare servers by the CPU seconds they spend, not by wall time: the
machine has two cores and the load generator, the ffmpeg peers and possibly other
people's test runs share them, so wall time says little about a server's own cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Cumulative CPU seconds of a process tree at one moment (monotonic clock).

    ``user``/``system`` come from /proc/<pid>/stat and move in clock ticks (10 ms with
    CLK_TCK 100): nginx-rtmp spends a few hundred ticks at most in a run, so a ratio
    built on ticks alone would carry a few per cent of rounding. ``exec`` is the
    scheduler's nanosecond sum_exec_runtime (/proc/<pid>/task/<tid>/schedstat) over
    every live thread; it loses threads that exit during the window, which is why both
    are kept and :func:`cpu_delta` prefers ``exec`` only while the two agree.
    """

    wall: float
    user: float
    system: float
    exec: float

    @property
    def total(self) -> float:
        return self.user + self.system


def cpu_delta(start: CpuSample, end: CpuSample) -> float:
    """CPU seconds spent between two samples (precise clock unless threads vanished)."""
    ticks = end.total - start.total
    precise = end.exec - start.exec
    # Ticks are exact to +-2 ticks per thread; a larger gap means a thread exited (its
    # runtime left the precise sum) or the precise clock is unavailable.
    if precise > 0 and abs(precise - ticks) <= 0.03 + 0.05 * ticks:
        return precise
    return ticks


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or
    # parentheses: split after the *last* closing parenthesis, never on whitespace first.
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    """Direct children (needs CONFIG_PROC_CHILDREN; falls back to scanning /proc)."""
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tids = [t.name for t in task_dir.iterdir()]
        for tid in tids:
            text = (task_dir / tid / "children").read_text()
            kids.extend(int(x) for x in text.split())
        return kids
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def tree_pids(pid: int) -> list[int]:
    out = [pid]
    i = 0
    while i < len(out):
        out.extend(_children(out[i]))
        i += 1
    return out


def cpu_sample(pid: int, now: float) -> CpuSample:
    """utime+stime of ``pid`` and every live descendant, plus reaped children's times.

    cutime/cstime only count children that were waited for; live children must be
    summed one by one or a forking server (nginx with a master process) would look free.
    """
    user = system = 0
    exec_ns = 0
    for p in tree_pids(pid):
        fields = _stat_fields(p)
        if fields is None:
            continue
        # After the command name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
        exec_ns += _exec_ns(p)
    return CpuSample(now, user / CLK_TCK, system / CLK_TCK, exec_ns / 1e9)


def _exec_ns(pid: int) -> int:
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants (VmRSS, bytes)."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total

"""``make cluster``: Debian's redis-server and PostgreSQL 15 and three gateway nodes on
loopback with distinct ports (docs/cluster.md); prints the links; Ctrl-C stops all.

Nothing persists: Redis runs without persistence, PostgreSQL in a temp dir, the nodes'
data dirs are temp dirs too.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.testkit.servers import PostgresServer, RedisServer

NODES = 3
HTTP_BASE = 8081
RTMP_BASE = 1941


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="vb-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    with PostgresServer() as pg, RedisServer() as rd:
        database = pg.create_database("videoberatung")
        print(f"Redis:      {rd.url} (persistence off)")
        print(f"PostgreSQL: {database}")
        for i in range(NODES):
            http, rtmp = HTTP_BASE + i, RTMP_BASE + i
            log = open(root / f"n{i + 1}.log", "wb")  # noqa: SIM115 (lives with the node)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "gateway", "serve",
                        "--host", "127.0.0.1", "--http-port", str(http),
                        "--rtmp-port", str(rtmp), "--rtmps-port", str(rtmp + 100),
                        "--data-dir", str(root / f"n{i + 1}"), "--ice-host", "127.0.0.1",
                        "--redis", rd.url, "--database", database, "--node-id", f"n{i + 1}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        logins: dict[int, str] = {}
        deadline = time.monotonic() + 120
        while len(logins) < NODES and time.monotonic() < deadline:
            for i in range(NODES):
                text = (root / f"n{i + 1}.log").read_text(errors="replace")
                found = re.search(r"One-time advisor login: (\S+)", text)
                if found:
                    logins[i] = found.group(1)
            time.sleep(0.2)
        for i in range(NODES):
            base = f"http://127.0.0.1:{HTTP_BASE + i}"
            print(f"node n{i + 1}: {base}/advisor   RTMP rtmp://127.0.0.1:{RTMP_BASE + i}/consult")
            print(f"          one-time login: {logins.get(i, '(see ' + str(root) + ')')}")
            print(f"          operations:     {base}/ops")
        print(
            "Advisor accounts for all nodes: python -m gateway advisor add NAME "
            f"--database {database}"
        )
        print(f"Logs in {root}. Ctrl-C stops everything.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

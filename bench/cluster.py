"""Cluster figures (issue 16; docs/cluster.md): ``.venv/bin/python -m bench.cluster``.

In one run, on this machine, with real redis-server and PostgreSQL 15 on loopback:

* ``POST /api/sessions`` latency (p50/p95) through one node of a 3-node cluster, beside
  the same request on a single gateway without cluster mode (the yardstick);
* Redis commands per consultation lifetime (create, directory, end), counted by the
  nodes themselves (``/api/ops/snapshot`` → ``cluster.redis_commands``), and the
  heartbeat's commands per node and second;
* failover: SIGKILL of a node until it is gone from the registry, and until placement
  stops choosing it.

The HTTP client runs on the same machine as the nodes (loopback); the machine is shared
with other work, so absolute times scatter: compare with the yardstick of the same run.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.testkit.gwproc import GatewayProcess
from bench.testkit.servers import PostgresServer, RedisServer

N = 200
HEARTBEAT = 0.5


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed_posts(node: GatewayProcess, n: int) -> tuple[list[float], list[dict[str, Any]]]:
    times, docs = [], []
    for _ in range(n):
        t = time.perf_counter()
        status, _, body = node.request("POST", "/api/sessions")
        times.append((time.perf_counter() - t) * 1000)
        assert status == 201, body
        docs.append(json.loads(body))
    return times, docs


def _redis_commands(nodes: list[GatewayProcess]) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in nodes:
        counts = node.get("/api/ops/snapshot")["cluster"]["redis_commands"]
        for purpose, count in counts.items():
            total[purpose] = total.get(purpose, 0) + int(count)
    return total


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="vb-bench-cluster-"))
    result: dict[str, Any] = {"machine": "shared (other helpers' work ran beside it)"}
    single = GatewayProcess(root / "single").start(timeout=90)
    try:
        _timed_posts(single, 20)  # warm-up
        yard, docs = _timed_posts(single, N)
        for doc in docs:
            single.request("DELETE", f"/api/sessions/{doc['id']}")
    finally:
        single.stop(signal.SIGINT)
    result["single_node_post_ms"] = {"p50": _p(yard, 0.5), "p95": _p(yard, 0.95)}
    with PostgresServer() as pg, RedisServer() as rd:
        database = pg.create_database("bench")
        nodes = []
        for i in range(3):
            node = GatewayProcess(
                root / f"n{i + 1}",
                extra=["--redis", rd.url, "--database", database, "--node-id", f"n{i + 1}",
                       "--heartbeat", str(HEARTBEAT)],
            )  # fmt: skip
            nodes.append(node.start(timeout=90))
        try:
            time.sleep(HEARTBEAT * 3)
            _timed_posts(nodes[0], 20)  # warm-up (their directory entries stay)
            before = _redis_commands(nodes)
            t0 = time.monotonic()
            times, docs = _timed_posts(nodes[0], N)
            for doc in docs:
                status, _, _ = nodes[0].request("DELETE", f"/api/sessions/{doc['id']}")
                assert status == 204
            time.sleep(HEARTBEAT * 2)  # the ends' directory deletes flushed
            span = time.monotonic() - t0
            after = _redis_commands(nodes)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            placed = {f"n{i + 1}": 0 for i in range(3)}
            for doc in docs:
                for i, node in enumerate(nodes):
                    if doc["customer"]["page_url"].startswith(node.base + "/"):
                        placed[f"n{i + 1}"] += 1
            heartbeat = delta.pop("heartbeat", 0)
            per_consultation = sum(delta.values()) / N
            result["cluster_post_ms"] = {
                "p50": _p(times, 0.5),
                "p95": _p(times, 0.95),
                "mean": statistics.fmean(times),
            }
            result["placed"] = placed
            result["redis_commands_per_consultation"] = round(per_consultation, 2)
            result["redis_commands_by_purpose"] = {k: v for k, v in delta.items() if v}
            result["heartbeat_commands_per_node_second"] = round(heartbeat / 3 / span, 2)
            # failover: SIGKILL n3
            victim = nodes[2]
            assert victim.proc is not None
            r = redis.Redis.from_url(rd.url, decode_responses=True)
            victim.proc.kill()
            killed = time.monotonic()
            while r.exists("vb:node:n3"):
                time.sleep(0.01)
            result["failover_registry_s"] = round(time.monotonic() - killed, 3)
            while True:  # until 5 placements in a row through n1 avoid n3
                picks = []
                for _ in range(5):
                    status, _, body = nodes[0].request("POST", "/api/sessions")
                    doc = json.loads(body)
                    picks.append(doc["customer"]["page_url"].startswith(victim.base + "/"))
                    if not picks[-1]:
                        nodes[0].request("DELETE", f"/api/sessions/{doc['id']}")
                if not any(picks):
                    break
            result["failover_placement_s"] = round(time.monotonic() - killed, 3)
            result["heartbeat_s"] = HEARTBEAT
            r.close()
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.stop(signal.SIGINT)
    result["cluster_vs_single_p95"] = round(
        result["cluster_post_ms"]["p95"] / result["single_node_post_ms"]["p95"], 2
    )
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

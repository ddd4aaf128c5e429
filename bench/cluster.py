"""Cluster figures (issue 16; docs/cluster.md): ``.venv/bin/python -m bench.cluster``.

In one run, on this machine, with real redis-server and PostgreSQL 15 on loopback:

* ``POST /api/sessions`` latency (p50/p95) through one node of a 3-node cluster, beside
  the same request on a single gateway without cluster mode (the yardstick);
* Redis commands per consultation lifetime (create, directory, end), counted by the
  nodes themselves (``/api/ops/snapshot`` → ``cluster.redis_commands``), and the
  heartbeat's commands per node and second;
* failover: SIGKILL of a node until it is gone from the registry, and until placement
  stops choosing it;
* capacity (``capacity``): H.264 passthrough consultations held by a cluster of 2 nodes
  against 1 node (the yardstick), the same ladder as bench/bridge.py's ``capacity
  --passthrough`` with the consultations created through the first node and placed by
  the cluster. Where the clients ran: on this machine, on the same 2 cores as the nodes
  (one worker process per consultation: an RTMP publisher and player, an aiortc WHIP and
  WHEP peer), so they take their share of what the nodes could use.

``python -m bench.cluster [placement|capacity|all] [--rounds N]`` (default ``all``); the
JSON goes to stdout alone (bench/run.py's ``cluster`` scenario) and to bench/out/.

The HTTP client runs on the same machine as the nodes (loopback); compare with the
yardstick of the same run, not with figures of another day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.bridge import ensure_passthrough_media, gateway_log_counts, run_step, step_ok
from bench.testkit.gwproc import GatewayProcess
from bench.testkit.servers import PostgresServer, RedisServer

N = 200
HEARTBEAT = 0.5
CONCURRENCY = 8  # clients at once in the concurrent POST figure
STEPS = (4, 6, 8, 10, 12, 14, 16, 18, 20, 24)


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


def _concurrent_posts(entries: list[GatewayProcess], n: int) -> dict[str, Any]:
    """``n`` POSTs from CONCURRENCY clients at once, spread over ``entries`` as a load
    balancer in front of the nodes would; the consultations are ended afterwards."""

    def one(i: int) -> tuple[float, GatewayProcess, dict[str, Any]]:
        node = entries[i % len(entries)]
        t = time.perf_counter()
        status, _, body = node.request("POST", "/api/sessions")
        took = (time.perf_counter() - t) * 1000
        assert status == 201, body
        return took, node, json.loads(body)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        done = list(pool.map(one, range(n)))
        list(pool.map(lambda x: x[1].request("DELETE", f"/api/sessions/{x[2]['id']}"), done))
    times = [t for t, _, _ in done]
    return {"clients": CONCURRENCY, "p50": _p(times, 0.5), "p95": _p(times, 0.95)}


def _redis_commands(nodes: list[GatewayProcess]) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in nodes:
        counts = node.get("/api/ops/snapshot")["cluster"]["redis_commands"]
        for purpose, count in counts.items():
            total[purpose] = total.get(purpose, 0) + int(count)
    return total


def _log(text: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _start_nodes(root: Path, count: int, redis_url: str, database: str) -> list[GatewayProcess]:
    nodes = []
    for i in range(count):
        node = GatewayProcess(
            root / f"n{i + 1}",
            extra=["--redis", redis_url, "--database", database, "--node-id", f"n{i + 1}",
                   "--heartbeat", str(HEARTBEAT)],
        )  # fmt: skip
        nodes.append(node.start(timeout=90))
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 15
        while len(r.smembers("vb:nodes")) < count:
            assert time.monotonic() < deadline, "the nodes did not register"
            time.sleep(0.05)
    finally:
        r.close()
    time.sleep(HEARTBEAT * 3)  # every node has read the others' load
    return nodes


def _stop_nodes(nodes: list[GatewayProcess]) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            try:
                node.stop(signal.SIGINT)
            except AssertionError as exc:  # the log check: counted in the step's result
                _log(f"node log: {str(exc)[:1500]}")


def _cluster_step(
    root: Path, count: int, n: int, seconds: float, rd: RedisServer, pg: PostgresServer
) -> dict[str, Any]:
    """One step: ``count`` fresh nodes, n passthrough consultations through the first."""
    flv, webm = ensure_passthrough_media()
    tag = f"c{count}x{n}_{time.monotonic_ns()}"
    nodes = _start_nodes(root / tag, count, rd.url, pg.create_database(tag))
    try:
        r = run_step(nodes[0], n, "both", seconds, None, flv, webm, 4.0, "h264", nodes=nodes)
        logs = [gateway_log_counts(node) for node in nodes]
        r["gateway_log"] = {k: sum(x[k] for x in logs) for k in logs[0]}
        r["placed"] = {
            f"n{i + 1}": len(node.get("/api/ops/snapshot")["consultations"])
            for i, node in enumerate(nodes)
        }
        return r
    finally:
        _stop_nodes(nodes)
        shutil.rmtree(root / tag, ignore_errors=True)


def capacity(seconds: float, rounds: int, steps: tuple[int, ...] = STEPS) -> dict[str, Any]:
    """Held passthrough consultations, 1 node against 2, each ladder climbed until a
    step fails (step_ok: bench/bridge.py's rule); rounds alternate 1 and 2 nodes."""
    root = Path(tempfile.mkdtemp(prefix="vb-bench-capacity-"))
    out: dict[str, Any] = {
        "seconds": seconds,
        "clients": "same machine, same 2 cores (one worker process per consultation)",
        "load_average_at_start": os.getloadavg(),
        "rounds": [],
    }
    with PostgresServer() as pg, RedisServer() as rd:
        for r in range(rounds):
            entry: dict[str, Any] = {}
            for count in (1, 2):
                ladder = []
                for n in steps:
                    step = _cluster_step(root, count, n, seconds, rd, pg)
                    step["ok"] = step_ok(step)
                    ladder.append(step)
                    _log(f"round {r + 1} {count} node(s), {n}: ok={step['ok']} "
                         f"nodes {step['gateway_cpu_percent_of_core']}% (main threads "
                         f"{100 * step['main_thread_cpu_s'] / step['wall_s']:.0f}%) clients "
                         f"{step['clients_cpu_percent_of_core']}% placed {step['placed']} "
                         f"log {step['gateway_log']}")  # fmt: skip
                    if not step["ok"]:
                        break
                held = max((st["consultations"] for st in ladder if st["ok"]), default=0)
                entry[f"{count}_node"] = {"held": held, "steps": ladder}
            one, two = entry["1_node"]["held"], entry["2_node"]["held"]
            entry["ratio"] = round(two / one, 3) if one else None
            out["rounds"].append(entry)
            _log(f"round {r + 1}: held 1 node {one}, 2 nodes {two}, ratio {entry['ratio']}")
    shutil.rmtree(root, ignore_errors=True)
    ratios = [e["ratio"] for e in out["rounds"] if e["ratio"] is not None]
    out["ratio_rounds"] = ratios
    out["ratio_median"] = statistics.median(ratios) if ratios else None
    for count in (1, 2):
        helds = [e[f"{count}_node"]["held"] for e in out["rounds"]]
        out[f"held_{count}_node_rounds"] = helds
        out[f"held_{count}_node_median"] = statistics.median(helds)
    return out


def placement() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="vb-bench-cluster-"))
    result: dict[str, Any] = {}
    single = GatewayProcess(root / "single").start(timeout=90)
    try:
        _timed_posts(single, 20)  # warm-up
        yard, docs = _timed_posts(single, N)
        for doc in docs:
            single.request("DELETE", f"/api/sessions/{doc['id']}")
        conc_single = _concurrent_posts([single], N)
    finally:
        single.stop(signal.SIGINT)
    result["single_node_post_ms"] = {"p50": _p(yard, 0.5), "p95": _p(yard, 0.95)}
    result["single_node_concurrent_post_ms"] = conc_single
    with PostgresServer() as pg, RedisServer() as rd:
        database = pg.create_database("bench")
        nodes = _start_nodes(root, 3, rd.url, database)
        try:
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
            result["cluster_concurrent_post_ms"] = _concurrent_posts(nodes, N)
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
    shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", nargs="?", default="all", choices=("placement", "capacity", "all"))
    ap.add_argument("--rounds", type=int, default=1, help="capacity: rounds (1 and 2 nodes)")
    ap.add_argument("--seconds", type=float, default=15.0, help="capacity: seconds per step")
    ap.add_argument("--steps", help="capacity: consultations per step, comma-separated")
    args = ap.parse_args()
    result: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    if args.part in ("placement", "all"):
        result["placement"] = placement()
        _log(f"placement: {json.dumps(result['placement'])}")
    if args.part in ("capacity", "all"):
        steps = tuple(int(x) for x in args.steps.split(",")) if args.steps else STEPS
        result["capacity"] = capacity(args.seconds, max(1, args.rounds), steps)
    text = json.dumps(result, indent=2)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cluster mode (issue 16) with the real servers: Debian's redis-server and PostgreSQL 15
on loopback, three gateway nodes as subprocesses (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from bench.testkit.gwproc import Bystander, GatewayProcess
from bench.testkit.servers import PostgresServer, RedisServer
from gateway.cluster import NodeInfo, identifier_key
from rtmp.client import RtmpClient

pytestmark = pytest.mark.e2e

HEARTBEAT = 0.3
TTL = HEARTBEAT * 3


@dataclass
class Cluster:
    root: Path
    redis: RedisServer
    database: str
    nodes: list[GatewayProcess] = field(default_factory=list)

    def add_node(self, name: str, *extra: str) -> GatewayProcess:
        node = GatewayProcess(
            self.root / name,
            extra=[
                "--redis",
                self.redis.url,
                "--database",
                self.database,
                "--node-id",
                name,
                "--heartbeat",
                str(HEARTBEAT),
                "--drain-timeout",
                "60",
                *extra,
            ],
        )
        node.start(timeout=90)  # the machine is shared: starting may take a while
        self.nodes.append(node)
        return node

    def remove_node(self, node: GatewayProcess) -> None:
        """A node a test added and drained: killed if it is still up, its log checked."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        node.check_log()
        self.nodes.remove(node)

    def node_of(self, url: str) -> GatewayProcess:
        return next(n for n in self.nodes if url.startswith(n.base + "/"))

    def registry(self) -> dict[str, dict[str, str]]:
        r = redis.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return {i: r.hgetall(f"vb:node:{i}") for i in r.smembers("vb:nodes")}
        finally:
            r.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with PostgresServer() as pg, RedisServer() as rd:
        c = Cluster(root, rd, pg.create_database("vb"))
        try:
            for name in ("n1", "n2", "n3"):
                c.add_node(name)
            wait_for(lambda: len(c.registry()) == 3, "three nodes registered")
            yield c
        finally:
            for node in c.nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.stop(signal.SIGINT)


def wait_for(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def post_session(node: GatewayProcess, **body: Any) -> dict[str, Any]:
    data = json.dumps(body).encode() if body else None
    headers = {"Content-Type": "application/json"} if body else {}
    status, _, raw = node.request("POST", "/api/sessions", data, headers=headers)
    assert status == 201, raw
    return json.loads(raw)


def delete_session(doc: dict[str, Any], via: GatewayProcess) -> int:
    status, _, _ = via.request("DELETE", f"/api/sessions/{doc['id']}")
    return status


def test_registry_has_each_node_with_its_urls_state_and_load(cluster: Cluster) -> None:
    registry = cluster.registry()
    for node in cluster.nodes[:3]:
        name = node.data_dir.name
        info = NodeInfo.from_hash(registry[name])
        assert info.url == node.base
        assert info.rtmp == f"rtmp://127.0.0.1:{node.rtmp_port}/consult"
        assert info.state == "serving"
        assert info.budget > 0 and info.cost > 0
    r = redis.Redis.from_url(cluster.redis.url)
    try:
        ttl = r.pttl("vb:node:n1")
    finally:
        r.close()
    assert 0 < ttl <= TTL * 1000


def test_placement_spreads_and_every_url_points_at_the_placed_node(cluster: Cluster) -> None:
    n1 = cluster.nodes[0]
    docs = [post_session(n1) for _ in range(6)]
    placed = Counter(cluster.node_of(d["customer"]["page_url"]).data_dir.name for d in docs)
    # by headroom, with the placements since each node's last heartbeat counted in: not
    # all on one node (the exact shares follow each node's measured CPU, which scatters
    # on a shared machine; test_placement_follows_headroom pins the rule itself)
    assert len(placed) >= 2, placed
    for doc in docs:
        owner = cluster.node_of(doc["customer"]["page_url"])
        for role in ("advisor", "customer"):
            links = doc[role]
            for key in ("page_url", "whip_url", "whep_url"):
                assert links[key].startswith(owner.base + "/"), (key, links[key])
            assert links["events_url"].startswith(f"ws://127.0.0.1:{owner.http_port}/")
            assert links["rtmp"]["connect_url"] == f"rtmp://127.0.0.1:{owner.rtmp_port}/consult"
        # the owner knows it; the directory holds hashes, never the token itself
        assert owner.get(f"/api/sessions/{doc['id']}")["id"] == doc["id"]
        r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
        try:
            assert r.get(identifier_key(doc["customer"]["token"])) == owner.data_dir.name
            stored = " ".join(
                str(r.get(k)) + k for k in r.scan_iter("vb:*") if r.type(k) == "string"
            )
        finally:
            r.close()
        assert doc["customer"]["token"] not in stored
        assert doc["advisor"]["token"] not in stored
    for doc in docs:
        assert delete_session(doc, n1) == 204  # ended from n1 wherever it lives


def test_placement_follows_headroom(cluster: Cluster) -> None:
    """A node with little headroom (its CPU budget nearly spent: here a budget of 0.2 of
    a core) gets nothing while the others have room."""
    small = cluster.add_node("n4", "--limit", "cpu_budget=0.05")
    try:
        wait_for(lambda: "n4" in cluster.registry(), "n4 registered")
        time.sleep(TTL)  # every node's view includes n4
        docs = [post_session(cluster.nodes[i % 3]) for i in range(6)]
        placed = Counter(cluster.node_of(d["customer"]["page_url"]).data_dir.name for d in docs)
        assert "n4" not in placed, placed
        for doc in docs:
            assert delete_session(doc, cluster.nodes[0]) == 204
    finally:
        small.stop(signal.SIGINT)
        cluster.nodes.remove(small)
    wait_for(lambda: "n4" not in cluster.registry(), "n4 left at once (SIGINT)")


async def test_every_door_of_another_node_redirects_to_the_owner(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes[:3]
    doc = post_session(n1)
    owner = cluster.node_of(doc["customer"]["page_url"])
    other = next(n for n in (n1, n2, n3) if n is not owner)
    cid, link = doc["id"], doc["customer"]["page_url"].rsplit("/", 1)[1]
    token = doc["customer"]["token"]
    async with aiohttp.ClientSession() as http:
        for method, path, expected in [
            ("GET", f"/k/{link}", 303),
            ("GET", f"/flash/{link}", 303),
            ("GET", f"/advisor/{cid}", 303),
            ("POST", f"/whip/{cid}/customer", 307),
            ("POST", f"/whep/{cid}/customer", 307),
            ("GET", f"/api/sessions/{cid}/events?token={token}", 307),
            ("GET", f"/api/sessions/{cid}", 307),
        ]:
            async with http.request(
                method, other.base + path, allow_redirects=False, data=b"v=0\r\n"
            ) as resp:
                assert resp.status == expected, (path, resp.status)
                assert resp.headers["Location"] == owner.base + path
        # the customer's browser follows to the PIN form on the owner
        async with http.get(other.base + f"/k/{link}") as resp:
            assert resp.status == 200 and str(resp.url).startswith(owner.base)
            assert 'name="pin"' in await resp.text()
    assert delete_session(doc, other) == 204
    async with (
        aiohttp.ClientSession() as http,
        http.get(other.base + f"/k/{link}", allow_redirects=False) as resp,
    ):
        assert resp.status in (404, 410), resp.status  # ended: no redirect any more


async def _flash_connect(port: int, token: str, **kw: Any) -> tuple[RtmpClient, Any]:
    client = await RtmpClient.open("127.0.0.1", port, **kw)
    result = await client.connect("consult", f"rtmp://127.0.0.1:{port}/consult", token)
    return client, result


async def test_flash_customer_is_redirected_over_rtmp_and_meets_the_advisor(
    cluster: Cluster,
) -> None:
    """A Flash-like customer knocks at the wrong node: NetConnection.Connect.Rejected with
    ex.redirect (FMS/Wowza), it reconnects there and publishes; the advisor, also sent
    to the owner, receives its video."""
    n1 = cluster.nodes[0]
    doc = post_session(n1)
    owner = cluster.node_of(doc["customer"]["page_url"])
    wrong = next(n for n in cluster.nodes[:3] if n is not owner)
    client, result = await _flash_connect(wrong.rtmp_port, doc["customer"]["token"])
    assert result.error
    info = result.args[0]
    assert info["code"] == "NetConnection.Connect.Rejected"
    assert info["ex"]["code"] == 302
    assert info["ex"]["redirect"] == f"rtmp://127.0.0.1:{owner.rtmp_port}/consult"
    await client.close()
    # follow it, as the SWF does
    bystander = Bystander()
    redirect = info["ex"]["redirect"]
    port = int(redirect.rsplit(":", 1)[1].split("/")[0])
    publisher, result = await _flash_connect(port, doc["customer"]["token"])
    assert not result.error
    sid = await publisher.create_stream()
    publisher.publish(sid, "customer")
    await publisher.wait_status("NetStream.Publish.Start")
    player, result = await _flash_connect(
        owner.rtmp_port, doc["advisor"]["token"], on_media=bystander._on_media
    )
    assert not result.error
    player.play(await player.create_stream(), "customer")
    bystander.clients += [publisher, player]
    bystander.task = asyncio.get_running_loop().create_task(bystander._publish(publisher, sid))
    try:
        await bystander.continues(10, timeout=20)
    finally:
        bystander.task.cancel()
        for c in bystander.clients:
            await c.close()
    assert delete_session(doc, wrong) == 204


def test_unknown_token_at_rtmp_connect_is_rejected_without_redirect(cluster: Cluster) -> None:
    async def run() -> Any:
        client, result = await _flash_connect(cluster.nodes[0].rtmp_port, "x" * 20)
        await client.close()
        return result

    result = asyncio.run(run())
    assert result.error and "ex" not in result.args[0]


def test_statistics_of_all_nodes_in_one_table(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes[:3]
    before = n2.get("/api/stats")["count"]
    docs: list[dict[str, Any]] = []
    owners: set[str] = set()
    while len(owners) < 3:  # until each node holds one
        assert len(docs) < 12, owners
        docs.append(post_session(cluster.nodes[len(docs) % 3]))
        owners.add(cluster.node_of(docs[-1]["customer"]["page_url"]).data_dir.name)
    for doc in docs:
        assert delete_session(doc, n3) == 204
    wait_for(
        lambda: n2.get("/api/stats")["count"] == before + len(docs),
        "the rows of all three nodes in the one table",
    )
    assert n1.get("/api/stats")["count"] == before + len(docs)
    for node in cluster.nodes[:3]:
        assert not (node.data_dir / "data" / "stats.sqlite").exists()


def test_advisor_account_on_one_node_signs_in_on_all_and_ends_elsewhere(
    cluster: Cluster,
) -> None:
    """An account added with the command line (--database) signs in on n1; the cookie
    session works on n2 (the same browser: cookies are per host, not port, RFC 6265 §8.5);
    the start page on n1 lists a consultation placed on another node and ends it."""
    n1, n2 = cluster.nodes[:2]
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "advisor",
            "add",
            "schmidt",
            "--password-stdin",
            "--database",
            cluster.database,
            "--data-dir",
            str(cluster.root / "cli"),
        ],
        input="korrekt-Pferd-Batterie\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert not (cluster.root / "cli" / "advisors.sqlite").exists()

    async def run() -> None:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(n1.base + "/login") as resp:
                page = await resp.text()
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            async with http.post(
                n1.base + "/login",
                data={"name": "schmidt", "password": "korrekt-Pferd-Batterie", "csrf": csrf},
            ) as resp:
                assert resp.status == 200 and str(resp.url).endswith("/advisor")
            headers = {"Origin": n1.base}
            # a consultation of schmidt's, created through n2 with the n1 sign-in
            async with http.get(n2.base + "/advisor") as resp:
                assert resp.status == 200
                page = await resp.text()
            token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
            placed: dict[str, Any] = {}
            for _ in range(6):  # until one lands away from n1
                async with http.post(
                    n2.base + "/api/sessions",
                    headers={"X-CSRF-Token": token, "Origin": n2.base},
                    json={"label": "Frau Test"},
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    doc = await resp.json()
                if not doc["customer"]["page_url"].startswith(n1.base + "/"):
                    placed = doc
                    break
            assert placed, "nothing placed away from n1"
            cid = placed["id"]
            async with http.get(n1.base + "/advisor") as resp:
                page = await resp.text()
            assert f'data-id="{cid}"' in page and "Frau Test" in page
            csrf1 = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            async with http.post(
                n1.base + f"/advisor/{cid}/end", data={"csrf": csrf1}, headers=headers
            ) as resp:
                assert resp.status == 200
            owner = cluster.node_of(placed["customer"]["page_url"])
            status, _, _ = owner.request("GET", f"/api/sessions/{cid}")
            assert status == 404

    asyncio.run(run())


def test_kill_9_leaves_placement_within_the_ttl_and_its_links_end(cluster: Cluster) -> None:
    victim = cluster.add_node("n5")
    try:
        wait_for(lambda: "n5" in cluster.registry(), "n5 registered")
        time.sleep(TTL)
        doc: dict[str, Any] = {}
        for _ in range(8):
            d = post_session(cluster.nodes[0])
            if d["customer"]["page_url"].startswith(victim.base + "/"):
                doc = d
                break
        assert doc, "nothing placed on n5"
        assert victim.proc is not None
        victim.proc.kill()
        killed = time.monotonic()
        wait_for(lambda: "n5" not in cluster.registry(), "n5 gone from the registry", 5)
        gone_after = time.monotonic() - killed
        assert gone_after <= TTL + 1.0
        # placement no longer picks it; its customer link through another node: ended
        for _ in range(4):
            d = post_session(cluster.nodes[0])
            assert not d["customer"]["page_url"].startswith(victim.base + "/")
            assert delete_session(d, cluster.nodes[0]) == 204
        link = doc["customer"]["page_url"].rsplit("/", 1)[1]
        status, _, body = cluster.nodes[1].request("GET", f"/k/{link}", token=None)
        assert status in (404, 410) and b"<html" in body
    finally:
        victim.proc.wait() if victim.proc else None
        victim.check_log()
        cluster.nodes.remove(victim)
    # restarted on the same data dir: the crash's leftover files are swept
    leftover = victim.data_dir / "data" / "sessions" / "deadbeef"
    leftover.mkdir(parents=True, exist_ok=True)
    (leftover / "doc.pdf").write_bytes(b"%PDF-1.4 left over")
    again = GatewayProcess(victim.data_dir, extra=victim.extra)
    again.start(timeout=90)
    try:
        assert not leftover.exists()
    finally:
        again.stop(signal.SIGINT)


async def _live(owner: GatewayProcess, doc: dict[str, Any]) -> Bystander:
    """A Flash-like customer publishing real Spark + Speex to ``owner``, the advisor
    playing it; ``frames`` counts the advisor's video frames."""
    bystander = Bystander()
    publisher, result = await _flash_connect(owner.rtmp_port, doc["customer"]["token"])
    assert not result.error
    sid = await publisher.create_stream()
    publisher.publish(sid, "customer")
    await publisher.wait_status("NetStream.Publish.Start")
    player, result = await _flash_connect(
        owner.rtmp_port, doc["advisor"]["token"], on_media=bystander._on_media
    )
    assert not result.error
    player.play(await player.create_stream(), "customer")
    bystander.clients += [publisher, player]
    bystander.task = asyncio.get_running_loop().create_task(bystander._publish(publisher, sid))
    await bystander.continues(5, timeout=20)
    return bystander


async def _close(bystander: Bystander) -> None:
    if bystander.task is not None:
        bystander.task.cancel()
    for c in bystander.clients:
        await c.close()


async def test_draining_node_takes_nothing_new_and_loses_no_consultation(
    cluster: Cluster,
) -> None:
    node = await asyncio.to_thread(cluster.add_node, "n6")
    try:
        await asyncio.to_thread(wait_for, lambda: "n6" in cluster.registry(), "n6 registered")
        await asyncio.sleep(TTL)
        doc: dict[str, Any] = {}
        for _ in range(12):
            d = await asyncio.to_thread(post_session, cluster.nodes[0])
            if d["customer"]["page_url"].startswith(node.base + "/"):
                doc = d
                break
            assert await asyncio.to_thread(delete_session, d, cluster.nodes[0]) == 204
        assert doc, "nothing placed on n6"
        live = await _live(node, doc)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)  # a rolling restart's first step
        await asyncio.to_thread(
            wait_for,
            lambda: cluster.registry().get("n6", {}).get("state") == "draining",
            "n6 draining",
        )
        status, _, _ = await asyncio.to_thread(node.request, "GET", "/readyz", None, None)
        assert status == 503
        for _ in range(4):  # placement, also through the draining node itself, goes elsewhere
            for via in (cluster.nodes[0], node):
                d = await asyncio.to_thread(post_session, via)
                assert not d["customer"]["page_url"].startswith(node.base + "/")
                assert await asyncio.to_thread(delete_session, d, cluster.nodes[0]) == 204
        await live.continues(30, timeout=20)  # the running consultation goes on
        assert node.proc.poll() is None
        # it ends as consultations do (the advisor ends it); then the node exits 0
        assert await asyncio.to_thread(delete_session, doc, cluster.nodes[0]) == 204
        await _close(live)
        code = await asyncio.to_thread(node.proc.wait, 30)
        assert code == 0
        assert "drained: 0 consultation(s) left" in node.log()  # none cut off
    finally:
        cluster.remove_node(node)


async def test_redis_restarted_under_load(cluster: Cluster) -> None:
    """Redis restarted (empty: persistence off) while a consultation runs: media goes
    on, the nodes register again, the directory is rebuilt, doors redirect again."""
    n1 = cluster.nodes[0]
    doc: dict[str, Any] = {}
    for _ in range(12):
        d = await asyncio.to_thread(post_session, n1)
        if not d["customer"]["page_url"].startswith(n1.base + "/"):
            doc = d
            break
        assert await asyncio.to_thread(delete_session, d, n1) == 204
    assert doc
    owner = cluster.node_of(doc["customer"]["page_url"])
    live = await _live(owner, doc)
    try:
        await asyncio.to_thread(cluster.redis.restart)
        await live.continues(15, timeout=20)
        await asyncio.to_thread(
            wait_for, lambda: len(cluster.registry()) == 3, "all three registered again"
        )
        link = doc["customer"]["page_url"].rsplit("/", 1)[1]

        def redirected() -> bool:
            status, headers, _ = _no_follow(n1.base + f"/k/{link}")
            return status == 303 and headers.get("Location") == owner.base + f"/k/{link}"

        await asyncio.to_thread(wait_for, redirected, "the directory rebuilt", 20)
        # and new consultations are placed across the nodes again
        d = await asyncio.to_thread(post_session, n1)
        assert await asyncio.to_thread(delete_session, d, n1) == 204
        await live.continues(10, timeout=20)
    finally:
        await _close(live)
    assert await asyncio.to_thread(delete_session, doc, n1) == 204


def _no_follow(url: str) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_advisor_in_chromium_sees_and_ends_a_consultation_on_another_node(
    cluster: Cluster, artifacts: Path
) -> None:
    """What a person does: sign in on n1 (typing), see on the start page a consultation
    that lives on another node, end it with its button; /ops shows the three nodes."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_pages import CHROMIUM, CHROMIUM_ARGS

    n1 = cluster.nodes[0]
    subprocess.run(
        [sys.executable, "-m", "gateway", "advisor", "add", "meier", "--password-stdin",
         "--database", cluster.database, "--data-dir", str(cluster.root / "cli")],
        input="noch-ein-Passwort-1\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="de-DE")
            page.goto(n1.base + "/login")
            page.get_by_label("Benutzername").fill("meier")
            page.get_by_label("Passwort").fill("noch-ein-Passwort-1")
            page.get_by_role("button", name="Anmelden").click()
            page.wait_for_url(n1.base + "/advisor")
            sid = next(c["value"] for c in page.context.cookies() if c["name"] == "vb_advisor")
            remote: dict[str, Any] = {}
            for _ in range(12):  # meier's consultations until one lives elsewhere
                status, _, raw = n1.request(
                    "POST", "/api/sessions", json.dumps({"label": "Kundin B"}).encode(),
                    token=sid, headers={"Content-Type": "application/json"},
                )  # fmt: skip
                assert status == 201, raw
                doc = json.loads(raw)
                if not doc["customer"]["page_url"].startswith(n1.base + "/"):
                    remote = doc
                    break
                # meier's own consultation: only meier may end it (issue 10's ownership)
                status, _, _ = n1.request("DELETE", f"/api/sessions/{doc['id']}", token=sid)
                assert status == 204
            assert remote
            owner = cluster.node_of(remote["customer"]["page_url"])
            page.reload()
            row = page.locator(f'#consultations tr[data-id="{remote["id"]}"]')
            expect(row).to_contain_text("Kundin B")
            expect(row.get_by_role("link", name="Beitreten")).to_have_attribute(
                "href", f"{owner.base}/advisor/{remote['id']}"
            )
            page.screenshot(path=str(artifacts / "cluster-start-page.png"), full_page=True)
            page.once("dialog", lambda dialog: dialog.accept())
            row.get_by_role("button", name="Beenden").click()
            page.wait_for_url("**/advisor?ended")
            expect(page.locator(f'tr[data-id="{remote["id"]}"]')).to_have_count(0)
            status, _, _ = owner.request("GET", f"/api/sessions/{remote['id']}")
            assert status == 404  # ended on its own node
            page.goto(n1.base + "/ops")
            nodes = page.locator("#ops-nodes tbody tr")
            expect(nodes).to_have_count(3)
            expect(page.locator('#ops-nodes tr[data-node="n1"]')).to_contain_text("nimmt an")
            page.screenshot(path=str(artifacts / "cluster-ops.png"), full_page=True)
        finally:
            browser.close()


def test_operator_drains_a_node_by_clicking_on_ops(cluster: Cluster, artifacts: Path) -> None:
    """What the operator on call does: sign in on the node's /ops (typing), read the
    cluster card (axe-core finds nothing on it, German and English), click "Diesen Knoten
    leeren", be asked first, confirm; the card says the node drains, the registry and
    /readyz agree, its running consultation goes on, and when it ends the node exits 0."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_pages import CHROMIUM, CHROMIUM_ARGS
    from tests.test_ux import AXE, _axe

    node = cluster.add_node("n7")
    try:
        wait_for(lambda: "n7" in cluster.registry(), "n7 registered")
        time.sleep(TTL)
        subprocess.run(
            [sys.executable, "-m", "gateway", "advisor", "add", "nachtdienst", "--password-stdin",
             "--database", cluster.database, "--data-dir", str(cluster.root / "cli-ops")],
            input="Bereitschaft-2026\n", capture_output=True, text=True, check=True,
        )  # fmt: skip
        doc: dict[str, Any] = {}
        for _ in range(16):  # a consultation on n7 keeps it up while it drains
            d = post_session(cluster.nodes[0])
            if d["customer"]["page_url"].startswith(node.base + "/"):
                doc = d
                break
            assert delete_session(d, cluster.nodes[0]) == 204
        assert doc, "nothing placed on n7"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                for lang, locale in (("en", "en-GB"), ("de", "de-DE")):
                    ctx = browser.new_context(
                        viewport={"width": 1280, "height": 900}, locale=locale
                    )
                    ctx.add_init_script(path=str(AXE))
                    page = ctx.new_page()
                    page.goto(node.base + "/login")
                    user, password, submit = {
                        "de": ("Benutzername", "Passwort", "Anmelden"),
                        "en": ("User name", "Password", "Sign in"),
                    }[lang]
                    page.get_by_label(user).fill("nachtdienst")
                    page.get_by_label(password).fill("Bereitschaft-2026")
                    page.get_by_role("button", name=submit).click()
                    page.wait_for_url(node.base + "/advisor")
                    page.goto(node.base + "/ops")
                    card = page.locator("#ops-cluster")
                    expect(card.locator('tr[data-node="n7"]')).to_have_attribute(
                        "data-state", "serving"
                    )
                    assert _axe(page) == [], f"/ops with the cluster card ({lang})"
                    if lang == "en":
                        expect(card.get_by_role("button", name="Drain this node")).to_be_visible()
                        ctx.close()
                # German: the operator first dismisses the question, then confirms
                drain = card.get_by_role("button", name="Diesen Knoten leeren")
                questions: list[str] = []

                def answer(dialog: Any, accept: bool) -> None:
                    questions.append(dialog.message)
                    dialog.accept() if accept else dialog.dismiss()

                page.once("dialog", lambda d: answer(d, False))
                drain.click()
                time.sleep(2 * HEARTBEAT)
                assert cluster.registry()["n7"]["state"] == "serving"  # "Abbrechen" drains nothing
                page.once("dialog", lambda d: answer(d, True))
                drain.click()
                page.wait_for_url(node.base + "/ops")
                assert len(questions) == 2 and "wirklich leeren" in questions[0]
                expect(card.locator('tr[data-node="n7"]')).to_have_attribute(
                    "data-state", "draining"
                )
                expect(card.locator('tr[data-node="n7"]')).to_contain_text("leert sich")
                expect(card.get_by_role("button", name="Diesen Knoten leeren")).to_have_count(0)
                page.screenshot(path=str(artifacts / "cluster-ops-draining.png"), full_page=True)
            finally:
                browser.close()
        assert cluster.registry()["n7"]["state"] == "draining"
        status, _, _ = node.request("GET", "/readyz")
        assert status == 503
        assert node.proc is not None and node.proc.poll() is None  # its consultation runs on
        assert delete_session(doc, cluster.nodes[0]) == 204
        assert node.proc.wait(30) == 0
        assert "drained: 0 consultation(s) left" in node.log()
    finally:
        cluster.remove_node(node)

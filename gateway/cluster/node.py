"""This node's membership in the cluster (docs/cluster.md).

Redis keys (all under ``vb:``; Redis runs with persistence off, the nodes rebuild
everything after a Redis restart within one directory refresh):

- ``vb:node:{id}``: a hash with the node's URLs, state and load; expires after three
  heartbeats, so a node killed with SIGKILL leaves placement within that TTL.
- ``vb:nodes``: the set of node ids (a member whose hash expired is dropped by readers).
- ``vb:dir:{sha256}``: identifier → node id, for the consultation id, the customer link
  and both participant tokens, each stored as its SHA-256 only (a copy of Redis signs
  nobody in). Set at creation, refreshed by the owner every ``DIRECTORY_REFRESH``
  heartbeats with a TTL of ``DIRECTORY_TTL`` heartbeats, deleted at the end; an entry
  whose node is no longer registered counts as gone at once.
- ``vb:rooms:{id}``: the node's consultations for the advisors' start pages on other
  nodes (id, owner, label, times, customer state; never a token, link or PIN), rewritten
  at every heartbeat and when one starts or ends; it expires with the node.
- ``vb:secret``: the cluster secret, made once by the first node (``SET NX``): nodes
  authenticate their calls to each other with it (placement, ending a consultation).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.consultation import Consultation

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

PREFIX = "vb:"
NODE_TTL_BEATS = 3
DIRECTORY_REFRESH = 5  # heartbeats between directory refreshes
DIRECTORY_TTL = 15  # heartbeats a directory entry outlives its last refresh


def identifier_key(value: str) -> str:
    """The directory key of a consultation id, customer link or token: its SHA-256."""
    return PREFIX + "dir:" + hashlib.sha256(value.encode()).hexdigest()


@dataclass(slots=True)
class NodeInfo:
    id: str
    url: str  # public base URL (pages, WHIP/WHEP, events)
    rtmp: str  # public RTMP application URL
    internal: str  # where other nodes reach this one
    state: str = "serving"  # serving | draining
    load: float = 0.0  # cores busy (gateway.monitor.Monitor.load)
    budget: float = 1.0  # cores budgeted
    cost: float = 0.35  # cores one more consultation is expected to take
    consultations: int = 0
    started: float = 0.0
    updated: float = 0.0

    def headroom(self, pending: int = 0) -> float:
        """Cores left after the running load, the consultations placed here since the
        last heartbeat (not in ``load`` yet) and the one to place."""
        return self.budget - self.load - self.cost * (pending + 1)

    @classmethod
    def from_hash(cls, values: dict[str, str]) -> NodeInfo:
        return cls(
            id=values["id"],
            url=values["url"],
            rtmp=values["rtmp"],
            internal=values.get("internal", values["url"]),
            state=values.get("state", "serving"),
            load=float(values.get("load", 0.0)),
            budget=float(values.get("budget", 1.0)),
            cost=float(values.get("cost", 0.35)),
            consultations=int(values.get("consultations", 0)),
            started=float(values.get("started", 0.0)),
            updated=float(values.get("updated", 0.0)),
        )


@dataclass(slots=True)
class RedisCounter:
    """Redis commands sent by this node, by purpose (reported in /ops and the bench)."""

    by_purpose: Counter[str] = field(default_factory=Counter)

    def add(self, purpose: str, commands: int = 1) -> None:
        self.by_purpose[purpose] += commands


class ClusterNode:
    """Membership, placement and directory of one node."""

    def __init__(self, gateway: Gateway, *, redis_url: str, info: NodeInfo) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.info = info
        self.redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.heartbeat = self.config.heartbeat
        self.nodes: dict[str, NodeInfo] = {}  # the last view of every live node
        self.pending: Counter[str] = Counter()  # placed since the node's last heartbeat
        self.secret: str | None = None
        self.connected = False
        self.counter = RedisCounter()
        self._beats = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._announce: set[str] = set()  # consultations to put in the directory now
        self._withdraw: list[list[str]] = []  # directory keys to delete
        self.load_source: Callable[[], tuple[float, float, float]] | None = None
        # the composition root's "drain now" (SIGTERM's path), for the /ops action
        self.on_drain: Callable[[], None] | None = None
        gateway.directory.on_end.append(self._ended)

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.info.started = time.time()
        await self._beat()  # registered before the first request is served
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def stop(self) -> None:
        """Leave the cluster: the node's keys go at once (placement stops sending here)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            keys = [
                k for c in list(self.gateway.directory.consultations.values()) for k in _keys(c)
            ]
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self._node_key(), self._rooms_key(), *keys)
            pipe.srem(PREFIX + "nodes", self.info.id)
            self.counter.add("leave", 2)
            await pipe.execute()
        await self.redis.aclose()

    def set_state(self, state: str) -> None:
        self.info.state = state

    async def publish_state(self) -> None:
        """Tell the others now (draining must stop placement at once, not next beat)."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.hset(self._node_key(), "state", self.info.state)
            self.counter.add("heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self._beat()

    async def _beat(self) -> None:
        try:
            await self._register()
            self._beats += 1
            if not self.connected:
                # first contact, or Redis came back (and may have lost everything:
                # persistence is off): the whole directory again, at once
                log.info("cluster: registered as %s in Redis", self.info.id)
                self.connected = True
                await self._refresh_directory()
            elif self._beats % DIRECTORY_REFRESH == 0:
                await self._refresh_directory()
            elif self._announce or self._withdraw:
                await self._flush_directory()
            await self._read_nodes()
        except (RedisError, OSError) as exc:
            if self.connected:
                log.warning("cluster: Redis unreachable (%s); serving on, retrying", exc)
            self.connected = False
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cluster heartbeat failed")

    async def _register(self) -> None:
        info = self.info
        if self.load_source is not None:
            info.load, info.cost, info.budget = self.load_source()
        info.consultations = len(self.gateway.directory.consultations)
        info.updated = time.time()
        values: dict[str | bytes, str | bytes] = {k: str(v) for k, v in asdict(info).items()}
        ttl = max(1, round(self.heartbeat * NODE_TTL_BEATS * 1000))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self._node_key(), mapping=values)  # type: ignore[arg-type]
        pipe.pexpire(self._node_key(), ttl)
        pipe.sadd(PREFIX + "nodes", info.id)
        pipe.set(PREFIX + "secret", secrets.token_urlsafe(32), nx=True)
        pipe.get(PREFIX + "secret")
        # the start pages of the other nodes show who is waiting: fresh at every beat
        pipe.set(self._rooms_key(), json.dumps(self._rooms()), px=ttl)
        self.counter.add("heartbeat", 6)
        results = await pipe.execute()
        self.secret = str(results[4])  # the GET after SET NX

    async def _read_nodes(self) -> None:
        ids = await self.redis.smembers(PREFIX + "nodes")
        pipe = self.redis.pipeline(transaction=False)
        ordered = sorted(str(i) for i in ids)
        for node_id in ordered:
            pipe.hgetall(PREFIX + "node:" + node_id)
        self.counter.add("heartbeat", 1 + len(ordered))
        found = await pipe.execute()
        nodes: dict[str, NodeInfo] = {}
        gone = []
        for node_id, values in zip(ordered, found, strict=True):
            if not values:
                gone.append(node_id)
                continue
            with contextlib.suppress(KeyError, ValueError):
                nodes[node_id] = NodeInfo.from_hash(values)
        if gone:
            await self.redis.srem(PREFIX + "nodes", *gone)
            self.counter.add("heartbeat")
        # a node's placements are in its own load once it has reported after them
        for node_id, node in nodes.items():
            old = self.nodes.get(node_id)
            if old is None or node.updated > old.updated:
                self.pending.pop(node_id, None)
        self.nodes = nodes

    # -- placement -----------------------------------------------------------------------
    def live_nodes(self) -> list[NodeInfo]:
        """The nodes known to be alive: seen within their TTL (this node: always)."""
        now = time.time()
        ttl = self.heartbeat * NODE_TTL_BEATS
        live = [n for n in self.nodes.values() if n.id != self.info.id and now - n.updated < ttl]
        return [self.info, *live]

    def placement_order(self) -> list[NodeInfo]:
        """Serving nodes by headroom, most first. Headroom is measured CPU, which
        scatters by a few hundredths of a core: nodes within half a consultation's cost
        of each other count as equal and are ordered by their consultations (placed here
        since their last heartbeat included), then at random, so nodes placing at the
        same moment from the same view do not all pick one node (LiveKit's selectors
        spread the same way)."""
        serving = [n for n in self.live_nodes() if n.state == "serving"]
        step = max(0.05, self.info.cost / 2)
        return sorted(
            serving,
            key=lambda n: (
                -round(n.headroom(self.pending[n.id]) / step),
                n.consultations + self.pending[n.id],
                random.random(),
            ),
        )

    def placed(self, node_id: str) -> None:
        self.pending[node_id] += 1

    # -- directory -----------------------------------------------------------------------
    def announce(self, consultation: Consultation) -> None:
        """A new consultation here: in the directory with the next flush (soon, and
        before its URLs leave this node: :meth:`flush_now`)."""
        self._announce.add(consultation.id)

    async def flush_now(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._flush_directory()

    def _ended(self, consultation: Consultation) -> None:
        if self._closed:
            return  # left the cluster: its keys went with stop()
        self._announce.discard(consultation.id)
        self._withdraw.append(_keys(consultation))
        with contextlib.suppress(RuntimeError):  # no loop: shutting down
            asyncio.get_running_loop().create_task(self.flush_now())

    async def _flush_directory(self) -> None:
        directory = self.gateway.directory
        ttl = max(1, round(self.heartbeat * DIRECTORY_TTL * 1000))
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        announce, self._announce = self._announce, set()
        withdraw, self._withdraw = self._withdraw, []
        for cid in announce:
            consultation = directory.get(cid)
            if consultation is None:
                continue
            for key in _keys(consultation):
                pipe.set(key, self.info.id, px=ttl)
                count += 1
        for keys in withdraw:
            pipe.delete(*keys)
            count += 1
        if announce or withdraw:
            pipe.set(self._rooms_key(), json.dumps(self._rooms()), px=ttl)
            count += 1
        if count:
            self.counter.add("directory", count)
            try:
                await pipe.execute()
            except BaseException:
                self._announce |= announce
                self._withdraw[:0] = withdraw
                raise

    async def _refresh_directory(self) -> None:
        self._announce |= set(self.gateway.directory.consultations)
        if not self._announce and not self._withdraw:
            await self.redis.set(
                self._rooms_key(), "[]", px=round(self.heartbeat * DIRECTORY_TTL * 1000)
            )
            self.counter.add("directory")
            return
        await self._flush_directory()

    def _rooms(self) -> list[dict[str, Any]]:
        rooms = []
        for c in self.gateway.directory.consultations.values():
            if c.ended:
                continue
            rooms.append(
                {
                    "id": c.id,
                    "owner": c.owner,
                    "label": c.label,
                    "created": c.created_at,
                    "appointment": c.appointment,
                    "customer": c.customer_state(),
                }
            )
        return rooms

    async def locate(self, identifier: str) -> NodeInfo | None:
        """The live node (not this one) that holds the consultation of ``identifier``
        (an id, customer link or token), or None (unknown, ended, or its node died)."""
        if not identifier or len(identifier) > 200:
            return None
        try:
            self.counter.add("lookup")
            node_id = await self.redis.get(identifier_key(identifier))
        except (RedisError, OSError):
            return None
        if node_id is None or node_id == self.info.id:
            return None
        for node in self.live_nodes():
            if node.id == node_id:
                return node
        return None

    async def remote_rooms(self, owner: str) -> list[tuple[NodeInfo, dict[str, Any]]]:
        """``owner``'s consultations on the other live nodes (for the start page)."""
        others = [n for n in self.live_nodes() if n.id != self.info.id]
        if not others:
            return []
        try:
            self.counter.add("rooms", len(others))
            found = await self.redis.mget([PREFIX + "rooms:" + n.id for n in others])
        except (RedisError, OSError):
            return []
        rooms = []
        for node, raw in zip(others, found, strict=True):
            for room in json.loads(raw or "[]"):
                if room.get("owner") == owner:
                    rooms.append((node, room))
        return rooms

    def describe(self) -> dict[str, Any]:
        return {
            "node": self.info.id,
            "connected": self.connected,
            "nodes": [asdict(n) for n in sorted(self.live_nodes(), key=lambda n: n.id)],
            "redis_commands": dict(self.counter.by_purpose),
        }

    def _node_key(self) -> str:
        return PREFIX + "node:" + self.info.id

    def _rooms_key(self) -> str:
        return PREFIX + "rooms:" + self.info.id


def _keys(consultation: Consultation) -> list[str]:
    values = [consultation.id, consultation.customer_link]
    values += [p.token for p in consultation.participants.values()]
    return [identifier_key(v) for v in values]

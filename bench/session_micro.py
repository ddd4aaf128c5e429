"""The gateway's own relay work without sockets: one publisher session, one player session.

Two RtmpSessions of a real Gateway (``transport="rtmp"``, writes into memory) are set up
by in-memory client connections (handshake, connect with token, createStream, publish or
play), then the relay720p file, chunked as ffmpeg sends it (4096-byte chunks after the
server's Set Chunk Size), is fed to the publisher in the read sizes the gateway really
sees from ffmpeg (about 8.6 kB). Every message goes the product's full path: chunk
parser, FLV mapping, PublishedStream fan-out, PlayerReceiver, chunk writer.

Two timings of the same work:

* ``hot``    -- back to back: the cost of the Python code itself.
* ``paced``  -- one read every ``interval`` (16 ms, as in the real stream) with a sleep
  in between: the same code run the way a server runs it, waking for each read with
  cold caches. The difference between the two is what a wake-up costs, not the code.

Run: ``.venv/bin/python -m bench.session_micro [--seconds 8]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from bench.media import RELAY_720P, make_flv
from bench.testkit.media import read_flv_tags
from gateway.config import Config
from gateway.consultation import Role
from gateway.service import Gateway
from rtmp import messages as m
from rtmp.connection import RtmpConnection
from rtmp.session import RtmpSession, RtmpShared

READ_SIZE = 8600  # mean recv() size the gateway sees from ffmpeg -re at 4 Mbit/s (strace)


class Link:
    """A client RtmpConnection wired to a server RtmpSession through memory."""

    def __init__(self, gateway: Gateway, shared: RtmpShared) -> None:
        self.to_client: list[bytes] = []
        self.session = RtmpSession(
            gateway,
            shared=shared,
            transport="rtmp",
            peer="bench",
            write=self.to_client.append,
            close=lambda: None,
            buffer_size=lambda: 0,
        )
        self.client = RtmpConnection(is_client=True)

    def pump(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            data = self.client.data_to_send()
            if data:
                self.session.receive_data(data)
            if self.to_client:
                self.client.receive_data(b"".join(self.to_client))
                self.to_client.clear()
            self.client.events()

    def open(self, token: str, command: Callable[[RtmpConnection], None]) -> None:
        self.pump()
        self.client.connect("consult", "rtmp://127.0.0.1/consult", token)
        self.pump()
        self.client.object_encoding = 3
        self.client.call("createStream")
        self.pump()
        command(self.client)
        self.pump()


def build(seconds: float) -> tuple[Link, Link, list[bytes]]:
    gateway = Gateway.from_config(Config())
    consultation = gateway.directory.create()
    tokens = {role: p.token for role, p in consultation.participants.items()}
    shared = RtmpShared(gateway.config.limits)  # as the composition root: one per gateway
    player = Link(gateway, shared)
    player.open(
        tokens[Role.ADVISOR],
        lambda c: c.send_command(1, "play", 0.0, None, "customer", -2000.0, csid=8),
    )
    publisher = Link(gateway, shared)
    publisher.open(
        tokens[Role.CUSTOMER],
        lambda c: c.send_command(1, "publish", 0.0, None, "customer", "live", csid=8),
    )
    if not player.session.playing or not publisher.session.publishing:
        raise SystemExit("session set-up failed: the gateway refused play or publish")
    # ffmpeg answers the server's Set Chunk Size with its own (rtmpproto.c).
    publisher.client.set_chunk_size(4096)
    publisher.session.receive_data(publisher.client.data_to_send())
    tags = [
        t for t in read_flv_tags(make_flv(RELAY_720P, seconds)) if t.type_id in (m.AUDIO, m.VIDEO)
    ]
    for tag in tags:
        publisher.client.send_media(1, tag.type_id, tag.timestamp, tag.body)
    wire = publisher.client.data_to_send()
    reads = [wire[i : i + READ_SIZE] for i in range(0, len(wire), READ_SIZE)]
    return publisher, player, reads


def feed(publisher: Link, player: Link, reads: list[bytes], interval: float) -> float:
    """CPU seconds to relay ``reads``; ``interval`` > 0 sleeps between reads."""
    receive = publisher.session.receive_data
    out = player.to_client
    t0 = time.process_time()
    for data in reads:
        receive(data)
        out.clear()
        if interval:
            time.sleep(interval)
    return time.process_time() - t0


def run(seconds: float, interval: float) -> dict[str, Any]:
    publisher, player, reads = build(seconds)
    before = player.session.conn.bytes_sent
    hot = feed(publisher, player, reads, 0.0)
    relayed = player.session.conn.bytes_sent - before
    # A fresh pair for the paced run: the same stream again from its first byte.
    publisher, player, reads = build(seconds)
    paced = feed(publisher, player, reads, interval)
    idle = 0.0
    if interval:
        t0 = time.process_time()
        for _ in reads:
            time.sleep(interval)
        idle = time.process_time() - t0
    return {
        "seconds_of_media": seconds,
        "reads": len(reads),
        "bytes_in": sum(len(r) for r in reads),
        "bytes_relayed": relayed,
        "hot_cpu_seconds": hot,
        "hot_us_per_read": 1e6 * hot / len(reads),
        "paced_cpu_seconds": paced,
        "paced_us_per_read": 1e6 * paced / len(reads),
        "sleep_only_cpu_seconds": idle,
        "interval_seconds": interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=0.016)
    args = parser.parse_args()
    print(json.dumps(run(args.seconds, args.interval)))


if __name__ == "__main__":
    main()

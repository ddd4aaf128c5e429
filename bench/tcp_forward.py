"""The asyncio floor: a TCP forwarder that moves bytes and does nothing else.

``python -m bench.tcp_forward LISTEN_PORT TARGET_PORT [--uvloop]`` accepts connections
and pipes each to 127.0.0.1:TARGET_PORT in both directions. Put in front of nginx-rtmp
on the publisher's leg, it receives exactly what the gateway receives from ffmpeg, in
the same reads at the same moments, and sends the same bytes on: what it costs is what
any CPython asyncio server pays for this stream before parsing a single chunk.
"""

from __future__ import annotations

import asyncio
import sys


class _Leg(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Leg | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            # uvloop may deliver data that was already read before pause_reading().
            self.pending.append(data)
            return
        peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Front(_Leg):
    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        back = _Leg()
        back.peer = self
        await asyncio.get_running_loop().create_connection(lambda: back, "127.0.0.1", self.target)
        self.peer = back
        assert self.transport is not None and back.transport is not None
        for data in self.pending:
            back.transport.write(data)
        self.pending.clear()
        self.transport.resume_reading()


async def serve(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Front(target), "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await asyncio.Event().wait()


def main() -> None:
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    if "--uvloop" in sys.argv[3:]:
        import uvloop

        uvloop.install()
    asyncio.run(serve(listen, target))


if __name__ == "__main__":
    main()

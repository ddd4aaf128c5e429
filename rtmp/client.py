"""A small asyncio RTMP client on the sans-I/O core.

It behaves like Flash Player 11 where that matters (digest handshake with validation of
S1 and S2, ``connect`` as AMF0 with ``objectEncoding`` 3 and then AMF3 command messages,
128-byte outgoing chunks, no ``@setDataFrame`` metadata). The tests use it for what
only Flash does; the benchmark's load generator uses it to drive many streams from one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from rtmp import messages as m
from rtmp.connection import RtmpConnection
from rtmp.events import (
    CommandReceived,
    DataReceived,
    HandshakeCompleted,
    MediaReceived,
    PingResponse,
    ProtocolViolation,
    ResultReceived,
    RtmpEvent,
    UserControlReceived,
)
from rtmp.messages import Message


class RtmpClientError(Exception):
    pass


class RtmpClient(asyncio.Protocol):
    """An RTMP client connection; await its coroutines from one task at a time."""

    def __init__(
        self,
        *,
        digest: bool = True,
        validate: bool = True,
        on_media: Callable[[MediaReceived], None] | None = None,
    ) -> None:
        self.conn = RtmpConnection(is_client=True, client_digest=digest, client_validate=validate)
        self.transport: asyncio.Transport | None = None
        self.on_media = on_media
        self.media: list[MediaReceived] = []
        self.keep_media = on_media is None
        self.statuses: list[dict[str, Any]] = []
        self.calls: list[CommandReceived] = []
        self.data: list[DataReceived] = []
        self.user_control: list[UserControlReceived] = []
        self.pings: list[int] = []
        self.handshake: HandshakeCompleted | None = None
        self.closed = asyncio.Event()
        self.error: str | None = None
        self._results: dict[float, asyncio.Future[ResultReceived]] = {}
        self._changed = asyncio.Event()
        self.bytes_received = 0

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's
        self.transport = cast(asyncio.Transport, transport)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events():
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        for fut in self._results.values():
            if not fut.done():
                fut.set_exception(RtmpClientError("connection closed"))
        self._changed.set()

    # -- internals ------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _dispatch(self, event: RtmpEvent) -> None:
        if isinstance(event, MediaReceived):
            if self.on_media is not None:
                self.on_media(event)
            if self.keep_media:
                self.media.append(event)
        elif isinstance(event, ResultReceived):
            fut = self._results.pop(event.transaction_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, CommandReceived):
            if event.name == "onStatus" and event.args and isinstance(event.args[0], dict):
                self.statuses.append(event.args[0])
            else:
                self.calls.append(event)
        elif isinstance(event, DataReceived):
            self.data.append(event)
        elif isinstance(event, UserControlReceived):
            self.user_control.append(event)
        elif isinstance(event, HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, PingResponse):
            self.pings.append(event.timestamp)
        elif isinstance(event, ProtocolViolation):
            self.error = event.reason
            if self.transport is not None:
                self.transport.close()
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every event)."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                if self.closed.is_set():
                    raise RtmpClientError(f"connection closed ({self.error or 'by peer'})")
                self._changed.clear()
                await self._changed.wait()

    async def wait_status(self, code: str, timeout: float = 10.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for status in self.statuses:
                if status.get("code") == code:
                    return status
            return None

        result: dict[str, Any] = await self.wait_for(find, timeout)
        return result

    async def _request(self, tid: float, timeout: float = 10.0) -> ResultReceived:
        fut: asyncio.Future[ResultReceived] = asyncio.get_running_loop().create_future()
        self._results[tid] = fut
        self._flush()
        async with asyncio.timeout(timeout):
            return await fut

    # -- API ------------------------------------------------------------------------------------
    @classmethod
    async def open(cls, host: str, port: int, **kwargs: Any) -> RtmpClient:
        loop = asyncio.get_running_loop()
        ssl_ctx = kwargs.pop("ssl", None)
        _, client = await loop.create_connection(lambda: cls(**kwargs), host, port, ssl=ssl_ctx)
        return client

    async def connect(self, app: str, tc_url: str, *extra: Any, **kwargs: Any) -> ResultReceived:
        tid = self.conn.connect(app, tc_url, *extra, **kwargs)
        result = await self._request(tid)
        if result.error:
            return result
        info = result.args[0] if result.args and isinstance(result.args[0], dict) else {}
        # Flash switches to AMF3 command messages once the server confirms encoding 3.
        self.conn.object_encoding = 3 if info.get("objectEncoding") == 3 else 0
        return result

    async def call(self, name: str, *args: Any) -> ResultReceived:
        return await self._request(self.conn.call(name, *args))

    async def create_stream(self) -> int:
        result = await self.call("createStream")
        if result.error or not result.args:
            raise RtmpClientError(f"createStream failed: {result}")
        return int(result.args[0])

    def publish(self, stream_id: int, name: str, kind: str = "live") -> None:
        self.conn.send_command(stream_id, "publish", 0.0, None, name, kind, csid=8)
        self._flush()

    def play(self, stream_id: int, name: str) -> None:
        self.conn.send_command(stream_id, "play", 0.0, None, name, -2000.0, csid=8)
        self.conn.send(m.user_control(m.UC_SET_BUFFER_LENGTH, stream_id, 1000))
        self._flush()

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        self.conn.send_media(stream_id, type_id, timestamp, payload)
        self._flush()

    def send_raw(self, msg: Message) -> None:
        self.conn.send(msg)
        self._flush()

    def write_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.closed.wait()

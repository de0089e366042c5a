"""One TCP connection of a load terminal to the gateway, answers matched to requests in order."""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.framing import FrameDecoder, FramingError
from sim.load.frames import ResponseFormatError

_RESPONSE_BYTES_MAX = 0xFFFF


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no response in time"))


class Connection(asyncio.Protocol):
    """One TCP connection to the gateway; answers come back in request order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(_RESPONSE_BYTES_MAX)
        self.waiters: deque[asyncio.Future[bytes]] = deque()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.unsolicited = 0  # frames nobody waited for

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, connection = await loop.create_connection(lambda: cls(loop), host, port)
        return connection

    @property
    def closed(self) -> bool:
        return self.lost.done() or self.transport is None or self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except FramingError as exc:
            self._fail(ResponseFormatError(str(exc)))
            self.abort()
            return
        waiters = self.waiters
        for body in bodies:
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(body)
                    break
            else:
                self.unsolicited += 1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the gateway closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc: Exception) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(exc)

    async def exchange(self, frame: bytes, timeout_s: float) -> bytes:
        """Send a frame, return the body (after the length) of the answer."""
        if self.closed:
            raise ConnectionError("the connection is closed")
        future = self.loop.create_future()
        self.waiters.append(future)
        self.transport.write(frame)  # type: ignore[union-attr]
        timer = self.loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def send_only(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after what is written has gone out."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

"""The terminal-facing TCP server: a thin asyncio adapter around the sans-IO
frame decoder and the processor.

Per connection: frames are processed concurrently, answered in request order;
at most ``in_flight_max`` requests are outstanding before reading pauses; a
client that does not read its answers fills at most the write buffer, then
reading pauses too. A protocol violation closes only that connection.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from gateway import metrics
from gateway.settings import Settings
from protocol.framing import Frame, FrameDecoder, FramingError, parse_frame_body

log = structlog.get_logger("posgw.server")

Handler = Callable[[Frame], Awaitable[bytes]]


def _request_done(task: asyncio.Task[bytes]) -> None:
    metrics.IN_FLIGHT.dec()


class TerminalConnection(asyncio.Protocol):
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.settings = server.settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(self.settings.frame_bytes_max)
        self.pending: deque[asyncio.Task[bytes]] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.reading_paused = False
        self.closing = False  # no more reading: answer what is pending, then close
        self.last_activity = self.loop.time()
        self.frame_started_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if len(self.server.connections) >= self.settings.connections_max or self.server.stopping:
            metrics.CONNECTIONS_REFUSED.inc()
            transport.abort()
            return
        self.server.connections.add(self)
        metrics.CONNECTIONS_OPEN.inc()
        transport.set_write_buffer_limits(high=self.settings.write_buffer_bytes_max)
        self._schedule_check(self.last_activity + self.settings.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            metrics.CONNECTIONS_OPEN.dec()
        if self.timer is not None:
            self.timer.cancel()
        self.can_write.set()  # let the writer run out

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.loop.time()
        self.last_activity = now
        was_mid_frame = self.decoder.mid_frame
        try:
            bodies = self.decoder.feed(data)
            frames = [parse_frame_body(body) for body in bodies]
        except FramingError as exc:
            self._violation(str(exc))
            return
        for frame in frames:
            metrics.FRAMES_RECEIVED.inc()
            metrics.IN_FLIGHT.inc()
            self.pending.append(self.loop.create_task(self.server.handler(frame)))
            self.pending[-1].add_done_callback(_request_done)
        if frames and self.writer is None:
            self.writer = self.loop.create_task(self._write_answers())
        if not self.decoder.mid_frame:
            self.frame_started_at = None
        elif frames or not was_mid_frame:
            self.frame_started_at = now
            self._schedule_check(now + self.settings.read_timeout_s)
        if len(self.pending) >= self.settings.in_flight_max and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.stop_reading()
        return True  # keep the transport open to send pending answers

    # -- answers -------------------------------------------------------------------
    async def _write_answers(self) -> None:
        transport = self.transport
        try:
            while self.pending:
                answer = await self.pending[0]
                self.pending.popleft()
                await self.can_write.wait()
                if transport.is_closing():
                    continue
                transport.write(answer)
                if self.reading_paused and not self.closing and len(self.pending) < self.settings.in_flight_max:
                    self.reading_paused = False
                    transport.resume_reading()
        finally:
            self.writer = None
            if self.closing and not transport.is_closing():
                transport.close()

    # -- closing -----------------------------------------------------------------
    def stop_reading(self) -> None:
        """Read no more; close once every pending request is answered."""
        if self.closing:
            return
        self.closing = True
        if not self.transport.is_closing():
            if not self.reading_paused:
                self.transport.pause_reading()
                self.reading_paused = True
            if self.writer is None:
                self.transport.close()

    def _violation(self, reason: str) -> None:
        log.warning("protocol_violation", peer=self._peer(), reason=reason)
        metrics.CONNECTIONS_CLOSED.labels(reason="violation").inc()
        self.stop_reading()

    def _close_now(self, reason: str) -> None:
        log.info("connection_closed", peer=self._peer(), reason=reason)
        metrics.CONNECTIONS_CLOSED.labels(reason=reason).inc()
        self.closing = True
        self.transport.abort()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    # -- timeouts ------------------------------------------------------------------
    def _schedule_check(self, when: float) -> None:
        if self.timer is not None:
            if self.timer.when() <= when:
                return
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._check_timeouts)

    def _check_timeouts(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        read_deadline = math.inf
        if self.frame_started_at is not None:
            read_deadline = self.frame_started_at + self.settings.read_timeout_s
            if now >= read_deadline:
                self._close_now("read_timeout")
                return
        idle_deadline = self.last_activity + self.settings.idle_timeout_s
        if now >= idle_deadline and not self.pending:
            self._close_now("idle_timeout")
            return
        self._schedule_check(min(read_deadline, max(idle_deadline, now + 1.0)))


class GatewayServer:
    """Accepts terminal connections and feeds their frames to ``handler``."""

    def __init__(self, settings: Settings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.connections: set[TerminalConnection] = set()
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TerminalConnection(self), host, port,
            reuse_address=True, reuse_port=reuse_port or None, backlog=4096,
        )
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let pending requests finish within ``grace_s``, close everything."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.stop_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

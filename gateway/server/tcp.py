"""The terminal-facing TCP server: a thin asyncio adapter around the sans-IO
frame decoder and the processor.

Per connection, everything is bounded:

- at most ``in_flight_max`` requests are pending (being processed, or done and
  waiting for their turn to be written); answers go out in request order;
- whole frames read beyond that wait undispatched, and reading pauses as long
  as any do: at most one read's worth (reads are at most ``READ_BYTES`` long);
- a partial frame must complete within ``read_timeout_s`` of its first byte
  (time during which the gateway itself paused reading does not count);
- a client that does not read its answers fills at most the write buffer
  (``write_buffer_bytes_max`` plus one answer), then pending fills and reading
  pauses; if its answers still do not move for ``idle_timeout_s`` it is closed;
- a connection with nothing pending and nothing received for
  ``idle_timeout_s`` is closed;
- a connection counts under ``connections_max`` from its accept to its close;
  over it, a new connection is closed at once.

A protocol violation closes only that connection, after answering the frames
before it. A request the processor leaves unanswered (None) closes the
connection after the answers before it. With ``tls_cert_file`` and
``tls_key_file`` set, the port speaks TLS 1.2 or later; the handshake must
complete within ``read_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import resource
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from gateway import metrics
from gateway.settings import Settings
from protocol.framing import LENGTH_BYTES, Frame, FrameDecoder, FramingError, parse_frame_body

log = structlog.get_logger("posgw.server")

Handler = Callable[[Frame], Awaitable[bytes | None]]  # None: leave it unanswered

LISTEN_BACKLOG = 4096  # connects the kernel queues before accept
ACCEPT_BATCH = 32  # connections accepted per turn of the event loop
ACCEPT_PAUSE_S = 1.0  # accepting pauses this long when accept fails (out of descriptors)
FDS_SPARE = 256  # descriptors wanted beyond connections_max (database, logs, metrics)
READ_BYTES = 16 * 1024  # the most read from a connection at once (asyncio's own default: 256 KiB)
_RECHECK_S = 1.0  # an idle connection with requests still pending is looked at again after this
# Timeout checks set no context variables: they share one context rather than copy one each,
# which is one object fewer per connection for the garbage collector to walk.
_TIMER_CONTEXT = contextvars.Context()


def _request_done(task: asyncio.Task[bytes | None]) -> None:
    metrics.IN_FLIGHT.dec()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context (TLS 1.2+) from ``tls_cert_file``/``tls_key_file``; None: plain TCP."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


class TerminalConnection(asyncio.BufferedProtocol):
    """One terminal connection: frames in, answers out in order, within its limits."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.settings = server.settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(self.settings.frame_bytes_max)
        self.unframed_bytes = 0  # received and not yet part of a whole frame: > 0 is mid-frame
        self.frames_received = 0
        self._read_buffer: bytearray | None = None
        self.backlog: deque[bytes] = deque()  # whole frame bodies read while pending was full
        self.pending: deque[asyncio.Task[bytes | None]] = deque()  # at most in_flight_max
        self.writer: asyncio.Task[None] | None = None
        self.writing_paused = False  # the transport's write buffer is over its limit
        self._drained: asyncio.Future[None] | None = None  # the writer waits on it while writing is paused
        self.reading_paused = False
        self.closing = False  # no more reading: answer what is pending, then close
        self.last_activity = self.loop.time()  # last bytes received, answer written or write buffer drained
        self.frame_started_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._admitted = True  # counted in server.admitted until released

    def release(self) -> None:
        """Give back this connection's place under ``connections_max`` (once)."""
        if self._admitted:
            self._admitted = False
            self.server.admitted -= 1

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.server.stopping:
            self.closing = True
            transport.abort()
            return
        self.server.connections.add(self)
        metrics.CONNECTIONS_OPEN.inc()
        transport.set_write_buffer_limits(high=self.settings.write_buffer_bytes_max)
        self.last_activity = self.loop.time()
        self._schedule_check(self.last_activity + self.settings.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self in self.server.connections:
            self.server.connections.discard(self)
            metrics.CONNECTIONS_OPEN.dec()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.closing = True
        self.backlog.clear()
        self.frame_started_at = None
        self._resume_writer()  # let the writer run out: it still awaits the pending requests

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.last_activity = self.loop.time()  # the client is reading
        self._resume_writer()

    def _resume_writer(self) -> None:
        self.writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def get_buffer(self, sizehint: int) -> bytearray:
        self._read_buffer = bytearray(READ_BYTES)  # fresh each read: the decoder copies what it keeps
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        buffer, self._read_buffer = self._read_buffer, None
        self.data_received(memoryview(buffer)[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.closing:
            return
        now = self.loop.time()
        self.last_activity = now
        was_mid_frame = self.unframed_bytes > 0
        try:
            bodies = self.decoder.feed(data)
        except FramingError as exc:
            self._violation(str(exc))
            return
        # Counted here, not with decoder.mid_frame: that is False between a frame's
        # length and its first body byte, which would restart the read timeout.
        self.unframed_bytes += len(data) - sum(LENGTH_BYTES + len(body) for body in bodies)
        self.frames_received += len(bodies)
        if self.unframed_bytes == 0:
            self.frame_started_at = None
        elif bodies or not was_mid_frame:
            self.frame_started_at = now
            self._schedule_check(now + self.settings.read_timeout_s)
        self.backlog.extend(bodies)
        self._dispatch()

    def eof_received(self) -> bool | None:
        self.stop_reading()
        # Keep the transport open to send pending answers; TLS cannot half-close.
        return self.server.ssl_context is None

    # -- requests and answers ------------------------------------------------------
    def _dispatch(self) -> None:
        """Start requests from the backlog while fewer than ``in_flight_max`` are
        pending, then pause or resume reading."""
        violation: str | None = None
        while self.backlog and len(self.pending) < self.settings.in_flight_max:
            try:
                frame = parse_frame_body(self.backlog.popleft())
            except FramingError as exc:
                violation = str(exc)
                self.backlog.clear()
                break
            metrics.FRAMES_RECEIVED.inc()
            metrics.IN_FLIGHT.inc()
            task = self.loop.create_task(self.server.handler(frame))
            task.add_done_callback(_request_done)
            self.pending.append(task)
        if self.pending and self.writer is None:
            self.writer = self.loop.create_task(self._write_answers())
        if violation is not None:
            self._violation(violation)  # the frames before it are answered first
            return
        if self.closing or self.transport.is_closing():
            return
        full = bool(self.backlog) or len(self.pending) >= self.settings.in_flight_max
        if full and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        elif not full and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
            if self.frame_started_at is not None:  # the partial frame's time starts again
                self.frame_started_at = self.loop.time()
                self._schedule_check(self.frame_started_at + self.settings.read_timeout_s)

    async def _write_answers(self) -> None:
        """Write each answer in request order; a request leaves ``pending`` once written."""
        transport = self.transport
        try:
            while self.pending:
                task = self.pending[0]
                try:
                    answer = await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # this writer itself is cancelled
                    self._end_unanswered("request_failed")
                except Exception as exc:  # the handler answers everything; a bug must not hang the connection
                    log.error("request_failed", peer=self._peer(), error=f"{type(exc).__name__}: {exc}")
                    self._end_unanswered("request_failed")
                else:
                    if answer is None:  # the processor says: no answer (its money may have moved)
                        self._end_unanswered("unanswered")
                    elif not transport.is_closing():
                        if self.writing_paused:
                            self._drained = self.loop.create_future()
                            await self._drained
                            self._drained = None
                        if not transport.is_closing():
                            transport.write(answer)
                            self.last_activity = self.loop.time()
                self.pending.popleft()
                self._dispatch()
        finally:
            self.writer = None
            if self.closing and not transport.is_closing():
                transport.close()

    # -- closing -----------------------------------------------------------------
    def stop_reading(self) -> None:
        """Read no more; close once every request read is answered."""
        if self.closing:
            return
        self.closing = True
        self.frame_started_at = None  # no partial frame will complete now
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

    def _end_unanswered(self, reason: str) -> None:
        """A request gets no answer: the answers before it go out, then the connection
        closes (the answers after it could not come in order), so the terminal sees
        no answer to it and reverses it."""
        if self.transport.is_closing():
            return
        log.info("connection_closed", peer=self._peer(), reason=reason)
        metrics.CONNECTIONS_CLOSED.labels(reason=reason).inc()
        self.closing = True
        self.backlog.clear()
        self.frame_started_at = None
        self.transport.close()  # after what is already written; _check_timeouts bounds how long that takes

    def _close_now(self, reason: str) -> None:
        log.info("connection_closed", peer=self._peer(), reason=reason)
        metrics.CONNECTIONS_CLOSED.labels(reason=reason).inc()
        self.closing = True
        self.backlog.clear()
        self.frame_started_at = None
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
        self.timer = self.loop.call_at(when, self._check_timeouts, context=_TIMER_CONTEXT)

    def _check_timeouts(self) -> None:
        self.timer = None
        now = self.loop.time()
        read_deadline = math.inf
        if self.frame_started_at is not None and not self.reading_paused:
            read_deadline = self.frame_started_at + self.settings.read_timeout_s
            if now >= read_deadline:
                self._close_now("read_timeout")
                return
        idle_deadline = self.last_activity + self.settings.idle_timeout_s
        if now >= idle_deadline:
            if self.writing_paused or self.transport.is_closing():
                self._close_now("not_reading")  # its answers have not moved for idle_timeout_s
                return
            if not self.pending:
                self._close_now("idle_timeout")
                return
        self._schedule_check(min(read_deadline, max(idle_deadline, now + _RECHECK_S)))


class GatewayServer:
    """Accepts terminal connections and feeds their frames to ``handler``.

    It accepts by itself rather than through ``loop.create_server``: at most
    ``ACCEPT_BATCH`` connections per turn of the event loop (asyncio would take
    up to the backlog, uvloop every one queued), so that a burst of thousands of
    connects cannot hold up the answers to the terminals already connected; and
    a connection over ``connections_max`` is closed before anything is built
    for it. A connection counts from its accept (TLS handshake included) to its
    close.
    """

    def __init__(self, settings: Settings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.connections: set[TerminalConnection] = set()  # opened (TLS: handshake done), not yet closed
        self.admitted = 0  # accepted and not yet closed: what connections_max limits
        self.stopping = False
        self.ssl_context: ssl.SSLContext | None = None
        self._tls_options: dict[str, object] = {}
        self._listeners: list[socket.socket] = []
        self._opening: set[asyncio.Task[None]] = set()
        self._accept_paused: asyncio.TimerHandle | None = None
        self._port = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.ssl_context = tls_context(self.settings)
        if self.ssl_context is not None:
            self._tls_options = {
                "ssl": self.ssl_context,
                "ssl_handshake_timeout": self.settings.read_timeout_s,
                "ssl_shutdown_timeout": self.settings.read_timeout_s,
            }
        _ensure_fd_limit(self.settings.connections_max + FDS_SPARE)
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, type_, proto, _, address in dict.fromkeys(infos):
                listener = socket.socket(family, type_, proto)
                self._listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
                listener.bind(address)
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)
        except BaseException:
            for listener in self._listeners:
                listener.close()
            self._listeners.clear()
            raise
        self._port = self._listeners[0].getsockname()[1]
        self._start_accepting()

    @property
    def port(self) -> int:
        return self._port

    # -- accepting -------------------------------------------------------------------
    def _start_accepting(self) -> None:
        self._accept_paused = None
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of descriptors or memory: stop accepting for a moment
                log.warning("accept_failed", error=str(exc), pause_s=ACCEPT_PAUSE_S)
                self._stop_accepting()
                self._accept_paused = loop.call_later(ACCEPT_PAUSE_S, self._start_accepting)
                return
            if self.stopping or self.admitted >= self.settings.connections_max:
                metrics.CONNECTIONS_REFUSED.inc()
                sock.close()
                continue
            self.admitted += 1
            sock.setblocking(False)
            task = loop.create_task(self._open(sock))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, sock: socket.socket) -> None:
        """Build the transport (TLS: complete the handshake) for an accepted socket."""
        made: list[TerminalConnection] = []

        def connection() -> TerminalConnection:
            made.append(TerminalConnection(self))
            return made[0]

        try:
            await asyncio.get_running_loop().connect_accepted_socket(connection, sock, **self._tls_options)
        except BaseException as exc:
            if made:
                made[0].release()  # its transport closed the socket
            else:
                self.admitted -= 1
                sock.close()
            if not isinstance(exc, Exception):
                raise
            # A failed or timed-out TLS handshake (a plaintext client, a scanner): nothing to answer.
            log.info("connection_not_opened", error=f"{type(exc).__name__}: {exc}")

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let pending requests finish within ``grace_s``, close everything."""
        self.stopping = True
        if self._accept_paused is not None:
            self._accept_paused.cancel()
        self._stop_accepting()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for task in list(self._opening):
            task.cancel()
        for connection in list(self.connections):
            connection.stop_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.transport.abort()
        await asyncio.gather(*self._opening, return_exceptions=True)


def _ensure_fd_limit(wanted: int) -> None:
    """Raise the open-files soft limit towards ``wanted`` (up to the hard limit) so that
    ``connections_max``, not the descriptor limit, is what refuses connections; warn if
    the hard limit is below ``connections_max``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted - FDS_SPARE:
        log.warning("open_files_limit_low", limit=target, connections_max=wanted - FDS_SPARE,
                    hint="connections_max cannot be reached: raise ulimit -n")

"""Hostile connections against a real gateway: each attack runs while a
well-behaved terminal keeps signing on and echoing, every answer timed, and the
offender must be closed when the settings say, not much later.

Limits are set small (read 1 s, idle 2 s; 3 s for the 5,000 connections,
which take up to a second or so to open) to keep the tests short; the closing
deadlines scale with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import resource
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from gateway import metrics
from gateway.server.tcp import READ_BYTES, TerminalConnection
from tests.conftest import make_settings, running_gateway
from tests.e2e.helpers import echo_request, framed, terminal_for

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 2.0
LATENCY_MAX_S = 0.5  # a normal answer, with margin for a busy 2-core test machine
CLOSE_MARGIN_S = 0.5  # the offender is closed within this after its deadline
IDLE_CONNECTIONS = 5000


def hostile_settings(db_url, tmp_path, **overrides):
    values = {"read_timeout_s": READ_TIMEOUT_S, "idle_timeout_s": IDLE_TIMEOUT_S}
    values.update(overrides)
    return make_settings(db_url, tmp_path, **values)


# -- the well-behaved terminal ---------------------------------------------------------
@dataclass
class GoodTerminal:
    """Signs on, then echoes (a sign-on every fifth request), timing every answer."""

    terminal: object
    latencies_s: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each request
    kinds: list[str] = field(default_factory=list)

    async def run(self) -> None:
        for n in range(1_000_000):
            sent_at = time.monotonic()
            kind = "sign-on" if n % 5 == 0 else "echo"
            response = await (self.terminal.sign_on() if kind == "sign-on" else self.terminal.echo())
            assert response.response_code == "00"
            self.latencies_s.append(response.latency_s)
            self.sent_at.append(sent_at)
            self.kinds.append(kind)
            await asyncio.sleep(0.02)

    def worst(self, since: float, count: int = 3) -> str:
        ranked = sorted(zip(self.latencies_s, self.sent_at, self.kinds), reverse=True)[:count]
        return ", ".join(f"{kind} {latency * 1000:.0f} ms at +{at - since:.2f} s" for latency, at, kind in ranked)

    def assert_normal(self, at_least: int) -> None:
        assert len(self.latencies_s) >= at_least, f"only {len(self.latencies_s)} answers"
        worst = max(self.latencies_s)
        assert worst < LATENCY_MAX_S, f"an answer took {worst * 1000:.0f} ms"

    def summary(self) -> str:
        ordered = sorted(self.latencies_s)
        p50 = ordered[len(ordered) // 2]
        return f"{len(ordered)} answers, p50 {p50 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


@contextlib.asynccontextmanager
async def good_terminal(gateway, world) -> AsyncIterator[GoodTerminal]:
    good = GoodTerminal(terminal_for(gateway, world, timeout_s=5.0))
    await good.terminal.connect()
    task = asyncio.create_task(good.run())
    try:
        yield good
    finally:
        if task.done():
            task.result()  # the good terminal failed: that is the finding
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await good.terminal.close()
    print(f"\n  good terminal: {good.summary()}")


# -- helpers -------------------------------------------------------------------------
@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict]]:
    """Every call to the loop's exception handler during the test."""
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    yield seen
    gc.collect()  # "Task exception was never retrieved" is reported on collection
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)


async def assert_no_loop_errors(seen: list[dict]) -> None:
    gc.collect()
    await asyncio.sleep(0.05)
    assert seen == [], [{k: str(v) for k, v in context.items()} for context in seen]


async def raw_socket(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def closed_at(sock: socket.socket, timeout_s: float) -> float:
    """When the gateway closed ``sock`` (end of stream or reset), as ``time.monotonic()``.
    Anything the gateway sends is an answer, and fails the test."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        try:
            data = await loop.sock_recv(sock, 1)
        except ConnectionResetError:
            data = b""
    assert data == b"", f"the gateway answered: {data!r}"
    return time.monotonic()


def reset(sock: socket.socket) -> None:
    """Close abruptly: SO_LINGER 0 makes close() send a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def server_side(gateway, sock: socket.socket) -> TerminalConnection:
    """The gateway's connection object for the client socket ``sock``."""
    local = sock.getsockname()
    async with asyncio.timeout(2):
        while True:
            for connection in list(gateway.server.connections):
                if connection.transport.get_extra_info("peername") == local:
                    return connection
            await asyncio.sleep(0.005)


async def wait_for_connections(gateway, count: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while len(gateway.server.connections) != count:
            await asyncio.sleep(0.01)


def echo_frames(world, count: int, first_stan: int = 1) -> bytes:
    return b"".join(framed(echo_request(world, f"{first_stan + i:06d}")) for i in range(count))


# -- slow-loris ----------------------------------------------------------------------------
async def test_slow_loris_is_closed_after_read_timeout_while_others_are_answered(
        db_url, tmp_path, world, loop_errors):
    frame = framed(echo_request(world))
    async with running_gateway(hostile_settings(db_url, tmp_path)) as gateway:
        async with good_terminal(gateway, world) as good:
            loris = [await raw_socket(gateway.server.port) for _ in range(20)]
            loop = asyncio.get_running_loop()

            async def drip(sock: socket.socket) -> None:  # a byte every 0.25 s: 4 a read timeout
                for byte in frame:
                    await loop.sock_sendall(sock, bytes([byte]))
                    await asyncio.sleep(0.25)

            started = time.monotonic()
            drips = [asyncio.create_task(drip(sock)) for sock in loris]
            closes = await asyncio.gather(*(closed_at(sock, 5) for sock in loris))
            for task in drips:
                task.cancel()
            await asyncio.gather(*drips, return_exceptions=True)
            for sock in loris:
                sock.close()
            await asyncio.sleep(0.2)
        waited = [t - started for t in closes]
        print(f"\n  slow-loris: {len(loris)} closed after {min(waited):.2f}..{max(waited):.2f} s")
        assert READ_TIMEOUT_S - 0.05 <= min(waited) and max(waited) <= READ_TIMEOUT_S + CLOSE_MARGIN_S
        good.assert_normal(at_least=10)
    await assert_no_loop_errors(loop_errors)


# -- length prefix, then silence ---------------------------------------------------------------
async def test_a_length_beyond_frame_bytes_max_is_refused_at_once_and_a_promise_within_it_times_out(
        db_url, tmp_path, world, loop_errors):
    settings = hostile_settings(db_url, tmp_path)
    async with running_gateway(settings) as gateway:
        async with good_terminal(gateway, world) as good:
            loop = asyncio.get_running_loop()
            huge = await raw_socket(gateway.server.port)
            started = time.monotonic()
            await loop.sock_sendall(huge, b"\xff\xff")  # 65,535 bytes promised, none sent
            refused_after = await closed_at(huge, 5) - started
            huge.close()

            promise = await raw_socket(gateway.server.port)
            started = time.monotonic()
            body = framed(echo_request(world))[2:]
            await loop.sock_sendall(promise, settings.frame_bytes_max.to_bytes(2, "big") + body)
            timed_out_after = await closed_at(promise, 5) - started
            promise.close()
            await asyncio.sleep(0.3)
        print(f"\n  65,535 promised: closed after {refused_after * 1000:.1f} ms;"
              f" {settings.frame_bytes_max} promised, {len(body)} sent: closed after {timed_out_after:.2f} s")
        assert refused_after < 0.2
        assert READ_TIMEOUT_S - 0.05 <= timed_out_after <= READ_TIMEOUT_S + CLOSE_MARGIN_S
        good.assert_normal(at_least=5)
    await assert_no_loop_errors(loop_errors)


# -- 5,000 idle connections ----------------------------------------------------------------------
@contextlib.contextmanager
def fds_for(count: int) -> Iterator[None]:
    """Raise the open-files limit (soft, up to hard) to hold ``count`` more descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"open-files hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# Opens COUNT connections to PORT, says when each opened, then when each saw the end of its
# stream (None: not within WAIT_S). A process of its own, so that the attacker's Python
# does not compete with the gateway's for the GIL: the latencies measured are the gateway's.
IDLE_ATTACKER = """
import json, selectors, socket, sys, time
port, count, wait_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks, opened = [], []
for _ in range(count):
    socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    opened.append(time.monotonic())
print(json.dumps(opened), flush=True)
closed = [None] * count
selector = selectors.DefaultSelector()
for index, sock in enumerate(socks):
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ, index)
deadline, left = time.monotonic() + wait_s, count
while left and time.monotonic() < deadline:
    for key, _ in selector.select(timeout=0.1):
        try:
            data = key.fileobj.recv(1)
        except ConnectionResetError:
            data = b""
        closed[key.data] = time.monotonic() if data == b"" else -1.0  # -1: it was sent something
        selector.unregister(key.fileobj)
        left -= 1
print(json.dumps(closed), flush=True)
"""


async def test_five_thousand_idle_connections_are_held_then_closed_after_idle_timeout(
        db_url, tmp_path, world, loop_errors):
    settings = hostile_settings(db_url, tmp_path, idle_timeout_s=3.0, connections_max=IDLE_CONNECTIONS + 100)
    with fds_for(IDLE_CONNECTIONS):  # the attacker process inherits the limit
        async with running_gateway(settings) as gateway:
            async with good_terminal(gateway, world) as good:
                started = time.monotonic()
                attacker = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", IDLE_ATTACKER, str(gateway.server.port), str(IDLE_CONNECTIONS),
                    str(settings.idle_timeout_s + 5), stdout=asyncio.subprocess.PIPE, limit=2**22)
                try:
                    async with asyncio.timeout(30):
                        opened = json.loads(await attacker.stdout.readline())
                        open_s = time.monotonic() - started
                        await wait_for_connections(gateway, IDLE_CONNECTIONS + 1, timeout_s=5)
                        held = len(gateway.server.connections)
                        during_open = len(good.latencies_s)
                        closed = json.loads(await attacker.stdout.readline())
                        await attacker.wait()
                finally:
                    if attacker.returncode is None:
                        attacker.kill()
                        await attacker.wait()
                await wait_for_connections(gateway, 1, timeout_s=2)  # the good terminal only
            lived = [c - o for c, o in zip(closed, opened) if c is not None]
            print(f"\n  {held - 1} idle connections held (opened in {open_s:.2f} s, {during_open} good answers"
                  f" meanwhile); closed after {min(lived):.2f}..{max(lived):.2f} s; worst: {good.worst(started)}")
            assert held == IDLE_CONNECTIONS + 1
            assert None not in closed, f"{closed.count(None)} idle connections were never closed"
            assert -1.0 not in closed, "an idle connection was sent something"
            assert settings.idle_timeout_s - 0.05 <= min(lived)
            assert max(lived) <= settings.idle_timeout_s + 2 * CLOSE_MARGIN_S
            good.assert_normal(at_least=30)
    await assert_no_loop_errors(loop_errors)


# -- a client that never reads ------------------------------------------------------------------
async def test_a_client_that_never_reads_is_bounded_then_closed_and_others_are_unaffected(
        db_url, tmp_path, world, loop_errors):
    settings = hostile_settings(db_url, tmp_path, in_flight_max=4, write_buffer_bytes_max=4096)
    requests = echo_frames(world, 20_000)  # built before timing anything: it takes the loop a while
    async with running_gateway(settings) as gateway:
        loop = asyncio.get_running_loop()
        # The size of one answer, from a client that reads.
        probe = await raw_socket(gateway.server.port)
        await loop.sock_sendall(probe, framed(echo_request(world)))
        async with asyncio.timeout(5):
            length = int.from_bytes(await loop.sock_recv(probe, 2), "big")
        answer_bytes = 2 + length
        probe.close()

        async with good_terminal(gateway, world) as good:
            hog = await raw_socket(gateway.server.port, rcvbuf=4096)
            connection = await server_side(gateway, hog)
            # Loopback kernels take megabytes before a send blocks; a small send buffer on the
            # gateway's socket gets to the gateway's own limits in a fraction of a second.
            connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            # 20,000 requests pipelined in one go (whatever the kernel takes), never a byte read.
            sender = asyncio.create_task(loop.sock_sendall(hog, requests))
            seen = {"pending": 0, "write_buffer": 0, "backlog": 0}
            stalled_at: float | None = None
            received_when_stalled = 0
            started = time.monotonic()
            try:
                async with asyncio.timeout(settings.idle_timeout_s + 10):
                    while not connection.transport.is_closing():
                        seen["pending"] = max(seen["pending"], len(connection.pending))
                        seen["write_buffer"] = max(seen["write_buffer"], connection.transport.get_write_buffer_size())
                        seen["backlog"] = max(seen["backlog"], sum(map(len, connection.backlog)))
                        if stalled_at is None and connection.reading_paused and connection.writing_paused:
                            stalled_at = time.monotonic()
                            received_when_stalled = connection.frames_received
                        if stalled_at is not None:  # stalled: nothing more is read from it
                            assert connection.reading_paused and not connection.transport.is_reading()
                            assert connection.frames_received == received_when_stalled
                        await asyncio.sleep(0.002)
                closed = await closed_at_or_reset(hog)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                hog.close()
        assert stalled_at is not None, "the gateway never stopped reading from the client"
        stalled_s, closed_after_stall_s = stalled_at - started, closed - stalled_at
        print(f"\n  never-reader: {received_when_stalled} requests read, stalled after {stalled_s:.2f} s;"
              f" max pending {seen['pending']}, max write buffer {seen['write_buffer']} B"
              f" (limit {settings.write_buffer_bytes_max} + answer {answer_bytes}), max undispatched"
              f" {seen['backlog']} B; closed {closed_after_stall_s:.2f} s after the stall")
        assert seen["pending"] <= settings.in_flight_max
        assert seen["write_buffer"] <= settings.write_buffer_bytes_max + answer_bytes
        assert seen["backlog"] <= READ_BYTES
        # Its last activity was at the stall at the latest: closed within idle_timeout_s of it.
        assert closed_after_stall_s <= settings.idle_timeout_s + CLOSE_MARGIN_S
        good.assert_normal(at_least=20)
    await assert_no_loop_errors(loop_errors)


async def closed_at_or_reset(sock: socket.socket) -> float:
    """The gateway closed ``sock`` (it may have answers queued for it, which are drained first)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while True:
            try:
                if await loop.sock_recv(sock, 65536) == b"":
                    return time.monotonic()
            except ConnectionResetError:
                return time.monotonic()


ROUNDS = 3


# -- abrupt resets ----------------------------------------------------------------------------------
async def test_abrupt_resets_mid_frame_and_mid_response_raise_nothing_and_others_are_unaffected(
        db_url, tmp_path, world, loop_errors):
    settings = hostile_settings(db_url, tmp_path, in_flight_max=4, write_buffer_bytes_max=1024)
    frame = framed(echo_request(world))
    burst = echo_frames(world, 3 * settings.in_flight_max)
    flood = echo_frames(world, 300)
    in_flight_before = metrics.IN_FLIGHT._value.get()
    async with running_gateway(settings) as gateway:
        loop = asyncio.get_running_loop()
        port = gateway.server.port

        async def mid_length() -> None:
            sock = await raw_socket(port)
            await loop.sock_sendall(sock, frame[:1])
            await asyncio.sleep(0.01)
            reset(sock)

        async def mid_frame() -> None:
            sock = await raw_socket(port)
            await loop.sock_sendall(sock, frame + frame[: len(frame) // 2])
            await asyncio.sleep(0.01)
            reset(sock)

        async def mid_processing() -> None:  # answers still being computed
            sock = await raw_socket(port)
            await loop.sock_sendall(sock, burst)
            reset(sock)

        async def mid_response() -> None:  # answers queued in the gateway's write buffer, a few read
            sock = await raw_socket(port, rcvbuf=4096)
            connection = await server_side(gateway, sock)
            connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await loop.sock_sendall(sock, flood)
            async with asyncio.timeout(5):
                await loop.sock_recv(sock, 100)
                while not connection.writing_paused:
                    await asyncio.sleep(0.005)
            paused_writing.append(connection.transport.get_write_buffer_size())
            reset(sock)

        paused_writing: list[int] = []
        attacks = {mid_length: 10, mid_frame: 10, mid_processing: 10, mid_response: 3}  # per round
        async with good_terminal(gateway, world) as good:
            for _ in range(ROUNDS):
                await asyncio.gather(*(attack() for attack, count in attacks.items() for _ in range(count)))
            await wait_for_connections(gateway, 1, timeout_s=2)
            async with asyncio.timeout(5):  # every request read is finished
                while metrics.IN_FLIGHT._value.get() != in_flight_before:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
        print(f"\n  resets: {ROUNDS * sum(attacks.values())} connections reset, {len(paused_writing)} with {min(paused_writing)}.."
              f"{max(paused_writing)} B of answers in the gateway's write buffer")
        good.assert_normal(at_least=10)
    await assert_no_loop_errors(loop_errors)


# -- connections_max -----------------------------------------------------------------------------------
async def test_a_connection_over_connections_max_is_closed_at_once_and_a_slot_frees_when_one_closes(
        db_url, tmp_path, world, loop_errors):
    settings = hostile_settings(db_url, tmp_path, connections_max=3)
    async with running_gateway(settings) as gateway:
        loop = asyncio.get_running_loop()
        async with good_terminal(gateway, world) as good:
            held = [await raw_socket(gateway.server.port) for _ in range(2)]
            await wait_for_connections(gateway, 3, timeout_s=2)
            over = await raw_socket(gateway.server.port)
            started = time.monotonic()
            await loop.sock_sendall(over, framed(echo_request(world)))
            refused_after = await closed_at(over, 5) - started
            over.close()
            assert len(gateway.server.connections) == 3

            held.pop().close()
            await wait_for_connections(gateway, 2, timeout_s=2)
            again = await raw_socket(gateway.server.port)
            await loop.sock_sendall(again, framed(echo_request(world)))
            async with asyncio.timeout(5):
                assert len(await loop.sock_recv(again, 2)) == 2  # answered
            for sock in (*held, again):
                sock.close()
            await asyncio.sleep(0.2)
        print(f"\n  connections_max 3: the 4th closed after {refused_after * 1000:.1f} ms")
        assert refused_after < 0.2
        good.assert_normal(at_least=5)
    await assert_no_loop_errors(loop_errors)

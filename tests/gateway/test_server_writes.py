"""When the server writes an answer: as soon as it is ready, when it is its
connection's oldest. The handler is a stub (no database), the sockets real."""

from __future__ import annotations

import asyncio
import select
import socket

from gateway.server import GatewayServer
from protocol.framing import Frame
from sim.terminal import build_request
from tests.conftest import make_settings
from tests.e2e.helpers import framed


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


async def test_the_first_answer_of_a_burst_goes_out_before_the_next_is_built(tmp_path):
    # A database batch settles many requests in one turn of the event loop; each
    # then builds its answer. The first must not wait for the others' to be built.
    terminals = 4
    waiting: list[asyncio.Future[None]] = []
    seen_by: dict[str, list[bool]] = {}  # per request: which connections already had their answer

    async def handler(frame: Frame) -> bytes:
        tid = build_tid(frame)
        waiting.append(asyncio.get_running_loop().create_future())
        await waiting[-1]
        seen_by[tid] = [readable(sock) for sock in clients]  # this one's answer is being built now
        return framed(b"answer for " + tid.encode())

    def build_tid(frame: Frame) -> str:
        return frame.message[-8:].decode()  # field 41 ends the request built below

    server = GatewayServer(make_settings("postgresql://unused", tmp_path), handler)
    await server.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    clients: list[socket.socket] = []
    try:
        for n in range(terminals):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setblocking(False)
            clients.append(sock)
            await loop.sock_sendall(sock, framed(build_request("0820", stan=f"{n + 1:06d}",
                                                               terminal_id=f"T000000{n}")))
        async with asyncio.timeout(5):
            while len(waiting) < terminals:
                await asyncio.sleep(0.005)
        for future in waiting:  # all four settle in one turn, in the order they arrived (as a batch does)
            future.set_result(None)
        async with asyncio.timeout(5):
            for n, sock in enumerate(clients):
                answer = await loop.sock_recv(sock, 100)
                assert answer.endswith(f"answer for T000000{n}".encode())
    finally:
        for sock in clients:
            sock.close()
        await server.stop(1.0)
    # When the n-th request built its answer, the answers of the n before it were out.
    assert [seen_by[f"T000000{n}"] for n in range(terminals)] == [
        [k < n for k in range(terminals)] for n in range(terminals)]

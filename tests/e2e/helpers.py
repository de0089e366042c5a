"""Helpers for end-to-end tests: raw sockets and simulated terminals."""

from __future__ import annotations

import asyncio

from gateway.domain.demo import demo_pan
from protocol.framing import Header, Tpdu, encode_frame, parse_frame_body
from protocol.messages import Message, decode_message
from sim.terminal import Terminal, build_request

TPDU = Tpdu(bytes.fromhex("6000010000"))
HEADER = Header(bytes.fromhex("603100000000"))

# The card of the ``card`` fixture (tests/e2e/conftest.py)
CARD_PAN = demo_pan(7)
CARD_PIN = "246810"


def terminal_for(gateway, world, **kwargs) -> Terminal:
    return Terminal("127.0.0.1", gateway.server.port, world.tid, world.mid, world.tmk, **kwargs)


async def card_balance(cli, pan: str = CARD_PAN) -> int:
    return (await cli("card", "show", pan, "--json")).json["balance_fen"]


async def raw_connection(gateway):
    return await asyncio.open_connection("127.0.0.1", gateway.server.port)


async def read_frame(reader: asyncio.StreamReader, timeout_s: float = 5.0):
    """One response frame: (Frame, decoded Message)."""
    async with asyncio.timeout(timeout_s):
        length = int.from_bytes(await reader.readexactly(2), "big")
        frame = parse_frame_body(await reader.readexactly(length))
    return frame, decode_message(frame.message)


async def closed_without_answer(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    async with asyncio.timeout(timeout_s):
        return await reader.read(1) == b""


def framed(message: Message | bytes) -> bytes:
    raw = message if isinstance(message, bytes) else message.encode()
    return encode_frame(TPDU, HEADER, raw)


def echo_request(world, stan: str = "000001") -> Message:
    return build_request("0820", stan=stan, terminal_id=world.tid, merchant_id=world.mid,
                         txn_data="00000001301")


def balance_request(terminal: Terminal, pan: str = "6222020000000005") -> Message:
    """A balance inquiry as WIRE.md section 3 describes it (PIN block is a stand-in)."""
    return build_request(
        "0200", pan=pan, processing_code="310000", stan=terminal.next_stan(), entry_mode="021",
        condition_code="00", terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
        pin_block=bytes(8), security_control="2600000000000000", txn_data=f"01{terminal.batch:06d}000",
    )

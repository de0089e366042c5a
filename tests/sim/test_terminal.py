"""The terminal client against an in-test host that plays the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol.crypto import cup_ecb_mac, key_check_value, wrap_key, x919_mac
from protocol.framing import Frame, encode_frame, parse_frame_body
from protocol.messages import Message, decode_message
from sim.terminal import (
    KeyCheckError,
    Response,
    ResponseMacError,
    Terminal,
    WorkingKeys,
    build_request,
)

ROOT = Path(__file__).resolve().parents[2]
TID, MID = "T0000001", "M00000000000001"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIK = bytes.fromhex("042666B49184CF5C68DE9628D0397B36")
MAK = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")
TDK = bytes.fromhex("1C1C1C1C1C1C1C1C2A2A2A2A2A2A2A2A")
TPDU = bytes.fromhex("6000010000")
HEADER = bytes.fromhex("603100000000")

Respond = Callable[[Message], Message]


class FakeHost:
    """Answers every frame on every connection with ``respond(request)``; records requests."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[tuple[Frame, Message]] = []
        self.connections = 0

    async def __aenter__(self) -> FakeHost:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                frame = parse_frame_body(await reader.readexactly(length))
                request = decode_message(frame.message)
                self.requests.append((frame, request))
                answer = self.respond(request)
                raw = answer.raw or answer.encode()
                writer.write(encode_frame(frame.tpdu.swapped(), frame.header, raw))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def terminal(self, **options: object) -> Terminal:
        return Terminal("127.0.0.1", self.port, TID, MID, TMK, **options)


def answer(request: Message, code: str = "00", **fields: str | bytes) -> Message:
    """A response as the gateway builds it: request MTI + 10, echoed and added fields."""
    return build_request(
        f"{int(request.mti) + 10:04d}", stan=request.stan, terminal_id=request.terminal_id,
        merchant_id=request.merchant_id, txn_data=request.txn_data, local_time="120000",
        local_date="0101", acquirer_id="00000001", rrn="000000000001", response_code=code, **fields,
    )


def key_data(*keys: bytes) -> bytes:
    """Field 62: each key under the TMK followed by its 4-byte check value."""
    return b"".join(wrap_key(TMK, key) + key_check_value(key) for key in keys)


def sign_on_answer(*keys: bytes) -> Respond:
    return lambda request: answer(request, key_data=key_data(*keys))


@pytest.mark.parametrize(("network_code", "keys"), [("003", (PIK, MAK)), ("004", (PIK, MAK, TDK))])
async def test_sign_on_recovers_working_keys(network_code: str, keys: tuple[bytes, ...]) -> None:
    async with FakeHost(sign_on_answer(*keys)) as host:
        terminal = host.terminal(batch=7)
        try:
            response = await terminal.sign_on(network_code=network_code)
        finally:
            await terminal.close()
    [(frame, request)] = host.requests
    assert frame.tpdu.raw == TPDU and frame.header.raw == HEADER
    assert request.mti == "0800"
    assert (request.stan, request.terminal_id, request.merchant_id) == ("000001", TID, MID)
    assert (request.txn_type, request.batch, request.network_code) == ("00", 7, network_code)
    assert request.operator == "01" and request.mac is None
    assert response.response_code == "00" and response.message.mti == "0810"
    assert response.tpdu == bytes.fromhex("6000000001") and response.header == HEADER
    assert terminal.keys == WorkingKeys(pik=PIK, mak=MAK, tdk=keys[2] if len(keys) == 3 else None)


async def test_wrong_check_value_raises_key_check_error() -> None:
    bad = bytearray(key_data(PIK, MAK))
    bad[-1] ^= 0x01  # the MAK's check value
    async with FakeHost(lambda request: answer(request, key_data=bytes(bad))) as host:
        terminal = host.terminal()
        with pytest.raises(KeyCheckError, match="MAK"):
            await terminal.sign_on()
        await terminal.close()
    assert terminal.keys is None


async def test_declined_sign_on_keeps_no_keys() -> None:
    async with FakeHost(lambda request: answer(request, "97")) as host:
        terminal = host.terminal()
        response = await terminal.sign_on()
        await terminal.close()
    assert response.response_code == "97" and terminal.keys is None


async def test_echo_round_trip_reuses_the_connection() -> None:
    async with FakeHost(answer) as host:
        terminal = host.terminal()
        first = await terminal.echo()
        second = await terminal.echo()
        await terminal.close()
    assert host.connections == 1
    assert [request.mti for _, request in host.requests] == ["0820", "0820"]
    assert [request.network_code for _, request in host.requests] == ["301", "301"]
    assert [request.stan for _, request in host.requests] == ["000001", "000002"]
    assert (first.message.mti, first.response_code, second.message.stan) == ("0830", "00", "000002")
    assert first.latency_s >= 0


@pytest.mark.parametrize(("algorithm", "mac_fn"), [("cup-ecb", cup_ecb_mac), ("x9.19", x919_mac)])
async def test_macd_exchange_verifies_the_response_mac(algorithm: str, mac_fn: Callable) -> None:
    tamper = False

    def respond(request: Message) -> Message:
        response = answer(request, processing_code=request.processing_code, amount=request.amount)
        response.encode_with_mac(lambda data: bytes(8) if tamper else mac_fn(MAK, data))
        return response

    async with FakeHost(respond) as host:
        terminal = host.terminal(mac_algorithm=algorithm)
        terminal.keys = WorkingKeys(pik=PIK, mak=MAK, tdk=None)

        def purchase() -> Message:
            return build_request("0200", stan=terminal.next_stan(), terminal_id=TID, merchant_id=MID,
                                 processing_code="000000", amount="000000001000", currency="156",
                                 txn_data="22000001000")

        response = await terminal.exchange(purchase(), mac=True)
        tamper = True
        with pytest.raises(ResponseMacError):
            await terminal.exchange(purchase(), mac=True)
        await terminal.close()
    _, request = host.requests[0]
    assert request.mac == mac_fn(MAK, request.mac_input)
    assert response.response_code == "00" and response.message.mac is not None


async def test_silent_host_times_out_and_drops_the_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    terminal = Terminal("127.0.0.1", server.sockets[0].getsockname()[1], TID, MID, TMK, timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await terminal.echo()
    assert terminal._writer is None
    server.close()
    await server.wait_closed()


def test_to_dict_masks_pan_and_omits_secrets() -> None:
    message = answer(
        build_request("0200", stan="000009", terminal_id=TID, merchant_id=MID, txn_data="22000001000"),
        pan="6225880123456789", key_data=key_data(PIK, MAK), pin_block=bytes.fromhex("1122334455667788"),
        icc_data=bytes.fromhex("9f2701"), mac=b"ABCDEF12",
    )
    output = Response(message, TPDU, HEADER, 0.01).to_dict()
    text = json.dumps(output)
    assert output["mti"] == "0210" and output["response_code"] == "00" and output["stan"] == "000009"
    assert output["pan"] == "622588*6789"
    assert output["key_data_bytes"] == 40 and output["pin_block_bytes"] == 8 and output["mac_bytes"] == 8
    assert output["icc_data"] == "9F2701"
    assert not {"key_data", "pin_block", "mac"} & output.keys()
    for secret in ("6225880123456789", key_data(PIK, MAK).hex(), "1122334455667788", "ABCDEF12"):
        assert secret.lower() not in text.lower()


def test_next_stan_wraps_to_000001() -> None:
    terminal = Terminal("127.0.0.1", 1, TID, MID, TMK)
    assert terminal.next_stan() == "000001"
    terminal._stan = 999_998
    assert [terminal.next_stan(), terminal.next_stan()] == ["999999", "000001"]


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.cli", *args, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


def cli_args(command: str, port: int, *extra: str) -> list[str]:
    return [command, "--port", str(port), "--tid", TID, "--mid", MID, "--tmk", TMK.hex(), *extra]


async def test_cli_signon_json_prints_check_values_never_keys() -> None:
    async with FakeHost(sign_on_answer(PIK, MAK, TDK)) as host:
        code, stdout, _ = await run_cli(*cli_args("signon", host.port, "--network-code", "004", "--json"))
    assert code == 0
    output = json.loads(stdout)
    assert output["response_code"] == "00" and output["keys_checked"] is True
    assert output["key_check_values"] == {
        name: key_check_value(key).hex().upper() for name, key in (("pik", PIK), ("mak", MAK), ("tdk", TDK))
    }
    assert output["key_data_bytes"] == 60
    for key in (PIK, MAK, TDK, TMK):
        assert key.hex() not in stdout.lower()


async def test_cli_echo_declined_exits_1() -> None:
    async with FakeHost(lambda request: answer(request, "97")) as host:
        code, stdout, _ = await run_cli(*cli_args("echo", host.port))
    assert code == 1 and "97" in stdout


async def test_cli_failures_exit_2() -> None:
    async with FakeHost(lambda request: answer(request)) as host:
        port = host.port
    code, _, stderr = await run_cli(*cli_args("echo", port))  # nothing listens any more
    assert code == 2 and "error" in stderr.strip().splitlines()[-1]
    code, _, stderr = await run_cli("signon", "--tid", TID, "--mid", MID, "--tmk", "XYZ")
    assert code == 2 and "TMK" in stderr.strip().splitlines()[-1]

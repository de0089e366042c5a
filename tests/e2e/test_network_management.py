"""Sign-on, sign-off and echo end to end: CLI registry, real socket, real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from gateway.keys import parse_key_hex
from protocol import crypto
from sim.terminal import Terminal, build_request
from tests.conftest import TEST_LMK
from tests.e2e.helpers import (
    balance_request,
    closed_without_answer,
    echo_request,
    framed,
    raw_connection,
    read_frame,
    terminal_for,
)


async def stored_keys(db, tid):
    row = await db.fetchrow("SELECT pik_lmk, mak_lmk, tdk_lmk, keys_expire_at FROM terminals WHERE tid = $1", tid)
    hsm_lmk = parse_key_hex(TEST_LMK)
    clear = {k: crypto.unwrap_key(hsm_lmk, row[k]) if row[k] else None for k in ("pik_lmk", "mak_lmk", "tdk_lmk")}
    return clear, row["keys_expire_at"]


async def test_sign_on_delivers_pik_and_mak_under_the_tmk_with_check_values(gateway, world, db):
    terminal = terminal_for(gateway, world)
    response = await terminal.sign_on()
    assert response.response_code == "00"
    assert len(response.message.key_data) == 40
    # The sim checked both check values; the gateway stored the same keys under the LMK.
    clear, expires = await stored_keys(db, world.tid)
    assert clear["pik_lmk"] == terminal.keys.pik and clear["mak_lmk"] == terminal.keys.mak
    assert clear["tdk_lmk"] is None
    assert terminal.keys.pik != terminal.keys.mak
    # Field 62 by hand: PIK under TMK, its KCV, MAK under TMK, its KCV.
    data = response.message.key_data
    assert crypto.tdes_decrypt(world.tmk, data[0:16]) == terminal.keys.pik
    assert data[16:20] == crypto.key_check_value(terminal.keys.pik)
    assert crypto.tdes_decrypt(world.tmk, data[20:36]) == terminal.keys.mak
    assert data[36:40] == crypto.key_check_value(terminal.keys.mak)
    # Keys expire at the next local midnight (Asia/Shanghai by default).
    local = expires.astimezone(gateway.settings.tz)
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    await terminal.close()


async def test_sign_on_004_delivers_a_tdk_too(gateway, world, db):
    terminal = terminal_for(gateway, world)
    response = await terminal.sign_on(network_code="004")
    assert response.response_code == "00"
    assert len(response.message.key_data) == 60
    clear, _ = await stored_keys(db, world.tid)
    assert clear["tdk_lmk"] == terminal.keys.tdk is not None
    await terminal.close()


async def test_every_response_carries_the_common_fields(gateway, world):
    terminal = terminal_for(gateway, world)
    response = await terminal.sign_on()
    m = response.message
    assert m.mti == "0810"
    assert (m.stan, m.terminal_id, m.merchant_id) == ("000001", world.tid, world.mid)
    assert m.txn_data == "00000001003"
    assert m.acquirer_id == "00000001"
    assert len(m.rrn) == 12 and m.rrn.isdigit()
    assert len(m.local_time) == 6 and len(m.local_date) == 4
    assert m.operator is None  # 63 is not echoed
    assert m.mac is None  # sign-on is not MAC'd
    assert response.tpdu == bytes.fromhex("6000000001")  # addresses swapped
    assert response.header == bytes.fromhex("603100000000")
    second = await terminal.echo()
    assert second.message.rrn != m.rrn
    await terminal.close()


async def test_unregistered_terminal_gets_97_for_sign_on_sign_off_and_echo(gateway, world):
    stranger = Terminal("127.0.0.1", gateway.server.port, "NOBODY01", world.mid, world.tmk)
    assert (await stranger.sign_on()).response_code == "97"
    assert (await stranger.sign_off()).response_code == "97"
    assert (await stranger.echo()).response_code == "97"
    assert stranger.keys is None
    await stranger.close()


@pytest.mark.parametrize("what, argv", [
    ("terminal", ("terminal", "freeze", "TERM0001")),
    ("merchant", ("merchant", "freeze", "MERCHANT0000001")),
    ("agent", ("agent", "freeze", "AG01")),
])
async def test_frozen_terminal_merchant_or_agent_gets_58_and_unfreezing_restores(gateway, world, cli, what, argv):
    assert (await cli(*argv)).code == 0
    assert (await cli(*argv)).code == 0  # idempotent
    terminal = terminal_for(gateway, world)
    assert (await terminal.sign_on()).response_code == "58"
    assert (await terminal.echo()).response_code == "58"
    assert (await cli(argv[0], "unfreeze", argv[2])).code == 0
    assert (await terminal.sign_on()).response_code == "00"
    await terminal.close()


async def test_freezing_keeps_the_working_keys(gateway, world, cli, db):
    terminal = terminal_for(gateway, world)
    await terminal.sign_on()
    before, _ = await stored_keys(db, world.tid)
    await cli("terminal", "freeze", world.tid)
    after, _ = await stored_keys(db, world.tid)
    assert before == after and after["mak_lmk"] is not None
    await terminal.close()


async def test_merchant_id_not_the_terminals_gets_03(gateway, world):
    terminal = Terminal("127.0.0.1", gateway.server.port, world.tid, "OTHERMERCHANT01", world.tmk)
    assert (await terminal.sign_on()).response_code == "03"
    await terminal.close()


async def test_echo_and_sign_off(gateway, world, db):
    terminal = terminal_for(gateway, world)
    assert (await terminal.echo()).response_code == "00"  # echo needs no keys
    await terminal.sign_on()
    response = await terminal.sign_off()
    assert response.response_code == "00" and response.message.mti == "0830"
    clear, expires = await stored_keys(db, world.tid)
    assert clear == {"pik_lmk": None, "mak_lmk": None, "tdk_lmk": None} and expires is None
    await terminal.close()


async def test_financial_request_without_keys_gets_77_asking_for_sign_on(gateway, world):
    terminal = terminal_for(gateway, world)
    reader, writer = await raw_connection(gateway)
    writer.write(framed(balance_request(terminal)))
    frame, message = await read_frame(reader)
    assert message.response_code == "77"
    assert frame.header.processing_requirement == "3"
    assert message.mac is None
    writer.close()


async def test_wrong_or_missing_mac_gets_a0_without_a_mac(gateway, world):
    terminal = terminal_for(gateway, world)
    await terminal.sign_on()
    reader, writer = await raw_connection(gateway)
    request = balance_request(terminal)
    request.encode_with_mac(lambda data: b"WRONGMAC")
    writer.write(framed(request.raw))
    frame, message = await read_frame(reader)
    assert (message.response_code, message.mac) == ("A0", None)
    assert frame.header.processing_requirement == "3"
    writer.write(framed(balance_request(terminal)))  # no field 64 at all
    _, message = await read_frame(reader)
    assert (message.response_code, message.mac) == ("A0", None)
    writer.close()
    await terminal.close()


@pytest.mark.parametrize("algorithm", ["cup-ecb", "x9.19"])
async def test_a_request_with_a_good_mac_is_answered_with_a_mac(gateway, world, cli, algorithm):
    assert (await cli("terminal", "set", world.tid, "--mac", algorithm)).code == 0
    terminal = terminal_for(gateway, world, mac_algorithm=algorithm)
    await terminal.sign_on()
    response = await terminal.exchange(balance_request(terminal), mac=True)  # the sim verifies the reply MAC
    assert response.response_code not in ("A0", "77", "30")
    assert response.message.mac is not None
    await terminal.close()


async def test_a_new_sign_on_replaces_the_keys_at_once(gateway, world):
    old = terminal_for(gateway, world)
    await old.sign_on()
    new = terminal_for(gateway, world)
    await new.sign_on()
    assert (await old.exchange(balance_request(old), mac=True)).response_code == "A0"
    assert (await new.exchange(balance_request(new), mac=True)).response_code != "A0"
    await old.close()
    await new.close()


async def test_a_missing_mandatory_field_gets_30_echoing_what_was_readable(gateway, world):
    reader, writer = await raw_connection(gateway)
    request = build_request("0820", stan="000042", terminal_id=world.tid, merchant_id=world.mid)  # no 60
    writer.write(framed(request))
    frame, message = await read_frame(reader)
    assert message.response_code == "30"
    assert (message.stan, message.terminal_id, message.merchant_id) == ("000042", world.tid, world.mid)
    writer.close()


async def test_an_undecodable_field_gets_30_with_the_fields_read_before_it(gateway, world):
    reader, writer = await raw_connection(gateway)
    raw = echo_request(world, "000077").encode()
    writer.write(framed(raw[:-1]))  # field 60 one byte short
    frame, message = await read_frame(reader)
    assert message.mti == "0830" and message.response_code == "30"
    assert (message.stan, message.terminal_id, message.merchant_id) == ("000077", world.tid, world.mid)
    # The connection lives on.
    writer.write(framed(echo_request(world, "000078")))
    _, message = await read_frame(reader)
    assert message.response_code == "00"
    writer.close()


async def test_an_unknown_mti_gets_12(gateway, world):
    # 0100 is version 2's (WIRE.md 9.1); a valid MTI the page does not use, such as 0620, gets 12 (9.9).
    reader, writer = await raw_connection(gateway)
    writer.write(framed(build_request("0620", stan="000001", terminal_id=world.tid, merchant_id=world.mid,
                                      txn_data="00000001000")))
    _, message = await read_frame(reader)
    assert (message.mti, message.response_code) == ("0630", "12")
    writer.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x05hello",                       # length below 21
    b"\xff\xffAAAA",                        # length above frame_bytes_max
    b"\x00\x15" + b"\x61" + bytes(20),      # TPDU ID not 60
    b"\x00\x15" + b"\x60" + bytes(10) + b"\xAB\xCD" + bytes(8),  # MTI not BCD
])
async def test_garbage_closes_only_its_connection_and_a_sign_on_elsewhere_succeeds(gateway, world, garbage):
    bad_reader, bad_writer = await raw_connection(gateway)
    terminal = terminal_for(gateway, world)
    await terminal.connect()
    bad_writer.write(garbage)
    assert await closed_without_answer(bad_reader)
    assert (await terminal.sign_on()).response_code == "00"
    await terminal.close()


async def test_requests_pipelined_on_one_connection_are_answered_in_order(gateway, world):
    reader, writer = await raw_connection(gateway)
    stans = [f"{i:06d}" for i in range(1, 21)]  # more than in_flight_max
    writer.write(b"".join(framed(echo_request(world, stan)) for stan in stans))
    answered = [(await read_frame(reader))[1].stan for _ in stans]
    assert answered == stans
    writer.close()


async def test_fifty_terminals_sign_on_concurrently(gateway, cli, world):
    tids = [f"LOAD{i:04d}" for i in range(50)]
    for tid in tids:
        assert (await cli("terminal", "add", tid, "--merchant", world.mid, "--tmk", world.tmk.hex())).code == 0
    terminals = [Terminal("127.0.0.1", gateway.server.port, tid, world.mid, world.tmk) for tid in tids]
    responses = await asyncio.gather(*(t.sign_on() for t in terminals))
    assert [r.response_code for r in responses] == ["00"] * 50
    assert len({r.message.rrn for r in responses}) == 50
    await asyncio.gather(*(t.close() for t in terminals))

"""A chip terminal against a real gateway (TCP, PostgreSQL), with known bytes
(WIRE.md 9.5, 9.9): the list query on the wire, paging over three queries, the
header digit on every answer (financial ones included) while a list changed
since the terminal's last download, and 97, 58 and no MAC as for echo."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway.domain import ic
from protocol import ic_lists
from sim import ic as sim_ic
from sim.terminal import build_request
from tests.conftest import make_settings, running_gateway
from tests.domain.test_ic import small_capk, upi_08
from tests.e2e.helpers import CARD_PAN, CARD_PIN, framed, raw_connection, read_frame, terminal_for

# A CAPK list query (0820, 60.3 = 372, NN = 00) from TERM0001 of MERCHANT0000001, STAN 000001, as a
# terminal sends it: TPDU 6000010000, header 603100000000, bitmap 11 41 42 60 62, 62 = ASCII "100".
CAPK_QUERY_FRAME = bytes.fromhex(
    "003C" "6000010000" "603100000000" "0820" "0020000000C00014" "000001"
    "5445524D30303031" "4D45524348414E54303030303030 31".replace(" ", "")
    + "0011" "0000000137" "20" "0003" "313030")
# The one entry of the answer: 9F06 RID A000000333, 9F22 index 08, DF05 expiry "20301231".
UPI_08_ENTRY = bytes.fromhex("9F0605A000000333" "9F220108" "DF0508") + b"20301231"
SMALL_ENTRY_BYTES = 23  # 9F06 (2+1+5), 9F22 (2+1+1), DF05 (2+1+8)


def test_the_known_request_bytes_are_what_a_terminal_builds():
    request = build_request("0820", stan="000001", terminal_id="TERM0001", merchant_id="MERCHANT0000001",
                            txn_data="00000001372", key_data=ic_lists.encode_query(0))
    assert framed(request) == CAPK_QUERY_FRAME


async def test_a_capk_query_on_the_wire(db, gateway, world):
    await ic.add_capk(db, upi_08())
    reader, writer = await raw_connection(gateway)
    try:
        writer.write(CAPK_QUERY_FRAME)
        frame, response = await read_frame(reader)
    finally:
        writer.close()
    assert frame.tpdu.raw == bytes.fromhex("6000000001")  # addresses swapped
    assert frame.header.raw == bytes.fromhex("603104000000")  # queried once, holds nothing: digit 6 is 4
    assert frame.message[:2] == bytes.fromhex("0830")
    assert response.response_code == "00"
    assert response.key_data == b"1" + UPI_08_ENTRY  # the list ends with this entry
    assert response.mac is None
    assert frame.message[2 + 7] & 0x01 == 0  # bit 64 not set
    assert (response.stan, response.terminal_id, response.merchant_id) == ("000001", "TERM0001", "MERCHANT0000001")


async def test_a_list_of_50_capks_needs_three_queries(db, gateway, world):
    for index in range(50):
        await ic.add_capk(db, small_capk(index))
    terminal = terminal_for(gateway, world)
    answers = []
    try:
        for have_count in (0, 22, 44):
            answers.append((await sim_ic.exchange(terminal, "0820", "372", ic_lists.encode_query(have_count))
                            ).message.key_data)
    finally:
        await terminal.close()
    assert [answer[:1] for answer in answers] == [b"2", b"2", b"1"]  # more, more, the list ends
    assert [len(answer) for answer in answers] == [1 + 22 * SMALL_ENTRY_BYTES] * 2 + [1 + 6 * SMALL_ENTRY_BYTES]
    assert all(len(answer) <= ic_lists.FIELD_62_BYTES_MAX for answer in answers)
    last = answers[2][1:]
    assert last[:SMALL_ENTRY_BYTES] == bytes.fromhex("9F0605A000000333" "9F22012C" "DF0508") + b"20301231"  # 44
    assert last[-SMALL_ENTRY_BYTES:] == bytes.fromhex("9F0605A000000333" "9F220131" "DF0508") + b"20301231"  # 49


@pytest.fixture
async def risk_gateway(db_url, tmp_path):
    """The risk rules on, as deployed by default, and no context cache, so that every financial
    request reads its context and the list state with it (a request checked against the cache
    takes the state last read, within its TTL: gateway.acquiring.ic_flows)."""
    async with running_gateway(make_settings(db_url, tmp_path, risk_enabled=True,
                                             context_cache_entries=0)) as gateway:
        yield gateway


async def test_a_list_change_prompts_4_or_5_on_every_answer_until_the_terminal_downloads_again(db, risk_gateway,
                                                                                            world, card):
    await ic.add_capk(db, upi_08())
    await ic.add_aid(db, *ic.parse_aid("A000000333010101"))
    terminal = terminal_for(risk_gateway, world)
    try:
        assert sim_ic.prompt_digit(await terminal.sign_on()) == "0"  # never queried: no prompt
        await sim_ic.ic_download(terminal)
        purchase = await terminal.purchase(CARD_PAN, CARD_PIN, 100)
        assert (purchase.response_code, sim_ic.prompt_digit(purchase)) == ("00", "0")

        await ic.add_aid(db, *ic.parse_aid("A000000333010102"))
        purchase = await terminal.purchase(CARD_PAN, CARD_PIN, 100)
        assert (purchase.response_code, sim_ic.prompt_digit(purchase)) == ("00", "5")
        declined = await terminal.purchase(CARD_PAN, "000000", 100)  # a wrong PIN: 55, still prompted
        assert (declined.response_code, sim_ic.prompt_digit(declined)) == ("55", "5")
        assert sim_ic.prompt_digit(await terminal.balance(CARD_PAN, CARD_PIN)) == "5"

        await ic.add_capk(db, small_capk(0x01))  # the CAPK list comes first
        assert sim_ic.prompt_digit(await terminal.echo()) == "4"
        assert sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) == "4"

        capks = await sim_ic.download_list(terminal, "capk")
        assert sim_ic.prompt_digit(capks.last) == "5"  # the end's own answer already says what is left
        assert sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) == "5"
        aids = await sim_ic.download_list(terminal, "aid")
        assert sim_ic.prompt_digit(aids.last) == "0"
        assert sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) == "0"

        await ic.add_aid(db, *ic.parse_aid("A000000333010103"))
        keys = terminal.keys
        assert (await terminal.sign_off()).response_code == "00"
        terminal.keys = keys  # the terminal sends under the keys the gateway has ended
        refused = await terminal.purchase(CARD_PAN, CARD_PIN, 100)
        assert (refused.response_code, sim_ic.prompt_digit(refused)) == ("77", "3")  # 3 before 4 and 5
    finally:
        await terminal.close()


def cache_hits() -> float:
    return REGISTRY.get_sample_value("posgw_context_cache_total", {"result": "hit"}) or 0.0


async def test_with_the_context_cache_a_change_shows_within_the_prompt_ttl(db, gateway, world, card):
    """Risk rules off (the tests' default): purchases on cached records use the state last read, for a TTL."""
    await ic.add_aid(db, *ic.parse_aid("A000000333010101"))
    gateway.processor.prompts.ttl_s = 60.0
    terminal = terminal_for(gateway, world)
    try:
        await terminal.sign_on()
        await sim_ic.ic_download(terminal)
        assert sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) == "0"  # read, then cached
        await ic.add_aid(db, *ic.parse_aid("A000000333010102"))
        # Within the TTL a cached purchase asks the database nothing more: the state last read, 0.
        assert sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) == "0"
        gateway.processor.prompts.ttl_s = 0.3
        await asyncio.sleep(0.4)
        hits_before = cache_hits()
        digits = [sim_ic.prompt_digit(await terminal.purchase(CARD_PAN, CARD_PIN, 100)) for _ in range(3)]
        assert digits == ["5", "5", "5"]
        assert cache_hits() - hits_before == 3  # each checked against cached records, none read its context
    finally:
        await terminal.close()


async def test_an_unregistered_terminal_gets_97_and_a_frozen_one_58_without_mac(gateway, world, cli):
    reader, writer = await raw_connection(gateway)
    try:
        writer.write(CAPK_QUERY_FRAME.replace(b"TERM0001", b"TERM0999"))
        frame, response = await read_frame(reader)
        assert (response.response_code, response.key_data, response.mac) == ("97", None, None)
        assert frame.header.raw == bytes.fromhex("603100000000")
        assert (await cli("terminal", "freeze", world.tid)).code == 0
        for network_code in (b"\x37\x20", b"\x38\x20"):  # 372 then 382
            writer.write(CAPK_QUERY_FRAME[:-9] + network_code + CAPK_QUERY_FRAME[-7:])
            frame, response = await read_frame(reader)
            assert (response.response_code, response.key_data, response.mac) == ("58", None, None)
    finally:
        writer.close()


async def test_a_mac_on_a_chip_message_is_ignored_and_the_answer_has_none(db, gateway, world):
    await ic.add_capk(db, upi_08())
    terminal = terminal_for(gateway, world)
    try:
        assert (await terminal.sign_on()).response_code == "00"  # keys current: still no MAC on the answer
        request = build_request("0820", stan=terminal.next_stan(), terminal_id=world.tid, merchant_id=world.mid,
                                txn_data="00000001372", key_data=ic_lists.encode_query(0), mac=b"NOTAMAC!")
        response = await terminal.exchange(request, mac=False)
        assert response.response_code == "00"
        assert response.message.key_data == b"1" + UPI_08_ENTRY
        assert response.message.mac is None
    finally:
        await terminal.close()


@pytest.mark.parametrize("status, reader, printer", [({"03": "0", "04": "0"}, 1, 1), ({"03": "1", "04": "0"}, 0, 1)])
async def test_the_broken_device_gauge_counts_the_last_status_upload(gateway, world, status, reader, printer):
    terminal = terminal_for(gateway, world)
    try:
        assert (await sim_ic.upload_status(terminal, {"01": "1", **status})).response_code == "00"
    finally:
        await terminal.close()
    reader_, writer = await asyncio.open_connection("127.0.0.1", gateway.metrics_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = (await reader_.read()).decode()
    writer.close()
    assert f'posgw_terminals_device_broken{{device="reader"}} {float(reader)}' in body
    assert f'posgw_terminals_device_broken{{device="printer"}} {float(printer)}' in body

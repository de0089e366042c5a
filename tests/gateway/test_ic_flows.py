"""The chip terminals' exchange over a real gateway (TCP, PostgreSQL), through the
real router and processor: the steps of gateway.acquiring.ic_flows behind the
echo's checks, driven by the simulator's side (sim.ic), and the header digit on
every answer."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.acquiring import ic_flows, router, steps
from gateway.acquiring.context import Transaction
from gateway.domain import ic
from gateway.domain.vocabulary import Kind
from gateway.server.app import build_services
from protocol import ic_lists
from protocol.codes import ResponseCode
from protocol.framing import Frame, Header, Tpdu
from protocol.messages import decode_message
from sim import ic as sim_ic
from sim.terminal import Terminal, build_request
from tests.domain.test_ic import AID_DEBIT, small_capk, upi_08


@pytest.fixture
async def ic_gateway(gateway):
    return gateway


@pytest.fixture
async def chip_terminal(ic_gateway, world):
    terminal = Terminal("127.0.0.1", ic_gateway.server.port, world.tid, world.mid, world.tmk)
    yield terminal
    await terminal.close()


@pytest.mark.parametrize("mti, network_code, kind", [
    ("0820", "372", Kind.IC_CAPK_QUERY), ("0820", "382", Kind.IC_AID_QUERY),
    ("0800", "370", Kind.IC_CAPK_DOWNLOAD), ("0800", "380", Kind.IC_AID_DOWNLOAD),
    ("0800", "371", Kind.IC_CAPK_END), ("0800", "381", Kind.IC_AID_END), ("0820", "362", Kind.STATUS_UPLOAD),
])
def test_the_router_sends_each_chip_message_through_the_echos_checks(mti, network_code, kind):
    request = decode_message(build_request(mti, stan="000001", terminal_id="TERM0001", merchant_id="M" * 15,
                                           txn_data=f"00000001{network_code}").encode())
    chosen = router.route(request)
    assert chosen.kind is kind
    assert chosen.steps[:3] == (steps.identify_terminal, steps.check_merchant, steps.check_not_frozen)
    assert len(chosen.steps) == 4  # no keys, no MAC: as for echo
    other_type = decode_message(build_request(mti, stan="000001", terminal_id="TERM0001", merchant_id="M" * 15,
                                              txn_data=f"22000001{network_code}").encode())
    assert router.route(other_type).kind is Kind.UNKNOWN  # 60.1 must be 00


async def test_a_terminal_downloads_both_lists_as_registered(db, chip_terminal):
    added = await ic.seed_test_lists(db)
    got = await sim_ic.ic_download(chip_terminal)
    capks, aids = got["capk"], got["aid"]
    assert (capks.queries, capks.downloads, aids.queries, aids.downloads) == (1, added["capk"], 1, added["aid"])
    assert [(c["rid"], c["index"]) for c in capks.summary()] == [
        (c["rid"], c["index"]) for c in await ic.list_capks(db)]
    published = sorted(ic.published_test_lists()[0], key=lambda capk: capk.key)
    assert [ic_lists.parse_capk_record(r) for r in capks.records] == published  # check sums verified
    assert aids.summary() == await ic.list_aids(db)
    assert sim_ic.prompt_digit(aids.last) == "0"
    report = sim_ic.download_report(got)
    assert report["queries"] == {"capk": 1, "aid": 1}
    assert report["aids"] == await ic.list_aids(db)
    assert [c["modulus_bits"] for c in report["capks"] if c["rid"] == "A000000333"] == [1152, 1408, 1024, 1984]


async def test_a_list_of_50_capks_takes_three_queries_on_the_wire(db, chip_terminal):
    for index in range(50):
        await ic.add_capk(db, small_capk(index))
    download = await sim_ic.download_list(chip_terminal, "capk")
    assert download.queries == 3
    assert [int(c["index"], 16) for c in download.summary()] == list(range(50))


async def test_answers_carry_no_mac_even_after_sign_on(db, chip_terminal):
    await ic.add_capk(db, upi_08())
    assert (await chip_terminal.sign_on()).response_code == "00"
    download = await sim_ic.download_list(chip_terminal, "capk")
    assert download.last.message.mac is None
    assert len(download.records) == 1


async def test_an_unknown_key_or_aid_is_answered_00_with_0(chip_terminal):
    response = await sim_ic.exchange(chip_terminal, "0800", "370", ic_lists.encode_capk_download(b"\xa0" * 5, 1))
    assert response.message.key_data == b"0"
    response = await sim_ic.exchange(chip_terminal, "0800", "380", ic_lists.encode_aid_download(b"\xa0" * 7))
    assert response.message.key_data == b"0"


@pytest.mark.parametrize("network_code, key_data", [
    ("372", b"1"), ("382", None), ("370", bytes.fromhex("9F0605A000000333")), ("380", b"\x9f"),
])
async def test_a_malformed_62_is_answered_30(chip_terminal, network_code, key_data):
    mti = "0820" if network_code.endswith("2") else "0800"
    request = build_request(mti, stan=chip_terminal.next_stan(), terminal_id=chip_terminal.tid,
                            merchant_id=chip_terminal.mid, txn_data=f"00000001{network_code}", key_data=key_data)
    response = await chip_terminal.exchange(request, mac=False)
    assert response.response_code == "30"
    assert response.message.key_data is None


async def test_an_unregistered_terminal_gets_97_and_a_frozen_one_58(ic_gateway, world, cli):
    stranger = Terminal("127.0.0.1", ic_gateway.server.port, "NOSUCHID", world.mid, world.tmk)
    with pytest.raises(sim_ic.IcExchangeError, match="answered 97"):
        await sim_ic.query_list(stranger, "capk")
    await stranger.close()
    assert (await cli("terminal", "freeze", world.tid)).code == 0
    frozen = Terminal("127.0.0.1", ic_gateway.server.port, world.tid, world.mid, world.tmk)
    with pytest.raises(sim_ic.IcExchangeError, match="answered 58"):
        await sim_ic.download_list(frozen, "aid")
    with pytest.raises(sim_ic.IcExchangeError, match="answered 58"):
        await sim_ic.upload_status(frozen, {"03": "1"})
    await frozen.close()


async def test_a_status_upload_is_kept_and_shown(db, chip_terminal):
    response = await sim_ic.upload_status(chip_terminal, {"01": "1", "03": "0", "04": "1"})
    assert response.message.key_data is None
    assert (await ic.terminal_lists_view(db, chip_terminal.tid))["device_status"] == {
        "01": "1", "03": "0", "04": "1"}
    assert await ic.broken_device_counts(db) == {"reader": 1, "printer": 0}


async def test_an_aid_added_after_a_download_prompts_5_until_the_terminal_downloads_again(db, chip_terminal):
    await ic.seed_test_lists(db)
    first_day = await sim_ic.sign_on_following_prompts(chip_terminal, holding_nothing=True)
    assert first_day.actions == ["signon", "capk", "aid"]
    assert sim_ic.prompts_report(first_day)["downloaded"] == {"capk": 6, "aid": 4}
    assert sim_ic.prompt_digit(await chip_terminal.echo()) == "0"

    await ic.add_aid(db, *ic.parse_aid("A0000000031010"))
    assert sim_ic.prompt_digit(await chip_terminal.echo()) == "5"
    assert sim_ic.prompt_digit(await chip_terminal.sign_on()) == "5"
    await ic.add_capk(db, small_capk(0x01))
    assert sim_ic.prompt_digit(await chip_terminal.echo()) == "4"

    followed = await sim_ic.sign_on_following_prompts(chip_terminal)
    assert followed.actions == ["signon", "capk", "aid"]
    assert "A0000000031010" in [a["aid"] for a in followed.downloads[1].summary()]
    assert sim_ic.prompt_digit(await chip_terminal.echo()) == "0"
    assert await ic.terminal_lists_view(db, chip_terminal.tid) == {
        "device_status": None, "capk_current": True, "aid_current": True}


# -- the steps on a hand-built transaction -----------------------------------------------------------


def transaction(world, mti: str, network_code: str, key_data: bytes | None = None) -> Transaction:
    request = build_request(mti, stan="000001", terminal_id=world.tid, merchant_id=world.mid,
                            txn_data=f"00000001{network_code}", key_data=key_data)
    request = decode_message(request.encode())
    frame = Frame(Tpdu(bytes.fromhex("6000010000")), Header(bytes.fromhex("603100000000")), request.raw)
    return Transaction(frame, request, datetime.now())


async def test_the_steps_on_a_hand_built_transaction(db, settings, world):
    services = await build_services(settings)
    try:
        await ic.add_aid(db, *ic.parse_aid(AID_DEBIT, "9F08020020"))
        txn = transaction(world, "0820", "382", ic_lists.encode_query(0))
        await steps.identify_terminal(txn, services)
        _, step = ic_flows.IC_MESSAGES[("0820", "382")]
        await step(txn, services)
        assert txn.reply == {"key_data": b"1" + bytes.fromhex("9F0608" + AID_DEBIT)}
        assert await ic_flows.processing_requirement(txn, services, ResponseCode.APPROVED) == "5"
        assert await ic_flows.processing_requirement(txn, services, ResponseCode.SIGN_ON_FIRST) == "3"

        txn = transaction(world, "0800", "380", ic_lists.encode_aid_download(bytes.fromhex(AID_DEBIT)))
        await steps.identify_terminal(txn, services)
        await ic_flows.IC_MESSAGES[("0800", "380")][1](txn, services)
        assert txn.reply == {"key_data": b"1" + bytes.fromhex("9F0608" + AID_DEBIT + "9F08020020")}

        txn = transaction(world, "0800", "381")
        await steps.identify_terminal(txn, services)
        await ic_flows.IC_MESSAGES[("0800", "381")][1](txn, services)
        assert txn.reply == {}
        assert await ic_flows.processing_requirement(txn, services, ResponseCode.APPROVED) == "0"
        unknown = transaction(world, "0820", "382", b"100")
        assert await ic_flows.processing_requirement(unknown, services, ResponseCode.TERMINAL_NOT_REGISTERED) == "0"
    finally:
        await services.pool.close()

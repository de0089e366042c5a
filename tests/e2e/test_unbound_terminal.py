"""A terminal in stock (CLI.md ``terminal bind``, WIRE.md 9.9) over a real socket:
it signs on, echoes, signs off, uploads and downloads like any other, with any
merchant id in 42 (no 03 check), but its 0100, 0200, 0220, 0400 and 0500 get
58 and move no money; once bound, a purchase is approved."""

from __future__ import annotations

import pytest

from sim import ic as sim_ic
from sim.terminal import Terminal, build_request
from tests.conftest import TEST_TMK
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.helpers import card_balance
from tests.e2e.test_batch_upload import end, record, records
from tests.e2e.test_preauth import preauth
from tests.e2e.test_refunds import merchant_balance, refund_request
from tests.e2e.test_settlement_v2 import settle, totals

STOCK_TID = "STOCK001"
NO_MERCHANT = "000000000000000"  # what a terminal not yet set up sends in 42


@pytest.fixture
async def stock_terminal(gateway, world, card, cli):
    """A terminal in stock with the world's agent, on the gateway, signed on."""
    added = await cli("terminal", "add", STOCK_TID, "--agent", world.agent, "--tmk", TEST_TMK.hex(), "--json")
    assert added.code == 0, added.stderr
    assert (added.json["bound"], added.json["mid"], added.json["owner_agent"]) == (False, None, world.agent)
    terminal = Terminal("127.0.0.1", gateway.server.port, STOCK_TID, NO_MERCHANT, TEST_TMK)
    assert (await terminal.sign_on()).response_code == "00"
    yield terminal
    await terminal.close()


async def test_network_management_lists_and_status_are_answered_as_usual(stock_terminal):
    assert (await stock_terminal.echo()).response_code == "00"
    assert (await sim_ic.upload_status(stock_terminal, {"01": "1", "03": "0"})).response_code == "00"
    capks, _ = await sim_ic.query_list(stock_terminal, sim_ic.CAPK)
    assert capks == []
    answer = await records(stock_terminal, 1, record("000001", 1000))
    assert answer.response_code == "00"
    assert (await end(stock_terminal, 1, 1)).response_code == "00"
    assert (await stock_terminal.sign_off()).response_code == "00"


async def test_every_financial_request_gets_58_and_moves_no_money(stock_terminal, world, cli):
    card_before, merchant_before = await card_balance(cli), await merchant_balance(cli, world.mid)
    purchase = await stock_terminal.purchase(PAN, PIN, 1000)
    assert purchase.response_code == "58"
    assert purchase.message.mac is not None  # its MAC verified: the answer carries one (WIRE.md 8)
    assert (await stock_terminal.balance(PAN, PIN)).response_code == "58"
    assert (await stock_terminal.send(preauth(stock_terminal, 1000))).response_code == "58"  # 0100
    some_original = build_request("0200", rrn="000000000001", local_date="1208")
    assert (await stock_terminal.send(refund_request(stock_terminal, 500, some_original))).response_code == "58"
    assert (await stock_terminal.reverse(stock_terminal.last_request)).response_code == "58"  # 0400
    assert (await settle(stock_terminal, totals(0, 0, 0, 0))).response_code == "58"  # 0500
    assert (await card_balance(cli), await merchant_balance(cli, world.mid)) == (card_before, merchant_before)
    repeat = await stock_terminal.purchase(PAN, PIN, 1000, stan=purchase.message.stan)
    assert repeat.response_code == "58"  # stored under its key like any other 58


async def test_once_bound_the_03_check_applies_and_a_purchase_is_approved(stock_terminal, world, cli):
    assert (await stock_terminal.purchase(PAN, PIN, 1000)).response_code == "58"
    bound = await cli("terminal", "bind", STOCK_TID, "--merchant", world.mid, "--json")
    assert bound.code == 0, bound.stderr
    assert (bound.json["bound"], bound.json["mid"], bound.json["owner_agent"]) == (True, world.mid, world.agent)
    assert (await stock_terminal.purchase(PAN, PIN, 1000)).response_code == "03"  # 42 is not its merchant now
    stock_terminal.mid = world.mid
    card_before = await card_balance(cli)
    approved = await stock_terminal.purchase(PAN, PIN, 1000)
    assert approved.response_code == "00"
    assert await card_balance(cli) == card_before - 1000

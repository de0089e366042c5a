"""Batch settlement end to end: totals counted as UnionPay terminals count them,
balanced and unbalanced, the next batch, and settled batches closed (12)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.domain.demo import demo_pan
from sim.terminal import build_request
from tests.e2e.helpers import terminal_for

PAN, PIN = demo_pan(21), "112233"


@pytest.fixture
async def terminal(gateway, world, cli):
    await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "1000")
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()


async def purchase(terminal, amount):
    response = await terminal.purchase(PAN, PIN, amount)
    assert response.response_code == "00"
    return dict(original_rrn=response.message.rrn, original_batch=terminal.batch,
                original_stan=response.message.stan, original_date=response.message.local_date)


async def test_the_wire_examples_totals_settle_balanced(terminal, cli, world):
    """WIRE.md: purchases of 10.00 and 20.00, the 20.00 voided."""
    await purchase(terminal, 1000)
    voided = await purchase(terminal, 2000)
    assert (await terminal.void(PAN, PIN, 2000, **voided)).response_code == "00"
    response = await terminal.settle(1000, 1)
    m = response.message
    assert (m.mti, m.response_code) == ("0510", "00")
    assert m.settlement_totals == "000000001000001000000000000000" + "1"
    assert m.txn_data == "00000001201"  # echoed unchanged
    assert m.mac is not None
    batches = (await cli("batch", "list", "--json")).json["batches"]
    assert [(b["tid"], b["batch"], b["debit_fen"], b["debit_count"], b["balanced"]) for b in batches] == [
        (world.tid, 1, 1000, 1, True)]
    assert (await cli("batch", "list", "--unbalanced", "--json")).json["batches"] == []
    assert (await cli("terminal", "show", world.tid, "--json")).json["batch"] == 2


async def test_an_unbalanced_batch_answers_00_with_flag_2_and_is_listed_with_the_difference(terminal, cli):
    await purchase(terminal, 1500)
    response = await terminal.settle(1600, 1)
    assert response.response_code == "00"
    assert response.message.settlement_totals == "000000001500001000000000000000" + "2"
    (batch,) = (await cli("batch", "list", "--unbalanced", "--json")).json["batches"]
    assert (batch["debit_fen"], batch["terminal_debit_fen"], batch["difference_fen"]) == (1500, 1600, 100)


async def test_totals_count_bill_payments_and_leave_out_reversed_and_declined(terminal, cli):
    await cli("biller", "add", "P1", "--name", "Prepaid", "--prepaid")
    await cli("meter", "add", "P1", "M1", "--name", "x")
    await cli("agent", "topup", "AG01", "100")
    await purchase(terminal, 300)
    assert (await terminal.purchase(PAN, PIN, 10**7)).response_code == "51"
    await purchase(terminal, 700)
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"
    assert (await terminal.bill_payment("P1", "M1", 250)).response_code == "00"
    assert (await terminal.balance(PAN, PIN)).response_code == "00"
    response = await terminal.settle(550, 2)
    assert response.message.settlement_totals == "000000000550002000000000000000" + "1"


async def test_a_void_reversed_counts_the_purchase_again(terminal):
    ref = await purchase(terminal, 400)
    assert (await terminal.void(PAN, PIN, 400, **ref)).response_code == "00"
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"
    assert (await terminal.settle(400, 1)).message.settlement_totals.endswith("1")


async def test_requests_in_a_settled_batch_get_12_and_the_next_batch_works(terminal, cli):
    await purchase(terminal, 100)
    original = terminal.last_request
    assert (await terminal.settle(100, 1)).response_code == "00"
    assert terminal.batch == 2
    old_batch = build_request("0200", pan=PAN, processing_code="310000", stan=terminal.next_stan(),
                              entry_mode="021", condition_code="00", terminal_id=terminal.tid,
                              merchant_id=terminal.mid, currency="156", txn_data="01000001000")
    assert (await terminal.send(old_batch)).response_code == "12"
    assert (await terminal.reverse(original)).response_code == "12"  # reversals included
    terminal.batch = 1
    assert (await terminal.settle(0, 0)).response_code == "12"  # settled once only
    terminal.batch = 2
    assert (await terminal.echo()).response_code == "00"  # never refused for its batch
    assert (await terminal.sign_on()).response_code == "00"
    after = await terminal.purchase(PAN, PIN, 200)
    assert after.response_code == "00" and after.message.txn_data.startswith("22000002")
    assert (await cli("card", "show", PAN, "--json")).json["balance_fen"] == 100000 - 300
    assert (await terminal.settle(200, 1)).message.settlement_totals.endswith("1")


async def test_a_repeated_settlement_gets_the_same_answer(terminal):
    await purchase(terminal, 100)
    first = await terminal.settle(100, 1)
    request = terminal.last_request
    terminal.batch = 1
    again = await terminal.send(request)
    assert again.message.raw == first.message.raw


async def test_purchases_racing_a_settlement_are_either_in_its_totals_or_refused(gateway, world, terminal, cli):
    others = []
    for _ in range(10):
        t = terminal_for(gateway, world)
        t.keys = terminal.keys
        others.append(t)
    stans = [f"{900 + i:06d}" for i in range(10)]
    results = await asyncio.gather(terminal.settle(0, 0, stan="000890"),
                                   *(o.purchase(PAN, PIN, 10, stan=s) for o, s in zip(others, stans)))
    settlement, purchases = results[0], results[1:]
    approved = sum(1 for r in purchases if r.response_code == "00")
    assert {r.response_code for r in purchases} <= {"00", "12"}
    counted = settlement.message.settlement_totals
    assert int(counted[:12]) == 10 * approved and int(counted[12:15]) == approved
    assert (await cli("card", "show", PAN, "--json")).json["balance_fen"] == 100000 - 10 * approved
    await asyncio.gather(*(o.close() for o in others))


async def test_settlement_without_the_30_digits_of_field_48_gets_30(terminal):
    request = build_request("0500", stan=terminal.next_stan(), terminal_id=terminal.tid, merchant_id=terminal.mid,
                            currency="156", settlement_totals="123", txn_data="00000001201")
    assert (await terminal.send(request)).response_code == "30"

"""Settlement, amended (WIRE.md 9.6, 9.9) end to end: three counts accepted
(gross, version 1, net), 62-digit field 48 with its foreign half, refunds and
completion voids as credits, completions as debits, what the terminal was
told counted (a reversal answered 00 reverses)."""

from __future__ import annotations

import pytest

from protocol.answers import BatchTotals, foreign_totals_zero, settlement_totals
from sim.terminal import Terminal, build_request
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.test_preauth import approved, completion, completion_void, preauth
from tests.e2e.test_refunds import refund_request


def totals(debit_fen: int, debit_count: int, credit_fen: int, credit_count: int) -> str:
    return f"{debit_fen:012d}{debit_count:03d}{credit_fen:012d}{credit_count:03d}"


async def settle(terminal: Terminal, field_48: str):
    response = await terminal.send(build_request(
        "0500", stan=terminal.next_stan(), terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
        settlement_totals=field_48, txn_data=f"00{terminal.batch:06d}201"))
    if response.response_code == "00":
        terminal.batch += 1
    return response


async def voided_batch(terminal: Terminal) -> None:
    """Purchases of 10.00 and 20.00, the 20.00 voided (WIRE.md 3's example)."""
    assert (await terminal.purchase(PAN, PIN, 1000)).response_code == "00"
    m = (await terminal.purchase(PAN, PIN, 2000)).message
    assert (await terminal.void(PAN, PIN, 2000, original_rrn=m.rrn, original_batch=1, original_stan=m.stan,
                                original_date=m.local_date)).response_code == "00"


@pytest.mark.parametrize("count, expected", [
    ("gross", totals(3000, 2, 2000, 1)),  # the voided purchase a debit, its void a credit
    ("v1", totals(1000, 1, 0, 0)),  # both left out (WIRE.md 3's example)
    ("net", totals(1000, 1, 2000, 1)),  # the voided purchase left out, its void a credit
])
async def test_a_batch_with_a_void_is_balanced_counted_each_of_the_three_ways(terminal, count, expected):
    await voided_batch(terminal)
    response = await settle(terminal, expected)
    assert response.response_code == "00"
    assert response.message.settlement_totals == expected + "1"


async def test_a_batch_matching_no_count_answers_the_gross_count_and_flag_2(terminal, db):
    await voided_batch(terminal)
    response = await settle(terminal, totals(3000, 2, 0, 0))
    assert response.message.settlement_totals == totals(3000, 2, 2000, 1) + "2"
    assert await db.fetchval("SELECT balanced FROM gw_batches") is False


async def test_refunds_and_completion_voids_are_credits_and_completions_debits(terminal, db):
    purchase = (await terminal.purchase(PAN, PIN, 3000)).message
    assert (await terminal.send(refund_request(terminal, 500, purchase))).response_code == "00"
    p = await approved(terminal, preauth(terminal, 2000))
    done = await approved(terminal, completion(terminal, 1500, p))
    await approved(terminal, completion_void(terminal, 1500, done))
    p2 = await approved(terminal, preauth(terminal, 1000))
    await approved(terminal, completion(terminal, 1000, p2))
    # debits: 3000 + 1500 + 1000 (3); credits: the refund 500 and the completion void 1500 (2).
    expected = totals(5500, 3, 2000, 2)
    response = await settle(terminal, expected)
    assert response.message.settlement_totals == expected + "1"
    assert await db.fetchval("SELECT counted FROM gw_batches") == "gross"


async def test_a_reversal_answered_00_takes_its_original_out_of_every_count(terminal):
    assert (await terminal.purchase(PAN, PIN, 1000)).response_code == "00"
    assert (await terminal.purchase(PAN, PIN, 700)).response_code == "00"
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"
    response = await settle(terminal, totals(1000, 1, 0, 0))
    assert response.message.settlement_totals == totals(1000, 1, 0, 0) + "1"


async def test_a_62_digit_settlement_gets_62_digits_back_with_both_flags(terminal, db):
    await voided_batch(terminal)
    field_48 = totals(1000, 1, 0, 0) + "0" + totals(0, 0, 0, 0) + "0"
    response = await settle(terminal, field_48)
    assert response.message.settlement_totals == totals(1000, 1, 0, 0) + "1" + "0" * 30 + "1"
    assert len(response.message.settlement_totals) == 62
    assert await db.fetchval("SELECT balanced FROM gw_batches") is True


async def test_foreign_totals_that_are_not_zero_get_foreign_flag_2_and_leave_the_batch_unbalanced(terminal, db):
    assert (await terminal.purchase(PAN, PIN, 1000)).response_code == "00"
    field_48 = totals(1000, 1, 0, 0) + "0" + totals(500, 1, 0, 0) + "0"
    response = await settle(terminal, field_48)
    assert response.message.settlement_totals == totals(1000, 1, 0, 0) + "1" + "0" * 30 + "2"
    assert await db.fetchval("SELECT balanced FROM gw_batches") is False


@pytest.mark.parametrize("length", [29, 31, 61, 63])
async def test_a_field_48_of_other_than_30_or_62_digits_gets_30(terminal, length):
    response = await settle(terminal, "0" * length)
    assert response.response_code == "30"


def test_the_answers_48_is_the_domestic_30_digits_and_flag_then_for_62_zeros_and_the_foreign_flag():
    counted = BatchTotals(300000, 2, 2000, 1)
    assert settlement_totals(counted, True) == "000000300000002000000002000001" + "1"
    assert settlement_totals(counted, False, True) == "000000300000002000000002000001" + "2" + "0" * 30 + "1"
    assert foreign_totals_zero("0" * 30) is None
    assert foreign_totals_zero("1" * 30 + "9" + "0" * 30 + "7") is True
    assert foreign_totals_zero("0" * 31 + "0" * 29 + "1" + "0") is False

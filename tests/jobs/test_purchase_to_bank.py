"""A merchant's money from a purchase at its terminal to its bank, with the bank simulator."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.domain import banking
from gateway.jobs import payouts
from gateway.jobs.payouts import BANK_ACCOUNT_CODE, CLEARING_ACCOUNT_CODE
from gateway.keys import SoftHsm
from gateway.upstream import bank_files
from ledger.accounts import account_id, balance_fen
from sim import bank
from tests.conftest import TEST_LMK
from tests.e2e.conftest import card, terminal  # noqa: F401 (fixtures)
from tests.e2e.helpers import CARD_PAN, CARD_PIN

ACCOUNT = "6222021234567890123"


async def test_a_purchase_reaches_the_merchants_bank_the_next_day(terminal, world, db, settings, cli):  # noqa: F811
    today = datetime.now(settings.tz).date()
    assert (await terminal.purchase(CARD_PAN, CARD_PIN, 2550)).response_code == "00"
    assert (await cli("merchant", "show", world.mid, "--json")).json["balance_fen"] == 2550
    hsm = SoftHsm(bytes.fromhex(TEST_LMK))
    await banking.set_bank_details(db, hsm, "merchant", world.mid, bank_account_number=ACCOUNT,
                                   bank_name="Bank of Example", account_name="Test Shop Ltd")

    run = await payouts.run_payouts(db, settings, today, now=payouts.day_end(today, settings.tz) + timedelta(hours=2))
    assert (run["count"], run["total_fen"], run["skipped"]) == (1, 2550, [])
    instructions = await payouts.payout_file(db, hsm, settings, today, "pain001")
    bank_files.validate(instructions, bank_files.PAIN001_SCHEMA)
    assert ACCOUNT.encode() in instructions and b">25.50</InstdAmt>" in instructions

    answer = bank.answer(instructions, reject_accounts=set())
    assert await payouts.confirm_payouts(db, answer) == {"paid": 1, "returned": 0, "unchanged": 0, "conflicts": []}
    assert (await cli("merchant", "show", world.mid, "--json")).json["balance_fen"] == 0
    assert await balance_fen(db, await account_id(db, BANK_ACCOUNT_CODE)) == 2550
    assert await balance_fen(db, await account_id(db, CLEARING_ACCOUNT_CODE)) == 0
    assert (await cli("ledger", "check", "--json")).json["ok"] is True
    assert await payouts.check_payouts(db) == []
    if datetime.now(settings.tz).date() != today:  # the purchase fell on the day after
        pytest.skip("crossed local midnight during the test")

"""`ledger.check`: the invariants read back from the ledger's own tables."""

from __future__ import annotations

import pytest

from ledger.accounts import CASH_ACCOUNT_CODE, AccountKind, account_id, create_account
from ledger.check import check
from ledger.postings import PostResult, Transfer, post, reverse

CARD_CODE = "card:6200000000000001"


@pytest.fixture
async def card(db) -> int:
    cash = await account_id(db, CASH_ACCOUNT_CODE)
    card = await create_account(db, AccountKind.CARD, CARD_CODE, debits_must_not_exceed_credits=True)
    merchant = await create_account(db, AccountKind.MERCHANT, "merchant:M1", debits_must_not_exceed_credits=False)
    assert await post(db, "fund", [Transfer(cash, card, 1000, "deposit")]) is PostResult.OK
    assert await post(db, "purchase", [Transfer(card, merchant, 300, "purchase")]) is PostResult.OK
    assert await reverse(db, "void", "purchase") is PostResult.OK
    assert await post(db, "purchase:2", [Transfer(card, merchant, 100, "purchase")]) is PostResult.OK
    return card


async def test_a_fresh_database_checks_ok_with_balanced_zero_totals(db):
    report = await check(db)

    assert report.ok
    assert report.problems == []
    assert report.totals["debits_fen"] == report.totals["credits_fen"] == 0
    assert report.totals["transfers"] == 0
    assert report.totals["accounts"] == 2  # system:cash and system:fee_income
    assert report.as_dict() == {"ok": True, "totals": report.totals, "problems": []}


async def test_postings_and_reversals_check_ok_with_totals_that_add_up(db, card):
    report = await check(db)

    assert report.ok, report.problems
    # 1000 deposit + 300 purchase + 300 void + 100 purchase.
    assert report.totals["debits_fen"] == report.totals["credits_fen"] == report.totals["transferred_fen"] == 1700
    assert report.totals["transfers"] == 4


async def test_check_names_the_account_whose_credits_disagree_with_its_transfers(db, card):
    await db.execute("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = $1", card)

    report = await check(db)

    assert not report.ok
    assert any(CARD_CODE in problem for problem in report.problems), report.problems
    assert report.totals["debits_fen"] + 1 == report.totals["credits_fen"]
    assert report.as_dict()["ok"] is False


async def test_check_finds_a_transfer_row_that_no_account_posted(db, card):
    merchant = await account_id(db, "merchant:M1")
    posting = await db.fetchval("SELECT id FROM ledger_postings WHERE idempotency_key = 'purchase:2'")
    await db.execute(
        """INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code)
           VALUES ($1, $2, $3, 5, 'forged')""", posting, card, merchant)

    report = await check(db)

    assert not report.ok
    assert any(CARD_CODE in problem for problem in report.problems), report.problems
    assert any("merchant:M1" in problem for problem in report.problems), report.problems


async def test_check_finds_a_reversal_that_does_not_mirror_its_original(db, card):
    # Move the reversal's amount and the accounts' totals together, so only the mirror is wrong.
    merchant = await account_id(db, "merchant:M1")
    void_id = await db.fetchval(
        """SELECT t.id FROM ledger_transfers t JOIN ledger_postings p ON p.id = t.posting_id
            WHERE p.idempotency_key = 'void'""")
    await db.execute("UPDATE ledger_transfers SET amount = amount - 1 WHERE id = $1", void_id)
    await db.execute("UPDATE ledger_accounts SET debits_posted = debits_posted - 1 WHERE id = $1", merchant)
    await db.execute("UPDATE ledger_accounts SET credits_posted = credits_posted - 1 WHERE id = $1", card)

    report = await check(db)

    assert report.problems == [f"transfer {void_id} does not mirror the transfer it reverses"]

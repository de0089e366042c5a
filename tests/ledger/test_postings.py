"""Ledger postings and reversals (DESIGN.md, "Ledger"): atomic, idempotent,
never below zero on a guarded account, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from ledger.accounts import AccountKind, balance_fen, create_account
from ledger.postings import PostResult, Transfer, post, reverse
from tests.ledger.conftest import CARD_FUNDS_FEN, UNKNOWN_ACCOUNT_ID, assert_check_ok, ledger_state, transfers_under

# --- posting ---------------------------------------------------------------------------------


async def test_a_posting_moves_money_from_card_to_merchant_and_records_the_transfer(db, book):
    before_cash = await balance_fen(db, book.cash)

    result = await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")])

    assert result is PostResult.OK
    card = await db.fetchrow("SELECT debits_posted, credits_posted FROM ledger_accounts WHERE id = $1", book.card)
    merchant = await db.fetchrow(
        "SELECT debits_posted, credits_posted FROM ledger_accounts WHERE id = $1", book.merchant)
    assert (card["debits_posted"], card["credits_posted"]) == (300, CARD_FUNDS_FEN)
    assert (merchant["debits_posted"], merchant["credits_posted"]) == (0, 300)
    assert await balance_fen(db, book.card) == 700
    assert await balance_fen(db, book.merchant) == 300
    assert await balance_fen(db, book.cash) == before_cash == -CARD_FUNDS_FEN
    [row] = await transfers_under(db, "purchase:1")
    assert (row["debit_account_id"], row["credit_account_id"], row["amount"], row["code"],
            row["reverses_transfer_id"]) == (book.card, book.merchant, 300, "purchase", None)
    await assert_check_ok(db)


async def test_a_card_may_spend_its_balance_to_exactly_zero(db, book):
    assert await post(db, "purchase:all", [Transfer(book.card, book.merchant, CARD_FUNDS_FEN, "purchase")]) \
        is PostResult.OK
    assert await balance_fen(db, book.card) == 0
    assert await post(db, "purchase:one-more", [Transfer(book.card, book.merchant, 1, "purchase")]) \
        is PostResult.EXCEEDS_CREDITS
    assert await balance_fen(db, book.card) == 0


async def test_the_cash_account_is_not_guarded_and_goes_below_zero_when_funding(db, book):
    assert await balance_fen(db, book.cash) == -CARD_FUNDS_FEN
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    await assert_check_ok(db)


# --- idempotency -----------------------------------------------------------------------------


async def test_the_same_key_and_transfers_again_returns_exists_and_moves_nothing(db, book):
    transfers = [Transfer(book.card, book.merchant, 300, "purchase")]
    assert await post(db, "purchase:1", transfers) is PostResult.OK
    before = await ledger_state(db)

    again = await post(db, "purchase:1", transfers)

    assert again is PostResult.EXISTS
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == 700
    assert len(await transfers_under(db, "purchase:1")) == 1


@pytest.mark.parametrize("changed", [
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 301, "purchase")], id="amount"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 300, "bill")], id="code"),
    pytest.param(lambda b: [Transfer(b.card, b.cash, 300, "purchase")], id="credit account"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 100, "purchase"),
                            Transfer(b.card, b.merchant, 200, "purchase")], id="split"),
])
async def test_the_same_key_with_different_transfers_returns_exists_with_different_content_and_moves_nothing(
        db, book, changed):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    before = await ledger_state(db)

    result = await post(db, "purchase:1", changed(book))

    assert result is PostResult.EXISTS_WITH_DIFFERENT_CONTENT
    assert await ledger_state(db) == before


async def test_a_posting_that_exceeded_credits_still_exceeds_credits_on_retry_after_the_card_is_funded(db, book):
    transfers = [Transfer(book.card, book.merchant, 1500, "purchase")]
    assert await post(db, "purchase:big", transfers) is PostResult.EXCEEDS_CREDITS
    assert await post(db, "fund:more", [Transfer(book.cash, book.card, 1000, "deposit")]) is PostResult.OK
    assert await balance_fen(db, book.card) == 2000
    before = await ledger_state(db)

    retry = await post(db, "purchase:big", transfers)

    assert retry is PostResult.EXCEEDS_CREDITS
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == 2000
    assert await transfers_under(db, "purchase:big") == []
    # The key is spent: the same key with other content is a duplicate, not a fresh posting.
    assert await post(db, "purchase:big", [Transfer(book.card, book.merchant, 10, "purchase")]) \
        is PostResult.EXISTS_WITH_DIFFERENT_CONTENT
    assert await ledger_state(db) == before


# --- atomicity -------------------------------------------------------------------------------


async def test_a_multi_transfer_posting_whose_second_transfer_would_overdraw_moves_nothing(db, book):
    fee_income = await create_account(db, AccountKind.FEE_INCOME, "fees:test", debits_must_not_exceed_credits=False)
    before = await ledger_state(db)
    transfers = [Transfer(book.card, book.merchant, 800, "purchase"),  # fits the 1000 on its own
                 Transfer(book.card, fee_income, 300, "fee")]  # 800 + 300 > 1000

    result = await post(db, "purchase:with-fee", transfers)

    assert result is PostResult.EXCEEDS_CREDITS
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    assert await balance_fen(db, book.merchant) == 0
    assert await balance_fen(db, fee_income) == 0
    assert await transfers_under(db, "purchase:with-fee") == []
    await assert_check_ok(db)


async def test_a_multi_transfer_posting_overdrawing_a_second_guarded_account_moves_nothing(db, book):
    float_ = await create_account(db, AccountKind.AGENT_FLOAT, "float:AG01", debits_must_not_exceed_credits=True)
    assert await post(db, "fund:float", [Transfer(book.cash, float_, 100, "deposit")]) is PostResult.OK
    before = await ledger_state(db)

    result = await post(db, "cash-out:1", [Transfer(book.card, book.merchant, 500, "purchase"),
                                           Transfer(float_, book.merchant, 101, "cash_out")])

    assert result is PostResult.EXCEEDS_CREDITS
    assert await ledger_state(db) == before
    assert await transfers_under(db, "cash-out:1") == []


async def test_a_multi_transfer_posting_that_fits_posts_every_transfer(db, book):
    fee_income = await create_account(db, AccountKind.FEE_INCOME, "fees:test", debits_must_not_exceed_credits=False)

    result = await post(db, "purchase:with-fee", [Transfer(book.card, book.merchant, 800, "purchase"),
                                                  Transfer(book.card, fee_income, 200, "fee")])

    assert result is PostResult.OK
    assert await balance_fen(db, book.card) == 0
    assert await balance_fen(db, book.merchant) == 800
    assert await balance_fen(db, fee_income) == 200
    assert [(t["code"], t["amount"]) for t in await transfers_under(db, "purchase:with-fee")] == [
        ("purchase", 800), ("fee", 200)]
    await assert_check_ok(db)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("transfers, expected", [
    pytest.param(lambda b: [Transfer(UNKNOWN_ACCOUNT_ID, b.merchant, 10, "purchase")],
                 PostResult.ACCOUNT_NOT_FOUND, id="unknown debit account"),
    pytest.param(lambda b: [Transfer(b.card, UNKNOWN_ACCOUNT_ID, 10, "purchase")],
                 PostResult.ACCOUNT_NOT_FOUND, id="unknown credit account"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 10, "purchase"),
                            Transfer(b.merchant, UNKNOWN_ACCOUNT_ID, 10, "purchase")],
                 PostResult.ACCOUNT_NOT_FOUND, id="unknown account in the second transfer"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 0, "purchase")],
                 PostResult.AMOUNT_MUST_BE_POSITIVE, id="zero amount"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, -10, "purchase")],
                 PostResult.AMOUNT_MUST_BE_POSITIVE, id="negative amount"),
    pytest.param(lambda b: [Transfer(b.merchant, b.card, -10, "purchase")],
                 PostResult.AMOUNT_MUST_BE_POSITIVE, id="negative amount crediting a card"),
    pytest.param(lambda b: [Transfer(b.card, b.merchant, 10, "purchase"),
                            Transfer(b.card, b.merchant, 0, "fee")],
                 PostResult.AMOUNT_MUST_BE_POSITIVE, id="zero amount in the second transfer"),
    pytest.param(lambda b: [Transfer(b.card, b.card, 10, "purchase")],
                 PostResult.ACCOUNTS_MUST_BE_DIFFERENT, id="same account"),
    pytest.param(lambda b: [], PostResult.TRANSFERS_MUST_NOT_BE_EMPTY, id="no transfers"),
])
async def test_an_invalid_posting_returns_its_reason_and_moves_nothing(db, book, transfers, expected):
    before = await ledger_state(db)

    result = await post(db, "bad:1", transfers(book))

    assert result is expected
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    # The first result stands for the key.
    assert await post(db, "bad:1", transfers(book)) is expected
    assert await ledger_state(db) == before
    await assert_check_ok(db)


# --- concurrency -----------------------------------------------------------------------------


async def test_fifty_concurrent_postings_never_overdraw_a_card(db, book, connections):
    balances_seen: list[int] = []
    racing = True

    async def watch_balance() -> None:
        while racing:
            balances_seen.append(await balance_fen(db, book.card))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch_balance())
    try:
        results = await asyncio.gather(*(
            post(conn, f"purchase:{n}", [Transfer(book.card, book.merchant, 30, "purchase")])
            for n, conn in enumerate(connections)))
    finally:
        racing = False
        await watcher

    assert Counter(results) == {PostResult.OK: 33, PostResult.EXCEEDS_CREDITS: 17}
    assert await balance_fen(db, book.card) == 10
    assert await balance_fen(db, book.merchant) == 990
    assert balances_seen and min(balances_seen) >= 0
    ok_keys = {f"purchase:{n}" for n, r in enumerate(results) if r is PostResult.OK}
    posted_keys = {row["idempotency_key"] for row in await db.fetch(
        """SELECT DISTINCT p.idempotency_key FROM ledger_transfers t
             JOIN ledger_postings p ON p.id = t.posting_id WHERE t.code = 'purchase'""")}
    assert posted_keys == ok_keys
    await assert_check_ok(db)


async def test_ten_concurrent_postings_under_one_key_post_once(db, book, connections):
    transfers = [Transfer(book.card, book.merchant, 30, "purchase")]

    results = await asyncio.gather(*(post(conn, "purchase:retried", transfers) for conn in connections[:10]))

    assert Counter(results) == {PostResult.OK: 1, PostResult.EXISTS: 9}
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - 30
    assert len(await transfers_under(db, "purchase:retried")) == 1
    await assert_check_ok(db)


# --- reversal --------------------------------------------------------------------------------


async def test_a_reversal_posts_mirrored_transfers_and_returns_balances_exactly(db, book):
    fee_income = await create_account(db, AccountKind.FEE_INCOME, "fees:test", debits_must_not_exceed_credits=False)
    before = await ledger_state(db)
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase"),
                                         Transfer(book.card, fee_income, 20, "fee")]) is PostResult.OK
    assert await balance_fen(db, book.card) == 680

    result = await reverse(db, "void:1", "purchase:1")

    assert result is PostResult.OK
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    assert await balance_fen(db, book.merchant) == 0
    assert await balance_fen(db, fee_income) == 0
    originals = await transfers_under(db, "purchase:1")
    reversals = await transfers_under(db, "void:1")
    assert len(reversals) == len(originals) == 2
    by_original = {r["reverses_transfer_id"]: r for r in reversals}
    assert set(by_original) == {o["id"] for o in originals}
    for original in originals:
        mirror = by_original[original["id"]]
        assert (mirror["debit_account_id"], mirror["credit_account_id"], mirror["amount"]) == (
            original["credit_account_id"], original["debit_account_id"], original["amount"])
        assert mirror["code"] == "reversal:" + original["code"]
    # Posted totals grow both ways: the history is kept, never edited.
    accounts, transfers = await ledger_state(db)
    assert accounts["card:6200000000000001"] == (320, CARD_FUNDS_FEN + 320)
    assert transfers[:len(before[1])] == before[1]
    await assert_check_ok(db)


async def test_reversing_a_posting_again_under_another_key_returns_already_reversed_and_moves_nothing(db, book):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await reverse(db, "void:1", "purchase:1") is PostResult.OK
    before = await ledger_state(db)

    again = await reverse(db, "void:2", "purchase:1")

    assert again is PostResult.ALREADY_REVERSED
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    assert await transfers_under(db, "void:2") == []


async def test_the_same_reversal_key_again_returns_exists_and_moves_nothing(db, book):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await reverse(db, "void:1", "purchase:1") is PostResult.OK
    before = await ledger_state(db)

    assert await reverse(db, "void:1", "purchase:1") is PostResult.EXISTS
    assert await ledger_state(db) == before


async def test_a_reversal_key_reused_for_another_posting_returns_exists_with_different_content(db, book):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await post(db, "purchase:2", [Transfer(book.card, book.merchant, 200, "purchase")]) is PostResult.OK
    assert await reverse(db, "void:1", "purchase:1") is PostResult.OK
    before = await ledger_state(db)

    assert await reverse(db, "void:1", "purchase:2") is PostResult.EXISTS_WITH_DIFFERENT_CONTENT
    assert await reverse(db, "purchase:2", "purchase:1") is PostResult.EXISTS_WITH_DIFFERENT_CONTENT
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == 800


@pytest.mark.parametrize("original_key", ["purchase:unknown", "purchase:too-big"])
async def test_reversing_an_unknown_or_failed_posting_returns_linked_transfer_not_found(db, book, original_key):
    assert await post(db, "purchase:too-big", [Transfer(book.card, book.merchant, 5000, "purchase")]) \
        is PostResult.EXCEEDS_CREDITS
    before = await ledger_state(db)

    result = await reverse(db, "void:1", original_key)

    assert result is PostResult.LINKED_TRANSFER_NOT_FOUND
    assert await ledger_state(db) == before
    assert await reverse(db, "void:1", original_key) is PostResult.LINKED_TRANSFER_NOT_FOUND
    await assert_check_ok(db)


async def test_a_failed_reversal_does_not_stop_a_later_reversal_under_a_new_key(db, book):
    assert await reverse(db, "void:early", "purchase:1") is PostResult.LINKED_TRANSFER_NOT_FOUND
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK

    assert await reverse(db, "void:early", "purchase:1") is PostResult.LINKED_TRANSFER_NOT_FOUND
    assert await balance_fen(db, book.card) == 700
    assert await reverse(db, "void:late", "purchase:1") is PostResult.OK
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN


async def test_ten_concurrent_reversals_of_one_posting_return_the_money_once(db, book, connections):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK

    results = await asyncio.gather(*(
        reverse(conn, f"void:{n}", "purchase:1") for n, conn in enumerate(connections[:10])))

    assert Counter(results) == {PostResult.OK: 1, PostResult.ALREADY_REVERSED: 9}
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    assert await balance_fen(db, book.merchant) == 0
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers WHERE reverses_transfer_id IS NOT NULL") == 1
    await assert_check_ok(db)


async def test_reversing_a_reversal_debits_the_card_again(db, book):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await reverse(db, "void:1", "purchase:1") is PostResult.OK
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN

    result = await reverse(db, "unvoid:1", "void:1")

    assert result is PostResult.OK
    assert await balance_fen(db, book.card) == 700
    assert await balance_fen(db, book.merchant) == 300
    [void] = await transfers_under(db, "void:1")
    [unvoid] = await transfers_under(db, "unvoid:1")
    assert unvoid["reverses_transfer_id"] == void["id"]
    assert (unvoid["debit_account_id"], unvoid["credit_account_id"], unvoid["amount"]) == (
        book.card, book.merchant, 300)
    # The void itself is now reversed, and the original stays reversed.
    assert await reverse(db, "unvoid:2", "void:1") is PostResult.ALREADY_REVERSED
    assert await reverse(db, "void:2", "purchase:1") is PostResult.ALREADY_REVERSED
    assert await balance_fen(db, book.card) == 700
    await assert_check_ok(db)


async def test_reversing_a_reversal_the_card_can_no_longer_cover_returns_exceeds_credits_and_moves_nothing(
        db, book):
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await reverse(db, "void:1", "purchase:1") is PostResult.OK
    assert await post(db, "purchase:2", [Transfer(book.card, book.merchant, 800, "purchase")]) is PostResult.OK
    assert await balance_fen(db, book.card) == 200
    before = await ledger_state(db)

    result = await reverse(db, "unvoid:1", "void:1")

    assert result is PostResult.EXCEEDS_CREDITS
    assert await ledger_state(db) == before
    assert await balance_fen(db, book.card) == 200
    assert await transfers_under(db, "unvoid:1") == []
    assert await reverse(db, "unvoid:1", "void:1") is PostResult.EXCEEDS_CREDITS
    await assert_check_ok(db)


# --- the database backs the function ---------------------------------------------------------


async def test_a_direct_update_overdrawing_a_guarded_account_is_refused_by_the_check_constraint(db, book):
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE ledger_accounts SET debits_posted = credits_posted + 1 WHERE id = $1", book.card)
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN


async def test_a_direct_update_may_take_an_unguarded_account_below_zero(db, book):
    await db.execute("UPDATE ledger_accounts SET debits_posted = credits_posted + 1 WHERE id = $1", book.merchant)
    assert await balance_fen(db, book.merchant) == -1



async def test_an_unknown_account_is_reported_before_an_overdraft(db):
    card = await create_account(db, AccountKind.CARD, "card:overdraft-and-missing", debits_must_not_exceed_credits=True)
    result = await post(db, "missing-and-short", [Transfer(card, 999_999, 100, "purchase")])
    assert result is PostResult.ACCOUNT_NOT_FOUND

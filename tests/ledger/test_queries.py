"""The ledger's read-only queries (ledger/queries.py), from its own tables."""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger import queries
from ledger.postings import PostResult, Transfer, post, reverse
from tests.ledger.conftest import CARD_FUNDS_FEN


async def _now(db) -> datetime:
    return await db.fetchval("SELECT clock_timestamp()")


async def test_balance_before_counts_only_the_transfers_before_the_time(db, book):
    between = await _now(db)
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await queries.balance_before(db, book.card, between) == CARD_FUNDS_FEN
    assert await queries.balance_before(db, book.card, await _now(db)) == CARD_FUNDS_FEN - 300
    assert await queries.balance_before(db, book.merchant, between) == 0


async def test_postings_moving_give_each_posting_its_net_per_account_codes_and_key_in_order(db, book):
    start = await _now(db)
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase"),
                                         Transfer(book.merchant, book.cash, 3, "mdr")]) is PostResult.OK
    assert await reverse(db, "reversal:1", "purchase:1") is PostResult.OK
    moves = await queries.postings_moving(db, (book.card, book.merchant), start, await _now(db))
    assert [(m.idempotency_key, m.codes, m.net(book.card), m.net(book.merchant)) for m in moves] == [
        ("purchase:1", ("mdr", "purchase"), -300, 297), ("reversal:1", ("reversal:mdr", "reversal:purchase"), 300, -297)]
    assert moves[0].reverses_posting_id is None and moves[1].reverses_posting_id == moves[0].posting_id
    assert moves[0].created_at <= moves[1].created_at
    earlier = await queries.postings_moving(db, (book.card,), start - timedelta(days=1), start)
    assert [(m.idempotency_key, m.net_fen) for m in earlier] == [("fund:card", {book.card: CARD_FUNDS_FEN})]


async def test_window_totals_set_money_from_outside_apart(db, book):
    start = await _now(db)
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 300, "purchase")]) is PostResult.OK
    assert await post(db, "fund:again", [Transfer(book.cash, book.card, 50, "deposit")]) is PostResult.OK
    totals = await queries.window_totals(db, start, await _now(db))
    assert totals == queries.WindowTotals(postings=1, movement_fen=300, external_fen=50)


async def test_count_below_counts_the_accounts_under_the_threshold(db, book):
    assert await queries.count_below(db, [book.card, book.merchant], 1) == 1  # the merchant has 0
    assert await queries.count_below(db, [book.card, book.merchant], CARD_FUNDS_FEN + 1) == 2
    assert await queries.count_below(db, [], 10**9) == 0

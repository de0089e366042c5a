"""Group commit in the ledger (``ledger_post_many``): a set of postings in one
call gives the same results, and moves the same money, as ``post`` called for
each of them in order; against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from ledger.accounts import CASH_ACCOUNT_CODE, AccountKind, account_id, balance_fen, create_account
from ledger.postings import PostResult, Transfer, post, post_many
from tests.ledger.conftest import CARD_FUNDS_FEN, UNKNOWN_ACCOUNT_ID, assert_check_ok

OK, EXCEEDS = PostResult.OK, PostResult.EXCEEDS_CREDITS


def spend(book, amount: int) -> list[Transfer]:
    return [Transfer(book.card, book.merchant, amount, "purchase")]


async def test_postings_of_one_card_in_one_set_are_checked_in_order_against_what_the_earlier_left(db, book):
    results = await post_many(db, [("p:1", spend(book, 600)), ("p:2", spend(book, 600)), ("p:3", spend(book, 300))])

    assert results == [OK, EXCEEDS, OK]
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - 900
    assert await balance_fen(db, book.merchant) == 900
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers WHERE code = 'purchase'") == 2
    # The declined posting's key keeps its result, as with post.
    assert await post(db, "p:2", spend(book, 600)) is EXCEEDS
    await assert_check_ok(db)


async def test_a_credit_earlier_in_the_set_funds_a_debit_later_in_it_but_not_one_before_it(db, book):
    cash = await account_id(db, CASH_ACCOUNT_CODE)
    empty = await create_account(db, AccountKind.CARD, "card:6200000000000002", debits_must_not_exceed_credits=True)
    to_merchant = [Transfer(empty, book.merchant, 400, "purchase")]

    results = await post_many(db, [("early", to_merchant), ("fund", [Transfer(cash, empty, 500, "deposit")]),
                                   ("late", to_merchant)])

    assert results == [EXCEEDS, OK, OK]
    assert await balance_fen(db, empty) == 100


async def test_a_key_twice_in_one_set_posts_once_and_the_second_is_exists_or_different_content(db, book):
    results = await post_many(db, [("k", spend(book, 100)), ("k", spend(book, 100)), ("k", spend(book, 200))])

    assert results == [OK, PostResult.EXISTS, PostResult.EXISTS_WITH_DIFFERENT_CONTENT]
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - 100


async def test_a_key_posted_before_the_set_returns_its_first_result_and_moves_nothing(db, book):
    assert await post(db, "big", spend(book, 5000)) is EXCEEDS
    assert await post(db, "small", spend(book, 10)) is OK

    results = await post_many(db, [("big", spend(book, 5000)), ("small", spend(book, 10)),
                                   ("small", spend(book, 11)), ("new", spend(book, 20))])

    assert results == [EXCEEDS, PostResult.EXISTS, PostResult.EXISTS_WITH_DIFFERENT_CONTENT, OK]
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - 30


async def test_an_invalid_posting_gets_its_reason_and_leaves_the_valid_ones_of_its_set_posted(db, book):
    results = await post_many(db, [
        ("empty", []),
        ("zero", [Transfer(book.card, book.merchant, 0, "purchase")]),
        ("self", [Transfer(book.card, book.card, 5, "purchase")]),
        ("unknown", [Transfer(book.card, UNKNOWN_ACCOUNT_ID, 5, "purchase")]),
        ("unknown-and-over", [Transfer(book.card, UNKNOWN_ACCOUNT_ID, 5000, "purchase")]),
        ("fine", spend(book, 7)),
    ])

    assert results == [PostResult.TRANSFERS_MUST_NOT_BE_EMPTY, PostResult.AMOUNT_MUST_BE_POSITIVE,
                       PostResult.ACCOUNTS_MUST_BE_DIFFERENT, PostResult.ACCOUNT_NOT_FOUND,
                       PostResult.ACCOUNT_NOT_FOUND, OK]
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - 7
    await assert_check_ok(db)


async def test_a_posting_whose_fee_would_overdraw_moves_nothing_while_the_rest_of_the_set_posts(db, book):
    fees = await create_account(db, AccountKind.FEE_INCOME, "fees:test", debits_must_not_exceed_credits=False)
    results = await post_many(db, [
        ("a", [Transfer(book.card, book.merchant, 990, "purchase"), Transfer(book.card, fees, 20, "fee")]),
        ("b", [Transfer(book.card, book.merchant, 980, "purchase"), Transfer(book.card, fees, 20, "fee")]),
    ])

    assert results == [EXCEEDS, OK]
    assert await balance_fen(db, book.card) == 0
    assert await balance_fen(db, fees) == 20


async def test_an_empty_set_posts_nothing(db, book):
    assert await post_many(db, []) == []


@pytest.mark.parametrize("seed", range(8))
async def test_a_random_set_gives_what_posting_each_in_order_gives(db, book, seed):
    """Known answers come from ``post``, one posting at a time, in a transaction
    rolled back; then the same set in one ``post_many`` must agree posting by
    posting, and leave every account and transfer the same."""
    rng = random.Random(seed)
    cash = await account_id(db, CASH_ACCOUNT_CODE)
    cards = [book.card] + [await create_account(db, AccountKind.CARD, f"card:62000000000001{n}",
                                                debits_must_not_exceed_credits=True) for n in range(3)]
    for n, card in enumerate(cards[1:]):
        assert await post(db, f"fund:{n}", [Transfer(cash, card, 300, "deposit")]) is OK

    def transfers() -> list[Transfer]:
        shape = rng.random()
        card = rng.choice(cards)
        if shape < 0.1:
            return [Transfer(cash, card, rng.randint(1, 400), "deposit")]
        if shape < 0.15:
            return [Transfer(card, rng.choice(cards), rng.randint(0, 50), "move")]
        spent = [Transfer(card, book.merchant, rng.randint(1, 400), "purchase")]
        if shape < 0.4:
            spent.append(Transfer(rng.choice(cards), book.merchant, rng.randint(1, 100), "fee"))
        return spent

    keys = [f"k:{rng.randint(0, 30)}" for _ in range(40)]
    postings = [(key, transfers()) for key in keys]

    async def outcome() -> tuple[dict[int, int], Counter]:
        balances = {a: await balance_fen(db, a) for a in [*cards, book.merchant, cash]}
        rows = Counter(tuple(r) for r in await db.fetch(
            """SELECT p.idempotency_key, p.result, t.debit_account_id, t.credit_account_id, t.amount, t.code
                 FROM ledger_postings p LEFT JOIN ledger_transfers t ON t.posting_id = p.id"""))
        return balances, rows

    one_by_one = db.transaction()
    await one_by_one.start()
    expected = [await post(db, key, t) for key, t in postings]
    expected_outcome = await outcome()
    await one_by_one.rollback()

    assert await post_many(db, postings) == expected
    assert await outcome() == expected_outcome
    assert Counter(expected)[OK] > 5  # the set really moved money
    await assert_check_ok(db)


async def test_sets_posted_concurrently_on_one_card_never_overdraw_it(db, book, connections):
    results = await asyncio.gather(*(
        post_many(conn, [(f"c:{n}:{m}", spend(book, 30)) for m in range(5)])
        for n, conn in enumerate(connections[:10])))

    assert Counter(r for rs in results for r in rs) == {OK: 33, EXCEEDS: 17}
    assert await balance_fen(db, book.card) == 10
    await assert_check_ok(db)

"""Holds (ledger/holds.py, WIRE.md 9.3): two-phase transfers in the PostgreSQL
ledger. A hold reserves its amount (available = balance - pending debits, the
no-overdraft rule on the available balance), and is posted (fully, partly,
over by a limit), voided or expired, each exactly once."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.accounts import (
    CASH_ACCOUNT_CODE,
    AccountKind,
    account_id,
    available_fen,
    balance_fen,
    create_account,
    pending_debits_fen,
)
from ledger.check import check
from ledger.holds import expire_due, find, hold, post_hold, void_hold
from ledger.postings import PostResult, Transfer, post, reverse
from tests.ledger.conftest import CARD_FUNDS_FEN, assert_check_ok, ledger_state, transfers_under

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def held(book, amount_fen: int) -> Transfer:
    return Transfer(book.card, book.merchant, amount_fen, "preauth")


# --- placing a hold --------------------------------------------------------------------------


async def test_a_hold_reserves_its_amount_moves_no_money_and_lowers_the_available_balance(db, book):
    before_accounts, before_transfers = await ledger_state(db)

    assert await hold(db, "preauth:1", held(book, 300), T0 + 30 * DAY) is PostResult.OK

    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN
    assert await available_fen(db, book.card) == 700
    assert await pending_debits_fen(db, book.card) == 300
    assert await ledger_state(db) == (before_accounts, before_transfers)  # posted totals and transfers unchanged
    stored = await find(db, "preauth:1")
    assert (stored.amount_fen, stored.status, stored.expires_at, stored.posted_fen) == (300, "pending",
                                                                                       T0 + 30 * DAY, None)
    report = await check(db)
    assert report.ok, report.problems
    assert (report.totals["debits_pending_fen"], report.totals["holds_open"], report.totals["held_fen"]) == \
        (300, 1, 300)


async def test_a_purchase_the_balance_alone_would_cover_is_refused_when_a_hold_takes_the_available_balance(db, book):
    assert await hold(db, "preauth:1", held(book, 800), None) is PostResult.OK

    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 201, "purchase")]) \
        is PostResult.EXCEEDS_CREDITS
    assert await post(db, "purchase:2", [Transfer(book.card, book.merchant, 200, "purchase")]) is PostResult.OK
    assert await available_fen(db, book.card) == 0
    await assert_check_ok(db)


async def test_a_hold_beyond_the_available_balance_is_refused_and_reserves_nothing(db, book):
    assert await hold(db, "preauth:1", held(book, 600), None) is PostResult.OK

    assert await hold(db, "preauth:2", held(book, 401), None) is PostResult.EXCEEDS_CREDITS
    assert await hold(db, "preauth:3", held(book, 400), None) is PostResult.OK
    assert await available_fen(db, book.card) == 0
    assert await find(db, "preauth:2") is None
    await assert_check_ok(db)


async def test_a_hold_placed_again_under_its_key_is_placed_once(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.EXISTS
    assert await hold(db, "preauth:1", held(book, 301), None) is PostResult.EXISTS_WITH_DIFFERENT_CONTENT
    assert await available_fen(db, book.card) == 700
    await assert_check_ok(db)


async def test_a_reversal_the_available_balance_cannot_cover_because_of_a_hold_is_refused(db, book):
    refund = [Transfer(book.merchant, book.card, 500, "refund")]
    assert await post(db, "refund:1", refund) is PostResult.OK  # the card: 1500
    assert await hold(db, "preauth:1", held(book, 1200), None) is PostResult.OK  # available 300

    assert await reverse(db, "refund:1:reversal", "refund:1") is PostResult.EXCEEDS_CREDITS
    assert await balance_fen(db, book.card) == 1500
    await assert_check_ok(db)


# --- posting it ------------------------------------------------------------------------------


async def test_a_hold_posted_fully_moves_its_amount_and_releases_its_reservation(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK

    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.OK

    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (700, 700)
    assert await balance_fen(db, book.merchant) == 300
    assert await pending_debits_fen(db, book.card) == 0
    stored = await find(db, "preauth:1")
    assert (stored.status, stored.posted_fen) == ("posted", 300)
    [transfer] = await transfers_under(db, "completion:1")
    assert (transfer["debit_account_id"], transfer["credit_account_id"], transfer["amount"]) == \
        (book.card, book.merchant, 300)
    await assert_check_ok(db)


async def test_a_hold_posted_partly_gives_the_rest_back_to_the_available_balance(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK

    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 120)]) is PostResult.OK

    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (880, 880)
    assert (await find(db, "preauth:1")).posted_fen == 120
    await assert_check_ok(db)


async def test_a_hold_posted_with_a_fee_transfer_counts_only_what_its_account_is_debited(db, book):
    fees = await create_account(db, AccountKind.FEE_INCOME, "fees:h", debits_must_not_exceed_credits=False)
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK

    transfers = [held(book, 300), Transfer(book.merchant, fees, 2, "merchant_discount")]
    assert await post_hold(db, "completion:1", "preauth:1", transfers) is PostResult.OK

    assert await balance_fen(db, book.merchant) == 298
    assert await balance_fen(db, fees) == 2
    assert (await find(db, "preauth:1")).posted_fen == 300
    await assert_check_ok(db)


async def test_a_hold_posted_over_its_amount_needs_a_limit_and_the_excess_from_the_available_balance(db, book):
    assert await hold(db, "preauth:1", held(book, 800), None) is PostResult.OK
    assert await post(db, "purchase:1", [Transfer(book.card, book.merchant, 150, "purchase")]) is PostResult.OK
    # balance 850, held 800, available 50.

    assert await post_hold(db, "completion:a", "preauth:1", [held(book, 801)]) is PostResult.EXCEEDS_HOLD_AMOUNT
    assert await post_hold(db, "completion:b", "preauth:1", [held(book, 851)], amount_max_fen=920) \
        is PostResult.EXCEEDS_CREDITS
    assert await post_hold(db, "completion:c", "preauth:1", [held(book, 921)], amount_max_fen=920) \
        is PostResult.EXCEEDS_HOLD_AMOUNT
    assert (await find(db, "preauth:1")).status == "pending"
    assert await available_fen(db, book.card) == 50
    await assert_check_ok(db)

    assert await post_hold(db, "completion:d", "preauth:1", [held(book, 850)], amount_max_fen=920) is PostResult.OK
    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (0, 0)
    await assert_check_ok(db)


async def test_a_hold_is_posted_once_and_its_post_repeated_under_its_key_moves_nothing_more(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.OK
    state = await ledger_state(db)

    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.EXISTS
    assert await post_hold(db, "completion:2", "preauth:1", [held(book, 300)]) is PostResult.HOLD_ALREADY_POSTED
    assert await void_hold(db, "cancel:1", "preauth:1") is PostResult.HOLD_ALREADY_POSTED
    assert await ledger_state(db) == state
    await assert_check_ok(db)


async def test_posting_or_voiding_a_hold_nobody_placed_is_hold_not_found(db, book):
    assert await post_hold(db, "completion:1", "preauth:none", [held(book, 300)]) is PostResult.HOLD_NOT_FOUND
    assert await void_hold(db, "cancel:1", "preauth:none") is PostResult.HOLD_NOT_FOUND
    await assert_check_ok(db)


async def test_a_posted_hold_reversed_gives_the_money_back_and_the_hold_stays_posted(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.OK

    assert await reverse(db, "completion:1:reversal", "completion:1") is PostResult.OK

    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (1000, 1000)
    assert (await find(db, "preauth:1")).status == "posted"
    await assert_check_ok(db)


# --- voiding and expiring it -----------------------------------------------------------------


async def test_a_hold_voided_gives_its_reservation_back_once(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK

    assert await void_hold(db, "cancel:1", "preauth:1") is PostResult.OK
    assert await void_hold(db, "cancel:1", "preauth:1") is PostResult.EXISTS
    assert await void_hold(db, "cancel:2", "preauth:1") is PostResult.HOLD_ALREADY_VOIDED
    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.HOLD_ALREADY_VOIDED

    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (1000, 1000)
    assert (await find(db, "preauth:1")).status == "voided"
    await assert_check_ok(db)


async def test_holds_expire_at_their_time_and_not_before_and_only_once(db, book):
    assert await hold(db, "preauth:1", held(book, 100), T0 + DAY) is PostResult.OK
    assert await hold(db, "preauth:2", held(book, 200), T0 + 2 * DAY) is PostResult.OK
    assert await hold(db, "preauth:3", held(book, 300), None) is PostResult.OK

    assert await expire_due(db, T0 + DAY - timedelta(microseconds=1)) == []
    assert await expire_due(db, T0 + DAY) == ["preauth:1"]
    assert await expire_due(db, T0 + DAY) == []
    assert await available_fen(db, book.card) == 500
    assert await expire_due(db, T0 + 1000 * DAY) == ["preauth:2"]
    assert await available_fen(db, book.card) == 700
    assert [(await find(db, key)).status for key in ("preauth:1", "preauth:2", "preauth:3")] == \
        ["expired", "expired", "pending"]
    await assert_check_ok(db)


async def test_a_hold_found_after_its_time_is_expired_then_though_nothing_expired_it_before(db, book):
    assert await hold(db, "preauth:1", held(book, 300), T0 + DAY) is PostResult.OK

    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)], now=T0 + DAY) \
        is PostResult.HOLD_EXPIRED
    assert await void_hold(db, "cancel:1", "preauth:1", now=T0 + 2 * DAY) is PostResult.HOLD_EXPIRED
    assert await expire_due(db, T0 + 3 * DAY) == []

    assert (await balance_fen(db, book.card), await available_fen(db, book.card)) == (1000, 1000)
    assert (await find(db, "preauth:1")).status == "expired"
    await assert_check_ok(db)


async def test_a_hold_posted_before_its_time_is_not_expired_later(db, book):
    assert await hold(db, "preauth:1", held(book, 300), T0 + DAY) is PostResult.OK
    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)], now=T0) is PostResult.OK

    assert await expire_due(db, T0 + 2 * DAY) == []
    assert await balance_fen(db, book.card) == 700
    await assert_check_ok(db)


async def test_many_gateways_expiring_at_once_expire_each_hold_once(db, db_url, book):
    for n in range(30):
        assert await hold(db, f"preauth:{n}", held(book, 10), T0 + n * timedelta(minutes=1)) is PostResult.OK
    pool = await asyncpg.create_pool(db_url, min_size=6, max_size=6)
    try:
        expired = await asyncio.gather(*(expire_due(pool, T0 + DAY, limit=7) for _ in range(12)))
    finally:
        await pool.close()

    keys = [key for batch in expired for key in batch]
    assert sorted(keys) == sorted(f"preauth:{n}" for n in range(30))
    assert await available_fen(db, book.card) == CARD_FUNDS_FEN
    await assert_check_ok(db)


# --- ledger check ----------------------------------------------------------------------------


async def test_ledger_check_names_pending_debits_that_are_not_the_sum_of_open_holds(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    await db.execute("UPDATE ledger_accounts SET debits_pending = 299 WHERE id = $1", book.card)

    report = await check(db)

    assert not report.ok
    assert "account card:6200000000000001: pending debits 299 / credits 0, open holds say 300 / 0" in report.problems
    assert "total pending debits 299 != total pending credits 300" in report.problems


async def test_ledger_check_names_a_hold_both_posted_and_voided(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    assert await post_hold(db, "completion:1", "preauth:1", [held(book, 300)]) is PostResult.OK
    hold_id = await db.fetchval("SELECT id FROM ledger_holds")
    # A second resolution forged behind the functions' back (the unique index stops a second 'ok' one).
    await db.execute("DROP INDEX ledger_postings_resolves_hold_once")
    await db.execute("""INSERT INTO ledger_postings (idempotency_key, content_md5, result, resolves_hold_id)
                        VALUES ('forged:void', 'x', 'ok', $1)""", hold_id)

    report = await check(db)

    assert f"hold {hold_id} (posted) is resolved by 2 postings" in report.problems


async def test_a_second_successful_resolution_of_a_hold_is_refused_by_the_database(db, book):
    assert await hold(db, "preauth:1", held(book, 300), None) is PostResult.OK
    assert await void_hold(db, "cancel:1", "preauth:1") is PostResult.OK
    hold_id = await db.fetchval("SELECT id FROM ledger_holds")
    try:
        await db.execute("""INSERT INTO ledger_postings (idempotency_key, content_md5, result, resolves_hold_id)
                            VALUES ('forged:post', 'x', 'ok', $1)""", hold_id)
    except asyncpg.UniqueViolationError:
        pass
    else:
        raise AssertionError("a hold resolved twice was accepted")


async def test_the_database_refuses_pending_debits_beyond_the_balance_of_a_guarded_account(db, book):
    try:
        await db.execute("UPDATE ledger_accounts SET debits_pending = $2 WHERE id = $1", book.card,
                         CARD_FUNDS_FEN + 1)
    except asyncpg.CheckViolationError:
        pass
    else:
        raise AssertionError("an overdrawn available balance was accepted")


# --- concurrency -----------------------------------------------------------------------------


async def test_twenty_concurrent_completions_and_purchases_against_a_held_card_never_overdraw_it(
        db, book, connections):
    # 1000 fen: a hold of 600, then ten posts of it over by up to 10 % racing ten purchases of 100.
    assert await hold(db, "preauth:1", held(book, 600), None) is PostResult.OK

    async def complete(conn: asyncpg.Connection, n: int) -> PostResult:
        return await post_hold(conn, f"completion:{n}", "preauth:1", [held(book, 600 + n * 5)], amount_max_fen=660)

    async def purchase(conn: asyncpg.Connection, n: int) -> PostResult:
        return await post(conn, f"purchase:{n}", [Transfer(book.card, book.merchant, 100, "purchase")])

    results = await asyncio.gather(*(complete(connections[n], n) for n in range(10)),
                                   *(purchase(connections[10 + n], n) for n in range(10)))

    completions, purchases = results[:10], results[10:]
    posted = [n for n, result in enumerate(completions) if result is PostResult.OK]
    assert len(posted) == 1
    assert set(completions) - {PostResult.OK} <= {PostResult.HOLD_ALREADY_POSTED, PostResult.EXCEEDS_CREDITS}
    bought = purchases.count(PostResult.OK)
    assert set(purchases) <= {PostResult.OK, PostResult.EXCEEDS_CREDITS}
    spent = 600 + posted[0] * 5 + 100 * bought
    assert await balance_fen(db, book.card) == CARD_FUNDS_FEN - spent >= 0
    assert await available_fen(db, book.card) == CARD_FUNDS_FEN - spent
    assert await pending_debits_fen(db, book.card) == 0
    await assert_check_ok(db)


# --- a property: any sequence of holds, posts, voids, expiries and purchases -------------------


@dataclass
class Model:
    """What the ledger should hold after each step."""

    balance_fen: int
    holds: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # open: amount, expiry
    resolved: dict[str, str] = field(default_factory=dict)
    now: datetime = T0

    @property
    def held_fen(self) -> int:
        return sum(amount for amount, _ in self.holds.values())

    @property
    def available_fen(self) -> int:
        return self.balance_fen - self.held_fen

    def expire(self, key: str) -> None:
        del self.holds[key]
        self.resolved[key] = "expired"


AMOUNTS = st.integers(min_value=1, max_value=700)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("hold"), AMOUNTS, st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("purchase"), AMOUNTS),
    st.tuples(st.just("post"), st.integers(min_value=0, max_value=9), AMOUNTS, st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("void"), st.integers(min_value=0, max_value=9)),
    st.tuples(st.just("tick"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("refund"), AMOUNTS),
), max_size=25)


async def replay(db_url: str, steps: list[tuple]) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        run = uuid.uuid4().hex[:12]
        cash = await account_id(conn, CASH_ACCOUNT_CODE)
        card = await create_account(conn, AccountKind.CARD, f"card:{run}", debits_must_not_exceed_credits=True)
        merchant = await create_account(conn, AccountKind.MERCHANT, f"merchant:{run}",
                                        debits_must_not_exceed_credits=False)
        assert await post(conn, f"{run}:fund", [Transfer(cash, card, CARD_FUNDS_FEN, "deposit")]) is PostResult.OK
        model = Model(CARD_FUNDS_FEN)
        placed: list[str] = []
        for n, step in enumerate(steps):
            key = f"{run}:{n}"
            match step:
                case ("hold", amount, days):
                    result = await hold(conn, key, Transfer(card, merchant, amount, "preauth"), model.now + days * DAY)
                    expected = PostResult.OK if amount <= model.available_fen else PostResult.EXCEEDS_CREDITS
                    assert result is expected
                    if result is PostResult.OK:
                        placed.append(key)
                        model.holds[key] = (amount, model.now + days * DAY)
                case ("purchase", amount):
                    result = await post(conn, key, [Transfer(card, merchant, amount, "purchase")])
                    assert result is (PostResult.OK if amount <= model.available_fen else PostResult.EXCEEDS_CREDITS)
                    if result is PostResult.OK:
                        model.balance_fen -= amount
                case ("refund", amount):
                    assert await post(conn, key, [Transfer(merchant, card, amount, "refund")]) is PostResult.OK
                    model.balance_fen += amount
                case ("post", which, amount, over_pct):
                    if not placed:
                        continue
                    hold_key = placed[which % len(placed)]
                    result = await post_hold(conn, key, hold_key, [Transfer(card, merchant, amount, "completion")],
                                             amount_max_fen=None if over_pct == 0 else 10_000, now=model.now)
                    if hold_key in model.holds and model.holds[hold_key][1] <= model.now:
                        model.expire(hold_key)
                    if hold_key in model.resolved:
                        assert result is PostResult(f"hold_{model.resolved[hold_key]}" if model.resolved[hold_key]
                                                    == "expired" else f"hold_already_{model.resolved[hold_key]}")
                        continue
                    held_fen = model.holds[hold_key][0]
                    if over_pct == 0 and amount > held_fen:
                        assert result is PostResult.EXCEEDS_HOLD_AMOUNT
                    elif amount > model.available_fen + held_fen:
                        assert result is PostResult.EXCEEDS_CREDITS
                    else:
                        assert result is PostResult.OK
                        del model.holds[hold_key]
                        model.resolved[hold_key] = "posted"
                        model.balance_fen -= amount
                case ("void", which):
                    if not placed:
                        continue
                    hold_key = placed[which % len(placed)]
                    result = await void_hold(conn, key, hold_key, now=model.now)
                    if hold_key in model.holds and model.holds[hold_key][1] <= model.now:
                        model.expire(hold_key)
                    if hold_key in model.resolved:
                        status = model.resolved[hold_key]
                        assert result is PostResult("hold_expired" if status == "expired" else f"hold_already_{status}")
                    else:
                        assert result is PostResult.OK
                        del model.holds[hold_key]
                        model.resolved[hold_key] = "voided"
                case ("tick", days):
                    model.now += days * DAY
                    expired = set(await expire_due(conn, model.now))
                    due = {k for k, (_, expires_at) in model.holds.items() if expires_at <= model.now}
                    # Holds of earlier examples (other cards) may expire here too: only ours are compared.
                    assert {k for k in expired if k.startswith(run)} == due
                    for hold_key in due:
                        model.expire(hold_key)
            assert await balance_fen(conn, card) == model.balance_fen
            assert await available_fen(conn, card) == model.available_fen >= 0
            assert await pending_debits_fen(conn, card) == model.held_fen
        report = await check(conn)
        assert report.ok, report.problems
    finally:
        await conn.close()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_any_sequence_of_holds_posts_voids_expiries_and_purchases_keeps_the_available_balance_exact(
        db_url, steps):
    asyncio.run(replay(db_url, steps))

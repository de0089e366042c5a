"""The pre-authorization family (WIRE.md 9.3, 9.9) end to end over TCP with real
PostgreSQL: the hold a pre-authorization places (in 54, in 51, in card show),
its cancel, completion request and advice (over by up to 15 %), completion
void, expiry by the gateway itself, every reversal, and the checks."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.acquiring.expiry import expire_due, expire_holds
from gateway.acquiring.preauth_flows import completion_amount_max_fen
from protocol.crypto import encrypt_pin_block
from protocol.messages import SECURITY_CONTROL, Message
from sim.terminal import Terminal, balance_fen, build_request
from tests.e2e.helpers import CARD_PAN as PAN
from tests.e2e.helpers import CARD_PIN as PIN
from tests.e2e.test_refunds import refund_request


def card_request(terminal: Terminal, mti: str, processing_code: str, txn_type: str, amount_fen: int, *,
                 pin: str | None, stan: str | None = None, condition_code: str = "06", pan: str = PAN,
                 **fields) -> Message:
    """A request of the family as WIRE.md 9.1 lists it (a PIN block only when ``pin``)."""
    if pin is not None:
        fields |= {"pin_block": encrypt_pin_block(terminal.keys.pik, pin, pan), "security_control": SECURITY_CONTROL}
    return build_request(
        mti, pan=pan, processing_code=processing_code, amount=f"{amount_fen:012d}",
        stan=stan or terminal.next_stan(), entry_mode="021", condition_code=condition_code,
        terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
        txn_data=f"{txn_type}{terminal.batch:06d}000", **fields)


def preauth(terminal: Terminal, amount_fen: int, *, pin: str | None = PIN, **kw) -> Message:
    return card_request(terminal, "0100", "030000", "10", amount_fen, pin=pin, **kw)


def naming(original: Message) -> dict[str, str]:
    """38 and 61 naming a pre-authorization as most terminals do: batch and STAN zeros, its date."""
    return {"auth_id": original.auth_id, "original_txn": f"000000000000{original.local_date}"}


def cancel(terminal: Terminal, amount_fen: int, original: Message, *, pin: str | None = None, **kw) -> Message:
    return card_request(terminal, "0100", "200000", "11", amount_fen, pin=pin, **naming(original), **kw)


def completion(terminal: Terminal, amount_fen: int, original: Message, *, pin: str | None = PIN, **kw) -> Message:
    return card_request(terminal, "0200", "000000", "20", amount_fen, pin=pin, **naming(original), **kw)


def advice(terminal: Terminal, amount_fen: int, original: Message, **kw) -> Message:
    return card_request(terminal, "0220", "000000", "24", amount_fen, pin=None, **naming(original), **kw)


def completion_void(terminal: Terminal, amount_fen: int, done: Message, *, pin: str | None = None,
                    **kw) -> Message:
    return card_request(terminal, "0200", "200000", "21", amount_fen, pin=pin, rrn=done.rrn, auth_id=done.auth_id,
                        original_txn=f"{int(done.txn_data[2:8]):06d}{done.stan}{done.local_date}", **kw)


async def shown(cli) -> tuple[int, int, int]:
    card = (await cli("card", "show", PAN, "--json")).json
    return card["balance_fen"], card["available_fen"], card["holds_fen"]


async def assert_ledger_clean(cli) -> None:
    result = await cli("ledger", "check", "--json")
    assert result.code == 0, result.stdout + result.stderr


async def approved(terminal: Terminal, request: Message) -> Message:
    response = await terminal.send(request)
    assert response.response_code == "00", response.response_code
    return response.message


# -- the pre-authorization and its hold ----------------------------------------------------


async def test_a_preauth_holds_its_amount_which_54_51_and_card_show_see_and_moves_no_money(terminal, cli, db):
    m = await approved(terminal, preauth(terminal, 6000))
    assert m.mti == "0110" and len(m.rrn) == 12
    assert len(m.auth_id) == 6 and m.auth_id.isdigit()
    assert await shown(cli) == (10000, 4000, 6000)
    assert balance_fen(await terminal.balance(PAN, PIN)) == 4000
    assert (await terminal.balance(PAN, PIN)).message.balance == "1002156C000000004000"
    # 5000 the balance alone would cover; the available 4000 does not.
    assert (await terminal.purchase(PAN, PIN, 5000)).response_code == "51"
    assert (await terminal.purchase(PAN, PIN, 4000)).response_code == "00"
    assert await shown(cli) == (6000, 0, 6000)
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'preauth'") == "approved"
    await assert_ledger_clean(cli)


async def test_a_preauth_beyond_the_available_balance_gets_51_and_holds_nothing(terminal, cli):
    assert (await terminal.send(preauth(terminal, 10001))).response_code == "51"
    await approved(terminal, preauth(terminal, 7000))
    assert (await terminal.send(preauth(terminal, 3001))).response_code == "51"
    assert await shown(cli) == (10000, 3000, 7000)


async def test_a_preauth_needs_the_pin_and_the_permit_and_condition_code_06(terminal, cli, world):
    assert (await terminal.send(preauth(terminal, 100, pin=None))).response_code == "55"
    assert (await terminal.send(preauth(terminal, 100, pin="999999"))).response_code == "55"
    assert (await terminal.send(preauth(terminal, 100, condition_code="00"))).response_code == "12"
    assert (await cli("terminal", "set", world.tid, "--permit", "purchase,refund")).code == 0
    assert (await terminal.send(preauth(terminal, 100))).response_code == "58"
    assert await shown(cli) == (10000, 10000, 0)


async def test_a_preauth_repeated_gets_the_stored_answer_and_holds_once(terminal, cli):
    request = preauth(terminal, 2000)
    first = await approved(terminal, request)
    again = await approved(terminal, preauth(terminal, 2000, stan=request.stan))
    assert (first.rrn, first.auth_id) == (again.rrn, again.auth_id)
    assert await shown(cli) == (10000, 8000, 2000)


# -- completion ------------------------------------------------------------------------------


async def test_a_completion_posts_from_the_hold_with_the_preauths_auth_code_and_frees_the_rest(terminal, cli, world):
    p = await approved(terminal, preauth(terminal, 6000))
    done = await approved(terminal, completion(terminal, 4500, p))
    assert done.mti == "0210" and done.auth_id == p.auth_id and done.rrn != p.rrn
    assert await shown(cli) == (5500, 5500, 0)
    assert (await cli("merchant", "show", world.mid, "--json")).json["balance_fen"] == 4500
    await assert_ledger_clean(cli)


async def test_a_completion_over_by_15_percent_is_approved_and_one_fen_beyond_gets_64(terminal, cli):
    p = await approved(terminal, preauth(terminal, 2000))
    assert (await terminal.send(completion(terminal, 2301, p))).response_code == "64"
    assert await shown(cli) == (10000, 8000, 2000)
    await approved(terminal, completion(terminal, 2300, p))
    assert await shown(cli) == (7700, 7700, 0)
    await assert_ledger_clean(cli)


async def test_a_completion_above_the_hold_needs_the_excess_available_else_51(terminal, cli):
    p = await approved(terminal, preauth(terminal, 8000))
    assert (await terminal.purchase(PAN, PIN, 1900)).response_code == "00"  # available 100
    assert (await terminal.send(completion(terminal, 8101, p))).response_code == "51"
    assert await shown(cli) == (8100, 100, 8000)
    await approved(terminal, completion(terminal, 8100, p))
    assert await shown(cli) == (0, 0, 0)
    await assert_ledger_clean(cli)


async def test_a_completion_advice_sent_three_times_moves_money_once(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    request = advice(terminal, 3000, p)
    answers = [await terminal.send(advice(terminal, 3000, p, stan=request.stan)) for _ in range(3)]
    assert [a.response_code for a in answers] == ["00", "00", "00"]
    assert {a.message.rrn for a in answers} == {answers[0].message.rrn}
    assert answers[0].message.mti == "0230" and answers[0].message.auth_id == p.auth_id
    assert await shown(cli) == (7000, 7000, 0)
    await assert_ledger_clean(cli)


async def test_a_completion_advice_skips_the_frozen_card_but_not_25(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    await cli("card", "freeze", PAN)
    assert (await terminal.send(completion(terminal, 3000, p))).response_code == "62"
    await approved(terminal, advice(terminal, 3000, p))
    assert (await terminal.send(advice(terminal, 3000, p))).response_code == "25"  # completed already


async def test_a_second_completion_and_a_cancel_after_completion_get_25(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    await approved(terminal, completion(terminal, 3000, p))
    assert (await terminal.send(completion(terminal, 3000, p))).response_code == "25"
    assert (await terminal.send(cancel(terminal, 3000, p))).response_code == "25"
    assert await shown(cli) == (7000, 7000, 0)


async def test_a_completion_naming_another_auth_code_or_date_gets_25(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    wrong_code = completion(terminal, 3000, p)
    wrong_code.auth_id = f"{(int(p.auth_id) + 1) % 1_000_000:06d}"
    assert (await terminal.send(wrong_code)).response_code == "25"
    wrong_date = completion(terminal, 3000, p)
    wrong_date.original_txn = "000000000000" + ("0101" if p.local_date != "0101" else "0102")
    assert (await terminal.send(wrong_date)).response_code == "25"


# -- cancel ----------------------------------------------------------------------------------


async def test_a_cancel_releases_the_hold_needs_the_very_amount_and_is_final(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    assert (await terminal.send(cancel(terminal, 2999, p))).response_code == "64"
    m = await approved(terminal, cancel(terminal, 3000, p))
    assert m.mti == "0110" and m.auth_id is None
    assert await shown(cli) == (10000, 10000, 0)
    assert (await terminal.send(completion(terminal, 3000, p))).response_code == "25"
    assert (await terminal.send(cancel(terminal, 3000, p))).response_code == "25"
    await assert_ledger_clean(cli)


# -- expiry ----------------------------------------------------------------------------------


async def age_preauths(db, days: int) -> None:
    """Every pre-authorization (and its hold) made ``days`` older."""
    await db.execute("UPDATE gw_preauths SET expires_at = expires_at - make_interval(days => $1)", days)
    await db.execute("UPDATE ledger_holds SET expires_at = expires_at - make_interval(days => $1)", days)


async def test_the_gateway_expires_a_hold_after_preauth_hold_days_and_a_completion_then_gets_25(
        terminal, cli, db, gateway):
    p = await approved(terminal, preauth(terminal, 3000))
    await age_preauths(db, 29)
    assert await expire_due(gateway.services.pool) == 0  # a day left
    await age_preauths(db, 1)
    assert await expire_due(gateway.services.pool) == 1
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'preauth'") == "expired"
    assert await shown(cli) == (10000, 10000, 0)
    assert (await terminal.send(completion(terminal, 3000, p))).response_code == "25"
    assert await expire_due(gateway.services.pool) == 0
    await assert_ledger_clean(cli)


async def test_the_background_task_expires_due_holds_with_no_operator_step(terminal, cli, db, gateway):
    await approved(terminal, preauth(terminal, 3000))
    await age_preauths(db, 30)
    task = asyncio.create_task(expire_holds(gateway.services.pool, gateway.settings, interval_s=0.05))
    try:
        async with asyncio.timeout(10):
            while await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'preauth'") != "expired":
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert await shown(cli) == (10000, 10000, 0)


async def test_a_completion_after_expiry_gets_25_even_before_the_gateway_expired_it(terminal, cli, db):
    p = await approved(terminal, preauth(terminal, 3000))
    await age_preauths(db, 31)
    assert (await terminal.send(advice(terminal, 3000, p))).response_code == "25"
    assert await shown(cli) == (10000, 7000, 3000)  # until the task runs


async def test_several_gateways_expiring_at_once_expire_each_preauth_once(terminal, cli, db, db_url):
    for _ in range(6):
        await approved(terminal, preauth(terminal, 500))
    await age_preauths(db, 30)
    pools = [await asyncpg.create_pool(db_url, min_size=1, max_size=2) for _ in range(4)]

    async def gateway_rounds(pool: asyncpg.Pool) -> list[int | None]:
        """A gateway's rounds of two until one finds nothing (None: another gateway's round was on)."""
        counts: list[int | None] = []
        while counts[-1:] != [0]:
            counts.append(await expire_due(pool, limit=2))
            await asyncio.sleep(0)
        return counts

    try:
        rounds = await asyncio.gather(*(gateway_rounds(pool) for pool in pools))
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))
    assert sum(c or 0 for counts in rounds for c in counts) == 6
    assert await db.fetchval("SELECT count(*) FROM gw_transactions WHERE status = 'expired'") == 6
    assert await shown(cli) == (10000, 10000, 0)
    await assert_ledger_clean(cli)


# -- completion void -------------------------------------------------------------------------


async def test_a_completion_void_gives_the_money_back_and_opens_the_preauth_again(terminal, cli, db):
    p = await approved(terminal, preauth(terminal, 3000))
    request = completion(terminal, 2500, p)
    done = await approved(terminal, request)
    assert (await terminal.send(completion_void(terminal, 2499, done))).response_code == "64"
    await approved(terminal, completion_void(terminal, 2500, done))
    assert await shown(cli) == (10000, 7000, 3000)
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'preauth'") == "approved"
    assert (await terminal.send(completion_void(terminal, 2500, done))).response_code == "25"
    await approved(terminal, completion(terminal, 3000, p))
    assert await shown(cli) == (7000, 7000, 0)
    await assert_ledger_clean(cli)


async def test_a_completion_void_in_another_batch_gets_25(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    done = await approved(terminal, completion(terminal, 3000, p))
    assert (await terminal.settle(3000, 1)).response_code == "00"
    assert (await terminal.send(completion_void(terminal, 3000, done))).response_code == "25"


# -- reversals -------------------------------------------------------------------------------


async def test_a_reversal_of_a_preauth_releases_its_hold_and_a_repeat_moves_nothing(terminal, cli):
    request = preauth(terminal, 3000)
    p = await approved(terminal, request)
    assert (await terminal.reverse(request)).response_code == "00"
    assert (await terminal.reverse(request)).response_code == "00"
    assert await shown(cli) == (10000, 10000, 0)
    assert (await terminal.send(completion(terminal, 3000, p))).response_code == "25"
    await assert_ledger_clean(cli)


async def test_a_reversal_of_a_completed_preauth_moves_nothing(terminal, cli):
    request = preauth(terminal, 3000)
    p = await approved(terminal, request)
    await approved(terminal, completion(terminal, 3000, p))
    assert (await terminal.reverse(request)).response_code == "00"
    assert await shown(cli) == (7000, 7000, 0)


async def test_a_reversal_of_a_cancel_restores_the_hold(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    request = cancel(terminal, 3000, p)
    await approved(terminal, request)
    assert (await terminal.reverse(request)).response_code == "00"
    assert await shown(cli) == (10000, 7000, 3000)
    await approved(terminal, completion(terminal, 3000, p))
    assert await shown(cli) == (7000, 7000, 0)
    await assert_ledger_clean(cli)


@pytest.mark.parametrize("make", [completion, advice], ids=["request", "advice"])
async def test_a_reversal_of_a_completion_gives_the_money_back_and_opens_the_preauth_again(terminal, cli, make):
    p = await approved(terminal, preauth(terminal, 3000))
    request = make(terminal, 2000, p)
    await approved(terminal, request)
    assert (await terminal.reverse(request)).response_code == "00"
    assert (await terminal.reverse(request)).response_code == "00"
    assert await shown(cli) == (10000, 7000, 3000)
    await approved(terminal, completion(terminal, 3000, p))
    assert await shown(cli) == (7000, 7000, 0)
    await assert_ledger_clean(cli)


async def test_a_reversal_of_a_completion_void_makes_the_completion_stand_again(terminal, cli, db):
    p = await approved(terminal, preauth(terminal, 3000))
    done = await approved(terminal, completion(terminal, 2000, p))
    void = completion_void(terminal, 2000, done)
    await approved(terminal, void)
    assert await shown(cli) == (10000, 7000, 3000)
    assert (await terminal.reverse(void)).response_code == "00"
    assert await shown(cli) == (8000, 8000, 0)
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'completion'") == "approved"
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE kind = 'preauth'") == "completed"
    await assert_ledger_clean(cli)


async def test_a_refund_of_a_completion_is_allowed_and_its_completion_void_then_gets_25(terminal, cli):
    p = await approved(terminal, preauth(terminal, 3000))
    done = await approved(terminal, completion(terminal, 3000, p))
    assert (await terminal.send(refund_request(terminal, 1000, done))).response_code == "00"
    assert (await terminal.send(completion_void(terminal, 3000, done))).response_code == "25"
    assert await shown(cli) == (8000, 8000, 0)
    await assert_ledger_clean(cli)


# -- concurrency -----------------------------------------------------------------------------


async def test_twenty_concurrent_completions_and_purchases_against_a_held_card_never_overdraw_it(
        gateway, world, terminal, cli, db):
    p = await approved(terminal, preauth(terminal, 6000))
    terminals = []
    for _ in range(20):
        t = Terminal("127.0.0.1", gateway.server.port, world.tid, world.mid, world.tmk)
        t.keys = terminal.keys  # the same terminal on 20 connections
        terminals.append(t)

    async def complete(n: int) -> str:
        return (await terminals[n].send(completion(terminals[n], 6900, p, stan=f"{500 + n:06d}"))).response_code

    async def purchase(n: int) -> str:
        return (await terminals[n].purchase(PAN, PIN, 350, stan=f"{500 + n:06d}")).response_code

    try:
        codes = await asyncio.gather(*(complete(n) for n in range(10)), *(purchase(n) for n in range(10, 20)))
    finally:
        await asyncio.gather(*(t.close() for t in terminals))
    # 6000 held of 10000; the completions want 900 more than the hold, the purchases 3500: not all fit.
    completions, purchases = codes[:10], codes[10:]
    assert completions.count("00") <= 1 and set(completions) <= {"00", "25", "51"}
    assert set(purchases) <= {"00", "51"}
    completed_fen = 6900 * completions.count("00")
    balance, available, held = await shown(cli)
    assert balance == 10000 - completed_fen - 350 * purchases.count("00")
    assert held == (0 if completed_fen else 6000)
    assert available == balance - held >= 0
    assert available < 350 or "51" not in purchases  # a purchase refused only when it did not fit
    if not completed_fen:
        assert available < 900  # a completion refused (51) only when its excess did not fit
    assert await db.fetchval("SELECT debits_pending FROM ledger_accounts a JOIN cards c ON c.account_id = a.id") == held
    await assert_ledger_clean(cli)


def test_the_completion_limit_is_the_amount_plus_the_floor_of_its_percentage():
    assert completion_amount_max_fen(2000, 15) == 2300
    assert completion_amount_max_fen(1999, 15) == 2298  # 299.85 floored
    assert completion_amount_max_fen(1, 15) == 1
    assert completion_amount_max_fen(2000, 0) == 2000

"""The agent network's events in the daily run (gateway/jobs/agent_events.py) against a
real PostgreSQL: activation on the approval that crosses the volume, rewards per level,
deposits charged (in part when the merchant's balance is short), refunded or forfeited
and shared, service fees on the day the free days end and on the anniversary; exactly
once (reruns, two runs at once); ledger check clean, with the deposits rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gateway.jobs import agent_events, agent_run
from gateway.reports.agent_earnings import balances, earnings
from gateway.settings import Settings
from ledger.check import check
from tests.jobs.agent_world import DAY, TZ, at

NOW = datetime.now(UTC)
OFF = {"activation_volume_fen": 0, "deposit_fen": 0, "service_fee_fen": 0}


def charges(**values: int) -> Settings:
    return Settings(**(OFF | values))


async def run(db, day, settings, **kwargs):
    return await agent_run.run(db, day, TZ, now=kwargs.pop("now", NOW), settings=settings, **kwargs)


async def clean(db) -> None:
    report = await check(db)
    report.problems.extend(await agent_events.check_deposits(db))
    assert report.ok, report.problems


async def balance(db, code: str) -> int:
    return await db.fetchval("SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = $1", code)


async def bind(db, tid: str, when: datetime) -> None:
    """The terminal's binding time (the CLI binds it at the real now(); the tests' days are earlier)."""
    await db.execute("UPDATE terminals SET bound_at = $2 WHERE tid = $1", tid, when)


async def event_shares(db, kind: str) -> dict[str, int]:
    return dict(await db.fetch("SELECT agent_code, amount_fen FROM agent_event_shares WHERE kind = $1", kind))


@pytest.fixture
async def chain(network, db):
    """A (top, 49 bp) over B (51 bp), a merchant at 60 bp under B with terminal TERM0001, bound at DAY 09:00."""
    await network.agent("A", cost_bp=49, activation_reward_fen=10_000, deposit_share_fen=5_000,
                        service_fee_share_fen=2_000)
    await network.agent("B", "A", cost_bp=51, activation_reward_fen=6_000, deposit_share_fen=3_000,
                        service_fee_share_fen=1_500)
    await network.merchant("MERCHANT0000001", "B", 60, "TERM0001")
    await bind(db, "TERM0001", at(DAY, 9))
    return network


async def test_activation_on_the_approval_that_crosses_the_volume_not_before_with_rewards_per_level(db, chain):
    settings = charges(activation_volume_fen=1_000_000, activation_window_days=30)
    day2 = DAY + timedelta(days=1)
    await chain.purchase("TERM0001", 600_000, at(DAY, 10))
    totals = await run(db, DAY, settings)
    assert totals["rewards_fen"] == 0
    assert await db.fetchval("SELECT activated_at FROM terminals WHERE tid = 'TERM0001'") is None
    await chain.purchase("TERM0001", 300_000, at(day2, 11))                        # 900,000
    voided = await chain.purchase("TERM0001", 500_000, at(day2, 11, 30))           # voided: does not count
    await chain.void(voided, at(day2, 11, 45))
    await chain.purchase("TERM0001", 200_000, at(day2, 12))                        # 1,100,000: crosses
    await chain.purchase("TERM0001", 50_000, at(day2, 13))
    totals = await run(db, day2, settings)
    assert await db.fetchval("SELECT activated_at FROM terminals WHERE tid = 'TERM0001'") == at(day2, 12)
    assert await event_shares(db, "activation") == {"B": 6_000, "A": 4_000}  # each its reward less its child's
    assert totals["rewards_fen"] == 10_000
    assert (await balances(db, "B"))["reward_fen"] == 6_000 and (await balances(db, "A"))["reward_fen"] == 4_000
    # B: 9 bp of DAY's 600,000 (540) and of day2's 550,000 not voided (495), plus 6,000; A: 2 bp, plus 4,000
    assert await balance(db, "agent_profit:B") == 540 + 495 + 6_000
    assert await balance(db, "agent_profit:A") == 120 + 110 + 4_000
    rows = (await earnings(db, "B", day2, day2))["rows"]
    assert [(r["source"], r["tid"], r["amount_fen"]) for r in rows if r["source"] == "activation"] == [
        ("activation", "TERM0001", 6_000)]
    assert (await earnings(db, "B", day2, day2))["totals"]["activation"] == 6_000
    # a rerun, and a later void of the crossing day's purchases: nothing undone, nothing twice
    transfers = await db.fetchval("SELECT count(*) FROM ledger_transfers")
    assert await run(db, day2, settings) == totals
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers") == transfers
    await clean(db)


async def test_no_activation_outside_the_window_from_the_binding_day(db, chain):
    settings = charges(activation_volume_fen=1_000_000, activation_window_days=2)
    await chain.purchase("TERM0001", 900_000, at(DAY + timedelta(days=1), 10))
    await chain.purchase("TERM0001", 900_000, at(DAY + timedelta(days=2), 10))  # the 3rd local day: too late
    totals = await run(db, DAY + timedelta(days=2), settings)
    assert totals["rewards_fen"] == 0
    assert await db.fetchval("SELECT activated_at FROM terminals WHERE tid = 'TERM0001'") is None


async def test_a_deposit_is_refunded_on_the_day_the_volume_is_reached_within_the_window(db, chain):
    settings = charges(deposit_fen=9_900, deposit_refund_volume_fen=1_500_000, deposit_refund_window_days=3)
    await chain.purchase("TERM0001", 1_000_000, at(DAY, 10))    # 首刷: the merchant is credited 994,000
    totals = await run(db, DAY, settings)
    assert (totals["deposits_charged_fen"], totals["deposits_refunded_fen"]) == (9_900, 0)
    assert await balance(db, "merchant:MERCHANT0000001") == 994_000 - 9_900
    assert await balance(db, "system:deposits_held") == 9_900
    day3 = DAY + timedelta(days=2)
    await chain.purchase("TERM0001", 500_000, at(day3, 10))     # 1,500,000 on the window's last day
    assert (await run(db, day3 - timedelta(days=1), settings))["deposits_refunded_fen"] == 0
    totals = await run(db, day3, settings)
    assert (totals["deposits_charged_fen"], totals["deposits_refunded_fen"]) == (0, 9_900)
    assert await balance(db, "merchant:MERCHANT0000001") == 994_000 + 497_000
    assert await balance(db, "system:deposits_held") == 0
    assert (await run(db, day3 + timedelta(days=1), settings))["deposits_forfeited_fen"] == 0
    assert await event_shares(db, "deposit") == {}
    await clean(db)


async def test_a_deposit_is_forfeited_and_shared_the_day_after_its_window_closes(db, chain):
    settings = charges(deposit_fen=9_900, deposit_refund_volume_fen=1_500_000, deposit_refund_window_days=3)
    await chain.purchase("TERM0001", 1_000_000, at(DAY, 10))
    fee_income = await balance(db, "system:fee_income")
    last = DAY + timedelta(days=2)
    await chain.purchase("TERM0001", 400_000, at(last, 10))     # 1,400,000: short of the volume
    totals = await run(db, last, settings)
    assert totals["deposits_forfeited_fen"] == 0 and await event_shares(db, "deposit") == {}
    after = last + timedelta(days=1)
    await chain.purchase("TERM0001", 400_000, at(after, 10))    # reached, but after the window
    totals = await run(db, after, settings)
    assert (totals["deposits_forfeited_fen"], totals["deposits_refunded_fen"]) == (9_900, 0)
    assert await event_shares(db, "deposit") == {"B": 3_000, "A": 2_000}
    assert totals["deposit_shares_fen"] == 5_000
    shares_fen = (await db.fetchval("SELECT sum(shares_fen) FROM agent_run_postings"))
    # the house keeps the deposit less its shares (and the discounts less the profit shares)
    assert await balance(db, "system:fee_income") == fee_income + 2_400 + 2_400 + 9_900 - 5_000 - shares_fen
    assert await balance(db, "system:deposits_held") == 0
    rows = (await earnings(db, "A", after, after))["rows"]
    assert [(r["source"], r["amount_fen"]) for r in rows if r["source"] == "deposit"] == [("deposit", 2_000)]
    await clean(db)


async def test_a_deposit_short_of_the_merchants_balance_is_charged_in_part_and_the_rest_next_day(db, chain):
    settings = charges(deposit_fen=9_900, deposit_refund_volume_fen=100_000_000, deposit_refund_window_days=3)
    await chain.purchase("TERM0001", 5_000, at(DAY, 10))        # the merchant gets 4,970
    totals = await run(db, DAY, settings)
    assert totals["deposits_charged_fen"] == 4_970
    assert await balance(db, "merchant:MERCHANT0000001") == 0
    day2 = DAY + timedelta(days=1)
    await chain.purchase("TERM0001", 10_000, at(day2, 10))      # 9,940 more
    totals = await run(db, day2, settings)
    assert totals["deposits_charged_fen"] == 9_900 - 4_970
    assert await balance(db, "merchant:MERCHANT0000001") == 9_940 - 4_930
    assert await balance(db, "system:deposits_held") == 9_900
    assert (await run(db, day2 + timedelta(days=1), settings))["deposits_charged_fen"] == 0  # nothing more due
    forfeited = await run(db, DAY + timedelta(days=3), settings)
    assert forfeited["deposits_forfeited_fen"] == 9_900 and forfeited["deposit_shares_fen"] == 5_000
    await clean(db)


async def test_a_deposit_never_fully_charged_is_forfeited_unshared(db, chain):
    settings = charges(deposit_fen=9_900, deposit_refund_volume_fen=100_000_000, deposit_refund_window_days=1)
    await chain.purchase("TERM0001", 5_000, at(DAY, 10))
    assert (await run(db, DAY, settings))["deposits_charged_fen"] == 4_970
    totals = await run(db, DAY + timedelta(days=1), settings)
    assert (totals["deposits_forfeited_fen"], totals["deposit_shares_fen"]) == (4_970, 0)
    await chain.purchase("TERM0001", 100_000, at(DAY + timedelta(days=2), 10))
    assert (await run(db, DAY + timedelta(days=2), settings))["deposits_charged_fen"] == 0  # settled: no more
    await clean(db)


async def test_a_service_fee_is_charged_when_the_free_days_end_then_on_the_anniversary(db, chain):
    settings = charges(service_fee_fen=4_800, service_fee_free_days=30)
    await bind(db, "TERM0001", at(DAY - timedelta(days=30), 9))  # free through DAY - 1; due on DAY
    await chain.purchase("TERM0001", 1_000_000, at(DAY - timedelta(days=1), 10))
    totals = await run(db, DAY - timedelta(days=1), settings)
    assert totals["service_fees_fen"] == 0
    totals = await run(db, DAY, settings)
    assert (totals["service_fees_fen"], totals["service_fee_shares_fen"]) == (4_800, 2_000)
    assert await event_shares(db, "service_fee") == {"B": 1_500, "A": 500}
    assert await balance(db, "merchant:MERCHANT0000001") == 994_000 - 4_800
    year = DAY + timedelta(days=365)
    # the year in between: mark its days run (nothing happened in them), as its runs would have
    await db.execute(
        """INSERT INTO agent_runs (day, final, started_at, actor)
           SELECT d::date, true, now(), 'test' FROM generate_series($1::date, $2::date, interval '1 day') d""",
        DAY + timedelta(days=1), year - timedelta(days=2))
    later = at(year + timedelta(days=1))
    assert (await run(db, year - timedelta(days=1), settings, now=later))["service_fees_fen"] == 0
    totals = await run(db, year, settings, now=later)
    assert totals["service_fees_fen"] == 4_800
    assert await db.fetchval("SELECT count(*) FROM agent_service_fees WHERE tid = 'TERM0001'") == 2
    assert (await run(db, year, settings, now=later))["service_fees_fen"] == 4_800  # a rerun: charged once
    assert await balance(db, "merchant:MERCHANT0000001") == 994_000 - 2 * 4_800
    await clean(db)


async def test_pre_network_terminals_pay_no_deposit_and_no_fee(db, chain):
    await db.execute("UPDATE terminals SET pre_network = true, activated_at = bound_at WHERE tid = 'TERM0001'")
    settings = charges(deposit_fen=9_900, service_fee_fen=4_800, service_fee_free_days=0)
    await chain.purchase("TERM0001", 1_000_000, at(DAY, 10))
    totals = await run(db, DAY, settings)
    assert (totals["deposits_charged_fen"], totals["service_fees_fen"], totals["rewards_fen"]) == (0, 0, 0)


async def test_two_runs_at_once_charge_a_deposit_once(db, db_url, chain):
    settings = charges(deposit_fen=9_900, activation_volume_fen=500_000, service_fee_fen=4_800,
                       service_fee_free_days=0)
    await chain.purchase("TERM0001", 1_000_000, at(DAY, 10))
    await agent_run.ensure_agent_accounts(db)
    conns = [await asyncpg.connect(db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(run(conns[0], DAY, settings), run(conns[1], DAY, settings),
                                       run(conns[2], DAY + timedelta(days=1), settings))
    finally:
        for conn in conns:
            await conn.close()
    assert {(r["deposits_charged_fen"], r["service_fees_fen"], r["rewards_fen"]) for r in results[:2]} == {
        (9_900, 4_800, 10_000)}
    assert await balance(db, "system:deposits_held") == 9_900
    assert await db.fetchval("SELECT count(*) FROM agent_charge_events") == 2
    await clean(db)


async def redirect(db, code: str, to_code: str, from_day) -> None:
    await db.execute("INSERT INTO agent_redirects (agent_code, to_code, from_day, set_by) VALUES ($1, $2, $3, 'test')",
                     code, to_code, from_day)


@pytest.mark.parametrize("to_code, expected", [
    ("B", {"B": 6_000 + 4_000}),   # B's subtree holds the merchant: A's reward goes to B
    ("C", {"B": 6_000}),           # C's does not: the house keeps A's reward
])
async def test_a_redirect_pays_the_rewards_to_the_descendant_whose_subtree_holds_the_merchant(
        db, chain, to_code, expected):
    await chain.agent("C", "A", cost_bp=51)
    await redirect(db, "A", to_code, DAY)
    settings = charges(activation_volume_fen=1_000_000, activation_window_days=30)
    await chain.purchase("TERM0001", 1_000_000, at(DAY, 10))
    totals = await run(db, DAY, settings)
    shares = dict(await db.fetch("SELECT recipient, sum(amount_fen)::bigint FROM agent_event_shares"
                                 " WHERE kind = 'activation' GROUP BY recipient"))
    assert shares == expected
    assert totals["rewards_fen"] == sum(expected.values())
    assert (await balances(db, "A"))["reward_fen"] == 0
    await clean(db)


async def test_posgw_ledger_check_holds_the_deposits_rule(db, chain):
    """`posgw ledger check` on the command line: clean after a deposit is charged; a deposit's
    record that disagrees with its charges (tampered) is named, exit 1."""
    await chain.purchase("TERM0001", 100_000, at(DAY, 10))
    await run(db, DAY, charges(deposit_fen=9_900))
    assert (await chain.cli("ledger", "check", "--json")).code == 0
    await db.execute("UPDATE agent_deposits SET charged_fen = charged_fen - 1 WHERE tid = 'TERM0001'")
    result = await chain.cli("ledger", "check", "--json")
    assert result.code == 1 and "deposit of TERM0001" in result.stdout + result.stderr

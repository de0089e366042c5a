"""The agent network's daily run (gateway/jobs/agent_run.py) against a real
PostgreSQL: the worked examples of CLI.md's Shares rule, clawbacks pro rata and
receivables netted, exactly once (reruns, concurrent runs, a run killed half-way),
and a property test over random hierarchies, policies and days."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.jobs import agent_run
from gateway.reports.agent_earnings import earnings
from ledger.check import check
from tests.jobs.agent_world import DAY, NO_CHARGES, TZ, at

NOW = datetime.now(UTC)


async def run(db, day=DAY, **kwargs):
    return await agent_run.run(db, day, TZ, now=kwargs.pop("now", NOW), settings=kwargs.pop("settings", NO_CHARGES),
                               **kwargs)


async def shares_by_agent(db, day=DAY) -> dict[str, int]:
    return dict(await db.fetch(
        """SELECT s.agent_code, sum(s.share_fen)::bigint FROM agent_shares s
             JOIN agent_share_txns t ON t.txn_id = s.txn_id WHERE t.day = $1 GROUP BY 1""", day))


async def profit(db, code: str) -> int:
    return (await earnings(db, code, DAY, DAY))["profit_fen"]


async def assert_ledger_clean(db) -> None:
    report = await check(db)
    assert report.ok, report.problems


@pytest.fixture
async def two_levels(network):
    """CLI.md's worked example: a merchant at 60 bp under B (51 bp) under A (49 bp)."""
    await network.agent("A", cost_bp=49)
    await network.agent("B", "A", cost_bp=51)
    await network.merchant("MERCHANT0000001", "B", 60, "TERM0001")
    return network


async def test_worked_example_10000_yuan_at_60_bp_under_51_and_49_bp(db, two_levels):
    await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    totals = await run(db)
    assert totals["discount_fen"] == 6000
    assert await shares_by_agent(db) == {"B": 900, "A": 200}
    assert totals["shares_fen"] == 1100
    assert totals["house_fen"] == 6000 - 1100
    assert totals["clawbacks_fen"] == 0 and totals["receivables_netted_fen"] == 0
    assert await profit(db, "B") == 900 and await profit(db, "A") == 200
    fee_income = await db.fetchval(
        "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = 'system:fee_income'")
    assert fee_income == 4900
    await assert_ledger_clean(db)


async def test_odd_amounts_round_down_per_level_and_the_house_keeps_the_remainder(db, two_levels):
    # 12,345 fen: discount round(74.07) = 74; B floor(12345 x 9 / 10,000) = 11; A floor(12345 x 2 / 10,000) = 2
    await two_levels.purchase("TERM0001", 12_345, at(DAY))
    await two_levels.purchase("TERM0001", 99, at(DAY))  # discount 1 (0.594 rounded), B 0, A 0
    totals = await run(db)
    assert totals["discount_fen"] == 74 + 1
    assert await shares_by_agent(db) == {"B": 11, "A": 2}
    assert totals["house_fen"] == 75 - 13


async def test_share_pct_85_and_a_margin_of_0_earns_nothing(db, network):
    await network.agent("TOP", cost_bp=50)
    await network.agent("MID", "TOP", cost_bp=50)                 # margin 0 above LOW's 50... (see below)
    await network.agent("LOW", "MID", cost_bp=50, share_pct=85)   # margin 60 - 50 = 10, paid 85 %
    await network.merchant("MERCHANT0000001", "LOW", 60, "TERM0001")
    await network.purchase("TERM0001", 1_000_001, at(DAY))
    totals = await run(db)
    # LOW: floor(1,000,001 x 10 x 85 / 1,000,000) = 850; MID and TOP: margin 0
    assert await shares_by_agent(db) == {"LOW": 850}
    assert totals["discount_fen"] == 6000 and totals["house_fen"] == 5150


async def test_an_agent_without_cost_earns_nothing_and_its_parent_takes_the_margin_from_its_child(db, network):
    await network.agent("TOP", cost_bp=40)
    await network.agent("MID", "TOP")                # no cost_bp
    await network.agent("LOW", "MID", cost_bp=50)
    await network.merchant("MERCHANT0000001", "LOW", 60, "TERM0001")
    await network.purchase("TERM0001", 1_000_000, at(DAY))
    await run(db)
    assert await shares_by_agent(db) == {"LOW": 1000, "TOP": 1000}


async def test_a_rerun_and_a_run_of_a_later_day_post_nothing_twice(db, two_levels):
    await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    first = await run(db)
    transfers = await db.fetchval("SELECT count(*) FROM ledger_transfers")
    assert await run(db) == first
    await run(db, DAY + timedelta(days=1))
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers") == transfers
    assert await profit(db, "B") == 900


async def test_a_run_so_far_then_the_days_end_posts_only_what_came_after(db, two_levels):
    await two_levels.purchase("TERM0001", 1_000_000, at(DAY, 9))
    early = await run(db, now=at(DAY, 10), so_far=True)
    assert early["shares_fen"] == 1100
    await two_levels.purchase("TERM0001", 500_000, at(DAY, 11))
    later = await run(db)
    assert later["shares_fen"] == 1100 + 550 and later["discount_fen"] == 9000
    assert await profit(db, "B") == 900 + 450


async def test_a_day_not_over_is_refused_without_so_far(db, two_levels):
    with pytest.raises(agent_run.DayNotOver):
        await run(db, now=at(DAY, 23))
    with pytest.raises(agent_run.DayNotOver):
        await run(db, now=at(DAY - timedelta(days=1), 23), so_far=True)


async def test_a_run_of_a_day_first_runs_the_earlier_days_not_yet_run(db, two_levels):
    await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    await two_levels.purchase("TERM0001", 2_000_000, at(DAY + timedelta(days=2)))
    totals = await run(db, DAY + timedelta(days=2))
    assert totals["shares_fen"] == 2200
    assert (await agent_run.day_totals(db, DAY))["shares_fen"] == 1100
    assert await profit(db, "B") == 2700


async def test_a_void_the_next_day_claws_back_exactly_the_shares(db, two_levels):
    sale = await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    assert (await run(db))["shares_fen"] == 1100
    await two_levels.void(sale, at(DAY + timedelta(days=1)))
    next_day = await run(db, DAY + timedelta(days=1))
    assert next_day["clawbacks_fen"] == 1100 and next_day["shares_fen"] == 0
    assert await profit(db, "B") == 0 and await profit(db, "A") == 0
    rows = (await earnings(db, "B", DAY, DAY + timedelta(days=1)))["rows"]
    assert [(r["date"], r["source"], r["volume_fen"], r["amount_fen"]) for r in rows] == [
        (DAY.isoformat(), "share", 1_000_000, 900),
        ((DAY + timedelta(days=1)).isoformat(), "clawback", -1_000_000, -900)]
    await assert_ledger_clean(db)


async def test_a_reversal_and_the_reversal_of_a_void_claw_back_and_share_again(db, two_levels):
    kept = await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    reversed_sale = await two_levels.purchase("TERM0001", 300_000, at(DAY))
    await run(db)
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    await two_levels.reverse(reversed_sale, "000000", at(day2))
    void = await two_levels.void(kept, at(day2))
    assert (await run(db, day2))["clawbacks_fen"] == 1100 + 330
    await two_levels.reverse(void, "200000", at(day3))  # the purchase stands again
    assert (await run(db, day3))["clawbacks_fen"] == -1100
    assert await profit(db, "B") == 900 and await profit(db, "A") == 200
    await assert_ledger_clean(db)


async def test_a_clawback_is_taken_from_the_profit_then_owed_and_what_is_owed_netted_from_later_credits():
    movement = agent_run.AgentMovement("X", shares_fen=0, clawbacks_fen=7)
    movement.settle(profit_fen=5, owed_fen=0)
    assert (movement.clawed_from_profit_fen, movement.receivable_fen, movement.netted_fen) == (5, 2, 0)
    later = agent_run.AgentMovement("X", shares_fen=10)
    later.settle(profit_fen=0, owed_fen=2)
    assert (later.clawed_from_profit_fen, later.receivable_fen, later.netted_fen) == (0, 0, 2)


async def test_partial_cancellations_claw_back_pro_rata_of_the_cumulative_amount(db, two_levels):
    """Refunds (to come) plug in as one more branch of agent_cancellations; here a test's own
    branch stands in for them, with refund rows as the engine will record them."""
    definition = (await db.fetchval("SELECT pg_get_viewdef('agent_cancellations')")).rstrip().rstrip(";")
    await db.execute(f"""CREATE OR REPLACE VIEW agent_cancellations AS {definition}
                         UNION ALL
                         SELECT r.id, r.original_id, r.created_at, r.amount_fen FROM gw_transactions r
                          WHERE r.kind = 'refund' AND r.response_code = '00'""")
    sale = await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    await run(db)
    clawed = []
    for n, amount in enumerate((333_333, 333_333, 333_334), start=1):
        day = DAY + timedelta(days=n)
        await db.execute(
            """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, content_hash, response, response_code,
                                            status, amount_fen, rrn, local_date, original_id, created_at)
               VALUES ('TERM0001', 1, $1, '0220', 'refund', 'r', '{}', '00', 'approved', $2, $1, '1102', $3, $4)""",
            f"{900 + n:06d}", amount, sale.id, at(day))
        await run(db, day)
        clawed.append(dict(await db.fetch(
            """SELECT c.agent_code, c.clawback_fen FROM agent_clawbacks c
                 JOIN agent_cancel_events e ON e.event_id = c.event_id WHERE e.day = $1""", day)))
    # floor(share x cumulative / amount) less what was clawed: B 299, 300, 301; A 66, 67, 67
    assert clawed == [{"B": 299, "A": 66}, {"B": 300, "A": 67}, {"B": 301, "A": 67}]
    assert await profit(db, "B") == 0 and await profit(db, "A") == 0
    await assert_ledger_clean(db)


async def test_a_clawback_beyond_the_profit_balance_leaves_a_receivable_netted_from_the_next_shares(
        db, two_levels):
    sale = await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    await run(db)
    # B's profit leaves (a withdrawal, built elsewhere): 800 of its 900 paid out.
    accounts = await db.fetchrow("SELECT profit_account_id FROM agent_accounts WHERE agent_code = 'B'")
    cash = await db.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:cash'")
    await db.fetchval(
        """SELECT ledger_post('test-withdrawal', jsonb_build_array(jsonb_build_object(
               'debit', $1::bigint, 'credit', $2::bigint, 'amount', 800, 'code', 'withdrawal')))""",
        accounts["profit_account_id"], cash)
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    await two_levels.void(sale, at(day2))
    totals2 = await run(db, day2)
    assert totals2["clawbacks_fen"] == 1100 and totals2["receivables_fen"] == 800
    b = await earnings(db, "B", day2, day2)
    assert (b["profit_fen"], b["receivable_fen"]) == (0, 800)
    await two_levels.purchase("TERM0001", 500_000, at(day3))  # B earns 450, A 100
    totals3 = await run(db, day3)
    assert totals3["receivables_netted_fen"] == 450
    b = await earnings(db, "B", day3, day3)
    assert (b["profit_fen"], b["receivable_fen"]) == (0, 350)
    await two_levels.purchase("TERM0001", 1_000_000, at(day3 + timedelta(days=1)))
    await run(db, day3 + timedelta(days=1))
    b = await earnings(db, "B", day3, day3 + timedelta(days=1))
    assert (b["profit_fen"], b["receivable_fen"]) == (900 - 350, 0)
    await assert_ledger_clean(db)


async def test_two_runs_at_once_post_once(db, db_url, two_levels):
    import asyncpg

    for n in range(20):
        await two_levels.purchase("TERM0001", 10_000 + n, at(DAY))
    conns = [await asyncpg.connect(db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(run(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert results[0] == results[1] == results[2]
    assert await db.fetchval("SELECT count(*) FROM agent_share_txns") == 20
    await assert_ledger_clean(db)


async def test_earnings_rows_totals_and_volumes(db, network):
    await network.agent("A", cost_bp=49)
    await network.agent("B", "A", cost_bp=51)
    await network.merchant("MERCHANT0000001", "B", 60, "TERM0001")
    await network.merchant("MERCHANT0000002", "A", 60, "TERM0002")
    await network.purchase("TERM0001", 1_000_000, at(DAY, 9))
    await network.purchase("TERM0002", 200_000, at(DAY, 10))
    await run(db)
    a = await earnings(db, "A", DAY, DAY)
    assert [(r["source"], r["tid"], r["mid"], r["volume_fen"], r["amount_fen"]) for r in a["rows"]] == [
        ("share", "TERM0001", "MERCHANT0000001", 1_000_000, 200),
        ("share", "TERM0002", "MERCHANT0000002", 200_000, 220)]
    assert a["totals"]["share"] == 420 and a["net_fen"] == 420 and a["profit_fen"] == 420
    assert (a["direct_volume_fen"], a["team_volume_fen"]) == (200_000, 1_200_000)
    b = await earnings(db, "B", DAY, DAY)
    assert (b["direct_volume_fen"], b["team_volume_fen"], b["net_fen"]) == (1_000_000, 1_000_000, 900)


VICTIM = """
import asyncio, sys
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo
import asyncpg
from gateway.jobs import agent_run
from gateway.settings import Settings

async def main():
    conn = await asyncpg.connect(sys.argv[1], server_settings={"application_name": "agent-run-victim"})
    await agent_run.run(conn, date.fromisoformat(sys.argv[2]), ZoneInfo("Asia/Shanghai"),
                        now=datetime.now(timezone.utc), settings=Settings(deposit_fen=0, service_fee_fen=0))

asyncio.run(main())
"""


async def all_totals(db, days) -> list[dict]:
    return [await agent_run.day_totals(db, day) for day in days]


async def balances(db) -> list[tuple]:
    return [tuple(r) for r in await db.fetch(
        "SELECT code, debits_posted, credits_posted FROM ledger_accounts WHERE kind LIKE 'agent_%' ORDER BY code")]


async def test_a_run_killed_half_way_and_run_again_gives_the_totals_of_one_clean_run(db, db_url, two_levels):
    import asyncpg

    day2 = DAY + timedelta(days=1)
    await two_levels.agent("C", "A", cost_bp=50)
    await two_levels.merchant("MERCHANT0000002", "C", 58, "TERM0002")
    for n in range(30):
        await two_levels.purchase("TERM0001", 100_000 + 3_333 * n, at(DAY))
        await two_levels.purchase("TERM0002" if n % 2 else "TERM0001", 77_777 + 1_111 * n, at(day2))
    sale = await two_levels.purchase("TERM0001", 250_000, at(DAY, 15))
    await two_levels.void(sale, at(day2))
    # One clean run, rolled back: what the killed one must come to.
    clean = db.transaction()
    await clean.start()
    await run(db, day2)
    expected = (await all_totals(db, [DAY, day2]), await balances(db))
    await clean.rollback()
    assert expected[0][1]["clawbacks_fen"] > 0 and expected[0][1]["shares_fen"] > 0

    # The victim runs DAY, then blocks in day2's postings on C's profit account, held here; it is killed there.
    await agent_run.ensure_agent_accounts(db)
    holder = await asyncpg.connect(db_url)
    hold = holder.transaction()
    await hold.start()
    await holder.execute("SELECT 1 FROM ledger_accounts WHERE code = 'agent_profit:C' FOR UPDATE")
    victim = await asyncio.create_subprocess_exec(sys.executable, "-c", VICTIM, db_url, day2.isoformat(),
                                                  cwd=str(Path(__file__).resolve().parents[2]))
    try:
        for _ in range(600):
            if await db.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                        WHERE application_name = 'agent-run-victim' AND wait_event_type = 'Lock'"""):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the run never reached day2's postings")
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
        await hold.rollback()
        await holder.close()
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agent-run-victim'")
    assert victim.returncode == -signal.SIGKILL
    assert (await agent_run.day_totals(db, DAY))["shares_fen"] == expected[0][0]["shares_fen"]  # DAY committed
    assert await db.fetchval("SELECT count(*) FROM agent_share_txns WHERE day = $1", day2) == 0  # day2 did not
    await run(db, day2)
    assert (await all_totals(db, [DAY, day2]), await balances(db)) == expected
    await assert_ledger_clean(db)


async def test_the_scheduler_runs_yesterday_once_across_gateways_after_its_grace(db, db_url, settings, two_levels):
    import asyncpg

    await two_levels.purchase("TERM0001", 1_000_000, at(DAY))
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=4)
    try:
        too_soon = at(DAY + timedelta(days=1), 0) + timedelta(seconds=agent_run.RUN_GRACE_S - 1)
        await agent_run.run_due_days(pool, settings, now=too_soon)  # runs the day before DAY, not DAY
        assert not await db.fetchval("SELECT EXISTS (SELECT 1 FROM agent_runs WHERE day = $1)", DAY)
        due = at(DAY + timedelta(days=1), 0) + timedelta(seconds=agent_run.RUN_GRACE_S)
        results = await asyncio.gather(*(agent_run.run_due_days(pool, settings, now=due) for _ in range(3)))
        assert [r["shares_fen"] for r in results if r is not None] == [1100]
        assert await db.fetchval("SELECT count(*) FROM agent_runs WHERE day = $1 AND final", DAY) == 1
        assert await agent_run.run_due_days(pool, settings, now=due + timedelta(hours=1)) is None
    finally:
        await pool.close()


async def test_declined_purchases_are_not_shared(db, two_levels):
    await two_levels.declined_purchase("TERM0001", "000777", 1_000_000, at(DAY))
    await two_levels.purchase("TERM0001", 100_000, at(DAY))
    totals = await run(db)
    assert (totals["discount_fen"], totals["shares_fen"]) == (600, 110)
    assert await db.fetchval("SELECT count(*) FROM agent_share_txns") == 1

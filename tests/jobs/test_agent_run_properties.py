"""Property test of the agent network's run (hypothesis) over random hierarchies,
policies and days of purchases, voids, reversals and reversed voids: every share is
the one-floor rule's (a plain Python model of CLI.md's Shares rule), no share is
negative, the shares and the house's part equal each day's discounts exactly, each
agent's earnings net of clawbacks are floor(share x net cancelled / amount), a rerun
posts nothing, and the ledger check is clean. Each example runs in a transaction of
its own, rolled back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.policies import set_policy
from gateway.jobs import agent_run
from ledger.check import check
from ledger.postings import basis_points_fen
from tests.jobs.agent_world import DAY, TZ, Network, at

DAYS = 3
CANCELS = (None, "void", "reverse", "void_reversed")


@st.composite
def worlds(draw):
    agents = []  # (parent index or None, cost_bp or None, share_pct)
    for n in range(draw(st.integers(1, 6))):  # mostly chains (the parent the agent added before), some trees
        parent = draw(st.sampled_from([n - 1, n - 1, None]) | st.integers(0, n - 1)) if n else None
        parent_cost = agents[parent][1] if parent is not None else None
        cost = None if draw(st.integers(0, 5)) == 0 else (parent_cost or 0) + draw(st.integers(0, 15))
        agents.append((parent, cost, draw(st.sampled_from([100, 100, 100, 85, 50, 0]))))
    merchants = [(draw(st.integers(0, len(agents) - 1)), draw(st.sampled_from([0, 60]) | st.integers(30, 150)))
                 for _ in range(draw(st.integers(1, 3)))]
    sales = draw(st.lists(st.tuples(st.integers(0, len(merchants) - 1), st.integers(1, 3_000_000),
                                    st.integers(0, DAYS - 1), st.sampled_from(CANCELS), st.integers(0, DAYS - 1)),
                          max_size=10))
    runs = draw(st.lists(st.booleans(), min_size=DAYS, max_size=DAYS))  # run day d right after it, or not
    return agents, merchants, sales, runs


def model_shares(mdr_bp: int, amount: int, discount: int, chain: list[tuple[str, int | None, int]]) -> dict:
    """CLI.md's rule, walking up: margin = max(0, r - cost), r = min(r, cost), floor per level."""
    r, shares = min(mdr_bp, ((discount + 1) * 10_000 - 1) // amount), {}
    for code, cost, pct in chain:
        if cost is None:
            continue
        margin, r = max(0, r - cost), min(r, cost)
        if amount * margin * pct // 1_000_000 > 0:
            shares[code] = amount * margin * pct // 1_000_000
    return shares


async def add_agent(db: asyncpg.Connection, code: str, parent: str | None) -> None:
    ids = [await db.fetchval("INSERT INTO ledger_accounts (kind, code) VALUES ($1, $2) RETURNING id", kind,
                             f"{kind}:{code}") for kind in ("agent_float", "commission")]
    await db.execute("INSERT INTO agents (code, name, parent_code, float_account_id, commission_account_id)"
                     " VALUES ($1, $1, $2, $3, $4)", code, parent, *ids)


async def add_merchant(db: asyncpg.Connection, n: int, agent: str, mdr_bp: int) -> str:
    mid, tid = f"MERCHANT{n:07d}", f"TERM{n:04d}"
    account = await db.fetchval("INSERT INTO ledger_accounts (kind, code) VALUES ('merchant', $1) RETURNING id", mid)
    await db.execute("INSERT INTO merchants (mid, name, agent_code, mdr_bp, account_id) VALUES ($1, $1, $2, $3, $4)",
                     mid, agent, mdr_bp, account)
    await db.execute("INSERT INTO terminals (tid, mid, tmk_lmk, tmk_kcv) VALUES ($1, $2, '\\x00', '\\x00')", tid, mid)
    return tid


async def example(db_url: str, world) -> None:
    agents, merchants, sales, runs = world
    db = await asyncpg.connect(db_url)
    tx = db.transaction()
    await tx.start()
    try:
        await check_example(db, agents, merchants, sales, runs)
    finally:
        await tx.rollback()
        await db.close()


async def check_example(db, agents, merchants, sales, runs) -> None:
    codes = [f"AG{n}" for n in range(len(agents))]
    for n, (parent, cost, pct) in enumerate(agents):
        await add_agent(db, codes[n], codes[parent] if parent is not None else None)
        await set_policy(db, codes[n], {"share_pct": pct} | ({"cost_bp": cost} if cost is not None else {}),
                         DAY - timedelta(days=1), "test")
    tids = [await add_merchant(db, n, codes[agent], mdr) for n, (agent, mdr) in enumerate(merchants)]
    cash = await db.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:cash'")
    card_account = await db.fetchval("INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)"
                                     " VALUES ('card', 'card:test', true) RETURNING id")
    await db.fetchval("SELECT ledger_post('fund', jsonb_build_array(jsonb_build_object('debit', $1::bigint,"
                      " 'credit', $2::bigint, 'amount', 10000000000, 'code', 'fund')))", cash, card_account)
    card = await db.fetchrow("INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)"
                             " VALUES ('\\x01', '\\x00', '622202******0000', '\\x00', '3012', $1)"
                             " RETURNING id, account_id", card_account)
    net = Network(None, db, card)

    def chain_of(agent: int) -> list[tuple[str, int | None, int]]:
        out = []
        while agent is not None:
            out.append((codes[agent], agents[agent][1], agents[agent][2]))
            agent = agents[agent][0]
        return out

    expected_net: dict[str, int] = {}
    recorded, now = [], datetime.now(UTC)
    for day in range(DAYS):
        for merchant, amount, sale_day, cancel, cancel_after in sales:
            if sale_day == day:
                sale = await net.purchase(tids[merchant], amount, at(DAY + timedelta(days=day), 10))
                recorded.append((sale, merchant, cancel, min(DAYS - 1, sale_day + cancel_after), sale_day))
        for sale, _merchant, cancel, cancel_day, _ in recorded:
            when = at(DAY + timedelta(days=day), 11)
            if cancel_day == day and cancel == "reverse":
                await net.reverse(sale, "000000", when)
            elif cancel_day == day and cancel in ("void", "void_reversed"):
                void = await net.void(sale, when)
                if cancel == "void_reversed":
                    await net.reverse(void, "200000", at(DAY + timedelta(days=day), 12))
        if runs[day]:
            await agent_run.run(db, DAY + timedelta(days=day), TZ, now=now)
    last = await agent_run.run(db, DAY + timedelta(days=DAYS - 1), TZ, now=now)

    for sale, merchant, cancel, _, _ in recorded:
        agent, mdr = merchants[merchant]
        discount = basis_points_fen(sale.amount_fen, mdr)
        expected = model_shares(mdr, sale.amount_fen, discount, chain_of(agent))
        got = dict(await db.fetch("SELECT agent_code, share_fen FROM agent_shares WHERE txn_id = $1", sale.id))
        assert got == expected, (sale, expected, got)
        assert sum(got.values()) <= discount
        cancelled = cancel in ("void", "reverse")
        for code, share in expected.items():
            expected_net[code] = expected_net.get(code, 0) + share - (share if cancelled else 0)
    for day in range(DAYS):
        totals = await agent_run.day_totals(db, DAY + timedelta(days=day))
        day_discount = sum(basis_points_fen(s.amount_fen, merchants[m][1])
                           for s, m, _, _, sale_day in recorded if sale_day == day)
        assert totals["discount_fen"] == day_discount
        assert totals["shares_fen"] + totals["house_fen"] == totals["discount_fen"] and totals["house_fen"] >= 0
    assert await db.fetchval("SELECT count(*) FROM agent_share_txns") == len(recorded)
    for code in codes:
        balance = await db.fetchrow(
            """SELECT p.credits_posted - p.debits_posted AS profit, r.debits_posted - r.credits_posted AS owed
                 FROM agent_accounts x JOIN ledger_accounts p ON p.id = x.profit_account_id
                 JOIN ledger_accounts r ON r.id = x.receivable_account_id WHERE x.agent_code = $1""", code)
        assert balance["profit"] >= 0 and balance["owed"] >= 0
        assert balance["profit"] - balance["owed"] == expected_net.get(code, 0), code
    transfers = await db.fetchval("SELECT count(*) FROM ledger_transfers")
    for day in range(DAYS):
        await agent_run.run(db, DAY + timedelta(days=day), TZ, now=now)
    assert await agent_run.run(db, DAY + timedelta(days=DAYS - 1), TZ, now=now) == last
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers") == transfers
    report = await check(db)
    assert report.ok, report.problems


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
def test_random_networks_share_every_discount_exactly_once(db_url, world):
    asyncio.run(example(db_url, world))

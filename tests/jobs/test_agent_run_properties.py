"""Property test of the agent network's run (hypothesis) over random hierarchies,
policies and days of purchases, voids, reversals and reversed voids: every share is
the one-floor rule's (a plain Python model of CLI.md's Shares rule), no share is
negative, the shares and the house's part equal each day's discounts exactly, each
agent's earnings net of clawbacks are floor(share x net cancelled / amount), a rerun
posts nothing, and the ledger check is clean. With the events (random settings):
activation on the approval a model of the Activation rule names, rewards and the
shares of forfeited deposits and of fees per level (value less the largest below),
deposits refunded or forfeited as the model says, every merchant's balance what its
sales, deposits and fees leave, and the deposits rule of `ledger check`. Each example
runs in a transaction of its own, rolled back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.policies import set_policy
from gateway.jobs import agent_events, agent_run
from gateway.settings import Settings
from ledger.check import check
from ledger.postings import basis_points_fen
from tests.jobs.agent_world import DAY, TZ, Network, at

DAYS = 3
CANCELS = (None, "void", "reverse", "void_reversed")
EVENT_VALUES = ("activation_reward_fen", "deposit_share_fen", "service_fee_share_fen")


@st.composite
def charges(draw) -> dict[str, int]:
    """The events' settings, small enough that windows open and close within the days."""
    return {"activation_volume_fen": draw(st.sampled_from([0, 50_000, 1_000_000, 4_000_000])),
            "activation_window_days": draw(st.integers(1, 3)),
            "deposit_fen": draw(st.sampled_from([0, 500, 9_900])),
            "deposit_refund_volume_fen": draw(st.sampled_from([100_000, 3_000_000])),
            "deposit_refund_window_days": draw(st.integers(1, 2)),
            "service_fee_fen": draw(st.sampled_from([0, 4_800])),
            "service_fee_free_days": draw(st.integers(0, 3))}


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
    values = []  # per agent: its event values, never above its parent's
    for parent, _, _ in agents:
        values.append({name: draw(st.integers(0, values[parent][name] if parent is not None else 3_000))
                       for name in EVENT_VALUES})
    # per merchant: funded (its balance covers every charge and cancellation) or not (then no cancellations)
    funded = draw(st.lists(st.booleans(), min_size=len(merchants), max_size=len(merchants)))
    sales = [sale if funded[sale[0]] else (*sale[:3], None, sale[4]) for sale in sales]
    bound = draw(st.lists(st.integers(-1, 1), min_size=len(merchants), max_size=len(merchants)))
    return agents, merchants, sales, runs, (values, funded, bound, draw(charges()))


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
    agents, merchants, sales, runs, events = world
    db = await asyncpg.connect(db_url)
    tx = db.transaction()
    await tx.start()
    try:
        await check_example(db, agents, merchants, sales, runs, events)
    finally:
        await tx.rollback()
        await db.close()


async def check_example(db, agents, merchants, sales, runs, events) -> None:
    values, funded, bound, charge_values = events
    settings = Settings(**charge_values)
    codes = [f"AG{n}" for n in range(len(agents))]
    for n, (parent, cost, pct) in enumerate(agents):
        await add_agent(db, codes[n], codes[parent] if parent is not None else None)
        await set_policy(db, codes[n], {"share_pct": pct} | ({"cost_bp": cost} if cost is not None else {})
                         | values[n], DAY - timedelta(days=1), "test")
    tids = [await add_merchant(db, n, codes[agent], mdr) for n, (agent, mdr) in enumerate(merchants)]
    cash = await db.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:cash'")
    for n, tid in enumerate(tids):
        await db.execute("UPDATE terminals SET bound_at = $2 WHERE tid = $1", tid, at(DAY + timedelta(days=bound[n]), 9))
        if funded[n]:
            await db.fetchval(
                "SELECT ledger_post($1, jsonb_build_array(jsonb_build_object('debit', $2::bigint, 'credit',"
                " (SELECT account_id FROM merchants WHERE mid = $3), 'amount', 1000000000, 'code', 'fund')))",
                f"fund:{tid}", cash, f"MERCHANT{n:07d}")
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
            await agent_run.run(db, DAY + timedelta(days=day), TZ, now=now, settings=settings)
    last = await agent_run.run(db, DAY + timedelta(days=DAYS - 1), TZ, now=now, settings=settings)

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
    for row in await db.fetch("SELECT recipient, amount_fen FROM agent_event_shares"):
        expected_net[row["recipient"]] = expected_net.get(row["recipient"], 0) + row["amount_fen"]
    await check_events(db, merchants, recorded, tids, [chain_of(agent) for agent, _ in merchants],
                       [bound[n] for n in range(len(merchants))], funded, values, codes, charge_values)
    for code in codes:
        balance = await db.fetchrow(
            """SELECT p.credits_posted - p.debits_posted AS profit, r.debits_posted - r.credits_posted AS owed
                 FROM agent_accounts x JOIN ledger_accounts p ON p.id = x.profit_account_id
                 JOIN ledger_accounts r ON r.id = x.receivable_account_id WHERE x.agent_code = $1""", code)
        assert balance["profit"] >= 0 and balance["owed"] >= 0
        assert balance["profit"] - balance["owed"] == expected_net.get(code, 0), code
    transfers = await db.fetchval("SELECT count(*) FROM ledger_transfers")
    for day in range(DAYS):
        await agent_run.run(db, DAY + timedelta(days=day), TZ, now=now, settings=settings)
    assert await agent_run.run(db, DAY + timedelta(days=DAYS - 1), TZ, now=now, settings=settings) == last
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers") == transfers
    report = await check(db)
    report.problems.extend(await agent_events.check_deposits(db))
    assert report.ok, report.problems


def chain_split(chain: list[str], values: list[dict[str, int]], codes: list[str], name: str) -> dict[str, int]:
    """The events' rule up a chain: each agent its value less the largest below it (never below 0)."""
    out, below = {}, 0
    for code in chain:
        value = values[codes.index(code)][name]
        if value > below:
            out[code] = value - below
        below = max(below, value)
    return out


def cancelled_on(cancel: str | None, cancel_day: int) -> int | None:
    """The day a sale stopped counting (void or reversal), or None (a reversed void stands)."""
    return cancel_day if cancel in ("void", "reverse") else None


def volume_through(sales: list, first: int, day: int) -> int:
    """A terminal's net volume from day ``first`` through ``day``, as the runs record it: originals of
    those days less the cancellations of those days."""
    return (sum(s.amount_fen for s, _, _, _, sale_day in sales if first <= sale_day <= day)
            - sum(s.amount_fen for s, _, cancel, cancel_day, _ in sales
                  if (c := cancelled_on(cancel, cancel_day)) is not None and first <= c <= day))


async def check_events(db, merchants, recorded, tids, chains, bound, funded, values, codes, charges) -> None:
    """Activations, deposits and fees as the rules say (a model of each), and each merchant's balance."""
    for n, tid in enumerate(tids):
        sales = [r for r in recorded if r[0].tid == tid]
        chain = [code for code, _, _ in chains[n]]
        # Activation: the first day in the window whose volume reaches it; the approval that reached it.
        expected_at = None
        window = range(max(bound[n], 0), min(bound[n] + charges["activation_window_days"], DAYS))
        for day in window if charges["activation_volume_fen"] else ():
            todays = sorted((r for r in sales if r[4] == day), key=lambda r: r[0].id)
            total = volume_through(sales, bound[n], day)
            after = 0
            reached = []
            for sale, _, cancel, cancel_day, _ in reversed(todays):
                net = 0 if (c := cancelled_on(cancel, cancel_day)) is not None and c <= day else sale.amount_fen
                reached.append((sale, net, total - after))
                after += net
            hits = [sale for sale, net, volume in reversed(reached) if net > 0 and volume >= charges["activation_volume_fen"]]
            if hits:
                expected_at = at(DAY + timedelta(days=day), 10)
                expected_txn = hits[0].id
                break
        got = await db.fetchrow("SELECT txn_id, activated_at FROM agent_activations WHERE tid = $1", tid)
        assert (got["activated_at"] if got else None) == expected_at, (tid, got, expected_at)
        if got:
            assert got["txn_id"] == expected_txn
        rewards = dict(await db.fetch("SELECT agent_code, amount_fen FROM agent_event_shares"
                                      " WHERE kind = 'activation' AND tid = $1", tid))
        assert rewards == (chain_split(chain, values, codes, "activation_reward_fen") if got else {})
        # Deposit: opened on the first sale's day; refunded or forfeited as the window says.
        deposit = await db.fetchrow("SELECT * FROM agent_deposits WHERE tid = $1", tid)
        first = min((r[4] for r in sales), default=None)
        assert (deposit is not None) == (first is not None and charges["deposit_fen"] > 0), tid
        if deposit:
            assert deposit["first_day"] == DAY + timedelta(days=first)
            w = charges["deposit_refund_window_days"]
            refund_day = next((d for d in range(first, min(first + w, DAYS))
                               if volume_through(sales, first, d) >= charges["deposit_refund_volume_fen"]), None)
            if refund_day == first:  # refunded in the run that would have charged it: nothing charged
                assert deposit["charged_fen"] == 0
            elif funded[n]:
                assert deposit["charged_fen"] == deposit["deposit_fen"]
            status = ("refunded" if refund_day is not None else "forfeited" if first + w <= DAYS - 1 else "held")
            assert deposit["status"] == status, (tid, deposit, status)
            shares = dict(await db.fetch("SELECT agent_code, amount_fen FROM agent_event_shares"
                                         " WHERE kind = 'deposit' AND tid = $1", tid))
            full = status == "forfeited" and deposit["charged_fen"] == deposit["deposit_fen"]
            assert shares == (chain_split(chain, values, codes, "deposit_share_fen") if full else {})
        # Service fee: due free days after the binding day.
        fee = await db.fetchrow("SELECT * FROM agent_service_fees WHERE tid = $1", tid)
        due = bound[n] + charges["service_fee_free_days"]
        assert (fee is not None) == (charges["service_fee_fen"] > 0 and due <= DAYS - 1), tid
        if fee:
            assert fee["due_day"] == DAY + timedelta(days=due) and fee["period"] == 0
            shares = dict(await db.fetch("SELECT agent_code, amount_fen FROM agent_event_shares"
                                         " WHERE kind = 'service_fee' AND tid = $1", tid))
            full = fee["charged_fen"] == fee["fee_fen"]
            assert shares == (chain_split(chain, values, codes, "service_fee_share_fen") if full else {})
        # The merchant's balance: its sales' credits, less its deposit (unless refunded) and its fee.
        mdr = merchants[n][1]
        credits = sum(s.amount_fen - basis_points_fen(s.amount_fen, mdr) for s, _, cancel, _, _ in sales
                      if cancel not in ("void", "reverse"))
        kept = deposit["charged_fen"] if deposit and deposit["status"] != "refunded" else 0
        expected = (1_000_000_000 if funded[n] else 0) + credits - kept - (fee["charged_fen"] if fee else 0)
        got_balance = await db.fetchval(
            "SELECT a.credits_posted - a.debits_posted FROM merchants m JOIN ledger_accounts a ON a.id = m.account_id"
            " WHERE m.mid = $1", f"MERCHANT{n:07d}")
        assert got_balance == expected, (tid, got_balance, expected)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
def test_random_networks_share_every_discount_exactly_once(db_url, world):
    asyncio.run(example(db_url, world))

"""The agent network's events in the daily run (CLI.md rules "Activation",
"Deposits and fees", "Balances"): activations and their rewards (激活返现),
deposits (押金) charged, refunded or forfeited and shared, yearly service fees
(流量费) charged and shared. Called by gateway.jobs.agent_run.run_day once per
run, inside the day's database transaction, after the shares are posted.

Volume: a terminal's net volume of a local day (``agent_terminal_days``) is the
day's originals shared less the day's cancellations recorded, as the day's run
last saw them (rewritten by every run of the day, set-based). Windows ("within
N days": N local days, the first included) sum these rows.

Activation: a bound terminal (not ``pre_network``, not yet activated) whose
volume from its binding day through the run's day, within
``activation_window_days``, reaches ``activation_volume_fen`` (>=) is activated
at the time of the day's approval that reached it (net of its cancellations);
never undone. 0 switches activation off.

Rewards and shares up a chain (the terminal's owning agent and its ancestors):
each agent its policy value (in force on the run's day) less the largest value
below it on that chain (the owner: less 0), never below 0: per terminal they add
up to the chain's largest value. Rewards are paid by the house from the fee
income account; deposit and fee shares from the fee income account, where the
forfeited deposit and the fee went.

Deposits: opened in the run of the day of a terminal's first approved purchase
(首刷) at ``deposit_fen``; charged from the merchant's available balance as far as
it goes, the rest in later runs, until the window closes; refunded (what was
charged) in the run of the day the volume from the first day reaches
``deposit_refund_volume_fen`` within ``deposit_refund_window_days``; else
forfeited in the run of the day after the window, and shared only if fully
charged. Held in the account ``system:deposits_held``. A deposit refunded in the
run of its first day was never charged: nothing moves.

Service fees: period k of a bound terminal (not ``pre_network``) is due
``service_fee_free_days`` + 365 x k days after its binding day; charged from the
merchant's available balance as far as it goes (the rest later), and shared up
the owner's chain in the run that completes it. A merchant's balance pays its
deposits first, then its fees, oldest first.

Exactly once: one global advisory lock for the events of any day's run; every
decision is a row under a unique key (a terminal's activation, deposit, fee
period, share per agent) updated in the run's transaction with its postings,
so a rerun, two runs at once or a run killed half-way post nothing twice.

Ledger, per run: one posting (key ``agent-events:<run>:merchants``) of every
merchant's refunds, charges, fees and forfeits, summed per merchant and code, and
one (``agent-events:<run>:agents``) crediting each agent's profit, then netting
what it owes: two postings however many terminals (a posting each would cost the
run seconds per thousand).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from gateway.domain.policies import in_force_sql
from ledger.accounts import DEPOSITS_HELD_ACCOUNT_CODE, AccountKind
from ledger.postings import PostResult, Transfer, post_many

EVENTS_LOCK_KEY = 0x61676E65  # the events of every day's run, one at a time: they share terminals' rows

# Transfer codes.
DEPOSIT_CHARGE = "deposit_charge"
DEPOSIT_REFUND = "deposit_refund"
DEPOSIT_FORFEIT = "deposit_forfeit"
SERVICE_FEE = "service_fee"
AGENT_REWARD = "agent_reward"
AGENT_DEPOSIT_SHARE = "agent_deposit_share"
AGENT_SERVICE_FEE_SHARE = "agent_service_fee_share"
RECEIVABLE_NETTED = "agent_receivable_netted"

# Per share kind: its policy column and its transfer code.
SHARE_KINDS = {"activation": ("activation_reward_fen", AGENT_REWARD),
               "deposit": ("deposit_share_fen", AGENT_DEPOSIT_SHARE),
               "service_fee": ("service_fee_share_fen", AGENT_SERVICE_FEE_SHARE)}
FEE_PERIOD_DAYS = 365


@dataclass(frozen=True)
class Charges:
    """The settings of the network's events (CLI.md "Agent network"); 0 switches a charge off."""

    activation_volume_fen: int = 1_000_000
    activation_window_days: int = 30
    deposit_fen: int = 9_900
    deposit_refund_volume_fen: int = 15_000_000
    deposit_refund_window_days: int = 90
    service_fee_fen: int = 4_800
    service_fee_free_days: int = 30

    @classmethod
    def of(cls, settings: Any) -> Charges:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


@dataclass
class Pending:
    """A charge not yet complete: a deposit (period -1) or a fee period."""

    tid: str
    period: int
    mid: str
    owner_agent: str
    due_fen: int
    charged_fen: int = 0


@dataclass(frozen=True)
class DayBounds:
    """The run's local day: its date, its [start, end) and its time zone's name."""

    day: date
    start: datetime
    end: datetime
    tz_key: str


async def run_events(conn: asyncpg.Connection, bounds: DayBounds, run_id: int, fee_account: int,
                     charges: Charges) -> None:
    """The events of one run of the day (in the caller's transaction)."""
    day, tz_key = bounds.day, bounds.tz_key
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK_KEY)
    await conn.execute(
        """INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)
           SELECT $1, $2, true WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts WHERE code = $2)""",
        AccountKind.DEPOSIT_HELD.value, DEPOSITS_HELD_ACCOUNT_CODE)
    # The house's accounts first (the fee income account has the lowest id but cash's, and every posting
    # locks in id order): holding them, locking merchants' and agents' accounts later cannot deadlock.
    await conn.execute("SELECT 1 FROM ledger_accounts WHERE id = $1 OR code = $2 ORDER BY id FOR UPDATE",
                       fee_account, DEPOSITS_HELD_ACCOUNT_CODE)
    await record_volumes(conn, day)
    activated = await activate(conn, bounds, run_id, charges)
    await share_up(conn, "activation", day, run_id, activated)
    merchants: dict[str, list[tuple[str, int]]] = defaultdict(list)  # mid -> [(code, fen)] in posting order
    if charges.deposit_fen > 0:
        await open_deposits(conn, day, charges)
    settled = await settle_deposits(conn, day, run_id, charges, merchants)  # before charging: a refund charges no more
    await share_up(conn, "deposit", day, run_id, settled)
    if charges.service_fee_fen > 0:
        await open_fee_periods(conn, day, tz_key, charges)
    completed = await charge_pending(conn, day, run_id, merchants)
    await share_up(conn, "service_fee", day, run_id, completed)
    await post_events(conn, run_id, day, fee_account, merchants)


async def record_volumes(conn: asyncpg.Connection, day: date) -> None:
    """Each terminal's net volume of the day, as this run sees it (one statement)."""
    await conn.execute(
        """INSERT INTO agent_terminal_days (tid, day, volume_fen, originals)
           SELECT tid, $1, sum(volume_fen), count(*) FILTER (WHERE original)
             FROM (SELECT tid, amount_fen AS volume_fen, true AS original FROM agent_share_txns WHERE day = $1
                   UNION ALL
                   SELECT t.tid, -e.amount_fen, false FROM agent_cancel_events e
                     JOIN agent_share_txns t ON t.txn_id = e.original_id
                    WHERE e.day = $1) v
            GROUP BY tid
           ON CONFLICT (tid, day) DO UPDATE SET volume_fen = EXCLUDED.volume_fen, originals = EXCLUDED.originals
            WHERE (agent_terminal_days.volume_fen, agent_terminal_days.originals)
                  IS DISTINCT FROM (EXCLUDED.volume_fen, EXCLUDED.originals)""", day)


async def activate(conn: asyncpg.Connection, bounds: DayBounds, run_id: int,
                   charges: Charges) -> list[tuple[str, int, str, str]]:
    """Activate every terminal whose window's volume reached the setting today; the
    activated ones as (tid, period 0, owner agent, mid). Two statements: the terminals
    that crossed (from the day rows), then the approval that crossed, for those only."""
    if charges.activation_volume_fen <= 0:
        return []
    crossing = await conn.fetch(
        """WITH candidates AS (
               SELECT t.tid, (t.bound_at AT TIME ZONE $2)::date AS bound_day
                 FROM agent_terminal_days d JOIN terminals t ON t.tid = d.tid
                WHERE d.day = $1 AND d.originals > 0 AND t.mid IS NOT NULL AND NOT t.pre_network
                  AND t.activated_at IS NULL
                  AND (t.bound_at AT TIME ZONE $2)::date BETWEEN $1::date - ($4::int - 1) AND $1)
           SELECT c.tid, v.total_fen FROM candidates c
             CROSS JOIN LATERAL (SELECT sum(x.volume_fen)::bigint AS total_fen FROM agent_terminal_days x
                                  WHERE x.tid = c.tid AND x.day BETWEEN c.bound_day AND $1) v
            WHERE v.total_fen >= $3 ORDER BY c.tid""",
        bounds.day, bounds.tz_key, charges.activation_volume_fen, charges.activation_window_days)
    if not crossing:
        return []
    rows = await conn.fetch(
        """WITH crossing AS MATERIALIZED (
               SELECT * FROM unnest($6::text[], $7::bigint[]) AS c (tid, total_fen)),
           cancelled AS (  -- the day's originals can only have been cancelled on the day
               SELECT original_id, sum(amount_fen) AS amount_fen FROM agent_cancel_events WHERE day = $1
                GROUP BY original_id),
           originals AS (  -- the day's approvals of those terminals, each net of its cancellations so far
               SELECT o.tid, o.txn_id, o.created_at, o.amount_fen - coalesce(x.amount_fen, 0) AS net_fen
                 FROM agent_originals o LEFT JOIN cancelled x ON x.original_id = o.txn_id
                WHERE o.created_at >= $2 AND o.created_at < $3 AND o.amount_fen > 0 AND o.tid = ANY ($6::text[])),
           running AS (  -- what the day's later approvals add to the window's volume after each one
               SELECT o.*, coalesce(sum(o.net_fen) OVER (
                          PARTITION BY o.tid ORDER BY o.created_at, o.txn_id
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0) AS after_fen
                 FROM originals o),
           first AS (
               SELECT DISTINCT ON (r.tid) r.tid, r.txn_id, r.created_at, c.total_fen - r.after_fen AS reached_fen
                 FROM running r JOIN crossing c ON c.tid = r.tid
                WHERE r.net_fen > 0 AND c.total_fen - r.after_fen >= $4
                ORDER BY r.tid, r.created_at, r.txn_id),
           activated AS (
               UPDATE terminals t SET activated_at = f.created_at FROM first f
                WHERE t.tid = f.tid AND t.activated_at IS NULL
               RETURNING t.tid, t.mid, t.owner_agent, f.txn_id, f.created_at, f.reached_fen)
           INSERT INTO agent_activations (tid, day, run_id, txn_id, activated_at, mid, owner_agent, volume_fen)
           SELECT tid, $1, $5, txn_id, created_at, mid, owner_agent, reached_fen FROM activated
           RETURNING tid, mid, owner_agent""",
        bounds.day, bounds.start, bounds.end, charges.activation_volume_fen, run_id,
        [row["tid"] for row in crossing], [row["total_fen"] for row in crossing])
    return [(row["tid"], 0, row["owner_agent"], row["mid"]) for row in rows]


async def share_up(conn: asyncpg.Connection, kind: str, day: date, run_id: int,
                   items: list[tuple[str, int, str, str]]) -> None:
    """The shares of ``kind`` of each (tid, period, owner agent, mid) up the owner's chain:
    each agent its policy value less the largest below it on the chain (never below 0);
    an activation reward under a redirect in force on the day goes where the redirect says."""
    if not items:
        return
    column, _ = SHARE_KINDS[kind]
    tids, periods, owners, mids = (list(column_values) for column_values in zip(*items))
    await conn.execute(
        f"""WITH RECURSIVE chain (tid, period, mid, agent, depth) AS (
                SELECT tid, period, mid, owner, 0
                  FROM unnest($1::text[], $2::int[], $3::text[], $4::text[]) AS i (tid, period, owner, mid)
                UNION ALL
                SELECT c.tid, c.period, c.mid, a.parent_code, c.depth + 1 FROM chain c JOIN agents a ON a.code = c.agent
                 WHERE a.parent_code IS NOT NULL AND c.depth < 64),
            valued AS (
                SELECT c.tid, c.period, c.mid, c.agent, coalesce(p.{column}, 0) AS value_fen,
                       coalesce(max(coalesce(p.{column}, 0)) OVER (
                           PARTITION BY c.tid, c.period ORDER BY c.depth
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS below_fen
                  FROM chain c LEFT JOIN LATERAL {in_force_sql('c.agent', '$5::date')} p ON true),
            redirected AS (  -- the redirects in force on the day (gateway.domain.redirects)
                SELECT DISTINCT ON (agent_code) agent_code, to_code, until_day FROM agent_redirects
                 WHERE from_day <= $5 ORDER BY agent_code, from_day DESC, id DESC),
            paid AS (
                -- a reward under a redirect (CLI.md "Redirect": shares and rewards) goes to its descendant
                -- when the terminal's merchant is in that one's subtree, else to the house (no row)
                SELECT v.*, CASE WHEN $6 <> 'activation' OR r.to_code IS NULL OR r.until_day < $5 THEN v.agent
                                 WHEN EXISTS (WITH RECURSIVE up (code) AS (
                                                  SELECT m.agent_code FROM merchants m WHERE m.mid = v.mid
                                                  UNION
                                                  SELECT a.parent_code FROM up JOIN agents a ON a.code = up.code
                                                   WHERE a.parent_code IS NOT NULL)
                                              SELECT 1 FROM up WHERE up.code = r.to_code)
                                 THEN r.to_code END AS recipient
                  FROM valued v LEFT JOIN redirected r ON r.agent_code = v.agent
                 WHERE v.value_fen > v.below_fen)
            INSERT INTO agent_event_shares (kind, tid, period, agent_code, recipient, day, run_id, mid, amount_fen)
            SELECT $6, tid, period, agent, recipient, $5, $7, mid, value_fen - below_fen FROM paid
             WHERE recipient IS NOT NULL
            ON CONFLICT DO NOTHING""",
        tids, periods, owners, mids, day, kind, run_id)


async def settle_deposits(conn: asyncpg.Connection, day: date, run_id: int, charges: Charges,
                          merchants: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int, str, str]]:
    """Refund the deposits whose volume reached the setting within the window, forfeit
    those whose window closed; the forfeited deposits fully charged, to be shared."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT d.tid, d.mid, d.owner_agent, d.charged_fen, d.deposit_fen,
                      CASE WHEN $1::date >= d.first_day + $3::int THEN 'forfeited' ELSE 'refunded' END AS status
                 FROM agent_deposits d
                WHERE d.status = 'held' AND d.first_day <= $1
                  AND ($1 >= d.first_day + $3::int
                       OR (SELECT coalesce(sum(x.volume_fen), 0) FROM agent_terminal_days x
                            WHERE x.tid = d.tid AND x.day BETWEEN d.first_day AND $1) >= $2)),
           settled AS (
               UPDATE agent_deposits d SET status = due.status, settled_day = $1 FROM due
                WHERE d.tid = due.tid RETURNING due.*),
           events AS (
               INSERT INTO agent_charge_events (run_id, day, tid, mid, kind, amount_fen)
               SELECT $4, $1, tid, mid, CASE status WHEN 'refunded' THEN 'deposit_refund' ELSE 'deposit_forfeit' END,
                      charged_fen
                 FROM settled WHERE charged_fen > 0)
           SELECT * FROM settled ORDER BY tid""",
        day, charges.deposit_refund_volume_fen, charges.deposit_refund_window_days, run_id)
    shared = []
    for row in rows:
        if row["status"] == "refunded":
            merchants[row["mid"]].append((DEPOSIT_REFUND, row["charged_fen"]))
        else:
            merchants[row["mid"]].append((DEPOSIT_FORFEIT, row["charged_fen"]))
            if row["charged_fen"] == row["deposit_fen"]:
                shared.append((row["tid"], 0, row["owner_agent"], row["mid"]))
    return shared


async def open_deposits(conn: asyncpg.Connection, day: date, charges: Charges) -> None:
    """A deposit for each bound terminal (not pre_network) whose first purchase is today's."""
    await conn.execute(
        """INSERT INTO agent_deposits (tid, mid, owner_agent, first_day, deposit_fen)
           SELECT t.tid, t.mid, t.owner_agent, $1, $2
             FROM agent_terminal_days d JOIN terminals t ON t.tid = d.tid
            WHERE d.day = $1 AND d.originals > 0 AND t.mid IS NOT NULL AND NOT t.pre_network
              AND NOT EXISTS (SELECT 1 FROM agent_terminal_days e WHERE e.tid = d.tid AND e.day < $1 AND e.originals > 0)
           ON CONFLICT (tid) DO NOTHING""", day, charges.deposit_fen)


async def open_fee_periods(conn: asyncpg.Connection, day: date, tz_key: str, charges: Charges) -> None:
    """A fee row for each period of each bound terminal (not pre_network) due by today."""
    await conn.execute(
        """INSERT INTO agent_service_fees (tid, period, mid, owner_agent, due_day, fee_fen)
           SELECT t.tid, k, t.mid, t.owner_agent, b.day + $3::int + $4::int * k, $2
             FROM terminals t
            CROSS JOIN LATERAL (SELECT (t.bound_at AT TIME ZONE $5)::date AS day) b
            CROSS JOIN LATERAL generate_series(0, ($1::date - b.day - $3::int) / $4::int) k
            WHERE t.mid IS NOT NULL AND NOT t.pre_network AND b.day + $3 <= $1
           ON CONFLICT (tid, period) DO NOTHING""",
        day, charges.service_fee_fen, charges.service_fee_free_days, FEE_PERIOD_DAYS, tz_key)


async def charge_pending(conn: asyncpg.Connection, day: date, run_id: int,
                         merchants: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int, str, str]]:
    """Charge what is still due on held deposits (window open) and due fee periods, from
    each merchant's available balance (plus what this run refunds it), deposits first;
    the fee periods completed, to be shared."""
    pending = [Pending(row["tid"], row["period"], row["mid"], row["owner_agent"], row["due_fen"])
               for row in await conn.fetch(
        """SELECT * FROM (
               SELECT tid, -1 AS period, mid, owner_agent, deposit_fen - charged_fen AS due_fen, first_day AS since
                 FROM agent_deposits WHERE status = 'held' AND charged_fen < deposit_fen AND first_day <= $1
               UNION ALL
               SELECT tid, period, mid, owner_agent, fee_fen - charged_fen, due_day
                 FROM agent_service_fees WHERE charged_fen < fee_fen AND due_day <= $1) p
            ORDER BY mid, period = -1 DESC, since, tid, period""", day)]
    if not pending:
        return []
    available = await merchant_available(conn, sorted({p.mid for p in pending}))
    for mid, moves in merchants.items():
        available[mid] = available.get(mid, 0) + sum(fen for code, fen in moves if code == DEPOSIT_REFUND)
    for item in pending:
        item.charged_fen = min(item.due_fen, max(0, available.get(item.mid, 0)))
        available[item.mid] = available.get(item.mid, 0) - item.charged_fen
    charged = [p for p in pending if p.charged_fen > 0]
    deposits = [p for p in charged if p.period < 0]
    fees = [p for p in charged if p.period >= 0]
    await conn.execute(
        """UPDATE agent_deposits d SET charged_fen = d.charged_fen + c.fen
             FROM unnest($1::text[], $2::bigint[]) AS c (tid, fen) WHERE d.tid = c.tid""",
        [p.tid for p in deposits], [p.charged_fen for p in deposits])
    await conn.execute(
        """UPDATE agent_service_fees f SET charged_fen = f.charged_fen + c.fen
             FROM unnest($1::text[], $2::int[], $3::bigint[]) AS c (tid, period, fen)
            WHERE f.tid = c.tid AND f.period = c.period""",
        [p.tid for p in fees], [p.period for p in fees], [p.charged_fen for p in fees])
    await conn.execute(
        """INSERT INTO agent_charge_events (run_id, day, tid, mid, kind, period, amount_fen)
           SELECT $1, $2, tid, mid, kind, greatest(period, 0), fen
             FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[]) AS c (tid, mid, kind, period, fen)""",
        run_id, day, [p.tid for p in charged], [p.mid for p in charged],
        ["deposit_charge" if p.period < 0 else "service_fee" for p in charged], [p.period for p in charged],
        [p.charged_fen for p in charged])
    for item in charged:
        merchants[item.mid].append((DEPOSIT_CHARGE if item.period < 0 else SERVICE_FEE, item.charged_fen))
    return [(p.tid, p.period, p.owner_agent, p.mid) for p in fees if p.charged_fen == p.due_fen]


async def merchant_available(conn: asyncpg.Connection, mids: list[str]) -> dict[str, int]:
    """Each merchant's available balance (posted less pending debits), its account locked
    (in id order, after the fee income account the run already holds)."""
    rows = await conn.fetch(
        """SELECT m.mid, a.credits_posted - a.debits_posted - a.debits_pending AS available_fen
             FROM merchants m JOIN ledger_accounts a ON a.id = m.account_id
            WHERE m.mid = ANY ($1::text[]) ORDER BY a.id FOR UPDATE OF a""", mids)
    return {row["mid"]: row["available_fen"] for row in rows}


async def post_events(conn: asyncpg.Connection, run_id: int, day: date, fee_account: int,
                      merchants: dict[str, list[tuple[str, int]]]) -> None:
    """The run's events on the ledger: one posting of the merchants' movements, one of
    the agents' credits (their rewards and shares, then what they owe netted)."""
    deposits = await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = $1", DEPOSITS_HELD_ACCOUNT_CODE)
    postings: list[tuple[str, list[Transfer]]] = []
    if merchants:
        accounts = dict(await conn.fetch("SELECT mid, account_id FROM merchants WHERE mid = ANY ($1::text[])",
                                         list(merchants)))
        transfers = [t for mid in sorted(merchants)
                     for t in merchant_transfers(merchants[mid], accounts[mid], deposits, fee_account)]
        if transfers:
            postings.append((f"agent-events:{run_id}:merchants", transfers))
    credits = await conn.fetch(
        """SELECT s.recipient, s.kind, sum(s.amount_fen)::bigint AS amount_fen
             FROM agent_event_shares s WHERE s.run_id = $1 GROUP BY 1, 2 ORDER BY 1, 2""", run_id)
    by_agent: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row in credits:
        by_agent[row["recipient"]].append((SHARE_KINDS[row["kind"]][1], row["amount_fen"]))
    netted = await agent_postings(conn, run_id, fee_account, by_agent, postings)
    results = await post_many(conn, postings) if postings else []
    failed = [(key, result) for (key, _), result in zip(postings, results) if result is not PostResult.OK]
    if failed:
        raise RuntimeError(f"agent run {run_id}: event postings failed: {failed}")
    await conn.executemany(
        """INSERT INTO agent_event_postings (run_id, day, agent_code, credits_fen, netted_fen)
           VALUES ($1, $2, $3, $4, $5)""",
        [(run_id, day, code, sum(fen for _, fen in moves), netted[code]) for code, moves in by_agent.items()])


def merchant_transfers(moves: list[tuple[str, int]], merchant: int, deposits: int,
                       fee_account: int) -> list[Transfer]:
    """A merchant's movements of a run, summed per code, refunds first."""
    totals: dict[str, int] = defaultdict(int)
    for code, fen in moves:
        totals[code] += fen
    legs = {DEPOSIT_REFUND: (deposits, merchant), DEPOSIT_FORFEIT: (deposits, fee_account),
            DEPOSIT_CHARGE: (merchant, deposits), SERVICE_FEE: (merchant, fee_account)}
    return [Transfer(debit, credit, totals[code], code) for code, (debit, credit) in legs.items()
            if totals.get(code, 0) > 0]


async def agent_postings(conn: asyncpg.Connection, run_id: int, fee_account: int,
                         by_agent: dict[str, list[tuple[str, int]]],
                         postings: list[tuple[str, list[Transfer]]]) -> dict[str, int]:
    """Append the agents' posting: each credited agent's credits from the fee income
    account, then what it owes netted from its profit (as shares are). What each had netted."""
    if not by_agent:
        return {}
    accounts = {row["agent_code"]: row for row in await conn.fetch(
        """SELECT x.agent_code, x.profit_account_id, x.receivable_account_id,
                  p.credits_posted - p.debits_posted AS profit_fen, r.debits_posted - r.credits_posted AS owed_fen
             FROM agent_accounts x
             JOIN ledger_accounts p ON p.id = x.profit_account_id
             JOIN ledger_accounts r ON r.id = x.receivable_account_id
            WHERE x.agent_code = ANY ($1::text[])
            ORDER BY p.id FOR UPDATE OF p, r""", list(by_agent))}
    netted, transfers = {}, []
    for code in sorted(by_agent):
        account = accounts[code]
        credited_fen = sum(fen for _, fen in by_agent[code])
        netted[code] = min(account["owed_fen"], account["profit_fen"] + credited_fen)
        transfers += [Transfer(fee_account, account["profit_account_id"], fen, what) for what, fen in by_agent[code]]
        if netted[code] > 0:
            transfers.append(Transfer(account["profit_account_id"], account["receivable_account_id"],
                                      netted[code], RECEIVABLE_NETTED))
    postings.append((f"agent-events:{run_id}:agents", transfers))
    return netted


async def day_totals(conn: asyncpg.Connection, day: date) -> dict[str, int]:
    """The events' totals of the day so far (CLI.md `agent run`), and what they netted."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'deposit_charge'), 0)::bigint AS deposits_charged_fen,
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'deposit_refund'), 0)::bigint AS deposits_refunded_fen,
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'deposit_forfeit'), 0)::bigint
                      AS deposits_forfeited_fen,
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'service_fee'), 0)::bigint AS service_fees_fen,
                  (SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'activation'), 0)
                     FROM agent_event_shares WHERE day = $1)::bigint AS rewards_fen,
                  (SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'deposit'), 0)
                     FROM agent_event_shares WHERE day = $1)::bigint AS deposit_shares_fen,
                  (SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'service_fee'), 0)
                     FROM agent_event_shares WHERE day = $1)::bigint AS service_fee_shares_fen,
                  (SELECT coalesce(sum(netted_fen), 0) FROM agent_event_postings WHERE day = $1)::bigint AS netted_fen
             FROM agent_charge_events WHERE day = $1""", day)
    return dict(row)


async def check_deposits(conn: asyncpg.Connection) -> list[str]:
    """The deposits rule of ``posgw ledger check``: the deposits account holds exactly
    the deposits charged less refunded less forfeited, and each deposit's charged amount
    is its charges' sum (less what settled it). Returns the problems (none: ok)."""
    problems = []
    row = await conn.fetchrow(
        """SELECT (SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = $1) AS held_fen,
                  coalesce(sum(CASE kind WHEN 'deposit_charge' THEN amount_fen
                                         WHEN 'deposit_refund' THEN -amount_fen
                                         WHEN 'deposit_forfeit' THEN -amount_fen ELSE 0 END), 0)::bigint
                      AS expected_fen
             FROM agent_charge_events""", DEPOSITS_HELD_ACCOUNT_CODE)
    if (row["held_fen"] or 0) != row["expected_fen"]:
        problems.append(f"account {DEPOSITS_HELD_ACCOUNT_CODE} holds {row['held_fen']} fen, deposits charged less"
                        f" refunded less forfeited come to {row['expected_fen']} fen")
    for bad in await conn.fetch(
        """SELECT d.tid, d.status, d.charged_fen, coalesce(sum(e.amount_fen), 0) AS events_fen
             FROM agent_deposits d LEFT JOIN agent_charge_events e ON e.tid = d.tid AND e.kind = 'deposit_charge'
            GROUP BY d.tid, d.status, d.charged_fen
           HAVING d.charged_fen <> coalesce(sum(e.amount_fen), 0)
               OR (SELECT coalesce(sum(s.amount_fen), 0) FROM agent_charge_events s
                    WHERE s.tid = d.tid AND s.kind IN ('deposit_refund', 'deposit_forfeit'))
                  <> CASE d.status WHEN 'held' THEN 0 ELSE d.charged_fen END
            ORDER BY d.tid"""):
        problems.append(f"deposit of {bad['tid']} ({bad['status']}): charged {bad['charged_fen']} fen, its charges"
                        f" come to {bad['events_fen']} fen, or its refund or forfeit is not what was charged")
    return problems

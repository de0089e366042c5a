"""The agent network's daily run (CLI.md "Agent network": `agent run`; its rules:
Time, Shares, Clawbacks, Balances): profit shares (分润) of every original of a
local day up its merchant's agent chain, clawbacks of the day's cancellations,
receivables netted, all on the ledger, exactly once.

Shares, per original and level, one floor: walking up from the merchant with
r = ``mdr_bp``, each agent's margin is max(0, r - its ``cost_bp``), then
r = min(r, its ``cost_bp``); its share is floor(amount x margin x ``share_pct``
/ 1,000,000) fen, paid to the agent, or, under a redirect in force on the day
(gateway.domain.redirects), to its descendant when the merchant is in that
one's subtree, else kept by the house. An agent without a ``cost_bp`` earns nothing and leaves r as
it was. The house keeps the rest of the discount the original actually posted
to the fee income account. (r starts at the merchant's rate of the run's time,
lowered, if that rate was raised since the original, to the highest rate whose
plain floor fits the posted discount: the shares never exceed the discount.)

Originals (the view ``agent_originals``, migration 0052): approved purchases,
completions and completion advices. Clawbacks: each cancellation of a shared
original (the view ``agent_cancellations``: voids, refunds, completion voids,
reversals of an original or a refund) takes back, from whoever received each share,
floor(share x cancelled after / amount) - floor(share x cancelled before /
amount), the original's net cancelled amount before and after it; a reversal of
a void, a completion void or a refund counts negative and shares again. In total an original's clawbacks are
floor(share x net cancelled / amount).

Exactly once: a row per original (``agent_share_txns``) and per cancellation
(``agent_cancel_events``) under a unique key, written with the shares, the
clawbacks and their ledger postings in one database transaction per day, under
an advisory lock per day: a run posts only what no earlier run of its day
posted, so a rerun, two runs at once or a run killed half-way post nothing
twice. A run's totals are the day's so far, read back from those rows.

Ledger: per run and agent, one posting (key ``agent-run:<run>:<agent>``) from
the house's fee income account: shares and shares again credit the agent's
profit account; clawbacks debit it as far as its balance goes, the rest debits
its receivable account (the agent owes it); then whatever the agent owes is
taken from its profit balance (netted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from gateway.domain.policies import POLICY_LOCK_KEY
from gateway.domain.validate import InvalidInput
from gateway.jobs import agent_events
from gateway.settings import Settings, get_settings
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE, AccountKind
from ledger.postings import PostResult, Transfer, post_many

log = structlog.get_logger("posgw.agent_run")

# Transfer codes: what each movement of a run is.
SHARE = "agent_share"
SHARE_AGAIN = "agent_share_again"            # a cancellation reversed: its clawback given back
CLAWBACK = "agent_clawback"                  # from the agent's profit balance
CLAWBACK_OWED = "agent_clawback_owed"        # what the profit balance could not cover: a receivable
RECEIVABLE_NETTED = "agent_receivable_netted"  # what the agent owed, taken from its profit balance

RUN_GRACE_S = 300  # a run this long after its day ended is final: no transaction of the day is still in flight
SCHEDULER_LOCK_KEY = 0x61676E72  # held by the one gateway whose scheduler is running days
ACCOUNTS_LOCK_KEY = 0x61676E61


class DayNotOver(InvalidInput):
    """`agent run --date D` for a day not over, without ``--now``: exit 2."""


@dataclass(frozen=True)
class DayBounds:
    day: date
    start: datetime
    end: datetime


def day_bounds(day: date, tz: ZoneInfo) -> DayBounds:
    """The local day [00:00, next 00:00) of the ``timezone`` setting."""
    return DayBounds(day, datetime.combine(day, datetime.min.time(), tz),
                     datetime.combine(day + timedelta(days=1), datetime.min.time(), tz))


async def run(conn: asyncpg.Connection, day: date, tz: ZoneInfo, *, now: datetime, so_far: bool = False,
              actor: str = "system", settings: Settings | None = None) -> dict[str, int | str]:
    """`agent run --date DAY [--now]`: first every earlier day not yet run finally,
    then DAY; returns DAY's totals so far. A day not over is refused unless ``so_far``.
    ``settings``: the events' charges (agent_events.Charges; default: this process's settings)."""
    charges = agent_events.Charges.of(settings or get_settings())
    bounds = day_bounds(day, tz)
    if now < bounds.start:
        raise DayNotOver(f"{day.isoformat()} has not begun")
    if now < bounds.end and not so_far:
        raise DayNotOver(f"{day.isoformat()} is not over: --now runs it on what it holds so far")
    fee_account = await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = $1", FEE_INCOME_ACCOUNT_CODE)
    await ensure_agent_accounts(conn)
    for earlier in await days_to_catch_up(conn, day, tz):
        earlier_bounds = day_bounds(earlier, tz)
        await run_day(conn, earlier_bounds, fee_account, final=is_final(earlier_bounds, now), actor=actor,
                      charges=charges)
    return await run_day(conn, bounds, fee_account, final=is_final(bounds, now), actor=actor, charges=charges)


def is_final(bounds: DayBounds, now: datetime) -> bool:
    return now >= bounds.end + timedelta(seconds=RUN_GRACE_S)


async def days_to_catch_up(conn: asyncpg.Connection, day: date, tz: ZoneInfo) -> list[date]:
    """The days before ``day`` with no final run, from the first day anything could be
    shared on (the first policy's day, or the first transaction's if later) on."""
    return list(await conn.fetchval(
        """WITH first AS (
               SELECT CASE WHEN min(from_day) IS NOT NULL  -- no policy: nothing to share on earlier days
                           THEN greatest(min(from_day), (SELECT (min(created_at) AT TIME ZONE $2)::date
                                                           FROM gw_transactions)) END AS day
                 FROM agent_policies)
           SELECT coalesce(array_agg(d::date ORDER BY d), '{}')
             FROM first, generate_series(first.day, $1::date - 1, interval '1 day') d
            WHERE NOT EXISTS (SELECT 1 FROM agent_runs r WHERE r.day = d::date AND r.final)""",
        day, tz.key))


async def ensure_agent_accounts(conn: asyncpg.Connection) -> None:
    """A profit account (never below zero) and a receivable account for every agent lacking them."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ACCOUNTS_LOCK_KEY)
        await conn.execute(
            """WITH missing AS (
                   SELECT code FROM agents a
                    WHERE NOT EXISTS (SELECT 1 FROM agent_accounts x WHERE x.agent_code = a.code)),
               profit AS (
                   INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)
                   SELECT $1, 'agent_profit:' || code, true FROM missing RETURNING id, code),
               receivable AS (
                   INSERT INTO ledger_accounts (kind, code)
                   SELECT $2, 'agent_receivable:' || code FROM missing RETURNING id, code)
               INSERT INTO agent_accounts (agent_code, profit_account_id, receivable_account_id)
               SELECT m.code, p.id, r.id FROM missing m
                 JOIN profit p ON p.code = 'agent_profit:' || m.code
                 JOIN receivable r ON r.code = 'agent_receivable:' || m.code""",
            AccountKind.AGENT_PROFIT.value, AccountKind.AGENT_RECEIVABLE.value)


def day_lock_key(day: date) -> str:
    return f"agent-run:{day.isoformat()}"


async def run_day(conn: asyncpg.Connection, bounds: DayBounds, fee_account: int, *, final: bool,
                  actor: str, charges: agent_events.Charges | None = None) -> dict[str, int | str]:
    """One day's run in one database transaction: shares, clawbacks, postings; its totals so far."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_advisory_xact_lock_shared($2)",
                           day_lock_key(bounds.day), POLICY_LOCK_KEY)
        run_id = await conn.fetchval(
            "INSERT INTO agent_runs (day, final, started_at, actor) VALUES ($1, $2, now(), $3) RETURNING id",
            bounds.day, final, actor)
        moved: dict[str, AgentMovement] = {}
        started = time.perf_counter()
        for row in await share_originals(conn, bounds, run_id, fee_account):
            moved.setdefault(row["recipient"], AgentMovement(row["recipient"])).shares_fen += row["shares_fen"]
        shared = time.perf_counter()
        for row in await claw_back_cancellations(conn, bounds, run_id):
            movement = moved.setdefault(row["recipient"], AgentMovement(row["recipient"]))
            movement.clawbacks_fen += row["clawbacks_fen"]
            movement.reshares_fen += row["reshares_fen"]
        clawed = time.perf_counter()
        await post_movements(conn, run_id, bounds.day, fee_account, list(moved.values()))
        await agent_events.run_events(conn, agent_events.DayBounds(bounds.day, bounds.start, bounds.end,
                                                                   str(bounds.start.tzinfo)),
                                      run_id, fee_account, charges or agent_events.Charges())
        totals = await day_totals(conn, bounds.day)
    log.info("agent_run", run_id=run_id, final=final, agents=len(moved), shares_s=round(shared - started, 2),
             clawbacks_s=round(clawed - shared, 2), postings_s=round(time.perf_counter() - clawed, 2), **totals)
    return totals


async def share_originals(conn: asyncpg.Connection, bounds: DayBounds, run_id: int,
                          fee_account: int) -> list[asyncpg.Record]:
    """Share every original of the day not shared yet, in one statement; the new shares per recipient."""
    return await conn.fetch(
        """WITH RECURSIVE chain (base, agent, depth) AS (
               SELECT code, code, 0 FROM agents
               UNION ALL
               SELECT c.base, a.parent_code, c.depth + 1 FROM chain c JOIN agents a ON a.code = c.agent
                WHERE a.parent_code IS NOT NULL AND c.depth < 64),  -- (a bound, were a cycle ever made)
           in_force AS (
               SELECT DISTINCT ON (agent_code) agent_code, cost_bp, share_pct FROM agent_policies
                WHERE from_day <= $1 ORDER BY agent_code, from_day DESC, id DESC),
           levels AS (  -- each agent's path up, with the lowest cost below each level
               SELECT c.base, c.agent, p.cost_bp, p.share_pct,
                      min(p.cost_bp) OVER (PARTITION BY c.base ORDER BY c.depth
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS below_bp
                 FROM chain c LEFT JOIN in_force p ON p.agent_code = c.agent),
           paid_levels AS (
               SELECT * FROM levels WHERE cost_bp IS NOT NULL AND share_pct > 0),
           new AS MATERIALIZED (
               SELECT o.txn_id, o.tid, o.amount_fen, m.mid, m.agent_code AS base,
                      coalesce(f.discount_fen, 0) AS discount_fen,
                      -- the merchant's rate, or the highest whose floor fits the posted discount if lower
                      least(m.mdr_bp, ((coalesce(f.discount_fen, 0) + 1) * 10000 - 1) / o.amount_fen) AS rate_bp
                 FROM agent_originals o
                 JOIN terminals t ON t.tid = o.tid
                 JOIN merchants m ON m.mid = t.mid
                 LEFT JOIN LATERAL (  -- by the posting's transfers (their index), not the fee account's
                     SELECT sum(CASE WHEN lt.credit_account_id = $4 THEN lt.amount END)::bigint AS discount_fen
                       FROM ledger_transfers lt
                      WHERE lt.posting_id = (SELECT lp.id FROM ledger_postings lp
                                              WHERE lp.idempotency_key = o.posting_key)) f ON true
                WHERE o.created_at >= $2 AND o.created_at < $3 AND o.amount_fen > 0
                  -- by the primary key alone: its probes cost the same whatever the statistics say
                  AND NOT EXISTS (SELECT 1 FROM agent_share_txns s WHERE s.txn_id = o.txn_id)),
           txns AS (
               INSERT INTO agent_share_txns (txn_id, day, run_id, tid, mid, base_agent, amount_fen, discount_fen)
               SELECT txn_id, $1, $5, tid, mid, base, amount_fen, discount_fen FROM new),
           redirected AS (  -- the redirects in force on the day (gateway.domain.redirects)
               SELECT DISTINCT ON (agent_code) agent_code, to_code, until_day FROM agent_redirects
                WHERE from_day <= $1 ORDER BY agent_code, from_day DESC, id DESC),
           shares AS (
               INSERT INTO agent_shares (txn_id, agent_code, recipient, share_fen)
               SELECT txn_id, agent, recipient, share_fen
                 FROM (SELECT n.txn_id, l.agent,
                              n.amount_fen * greatest(0, least(n.rate_bp, l.below_bp) - l.cost_bp) * l.share_pct
                                / 1000000 AS share_fen,
                              -- redirected: to its descendant when the merchant is in that one's subtree,
                              -- else to the house (no row)
                              CASE WHEN r.to_code IS NULL OR r.until_day < $1 THEN l.agent
                                   WHEN EXISTS (SELECT 1 FROM chain c WHERE c.base = n.base AND c.agent = r.to_code)
                                   THEN r.to_code END AS recipient
                         FROM new n JOIN paid_levels l ON l.base = n.base
                         LEFT JOIN redirected r ON r.agent_code = l.agent) s
                WHERE share_fen > 0 AND recipient IS NOT NULL
               RETURNING recipient, share_fen)
           SELECT recipient, sum(share_fen)::bigint AS shares_fen FROM shares GROUP BY recipient ORDER BY recipient""",
        bounds.day, bounds.start, bounds.end, fee_account, run_id)


async def claw_back_cancellations(conn: asyncpg.Connection, bounds: DayBounds, run_id: int) -> list[asyncpg.Record]:
    """Record every cancellation of the day not recorded yet and claw back its originals'
    shares pro rata; the new clawbacks (and shares given again) per recipient."""
    return await conn.fetch(
        """WITH new AS MATERIALIZED (
               SELECT c.event_id, c.original_id, c.amount_fen,
                      coalesce((SELECT sum(e.amount_fen) FROM agent_cancel_events e
                                 WHERE e.original_id = c.original_id), 0)
                      + coalesce(sum(c.amount_fen) OVER (PARTITION BY c.original_id ORDER BY c.event_id
                                                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                        AS before_fen
                 FROM agent_cancellations c
                WHERE c.created_at >= $2 AND c.created_at < $3
                  AND EXISTS (SELECT 1 FROM agent_share_txns s WHERE s.txn_id = c.original_id)
                  AND NOT EXISTS (SELECT 1 FROM agent_cancel_events e WHERE e.event_id = c.event_id)),
           events AS (
               INSERT INTO agent_cancel_events (event_id, original_id, day, run_id, amount_fen, cancelled_before_fen)
               SELECT event_id, original_id, $1, $4, amount_fen, before_fen FROM new),
           clawbacks AS (
               INSERT INTO agent_clawbacks (event_id, agent_code, recipient, clawback_fen)
               SELECT event_id, agent_code, recipient, clawback_fen
                 FROM (SELECT n.event_id, s.agent_code, s.recipient,
                              floor(s.share_fen * least(greatest(n.before_fen + n.amount_fen, 0), t.amount_fen)
                                    / t.amount_fen::numeric)::bigint
                              - floor(s.share_fen * least(greatest(n.before_fen, 0), t.amount_fen)
                                      / t.amount_fen::numeric)::bigint AS clawback_fen
                         FROM new n
                         JOIN agent_share_txns t ON t.txn_id = n.original_id
                         JOIN agent_shares s ON s.txn_id = n.original_id) c
                WHERE clawback_fen <> 0
               RETURNING recipient, clawback_fen)
           SELECT recipient, sum(greatest(clawback_fen, 0))::bigint AS clawbacks_fen,
                  sum(greatest(-clawback_fen, 0))::bigint AS reshares_fen
             FROM clawbacks GROUP BY recipient ORDER BY recipient""",
        bounds.day, bounds.start, bounds.end, run_id)


@dataclass
class AgentMovement:
    """What one run moves for one agent, and how it lands on the ledger."""

    agent_code: str
    shares_fen: int = 0
    reshares_fen: int = 0
    clawbacks_fen: int = 0
    clawed_from_profit_fen: int = 0
    receivable_fen: int = 0
    netted_fen: int = 0

    def settle(self, profit_fen: int, owed_fen: int) -> None:
        """Given the agent's profit balance and what it owes before the run: clawbacks
        from the profit as far as it goes, the rest owed; then what it owes netted."""
        available_fen = profit_fen + self.shares_fen + self.reshares_fen
        self.clawed_from_profit_fen = min(self.clawbacks_fen, available_fen)
        self.receivable_fen = self.clawbacks_fen - self.clawed_from_profit_fen
        self.netted_fen = min(owed_fen, available_fen - self.clawed_from_profit_fen)

    def transfers(self, fee_account: int, profit: int, receivable: int) -> list[Transfer]:
        moves = [Transfer(fee_account, profit, self.shares_fen, SHARE),
                 Transfer(fee_account, profit, self.reshares_fen, SHARE_AGAIN),
                 Transfer(profit, fee_account, self.clawed_from_profit_fen, CLAWBACK),
                 Transfer(receivable, fee_account, self.receivable_fen, CLAWBACK_OWED),
                 Transfer(profit, receivable, self.netted_fen, RECEIVABLE_NETTED)]
        return [t for t in moves if t.amount_fen > 0]


async def post_movements(conn: asyncpg.Connection, run_id: int, day: date, fee_account: int,
                         movements: list[AgentMovement]) -> None:
    """Post each agent's movement of the run (one posting each, one round trip), last in
    the run's transaction: the fee income account, which purchases post to, is locked
    only from here to the commit. Every account is locked first, in id order, the fee
    income account with the agents' (as the ledger locks them), so that two runs, or a
    run and a withdrawal, wait for each other instead of deadlocking."""
    if not movements:
        return
    codes = [m.agent_code for m in movements]
    await conn.execute(
        """SELECT 1 FROM ledger_accounts
            WHERE id = $1 OR id IN (SELECT unnest(ARRAY[profit_account_id, receivable_account_id])
                                      FROM agent_accounts WHERE agent_code = ANY ($2::text[]))
            ORDER BY id FOR UPDATE""", fee_account, codes)
    accounts = {row["agent_code"]: row for row in await conn.fetch(
        """SELECT x.agent_code, x.profit_account_id, x.receivable_account_id,
                  p.credits_posted - p.debits_posted AS profit_fen, r.debits_posted - r.credits_posted AS owed_fen
             FROM agent_accounts x
             JOIN ledger_accounts p ON p.id = x.profit_account_id
             JOIN ledger_accounts r ON r.id = x.receivable_account_id
            WHERE x.agent_code = ANY ($1::text[])""", codes)}
    postings: list[tuple[str, list[Transfer]]] = []
    for movement in movements:
        account = accounts[movement.agent_code]
        movement.settle(account["profit_fen"], account["owed_fen"])
        transfers = movement.transfers(fee_account, account["profit_account_id"], account["receivable_account_id"])
        if transfers:
            postings.append((f"agent-run:{run_id}:{movement.agent_code}", transfers))
    results = await post_many(conn, postings)
    failed = [(key, result) for (key, _), result in zip(postings, results) if result is not PostResult.OK]
    if failed:
        raise RuntimeError(f"agent run {run_id}: postings failed: {failed}")
    await conn.executemany(
        """INSERT INTO agent_run_postings (run_id, day, agent_code, shares_fen, reshares_fen, clawbacks_fen,
                                          clawed_from_profit_fen, receivable_fen, netted_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        [(run_id, day, m.agent_code, m.shares_fen, m.reshares_fen, m.clawbacks_fen, m.clawed_from_profit_fen,
          m.receivable_fen, m.netted_fen) for m in movements])


async def day_totals(conn: asyncpg.Connection, day: date) -> dict[str, int | str]:
    """The day's totals so far (CLI.md `agent run`): what every run of the day posted.
    ``clawbacks_fen`` is net of shares given again; ``house_fen`` = ``discount_fen`` - ``shares_fen``."""
    row = await conn.fetchrow(
        """SELECT (SELECT coalesce(sum(discount_fen), 0) FROM agent_share_txns WHERE day = $1)::bigint AS discount_fen,
                  coalesce(sum(shares_fen), 0)::bigint AS shares_fen,
                  coalesce(sum(clawbacks_fen - reshares_fen), 0)::bigint AS clawbacks_fen,
                  coalesce(sum(receivable_fen), 0)::bigint AS receivables_fen,
                  coalesce(sum(netted_fen), 0)::bigint AS receivables_netted_fen
             FROM agent_run_postings WHERE day = $1""", day)
    totals: dict[str, int | str] = {"date": day.isoformat(), "shares_fen": row["shares_fen"],
                                    "clawbacks_fen": row["clawbacks_fen"],
                                    "house_fen": row["discount_fen"] - row["shares_fen"],
                                    "discount_fen": row["discount_fen"],
                                    "receivables_fen": row["receivables_fen"],
                                    "receivables_netted_fen": row["receivables_netted_fen"]}
    events = await agent_events.day_totals(conn, day)  # activations, deposits, fees; their netting
    totals["receivables_netted_fen"] += events.pop("netted_fen")
    return totals | events


async def run_due_days(pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None) -> dict[str, Any] | None:
    """What `posgw serve` calls every minute or so: once the local day before today has been
    over for ``RUN_GRACE_S`` and has no final run, run it (with every earlier day not yet
    run). Once across gateways: the gateway holding the scheduler's advisory lock runs it;
    the others skip. Returns the day's totals, or None when nothing was due."""
    tz = settings.tz
    now = now or settings.now()
    yesterday = now.astimezone(tz).date() - timedelta(days=1)
    if not is_final(day_bounds(yesterday, tz), now):
        yesterday -= timedelta(days=1)
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCHEDULER_LOCK_KEY):
            return None
        try:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agent_runs WHERE day = $1 AND final)", yesterday):
                return None
            return await run(conn, yesterday, tz, now=now, actor="system:scheduler", settings=settings)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SCHEDULER_LOCK_KEY)


async def run_scheduler(pool: asyncpg.Pool, settings: Settings, *, interval_s: float = 60.0) -> None:
    """The loop `posgw serve` starts as a task (and cancels on shutdown): run_due_days
    every ``interval_s``; a failed run is logged and tried again at the next turn."""
    while True:
        try:
            await run_due_days(pool, settings)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the loop must outlive one bad run; the run rolled back
            log.exception("agent_run_failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(interval_s)

"""The agent network's run at scale (issue 24): a local day of 1,000,000 approved
purchases across 5,000 terminals under a 5-level hierarchy, shared in one run
(`posgw agent run`'s function, gateway.jobs.agent_run.run). Target: under 60 s.

The day is seeded in bulk SQL, not through the wire: the rows the engine
writes for an approved purchase (gw_transactions, its ledger posting under
the engine's key with the merchant's and the fee income's transfers, the
accounts' posted totals), so that the run reads what it reads in production.
The hierarchy: 1 top agent, 5 children each, 5 levels (781 agents), costs
rising 2 bp per level down (28 .. 36 bp); 5,000 merchants (38 to 60 bp) with
a terminal each under the 625 agents of the lowest level: every level earns a
share of every purchase (5,000,000 share rows), the heaviest case.

The events (gateway/jobs/agent_events.py) are set so that the measured day holds
all of them for every terminal, the heaviest case too: the terminals are bound 29
days before it, with 29 free days, so each one's first service fee is due on it;
the activation volume and the deposit's refund volume are 1.5 days of a terminal's
average volume, so that each terminal crosses both on the measured day (its deposit
charged the day before); rewards, deposit and fee shares fall by level (5 share
rows per terminal and event).

    python -m bench.agent_run_scale [--purchases N] [--terminals N] [--days-before N] [--data-dir D] [--check]
                                    [--json]

Against a fresh database ``posgw_agent_bench`` of ``POSGW_DATABASE_URL``'s
server, else of an embedded PostgreSQL under ``--data-dir``. The day before
(``--days-before``) is seeded and run first, so that the measured run finds a
day's rows in the tables it writes and looks up. Prints the day's seeding time,
the run's time and totals, a rerun's time (it posts nothing), and the
database's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.db.migrate import migrate
from gateway.db.pool import embedded_server
from gateway.jobs import agent_events, agent_run
from gateway.settings import Settings
from ledger.check import check

DATABASE = "posgw_agent_bench"
DAY = date(2026, 11, 2)
TZ = ZoneInfo("Asia/Shanghai")
LEVELS, CHILDREN = 5, 5
COST_TOP_BP, COST_STEP_BP = 28, 2
CARDS = 1000
FREE_DAYS = 29  # the terminals are bound this many days before the measured day, their free days


def event_settings(purchases: int, terminals: int) -> Settings:
    """The events' settings of the bench: every terminal activates, and reaches its deposit's refund
    volume, on the measured day (1.5 days of its average volume); its service fee is due that day."""
    average_fen = 100 + (300_000 - 1) // 2  # a purchase's average amount, as seed_purchases makes them
    volume_fen = purchases // terminals * average_fen * 3 // 2
    return Settings(activation_volume_fen=volume_fen, activation_window_days=30, deposit_fen=9_900,
                    deposit_refund_volume_fen=volume_fen, deposit_refund_window_days=90, service_fee_fen=4_800,
                    service_fee_free_days=FREE_DAYS)


def server_url(data_dir: Path) -> str:
    url = os.environ.get("POSGW_DATABASE_URL")
    return url if url else embedded_server(data_dir).get_uri()


def with_database(url: str, name: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


async def fresh_database(admin_url: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    return with_database(admin_url, DATABASE)


async def seed_world(conn: asyncpg.Connection, terminals: int) -> None:
    """Agents (5 levels, 5 children each) with policies, merchants, terminals, funded cards."""
    await conn.execute(
        """WITH RECURSIVE tree (code, parent, level, n) AS (
               SELECT 'L1-0', NULL::text, 1, 0
               UNION ALL
               SELECT 'L' || (t.level + 1) || '-' || (t.n * $1 + c), t.code, t.level + 1, t.n * $1 + c
                 FROM tree t, generate_series(0, $1 - 1) c WHERE t.level < $2),
           float AS (
               INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)
               SELECT 'agent_float', 'float:' || code, true FROM tree RETURNING id, code),
           commission AS (
               INSERT INTO ledger_accounts (kind, code)
               SELECT 'commission', 'commission:' || code FROM tree RETURNING id, code),
           agents_in AS (
               INSERT INTO agents (code, name, parent_code, float_account_id, commission_account_id)
               SELECT t.code, 'Agent ' || t.code, t.parent, f.id, c.id FROM tree t
                 JOIN float f ON f.code = 'float:' || t.code JOIN commission c ON c.code = 'commission:' || t.code
                ORDER BY t.level)
           INSERT INTO agent_policies (agent_code, from_day, cost_bp, activation_reward_fen, deposit_share_fen,
                                       service_fee_share_fen, set_by)
           SELECT code, $3::date - 30, $4 + (level - 1) * $5, 20000 - 3000 * level, 5000 - 800 * level,
                  3000 - 500 * level, 'bench' FROM tree""",
        CHILDREN, LEVELS, DAY, COST_TOP_BP, COST_STEP_BP)
    await conn.execute(
        """WITH lowest AS (
               SELECT code, row_number() OVER (ORDER BY code) - 1 AS n FROM agents
                WHERE code LIKE $2 || '-%'),
           shops AS (
               SELECT i, '8' || lpad(i::text, 14, '0') AS mid, 'T' || lpad(i::text, 7, '0') AS tid,
                      38 + (i % 23) AS mdr_bp
                 FROM generate_series(0, $1 - 1) i),
           accounts AS (
               INSERT INTO ledger_accounts (kind, code)
               SELECT 'merchant', 'merchant:' || mid FROM shops RETURNING id, code),
           merchants_in AS (
               INSERT INTO merchants (mid, name, agent_code, mdr_bp, account_id)
               SELECT s.mid, 'Shop ' || s.i, l.code, s.mdr_bp, a.id FROM shops s
                 JOIN lowest l ON l.n = s.i % (SELECT count(*) FROM lowest)
                 JOIN accounts a ON a.code = 'merchant:' || s.mid)
           INSERT INTO terminals (tid, mid, owner_agent, tmk_lmk, tmk_kcv, bound_at)  -- (merchants_in: not yet seen)
           SELECT s.tid, s.mid, l.code, '\\x00'::bytea, '\\x00'::bytea, $3 FROM shops s
             JOIN lowest l ON l.n = s.i % (SELECT count(*) FROM lowest)""",
        terminals, f"L{LEVELS}", datetime.combine(DAY - timedelta(days=FREE_DAYS), datetime.min.time(), TZ))
    await conn.execute(
        """WITH accounts AS (
               INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits, credits_posted)
               SELECT 'card', 'card:bench' || i, true, 10000000000000 FROM generate_series(1, $1) i
               RETURNING id, credits_posted)
           INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)
           SELECT decode(md5(id::text), 'hex'), '\\x00', '622202******0000', '\\x00', '3012', id FROM accounts""",
        CARDS)
    # The cards' funding, as one transfer each from the cash account.
    await conn.execute(
        """WITH funding AS (
               INSERT INTO ledger_postings (idempotency_key, content_md5, result)
               SELECT 'bench-fund:' || id, '', 'ok' FROM ledger_accounts WHERE kind = 'card'
               RETURNING id, idempotency_key),
           moved AS (
               INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code)
               SELECT f.id, (SELECT id FROM ledger_accounts WHERE code = 'system:cash'),
                      split_part(f.idempotency_key, ':', 2)::bigint, 10000000000000, 'card_issue' FROM funding f
               RETURNING amount)
           UPDATE ledger_accounts SET debits_posted = debits_posted + (SELECT sum(amount) FROM moved)
            WHERE code = 'system:cash'""")


async def seed_purchases(conn: asyncpg.Connection, day: date, purchases: int, terminals: int) -> None:
    """A day's approved purchases, as gw_finish records them, in bulk: spread over the day,
    amounts 1.00 to about 3,000 yuan, the discount rounded half up as ledger.postings does.
    Each day's batches are numbered on from the previous day's."""
    fee_account = await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:fee_income'")
    start = datetime.combine(day, datetime.min.time(), TZ)
    first_batch = 1 + await conn.fetchval("SELECT coalesce(max(batch), 0) FROM gw_transactions")
    await conn.execute(
        """CREATE TEMP TABLE seed ON COMMIT DROP AS
           SELECT i, t.tid, t.mid, m.account_id AS merchant_account, c.account_id AS card_account, c.id AS card_id,
                  (i / $2 + $5)::integer AS batch, lpad((i % 999999 + 1)::text, 6, '0') AS stan,
                  100 + (i::bigint * 7919) % 300000 AS amount_fen, m.mdr_bp,
                  $3::timestamptz + (i::float8 / $1 * 86399.0) * interval '1 second' AS created_at
             FROM generate_series(0, $1 - 1) i
             JOIN terminals t ON t.tid = 'T' || lpad((i % $2)::text, 7, '0')
             JOIN merchants m ON m.mid = t.mid
             JOIN cards c ON c.id = 1 + i % $4""",
        purchases, terminals, start, CARDS, first_batch)
    await conn.execute(
        """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                        response_code, status, amount_fen, card_id, rrn, local_date, posting_key,
                                        created_at)
           SELECT tid, batch, stan, '0200', 'purchase', '000000', md5(i::text), '{}', '00', 'approved', amount_fen,
                  card_id, lpad(i::text, 12, '0'), '1102', tid || ':' || batch || ':' || stan || ':0200', created_at
             FROM seed ORDER BY i""")
    await conn.execute(
        """CREATE TEMP TABLE seed_postings ON COMMIT DROP AS
           WITH p AS (
               INSERT INTO ledger_postings (idempotency_key, content_md5, result, created_at)
               SELECT tid || ':' || batch || ':' || stan || ':0200', '', 'ok', created_at FROM seed ORDER BY i
               RETURNING id, idempotency_key)
           SELECT p.id AS posting_id, s.* FROM p JOIN seed s ON p.idempotency_key = s.tid || ':' || s.batch || ':'
                                                               || s.stan || ':0200'""")
    await conn.execute(
        """INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code, created_at)
           SELECT posting_id, card_account, merchant_account, amount_fen - fee, 'purchase', created_at
             FROM (SELECT *, (amount_fen * mdr_bp + 5000) / 10000 AS fee FROM seed_postings) s
           UNION ALL
           SELECT posting_id, card_account, $1, (amount_fen * mdr_bp + 5000) / 10000, 'purchase_fee', created_at
             FROM seed_postings WHERE (amount_fen * mdr_bp + 5000) / 10000 > 0
            ORDER BY 1""", fee_account)
    await conn.execute(
        """UPDATE ledger_accounts a SET debits_posted = a.debits_posted + m.debit,
                                        credits_posted = a.credits_posted + m.credit
             FROM (SELECT account, sum(debit) AS debit, sum(credit) AS credit FROM (
                       SELECT debit_account_id AS account, amount AS debit, 0 AS credit FROM ledger_transfers t
                         JOIN seed_postings s ON s.posting_id = t.posting_id
                       UNION ALL
                       SELECT credit_account_id, 0, amount FROM ledger_transfers t
                         JOIN seed_postings s ON s.posting_id = t.posting_id) x GROUP BY account) m
            WHERE a.id = m.account""")


async def bench(purchases: int, terminals: int, days_before: int, data_dir: Path,
                with_check: bool) -> dict[str, Any]:
    url = await fresh_database(server_url(data_dir))
    conn = await asyncpg.connect(url)
    now = datetime.now(UTC)
    settings = event_settings(purchases, terminals)
    try:
        await migrate(conn)
        async with conn.transaction():
            await seed_world(conn, terminals)
        # Earlier days, seeded and run: the measured run finds their rows in the tables it writes.
        for n in range(days_before, 0, -1):
            async with conn.transaction():
                await seed_purchases(conn, DAY - timedelta(days=n), purchases, terminals)
            await conn.execute("VACUUM ANALYZE")
            await agent_run.run(conn, DAY - timedelta(days=n), TZ, now=now, actor="bench", settings=settings)
        t0 = time.perf_counter()
        async with conn.transaction():
            await seed_purchases(conn, DAY, purchases, terminals)
        await conn.execute("VACUUM ANALYZE")
        seeded_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        totals = await agent_run.run(conn, DAY, TZ, now=now, actor="bench", settings=settings)
        run_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = await agent_run.run(conn, DAY, TZ, now=now, actor="bench", settings=settings)
        rerun_s = time.perf_counter() - t0
        result: dict[str, Any] = {
            "purchases": purchases, "terminals": terminals, "levels": LEVELS, "days_before": days_before,
            "agents": await conn.fetchval("SELECT count(*) FROM agents"),
            "seed_s": round(seeded_s, 1), "run_s": round(run_s, 1), "rerun_s": round(rerun_s, 1),
            "totals": totals, "rerun_same_totals": again == totals,
            "activated": await conn.fetchval("SELECT count(*) FROM agent_activations WHERE day = $1", DAY),
            "event_share_rows": await conn.fetchval("SELECT count(*) FROM agent_event_shares WHERE day = $1", DAY),
            "share_rows": await conn.fetchval(
                "SELECT count(*) FROM agent_shares s JOIN agent_share_txns t USING (txn_id) WHERE t.day = $1", DAY),
            "database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())"),
            "agent_tables_bytes": await conn.fetchval(
                """SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                    WHERE c.relname IN ('agent_share_txns', 'agent_shares')"""),
        }
        assert totals["shares_fen"] + totals["house_fen"] == totals["discount_fen"]
        if with_check:
            report = await check(conn)
            report.problems.extend(await agent_events.check_deposits(conn))
            result["ledger_check_ok"] = report.ok
    finally:
        await conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_run_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--purchases", type=int, default=1_000_000)
    parser.add_argument("--terminals", type=int, default=5_000)
    parser.add_argument("--days-before", type=int, default=1, help="days of purchases seeded and run first")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/posgw-agent-bench"))
    parser.add_argument("--check", action="store_true", help="run the ledger check afterwards")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.purchases, args.terminals, args.days_before, args.data_dir, args.check))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()

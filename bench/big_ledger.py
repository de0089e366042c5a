"""The big ledger (issue 28): does a request cost more when the ledger is big? The same
closed loop (the mix, risk rules on, 200 persistent terminals, 1 worker) on the small
world, then on a world of 1,000 terminals and 1,000,000 cards after 10,000,000 transfers
are in the ledger, in the same run, back to back.

The big world is seeded in bulk, not through the wire (through the wire it would take
hours): ``posgw demo --terminals 1000 --cards 0`` for the terminals (keys under the LMK
as the gateway makes them); the cards past the small world's, each with its account,
PAN hash, PAN under the LMK and PIN verification value made by the gateway's own
``SoftHsm``, written with a statement per 50,000; then, in SQL (``generate_series``), an
opening balance for each new card (a posting and a transfer from cash) and purchases
enough to make 10,000,000 transfers in all, each a ``gw_transactions`` row, a posting
and two transfers (to the merchant, and a fee of 0.6 % to fee income), spread over the
last 30 days across the 1,000 terminals and the 1,000,000 cards. The account totals are
then added from the transfers, so ``posgw ledger check`` holds at the end of the bench.

How it is fast: the secondary indexes of ``gw_transactions``, ``ledger_postings`` and
``ledger_transfers`` are dropped before the load and built again after it (one sort
each, not 10,000,000 random inserts), the foreign keys are not checked row by row
(``session_replication_role = replica`` for the loading session: every reference is
made by the same statements to rows just written), and the tables are vacuumed and
analyzed after, and a checkpoint taken, before the load.
The tables stay logged: a table switched to unlogged and back is written out whole to
the WAL again, which costs more than it saves here.

The load runs against 200 of the 1,000 terminals (every fifth) and 30,000 of the
1,000,000 cards (every 33rd), taken in turn as in the small world: the same concurrency
and the same rules, spread over the whole of the big tables. ``EXPLAIN`` of the hot
lookups on the big tables is kept with the results (``plans``): none may scan.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.config import CARDS, DATA, POSGW, TERMINALS, run, say
from bench.world import on_postgres, seed_terminal_past
from gateway.domain.cards import mask_pan
from gateway.domain.demo import DEMO_CARD_BALANCE_FEN, DEMO_CARD_EXPIRY, DEMO_CARD_PIN, demo_pan
from gateway.keys import SoftHsm, load_lmk
from gateway.settings import Settings

BIG_TERMINALS, BIG_CARDS, BIG_TRANSFERS = 1000, 1_000_000, 10_000_000
LOAD_TERMINAL_STEP = 5  # the load's 200 terminals of the big world (and as many cards as the small world's)
CARD_CHUNK = 50_000
FEE_BP = 60
BIG_WORLD = DATA / "world_big.json"
SEEDED_TABLES = ("gw_transactions", "ledger_postings", "ledger_transfers")


def seed(env: dict[str, str], scale: float = 1.0) -> dict[str, Any]:
    """Seed the big world (``scale`` < 1: that share of its cards and transfers, for a quick
    try); write the load's world file; what it took (seconds, rows, database size)."""
    cards, transfers = int(BIG_CARDS * scale), int(BIG_TRANSFERS * scale)
    started = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name: str, work: Callable[[], Any]) -> Any:
        at = time.perf_counter()
        result = work()
        steps[name] = round(time.perf_counter() - at, 1)
        say(f"    {name}: {steps[name]} s")
        return result

    demo = step("terminals (posgw demo)", lambda: json.loads(run(
        [POSGW, "demo", "--terminals", str(BIG_TERMINALS), "--cards", "0", "--json"], env=env).stdout))
    tids = [t["tid"] for t in demo["terminals"]]
    step("terminals' past (risk counters)", lambda: seed_terminal_past(tids[TERMINALS:]))
    step(f"cards {CARDS + 1:,} to {cards:,} (accounts, PAN hashes, PVVs)", lambda: _seed_cards(CARDS + 1, cards))
    rows = step("openings and purchases (generate_series), indexes built again",
                lambda: on_postgres(lambda conn: _seed_transfers(conn, tids, CARDS + 1, cards, transfers)))
    size = on_postgres(_sizes)
    seconds = round(time.perf_counter() - started, 1)
    _write_world(demo, cards)
    return {"seconds": seconds, "steps_s": steps, "terminals": BIG_TERMINALS, "cards": cards, **rows, **size}


def _hsm() -> SoftHsm:
    settings = Settings()
    return SoftHsm(load_lmk(settings.lmk.get_secret_value() if settings.lmk else None, settings.data_dir))


def _seed_cards(first: int, last: int) -> None:
    """Cards ``first`` to ``last`` (demo PANs and PIN), each with an account, as
    ``gateway.domain.cards.issue_cards`` makes them, without the opening balance
    (seeded with the transfers)."""
    hsm = _hsm()

    async def work(conn: Any) -> None:
        for start in range(first, last + 1, CARD_CHUNK):
            indexes = range(start, min(start + CARD_CHUNK, last + 1))
            pans = [demo_pan(index) for index in indexes]
            hashes = [hsm.pan_hash(pan) for pan in pans]
            await conn.execute(
                """WITH a AS (
                       INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)
                       SELECT 'card', 'card:' || encode(substr(h, 1, 12), 'hex'), true FROM unnest($1::bytea[]) h
                       RETURNING id, code)
                   INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)
                   SELECT r.h, r.l, r.m, r.p, $5, a.id
                     FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::bytea[]) AS r (h, l, m, p)
                     JOIN a ON a.code = 'card:' || encode(substr(r.h, 1, 12), 'hex')""",
                hashes, [hsm.encrypt_pan(pan) for pan in pans], [mask_pan(pan) for pan in pans],
                [hsm.pin_verification_value(pan, DEMO_CARD_PIN) for pan in pans], DEMO_CARD_EXPIRY)

    on_postgres(work)


async def _seed_transfers(conn: Any, tids: list[str], first_card: int, last_card: int,
                          transfers: int) -> dict[str, int]:
    """The openings of the new cards and the purchases, with their rows, in SQL."""
    cards = await conn.fetch("SELECT id, account_id FROM cards ORDER BY id")
    card_ids, card_accounts = [r["id"] for r in cards], [r["account_id"] for r in cards]
    new_accounts = card_accounts[first_card - 1:last_card]
    merchant, fee, cash = (await conn.fetchval("SELECT account_id FROM merchants ORDER BY mid LIMIT 1"),
                           await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:fee_income'"),
                           await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = 'system:cash'"))
    purchases = max(0, (transfers - len(new_accounts)) // 2)
    first_transfer = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_transfers")
    async with conn.transaction():  # all or nothing: the indexes are dropped inside it
        await _load(conn, new_accounts, tids, card_ids, card_accounts, purchases, (merchant, fee, cash),
                     first_transfer)
    # Vacuumed (visibility map, statistics) and checkpointed, as a database that has run for
    # a while is: so that neither an autovacuum of the new rows nor the checkpoint of the
    # seeding's writes falls in the measured run.
    for table in ("cards", "ledger_accounts", *SEEDED_TABLES):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    await conn.execute("CHECKPOINT")
    return {"purchases": purchases,
            "transfers_seeded": await conn.fetchval("SELECT count(*) FROM ledger_transfers WHERE id > $1",
                                                    first_transfer),
            "transfers_total": await conn.fetchval("SELECT count(*) FROM ledger_transfers"),
            "cards_total": await conn.fetchval("SELECT count(*) FROM cards")}


async def _load(conn: Any, new_accounts: list[int], tids: list[str], card_ids: list[int], card_accounts: list[int],
                purchases: int, accounts: tuple[int, int, int], first_transfer: int) -> None:
    """In one transaction: the indexes dropped, the rows written, the indexes built again, the totals added."""
    merchant, fee, cash = accounts
    await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    indexes = await conn.fetch(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = ANY ($1::text[]) AND i.schemaname = current_schema()
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""", list(SEEDED_TABLES))
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    # The openings: a posting and a transfer from cash for each new card.
    await conn.execute(
        """WITH p AS (
               INSERT INTO ledger_postings (idempotency_key, content_md5, result, created_at)
               SELECT 'bench-open:' || a, md5(a::text), 'ok', now() - interval '31 days'
                 FROM unnest($1::bigint[]) a
               RETURNING id, idempotency_key)
           INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code, created_at)
           SELECT p.id, $2, substr(p.idempotency_key, 12)::bigint, $3, 'card_issue', now() - interval '31 days'
             FROM p""", new_accounts, cash, DEMO_CARD_BALANCE_FEN)
    # The purchases, n = 0 .. purchases-1: terminal n % T, its k-th (k = n / T) in batch 900000 + k / 500,
    # STAN k % 500 + 1, 9 minutes after its (k-1)-th, back from a day ago; card (n * 7919) % C (7919 is a
    # prime: every card in turn); 2 to 998 yuan. A CTE of the rows, read by the three inserts.
    chunk = 1_000_000
    for start in range(0, purchases, chunk):
        await conn.execute(
            """WITH r AS MATERIALIZED (
                   SELECT n, tt.tid, 900000 + (n / $9) / 500 AS batch, lpad((((n / $9) % 500) + 1)::text, 6, '0') AS stan,
                          1 + ((n::bigint * 7919) % $10)::integer AS c, (2 + n % 997) * 100 AS amount,
                          now() - interval '1 day' - make_interval(secs => (n / $9) * 540.0) AS at
                     FROM generate_series($4::integer, $5::integer) n
                     JOIN unnest($1::text[]) WITH ORDINALITY AS tt (tid, i) ON tt.i = 1 + n % $9),
               p AS (
                   INSERT INTO ledger_postings (idempotency_key, content_md5, result, created_at)
                   SELECT tid || ':' || batch || ':' || stan || ':0200', md5(n::text), 'ok', at FROM r
                   RETURNING id, idempotency_key),
               t AS (
                   INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code,
                                                 created_at)
                   SELECT p.id, ($3::bigint[])[r.c], x.account, x.amount, x.code, r.at
                     FROM r JOIN p ON p.idempotency_key = r.tid || ':' || r.batch || ':' || r.stan || ':0200',
                          LATERAL (VALUES ($6::bigint, r.amount - r.amount * $8 / 10000, 'purchase'),
                                          ($7::bigint, r.amount * $8 / 10000, 'purchase_fee')) x (account, amount, code))
               INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, processing_code, content_hash, response,
                                            response_code, status, amount_fen, card_id, rrn, local_date,
                                            posting_key, risk_day, created_at)
               SELECT tid, batch, stan, '0200', 'purchase', '000000', md5(n::text),
                      jsonb_build_object('rrn', lpad((800000000000 + n)::text, 12, '0'), 'outcome', 'approved',
                                         'local_time', to_char(at, 'HH24MISS'), 'local_date', to_char(at, 'MMDD'),
                                         'auth_id', lpad((n % 1000000)::text, 6, '0')),
                      '00', 'approved', amount, ($2::bigint[])[c], lpad((800000000000 + n)::text, 12, '0'),
                      to_char(at, 'MMDD'), tid || ':' || batch || ':' || stan || ':0200', at::date, at
                 FROM r""",
            tids, card_ids, card_accounts, start, min(start + chunk, purchases) - 1, merchant, fee, FEE_BP,
            len(tids), len(card_ids))
    for index in indexes:
        await conn.execute(index["indexdef"])
    await conn.execute("SET LOCAL session_replication_role = origin")
    # The account totals, from the transfers just written.
    for side in ("credit", "debit"):  # credits first: a card account may never show debits above credits
        await conn.execute(
            f"""UPDATE ledger_accounts a SET {side}s_posted = a.{side}s_posted + s.amount
                  FROM (SELECT {side}_account_id AS id, sum(amount) AS amount FROM ledger_transfers
                         WHERE id > $1 GROUP BY 1) s
                 WHERE a.id = s.id""", first_transfer)


async def _sizes(conn: Any) -> dict[str, Any]:
    tables = await conn.fetch(
        """SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class
            WHERE relname = ANY ($1::text[]) ORDER BY relname""", [*SEEDED_TABLES, "cards", "ledger_accounts"])
    return {"database_mb": round(await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20),
            "tables_mb": {r["relname"]: round(r["bytes"] / 2**20) for r in tables}}


def _write_world(demo: dict[str, Any], cards: int) -> None:
    """The load's world: every fifth terminal, every 25th card (as many cards as the small
    world's, spread over all), the demo's billers and merchants."""
    total = max(cards, CARDS)
    step = max(1, total // CARDS)
    world = {**demo, "terminals": demo["terminals"][::LOAD_TERMINAL_STEP],
             "cards": [{"pan": demo_pan(index), "pin": DEMO_CARD_PIN, "expiry": DEMO_CARD_EXPIRY}
                       for index in range(1, total + 1, step)]}
    BIG_WORLD.write_text(json.dumps(world))


# The hot lookups of a request on the big tables, as the context read and the recording
# make them ($1 a terminal, $2 a card id, $3 a PAN hash): each must use an index.
HOT_LOOKUPS = {
    "stored answer by key": "SELECT 1 FROM gw_transactions WHERE tid = $1 AND batch = 900001 AND stan = '000001' "
                            "AND mti_class = '0200'",
    "card by PAN hash": "SELECT id FROM cards WHERE pan_hash = $3",
    "card's last position (travel)": "SELECT latitude FROM gw_transactions WHERE card_id = $2 AND status = 'approved' "
                                     "AND latitude IS NOT NULL ORDER BY created_at DESC LIMIT 1",
    "card's burst": "SELECT count(*) FROM gw_transactions WHERE card_id = $2 AND status = 'approved' "
                    "AND risk_day IS NOT NULL AND created_at > now() - interval '60 seconds'",
    "terminal's 30 days (spike)": "SELECT sum(count) FROM risk_counters WHERE scope = 'terminal' AND owner = $1 "
                                  "AND day >= current_date - 30",
    "reversal ahead of its original": "SELECT 1 FROM gw_transactions WHERE tid = $1 AND batch = 900001 "
                                      "AND stan = '000001' AND mti_class = '0400' AND processing_code = '000000'",
    "posting by key": "SELECT id FROM ledger_postings WHERE idempotency_key = $1 || ':900001:000001:0200'",
    "refund's original by RRN": "SELECT id FROM gw_transactions WHERE rrn = '800000000001' AND tid = $1",
}


def plans() -> dict[str, Any]:
    """EXPLAIN of each hot lookup on the big world; ``scans``: those with a Seq Scan."""
    hsm = _hsm()

    async def work(conn: Any) -> dict[str, Any]:
        tid = await conn.fetchval("SELECT tid FROM terminals ORDER BY tid DESC LIMIT 1")
        card = await conn.fetchval("SELECT id FROM cards ORDER BY id DESC LIMIT 1")
        pan_hash = hsm.pan_hash(demo_pan(1))
        assert tid.isalnum(), tid  # a literal below (EXECUTE takes no bind parameters)
        texts = {}
        for name, query in HOT_LOOKUPS.items():
            await conn.execute("PREPARE hot (text, bigint, bytea) AS " + query)
            rows = await conn.fetch(f"EXPLAIN EXECUTE hot ('{tid}', {int(card)}, '\\x{pan_hash.hex()}')")
            await conn.execute("DEALLOCATE hot")
            texts[name] = [r[0] for r in rows]
        return {"plans": texts, "scans": sorted(name for name, lines in texts.items()
                                                if any("Seq Scan" in line for line in lines))}

    return on_postgres(work)

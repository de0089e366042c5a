"""The gateway's lookups by request key go through the key's unique index
whatever the statistics say. The gateway's pool plans generically
(``db.create_pool``); a generic plan made before ``gw_transactions`` had
statistics once read the stored answer through the (terminal, RRN) index,
scanning all of a terminal's rows. Against a real PostgreSQL: each test's
database is new, its tables never analyzed."""

from __future__ import annotations

import re
from datetime import date

import asyncpg

from gateway.acquiring import store
from gateway.acquiring.operations import TxnKey

KEY_INDEX = "gw_transactions_tid_batch_stan_mti_class_key"


async def test_gw_transactions_has_no_statistics_in_a_new_database(db):
    assert await db.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'gw_transactions'") == -1


async def test_only_the_request_key_index_of_gw_transactions_leads_with_the_terminal(db):
    leading = await db.fetch(
        """SELECT i.indexrelid::regclass::text AS name
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = 'gw_transactions'::regclass AND a.attname = 'tid'""")
    assert [row["name"] for row in leading] == [KEY_INDEX]


async def generic_plan(db: asyncpg.Connection, query: str, *args: object) -> str:
    await db.execute("SET plan_cache_mode = force_generic_plan")  # as the gateway's pool
    return "\n".join(row[0] for row in await db.fetch("EXPLAIN " + query, *args))


async def test_the_context_read_finds_a_stored_answer_by_its_key_index(db):
    requests = [store._ContextRequest.of(TxnKey(f"TERM{n:04d}", 1, f"{n:06d}", "0200"), bytes(32), None,
                                         None, date(2026, 11, 24), False) for n in range(3)]
    plan = await generic_plan(db, store._CONTEXT_QUERY, *map(list, zip(*requests)))
    assert re.search(rf"Index (Only )?Scan using {KEY_INDEX} on gw_transactions tx\b", plan), plan


async def test_analyze_gathers_no_statistics_for_the_stored_response_and_content_hash(db):
    await db.execute(
        """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, content_hash, response, response_code,
                                        status, rrn, local_date)
           SELECT 'TERM' || n % 4, 1, lpad(n::text, 6, '0'), '0200', 'purchase', md5(n::text),
                  jsonb_build_object('response_code', '00', 'rrn', lpad(n::text, 12, '0')), '00', 'approved',
                  lpad(n::text, 12, '0'), '1124'
             FROM generate_series(1, 50) n""")
    await db.execute("ANALYZE gw_transactions")
    analyzed = {row["attname"] for row in await db.fetch(
        "SELECT attname FROM pg_stats WHERE schemaname = 'public' AND tablename = 'gw_transactions'")}
    assert {"tid", "batch", "stan", "rrn", "status"} <= analyzed
    assert not {"response", "content_hash"} & analyzed

"""``Store.warm_up``, which readies each new pool connection: it runs the
context read and the group commit's purchases for real, in a transaction it
rolls back, so that nothing of it stays. Against a real PostgreSQL."""

from __future__ import annotations

import asyncpg

from gateway.acquiring import store

TABLES = ("ledger_accounts", "ledger_postings", "ledger_transfers", "gw_transactions")


async def row_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}


async def ids_taken(db: asyncpg.Connection, table: str) -> int:
    """How far the table's id sequence has gone (a rolled-back insert still takes its id)."""
    sequence = await db.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
    return await db.fetchval(f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {sequence}")


async def test_warm_up_posts_three_purchases_and_leaves_nothing_behind(db, cli, world):
    before, postings_before, transactions_before = (await row_counts(db), await ids_taken(db, "ledger_postings"),
                                                    await ids_taken(db, "gw_transactions"))

    await store.Store.warm_up(db)  # raises unless its three purchases were approved

    assert await row_counts(db) == before
    assert await ids_taken(db, "ledger_postings") == postings_before + 3
    assert await ids_taken(db, "gw_transactions") == transactions_before + 3
    assert not db.is_in_transaction()
    # The connection serves as before, and a second warm-up (another backend's keys would differ) works too.
    await store.Store.warm_up(db)
    assert await row_counts(db) == before

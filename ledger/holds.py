"""Holds: two-phase transfers, as TigerBeetle's pending transfers (WIRE.md 9.3).

A hold reserves an amount on its debit account and moves no money: the
account's available balance is its balance less its pending debits, and the
no-overdraft rule holds on the available balance (for holds, postings and
reversals alike). A hold is then resolved exactly once: posted (fully,
partly, or over by a limit its poster gives, the excess covered by the
available balance), voided, or expired, each under its own idempotency key,
in one round trip (a PL/pgSQL function of ledger/functions/holds.sql).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ledger.postings import PostResult, Transfer, transfers_json

EXPIRY_BATCH_MAX = 500  # holds expired per call of expire_due


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold as stored, found by the key that placed it."""

    key: str
    debit_account_id: int
    credit_account_id: int
    amount_fen: int
    code: str
    status: str  # pending, posted, voided, expired
    expires_at: datetime | None
    posted_fen: int | None


async def hold(conn: asyncpg.Connection | asyncpg.Pool, key: str, transfer: Transfer,
               expires_at: datetime | None) -> PostResult:
    """Place a hold of ``transfer`` under ``key``, expiring at ``expires_at`` (None: never).
    The debit account's available balance short of it: ``exceeds_credits``, nothing held."""
    return PostResult(await conn.fetchval(
        "SELECT ledger_hold($1, $2, $3, $4, $5, $6)", key, transfer.debit_account_id,
        transfer.credit_account_id, transfer.amount_fen, transfer.code, expires_at))


async def post_hold(conn: asyncpg.Connection | asyncpg.Pool, key: str, hold_key: str, transfers: list[Transfer],
                    *, amount_max_fen: int | None = None, now: datetime | None = None) -> PostResult:
    """Post the hold placed under ``hold_key``: its reservation released and ``transfers``
    applied in its place, atomically, under ``key``. The amount posted (what the transfers
    debit from the hold's debit account) may be up to ``amount_max_fen`` (None: the hold's)."""
    if now is None:
        return PostResult(await conn.fetchval("SELECT ledger_post_hold($1, $2, $3::jsonb, $4)",
                                              key, hold_key, transfers_json(transfers), amount_max_fen))
    return PostResult(await conn.fetchval("SELECT ledger_post_hold($1, $2, $3::jsonb, $4, $5)",
                                          key, hold_key, transfers_json(transfers), amount_max_fen, now))


async def void_hold(conn: asyncpg.Connection | asyncpg.Pool, key: str, hold_key: str, *,
                    now: datetime | None = None) -> PostResult:
    """Void the hold placed under ``hold_key`` under ``key``: its reservation released, nothing moved."""
    if now is None:
        return PostResult(await conn.fetchval("SELECT ledger_void_hold($1, $2)", key, hold_key))
    return PostResult(await conn.fetchval("SELECT ledger_void_hold($1, $2, $3)", key, hold_key, now))


async def expire_due(conn: asyncpg.Connection | asyncpg.Pool, now: datetime,
                     limit: int = EXPIRY_BATCH_MAX) -> list[str]:
    """Expire up to ``limit`` pending holds whose time has come at ``now``; holds locked
    elsewhere (being resolved, or expired by another gateway) are skipped. The keys
    that placed the holds expired."""
    return list(await conn.fetchval("SELECT ledger_expire_holds($1, $2)", now, limit))


async def find(conn: asyncpg.Connection | asyncpg.Pool, hold_key: str) -> Hold | None:
    """The hold placed under ``hold_key``, as stored (an expired-by-time hold nobody has
    touched still reads pending here: its expiry is written when something resolves it)."""
    row = await conn.fetchrow(
        """SELECT p.idempotency_key AS key, h.debit_account_id, h.credit_account_id, h.amount, h.code, h.status,
                  h.expires_at, h.posted_amount
             FROM ledger_holds h JOIN ledger_postings p ON p.id = h.posting_id
            WHERE p.idempotency_key = $1""", hold_key)
    if row is None:
        return None
    return Hold(row["key"], row["debit_account_id"], row["credit_account_id"], row["amount"], row["code"],
                row["status"], row["expires_at"], row["posted_amount"])

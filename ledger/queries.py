"""Read-only questions to the ledger, answered from its own tables (no other is named).

Reports ask these instead of reading ``ledger_*`` themselves. A balance is
credits minus debits, as in ``accounts``; a window is [start, end) of the
transfers' ``created_at``. Call them inside the caller's snapshot
(REPEATABLE READ) when several answers must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ledger.accounts import AccountKind


async def balance_before(conn: asyncpg.Connection, account: int, at: datetime) -> int:
    """The account's balance from its transfers created before ``at``."""
    return await conn.fetchval(
        """SELECT coalesce(sum(CASE WHEN credit_account_id = $1 THEN amount ELSE -amount END), 0)::bigint
             FROM ledger_transfers
            WHERE (debit_account_id = $1 OR credit_account_id = $1) AND created_at < $2""", account, at)


@dataclass(frozen=True, slots=True)
class PostingMoves:
    """One posting's transfers to or from the accounts asked about."""

    posting_id: int
    created_at: datetime  # of its first such transfer
    idempotency_key: str
    reverses_posting_id: int | None
    codes: tuple[str, ...]  # of those transfers, distinct, sorted
    net_fen: dict[int, int]  # by account asked about: what the posting credited it less what it debited

    def net(self, account: int) -> int:
        return self.net_fen.get(account, 0)


async def postings_moving(conn: asyncpg.Connection, accounts: Sequence[int], start: datetime,
                          end: datetime) -> list[PostingMoves]:
    """The postings with a transfer to or from any of ``accounts`` created in the
    window, ascending by time, then posting id."""
    rows = await conn.fetch(
        """SELECT t.posting_id, min(t.created_at) AS created_at, p.idempotency_key, p.reverses_posting_id,
                  array_agg(DISTINCT t.code ORDER BY t.code) AS codes,
                  array_agg(t.debit_account_id) AS debits, array_agg(t.credit_account_id) AS credits,
                  array_agg(t.amount) AS amounts
             FROM ledger_transfers t
             JOIN ledger_postings p ON p.id = t.posting_id
            WHERE (t.debit_account_id = ANY ($1::bigint[]) OR t.credit_account_id = ANY ($1::bigint[]))
              AND t.created_at >= $2 AND t.created_at < $3
            GROUP BY t.posting_id, p.idempotency_key, p.reverses_posting_id
            ORDER BY 2, 1""", list(accounts), start, end)
    moves = []
    for row in rows:
        net_fen = dict.fromkeys(accounts, 0)
        for debit, credit, amount in zip(row["debits"], row["credits"], row["amounts"], strict=True):
            if credit in net_fen:
                net_fen[credit] += amount
            if debit in net_fen:
                net_fen[debit] -= amount
        moves.append(PostingMoves(row["posting_id"], row["created_at"], row["idempotency_key"],
                                  row["reverses_posting_id"], tuple(row["codes"]), net_fen))
    return moves


@dataclass(frozen=True, slots=True)
class WindowTotals:
    postings: int  # postings with a transfer that touches no account of the external kind
    movement_fen: int  # the sum of those transfers' amounts, each counted once
    external_fen: int  # the sum of the transfers to or from an account of the external kind


async def window_totals(conn: asyncpg.Connection, start: datetime, end: datetime,
                        external: AccountKind = AccountKind.CASH) -> WindowTotals:
    """What the ledger moved in the window: every transfer once at its amount
    (reversals too), those with an account of kind ``external`` (money from
    outside: the cash account) apart."""
    row = await conn.fetchrow(
        """WITH window_transfers AS (
               SELECT t.posting_id, t.amount, (d.kind = $3 OR c.kind = $3) AS external
                 FROM ledger_transfers t
                 JOIN ledger_accounts d ON d.id = t.debit_account_id
                 JOIN ledger_accounts c ON c.id = t.credit_account_id
                WHERE t.created_at >= $1 AND t.created_at < $2
           )
           SELECT count(DISTINCT posting_id) FILTER (WHERE NOT external) AS postings,
                  coalesce(sum(amount) FILTER (WHERE NOT external), 0)::bigint AS movement_fen,
                  coalesce(sum(amount) FILTER (WHERE external), 0)::bigint AS external_fen
             FROM window_transfers""", start, end, external.value)
    return WindowTotals(row["postings"], row["movement_fen"], row["external_fen"])


async def count_below(conn: asyncpg.Connection | asyncpg.Pool, accounts: Sequence[int], threshold_fen: int) -> int:
    """How many of ``accounts`` have a balance below ``threshold_fen``."""
    return await conn.fetchval(
        """SELECT count(*) FROM ledger_accounts
            WHERE id = ANY ($1::bigint[]) AND credits_posted - debits_posted < $2""", list(accounts), threshold_fen)

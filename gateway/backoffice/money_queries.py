"""What the back office's billers, bills and agent-network pages read that no
other module offers. Read only; every change goes through gateway.services.

The billers and bills are staff pages (no scope). ``terminal_counts`` takes the
scope of ``gateway.backoffice.queries``: None for staff, or the agent whose
subtree bounds the rows, inside the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import asyncpg

from gateway.backoffice import queries

BILL_STATUSES = ("open", "paid")
BILL_COLUMNS = ("account", "name", "period", "amount_fen", "due", "status", "reference", "paid_at")


async def billers(conn: asyncpg.Connection, code: str | None = None) -> list[dict[str, Any]]:
    """Every biller (or the one of ``code``): code, name, prepaid, exact, its commission, its open bills and
    pending outbox messages (never the connector's URL, which may carry credentials)."""
    return [dict(row) for row in await conn.fetch(
        """SELECT b.code, b.name, b.prepaid, b.exact, b.commission_bp, b.commission_fixed_fen, b.connector,
                  (SELECT count(*) FROM bills x WHERE x.biller_code = b.code AND x.status = 'open') AS open_bills,
                  (SELECT count(*) FROM biller_outbox o WHERE o.biller_code = b.code AND o.status = 'pending')
                      AS pending_messages
             FROM billers b WHERE $1::text IS NULL OR b.code = $1 ORDER BY b.code""", code)]


async def biller(conn: asyncpg.Connection, code: str) -> dict[str, Any] | None:
    rows = await billers(conn, code)
    return rows[0] if rows else None


@dataclass(frozen=True, slots=True)
class BillFilter:
    status: str | None = None  # open, paid
    account: str | None = None  # the biller's customer account, exactly

    @classmethod
    def parse(cls, params: Any) -> BillFilter:
        return cls(queries.choice(params.get("status"), BILL_STATUSES, "status"),
                   queries.text(params.get("account"), 40, "the account"))

    def query_string(self) -> str:
        """The filter as a URL's query (encoded: an account may hold ``&`` or ``=``)."""
        return urlencode({k: v for k, v in (("status", self.status), ("account", self.account)) if v is not None})


async def bills(conn: asyncpg.Connection, biller_code: str, where: BillFilter, tz: Any,
                limit: int | None = queries.ROWS_MAX) -> list[dict[str, Any]]:
    """The biller's bills matching the filter, by account and period; ``paid_at`` the local time of
    the payment that paid it."""
    rows = await conn.fetch(
        """SELECT b.account, b.name, b.period, b.amount_fen, b.due, b.status, b.reference, g.created_at AS paid_at
             FROM bills b LEFT JOIN gw_transactions g ON g.id = b.paid_txn_id
            WHERE b.biller_code = $1 AND ($2::text IS NULL OR b.status = $2) AND ($3::text IS NULL OR b.account = $3)
            ORDER BY b.account, b.period, b.id LIMIT $4""", biller_code, where.status, where.account, limit)
    return [{**dict(row), "due": row["due"].isoformat() if row["due"] else None,
             "paid_at": row["paid_at"].astimezone(tz).isoformat(timespec="seconds") if row["paid_at"] else None}
            for row in rows]


SAF_COLUMNS = ("id", "biller", "kind", "receipt", "status", "attempts", "last_error", "created_at", "next_attempt_at")


async def outbox_messages(conn: asyncpg.Connection, biller_code: str | None, *, include_done: bool, tz: Any,
                          limit: int) -> tuple[list[dict[str, Any]], int]:
    """``posgw saf list``'s messages (``gateway.upstream.outbox``: the same keys), bounded: the pending ones
    oldest first, or with ``include_done`` every one newest first (the done ones only grow), at most
    ``limit``; times in local time. And how many match in all."""
    rows = await conn.fetch(
        """SELECT id, biller_code AS biller, kind, receipt, status, attempts, last_error, created_at, next_attempt_at
             FROM biller_outbox
            WHERE ($1::text IS NULL OR biller_code = $1) AND ($2 OR status = 'pending')
            ORDER BY CASE WHEN $2 THEN -id ELSE 0 END, created_at, id LIMIT $3""", biller_code, include_done, limit)
    total = await conn.fetchval(
        """SELECT count(*) FROM biller_outbox
            WHERE ($1::text IS NULL OR biller_code = $1) AND ($2 OR status = 'pending')""", biller_code, include_done)
    local = ("created_at", "next_attempt_at")
    return [{name: row[name].astimezone(tz).isoformat(timespec="seconds") if name in local else row[name]
             for name in SAF_COLUMNS} for row in rows], total


TERMINAL_COUNT_COLUMNS = ("owner", "in_stock", "bound", "activated")

# The agents of the subtree of $1, or every agent when $1 is NULL (staff): the same condition as
# gateway.backoffice.queries' scoped queries.
_OWNERS_IN_SCOPE = """
WITH RECURSIVE subtree (code) AS (
    SELECT code FROM agents WHERE code = $1
    UNION ALL
    SELECT a.code FROM agents a JOIN subtree s ON a.parent_code = s.code
)"""


async def terminal_counts(conn: asyncpg.Connection, scope: str | None) -> list[dict[str, Any]]:
    """Terminals by owning agent in the scope (CLI.md ``agent show``'s ``terminals``): in stock (no
    merchant), bound and not yet activated, activated. Agents owning none are left out."""
    return [dict(row) for row in await conn.fetch(_OWNERS_IN_SCOPE + """
        SELECT t.owner_agent AS owner,
               count(*) FILTER (WHERE t.mid IS NULL) AS in_stock,
               count(*) FILTER (WHERE t.mid IS NOT NULL AND t.activated_at IS NULL) AS bound,
               count(*) FILTER (WHERE t.activated_at IS NOT NULL) AS activated
          FROM terminals t
         WHERE ($1::text IS NULL OR t.owner_agent IN (SELECT code FROM subtree))
         GROUP BY t.owner_agent ORDER BY t.owner_agent""", scope)]

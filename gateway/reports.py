"""Operator reports: an agent's daily float statement, a biller's daily remittance,
and the count of agents whose float runs low (for /metrics).

A "day" is the local day [00:00, 24:00) of the ``timezone`` setting; times in
the reports are ISO 8601 in that zone, with its offset.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway import validate
from gateway.validate import InvalidInput

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

STATEMENT_COLUMNS = ("time", "kind", "amount_fen", "receipt", "biller", "account", "tid", "commission_fen")
REMITTANCE_COLUMNS = ("receipt", "account", "amount_fen", "time", "tid", "agent", "paid_in_cash", "commission_fen")

# gw_transactions rows are written in the same database transaction as the
# ledger postings they made, so they carry the same created_at; looking them
# up within a margin of the day lets the created_at index narrow the search
# (gw_transactions has no index on posting_key).
_GW_MARGIN = timedelta(days=1)


def parse_date(value: str | None, tz: ZoneInfo) -> date:
    """``YYYY-MM-DD``; None is today in ``tz``."""
    if value is None:
        return datetime.now(tz).date()
    try:
        if not _DATE.match(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--date must be YYYY-MM-DD: {value!r}") from None


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants at which the local day starts and the next one starts
    (23 or 25 hours apart on a daylight-saving change)."""
    return (datetime.combine(day, time(0), tzinfo=tz),
            datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz))


async def consistent_snapshot(conn: asyncpg.Connection) -> None:
    """Make the rest of the current transaction read one snapshot, read-only.
    Must come before any other statement of the transaction."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def _local(ts: datetime, tz: ZoneInfo) -> str:
    return ts.astimezone(tz).isoformat()


# -- agent statement ------------------------------------------------------------

_OPENING_QUERY = """
SELECT coalesce(sum(CASE WHEN credit_account_id = $1 THEN amount ELSE -amount END), 0)::bigint
  FROM ledger_transfers
 WHERE (debit_account_id = $1 OR credit_account_id = $1) AND created_at < $2
"""

# One row per posting that moved the agent's float or commission in the day.
_MOVEMENTS_QUERY = """
WITH moves AS (
    SELECT t.posting_id,
           min(t.created_at) AS created_at,
           sum(CASE WHEN t.credit_account_id = $1 THEN t.amount
                    WHEN t.debit_account_id = $1 THEN -t.amount ELSE 0 END)::bigint AS float_fen,
           sum(CASE WHEN t.credit_account_id = $2 THEN t.amount
                    WHEN t.debit_account_id = $2 THEN -t.amount ELSE 0 END)::bigint AS commission_fen,
           array_agg(DISTINCT t.code ORDER BY t.code) AS codes
      FROM ledger_transfers t
     WHERE (t.debit_account_id IN ($1, $2) OR t.credit_account_id IN ($1, $2))
       AND t.created_at >= $3 AND t.created_at < $4
     GROUP BY t.posting_id
),
keyed AS (
    SELECT m.*, p.idempotency_key, p.reverses_posting_id
      FROM moves m JOIN ledger_postings p ON p.id = m.posting_id
),
-- The row that made a posting. (Reversing a void hands the void's new posting
-- key to the purchase too; the row that made the posting is the newest.)
gw AS (
    SELECT DISTINCT ON (g.posting_key)
           g.posting_key, g.tid, g.receipt, g.biller_code, g.bill_account, g.original_id
      FROM gw_transactions g
     WHERE g.posting_key IN (SELECT idempotency_key FROM keyed)
       AND g.created_at >= $3 - $5::interval AND g.created_at < $4 + $5::interval
     ORDER BY g.posting_key, g.id DESC
)
SELECT k.created_at, k.float_fen, k.commission_fen, k.codes, k.reverses_posting_id,
       gw.tid,
       coalesce(gw.receipt, o.receipt) AS receipt,
       coalesce(gw.biller_code, o.biller_code) AS biller,
       coalesce(gw.bill_account, o.bill_account) AS account
  FROM keyed k
  LEFT JOIN gw ON gw.posting_key = k.idempotency_key
  LEFT JOIN gw_transactions o ON o.id = gw.original_id
 ORDER BY k.created_at, k.posting_id
"""


def _movement_kind(row: asyncpg.Record) -> str:
    codes = list(row["codes"])
    if row["reverses_posting_id"] is not None:
        return "reversal"
    if "float_topup" in codes:
        return "topup"
    if "bill_payment" in codes and row["float_fen"] < 0:
        return "collection"
    return "+".join(codes)


async def agent_statement(conn: asyncpg.Connection, code: str, day: date, tz: ZoneInfo) -> dict[str, Any]:
    code = validate.code(code, "agent code")
    agent = await conn.fetchrow("SELECT float_account_id, commission_account_id FROM agents WHERE code = $1", code)
    if agent is None:
        raise InvalidInput(f"unknown agent {code}")
    float_id, commission_id = agent["float_account_id"], agent["commission_account_id"]
    start, end = day_bounds(day, tz)
    opening = await conn.fetchval(_OPENING_QUERY, float_id, start)
    rows = await conn.fetch(_MOVEMENTS_QUERY, float_id, commission_id, start, end, _GW_MARGIN)

    movements = []
    totals = {"collections_fen": 0, "collections_count": 0, "reversals_fen": 0, "reversals_count": 0,
              "topups_fen": 0, "topups_count": 0, "commission_fen": 0}
    for row in rows:
        kind = _movement_kind(row)
        amount, commission = row["float_fen"], row["commission_fen"]
        movements.append({
            "time": _local(row["created_at"], tz), "kind": kind, "amount_fen": amount,
            "receipt": row["receipt"], "biller": row["biller"], "account": row["account"], "tid": row["tid"],
            "commission_fen": commission,
        })
        totals["commission_fen"] += commission
        if kind == "collection":
            totals["collections_fen"] -= amount
            totals["collections_count"] += 1
        elif kind == "reversal":
            totals["reversals_fen"] += amount
            totals["reversals_count"] += 1
        elif kind == "topup":
            totals["topups_fen"] += amount
            totals["topups_count"] += 1
    return {
        "agent": code,
        "date": day.isoformat(),
        "timezone": tz.key,
        "opening_float_fen": opening,
        "closing_float_fen": opening + sum(m["amount_fen"] for m in movements),
        "movements": movements,
        **totals,
    }


# -- biller remittance ------------------------------------------------------------

_REMITTANCE_QUERY = """
SELECT receipt, bill_account AS account, amount_fen, created_at, tid, agent_code AS agent,
       coalesce(paid_in_cash, false) AS paid_in_cash, coalesce(commission_fen, 0) AS commission_fen
  FROM gw_transactions
 WHERE biller_code = $1 AND kind = 'bill_payment' AND response_code = '00' AND status = 'approved'
   AND created_at >= $2 AND created_at < $3
 ORDER BY created_at, id
"""


async def biller_remittance(conn: asyncpg.Connection, code: str, day: date, tz: ZoneInfo) -> dict[str, Any]:
    code = validate.code(code, "biller code")
    if not await conn.fetchval("SELECT 1 FROM billers WHERE code = $1", code):
        raise InvalidInput(f"unknown biller {code}")
    start, end = day_bounds(day, tz)
    payments = []
    for row in await conn.fetch(_REMITTANCE_QUERY, code, start, end):
        payment = dict(row)
        payment["time"] = _local(payment.pop("created_at"), tz)
        payments.append({name: payment[name] for name in REMITTANCE_COLUMNS})
    return {
        "biller": code,
        "date": day.isoformat(),
        "timezone": tz.key,
        "payments": payments,
        "count": len(payments),
        "total_fen": sum(p["amount_fen"] for p in payments),
        "commission_fen": sum(p["commission_fen"] for p in payments),
    }


# -- output and metrics -------------------------------------------------------------


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """A header row, then one row per item; None is empty, booleans are true/false."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else str(row[c]).lower() if isinstance(row[c], bool) else row[c]
                         for c in columns])
    return out.getvalue()


AGENTS_FLOAT_BELOW_QUERY = """
SELECT count(*) FROM agents a JOIN ledger_accounts l ON l.id = a.float_account_id
 WHERE l.credits_posted - l.debits_posted < $1
"""


async def agents_float_below(conn: asyncpg.Connection | asyncpg.Pool, threshold_fen: int) -> int:
    return await conn.fetchval(AGENTS_FLOAT_BELOW_QUERY, threshold_fen)


async def list_batches(conn: asyncpg.Connection, unbalanced_only: bool, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Settled batches with the gateway's totals, the terminal's, and the difference."""
    rows = await conn.fetch(
        """SELECT tid, batch, settled_at, debit_fen, debit_count, credit_fen, credit_count, terminal_totals,
                  balanced
             FROM gw_batches WHERE NOT ($1 AND balanced) ORDER BY settled_at, tid, batch""", unbalanced_only)
    batches = []
    for row in rows:
        totals = row["terminal_totals"]
        terminal_debit_fen = int(totals[:12]) if totals[:12].isdigit() else None
        batches.append({
            "tid": row["tid"], "batch": row["batch"], "settled_at": _local(row["settled_at"], tz),
            "debit_fen": row["debit_fen"], "debit_count": row["debit_count"],
            "credit_fen": row["credit_fen"], "credit_count": row["credit_count"],
            "terminal_debit_fen": terminal_debit_fen,
            "terminal_debit_count": int(totals[12:15]) if totals[12:15].isdigit() else None,
            "balanced": row["balanced"],
            "difference_fen": None if terminal_debit_fen is None else terminal_debit_fen - row["debit_fen"],
        })
    return batches

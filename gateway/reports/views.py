"""Operator reports: an agent's daily float statement, a biller's daily remittance,
the daily report (per type, agent and merchant, checked against the ledger),
and the counts of agents whose float runs low and of unbalanced batches (for /metrics).

A "day" is the local day [00:00, 24:00) of the ``timezone`` setting; times in
the reports are ISO 8601 in that zone, with its offset.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.domain import validate
from gateway.domain.validate import InvalidInput
from ledger import queries

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

STATEMENT_COLUMNS = ("time", "kind", "amount_fen", "receipt", "biller", "account", "tid", "commission_fen")
REMITTANCE_COLUMNS = ("receipt", "account", "amount_fen", "time", "tid", "agent", "paid_in_cash", "commission_fen")

# gw_transactions rows are written in the same database transaction as the
# ledger postings they made, so they carry the same created_at; looking them
# up within a margin of the day lets the created_at index narrow the search.
_GW_MARGIN = timedelta(days=1)


def parse_date(value: str | None, tz: ZoneInfo, today: date | None = None) -> date:
    """``YYYY-MM-DD``; None is ``today`` (pass ``Settings.today()``: the clock of CLI.md's Time
    rule, ``clock_offset_s`` included), or, without it, today in ``tz`` by this machine's clock."""
    if value is None:
        return today if today is not None else datetime.now(tz).date()
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

# The row that made each posting, by the posting's key, with the receipt, biller
# and account of the transaction a reversal undid. (Reversing a void hands the
# void's new posting key to the purchase too; the row that made the posting is
# the newest.)
_STATEMENT_ROWS_QUERY = """
SELECT DISTINCT ON (g.posting_key)
       g.posting_key, g.tid,
       coalesce(g.receipt, o.receipt) AS receipt,
       coalesce(g.biller_code, o.biller_code) AS biller,
       coalesce(g.bill_account, o.bill_account) AS account
  FROM gw_transactions g
  LEFT JOIN gw_transactions o ON o.id = g.original_id
 WHERE g.posting_key = ANY ($1::text[])
   AND g.created_at >= $2::timestamptz - $4::interval AND g.created_at < $3::timestamptz + $4::interval
 ORDER BY g.posting_key, g.id DESC
"""


def _movement_kind(posting: queries.PostingMoves, float_fen: int) -> str:
    if posting.reverses_posting_id is not None:
        return "reversal"
    if "float_topup" in posting.codes:
        return "topup"
    if "bill_payment" in posting.codes and float_fen < 0:
        return "collection"
    return "+".join(posting.codes)


async def agent_statement(conn: asyncpg.Connection, code: str, day: date, tz: ZoneInfo) -> dict[str, Any]:
    code = validate.code(code, "agent code")
    agent = await conn.fetchrow("SELECT float_account_id, commission_account_id FROM agents WHERE code = $1", code)
    if agent is None:
        raise InvalidInput(f"unknown agent {code}")
    float_id, commission_id = agent["float_account_id"], agent["commission_account_id"]
    start, end = day_bounds(day, tz)
    opening = await queries.balance_before(conn, float_id, start)
    postings = await queries.postings_moving(conn, (float_id, commission_id), start, end)
    made_by = {row["posting_key"]: dict(row) for row in await conn.fetch(
        _STATEMENT_ROWS_QUERY, [posting.idempotency_key for posting in postings], start, end, _GW_MARGIN)}

    movements = []
    totals = {"collections_fen": 0, "collections_count": 0, "reversals_fen": 0, "reversals_count": 0,
              "topups_fen": 0, "topups_count": 0, "commission_fen": 0}
    for posting in postings:
        amount, commission = posting.net(float_id), posting.net(commission_id)
        kind = _movement_kind(posting, amount)
        row = made_by.get(posting.idempotency_key, {})  # none for a top-up
        movements.append({
            "time": _local(posting.created_at, tz), "kind": kind, "amount_fen": amount,
            "receipt": row.get("receipt"), "biller": row.get("biller"), "account": row.get("account"),
            "tid": row.get("tid"), "commission_fen": commission,
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


# -- daily report -------------------------------------------------------------------

DAILY_BY_TYPE_COLUMNS = ("kind", "response_code", "count", "amount_fen")

# The transaction that made a ledger posting is the row whose own key
# (gw_posting_key: terminal, batch, STAN, MTI class) is the posting's
# idempotency key. (Not posting_key: reversing a void hands the purchase row the
# reversal's key, and the purchase's own posting would be found by no row.)
_OWN_KEY = "gw_posting_key(g.tid, g.batch, g.stan, g.mti_class)"

_DAILY_BY_TYPE_QUERY = """
SELECT kind, response_code, count(*) AS count, coalesce(sum(amount_fen), 0)::bigint AS amount_fen
  FROM gw_transactions
 WHERE created_at >= $1 AND created_at < $2
 GROUP BY kind, response_code
 ORDER BY kind, response_code
"""

# The day's rows with their merchant and agent, and what the posting each made
# moved, by kind of account (credits minus debits).
#
# This query and the top-ups of the agents' query below read the ledger's
# tables themselves, where the rest of the reports ask ledger.queries: each
# joins the day's gateway rows (tens of thousands) to the posting its own key
# made, one index look-up per row inside one statement. Through the ledger's
# API it would be every key of the day sent over and the movements matched in
# Python, a round trip of the day's size for each of the two tables, where the
# report stays one statement in one snapshot.
_DAILY_ROWS = f"""
WITH day_rows AS (
    SELECT g.id, g.kind, g.response_code, g.amount_fen, coalesce(g.paid_in_cash, false) AS paid_in_cash,
           m.mid, m.agent_code, {_OWN_KEY} AS own_key
      FROM gw_transactions g
      JOIN terminals te ON te.tid = g.tid
      JOIN merchants m ON m.mid = te.mid
     WHERE g.created_at >= $1 AND g.created_at < $2
),
moves AS (
    SELECT r.id,
           bool_or(ca.kind IN ('merchant', 'fee_income') OR da.kind IN ('merchant', 'fee_income'))
               AS merchant_side,
           sum(CASE WHEN ca.kind = 'merchant' THEN t.amount ELSE 0 END
               - CASE WHEN da.kind = 'merchant' THEN t.amount ELSE 0 END)::bigint AS merchant_fen,
           sum(CASE WHEN ca.kind = 'fee_income' THEN t.amount ELSE 0 END
               - CASE WHEN da.kind = 'fee_income' THEN t.amount ELSE 0 END)::bigint AS fee_fen,
           sum(CASE WHEN ca.kind = 'agent_float' THEN t.amount ELSE 0 END
               - CASE WHEN da.kind = 'agent_float' THEN t.amount ELSE 0 END)::bigint AS float_fen,
           sum(CASE WHEN ca.kind = 'commission' THEN t.amount ELSE 0 END
               - CASE WHEN da.kind = 'commission' THEN t.amount ELSE 0 END)::bigint AS commission_fen
      FROM day_rows r
      JOIN ledger_postings p ON p.idempotency_key = r.own_key
      JOIN ledger_transfers t ON t.posting_id = p.id
      JOIN ledger_accounts da ON da.id = t.debit_account_id
      JOIN ledger_accounts ca ON ca.id = t.credit_account_id
     GROUP BY r.id
),
txns AS (
    SELECT r.*, coalesce(mv.merchant_side, false) AS merchant_side,
           coalesce(mv.merchant_fen, 0) AS merchant_fen, coalesce(mv.fee_fen, 0) AS fee_fen,
           coalesce(mv.float_fen, 0) AS float_fen, coalesce(mv.commission_fen, 0) AS commission_fen
      FROM day_rows r LEFT JOIN moves mv ON mv.id = r.id
)
"""

_DAILY_MERCHANTS_QUERY = _DAILY_ROWS + """
SELECT mid,
       count(*) FILTER (WHERE kind = 'purchase' AND response_code = '00') AS purchases_count,
       coalesce(sum(amount_fen) FILTER (WHERE kind = 'purchase' AND response_code = '00'), 0)::bigint
           AS purchases_fen,
       count(*) FILTER (WHERE kind <> 'purchase' AND merchant_side) AS returns_count,
       (-coalesce(sum(merchant_fen + fee_fen) FILTER (WHERE kind <> 'purchase'), 0))::bigint AS returns_fen,
       coalesce(sum(fee_fen), 0)::bigint AS fees_fen,
       coalesce(sum(merchant_fen), 0)::bigint AS net_fen
  FROM txns
 GROUP BY mid
HAVING count(*) FILTER (WHERE kind = 'purchase' AND response_code = '00') > 0 OR bool_or(merchant_side)
 ORDER BY mid
"""

_DAILY_AGENTS_QUERY = _DAILY_ROWS + """,
per_agent AS (
    SELECT agent_code,
           count(*) FILTER (WHERE kind = 'bill_payment' AND response_code = '00' AND paid_in_cash)
               AS collections_count,
           coalesce(sum(amount_fen) FILTER (WHERE kind = 'bill_payment' AND response_code = '00'
                                              AND paid_in_cash), 0)::bigint AS collections_fen,
           count(*) FILTER (WHERE kind = 'reversal' AND float_fen > 0) AS reversals_count,
           coalesce(sum(float_fen) FILTER (WHERE kind = 'reversal' AND float_fen > 0), 0)::bigint
               AS reversals_fen,
           sum(commission_fen)::bigint AS commission_fen,
           sum(float_fen)::bigint AS transactions_float_fen
      FROM txns
     GROUP BY agent_code
),
topups AS (  -- money from outside (the cash account) into the agent's float; in SQL, see _DAILY_ROWS
    SELECT a.code AS agent_code, sum(t.amount)::bigint AS topups_fen
      FROM ledger_transfers t
      JOIN agents a ON a.float_account_id = t.credit_account_id
      JOIN ledger_accounts c ON c.id = t.debit_account_id AND c.kind = 'cash'
     WHERE t.created_at >= $1 AND t.created_at < $2
     GROUP BY a.code
)
SELECT coalesce(p.agent_code, tu.agent_code) AS agent,
       coalesce(p.collections_count, 0) AS collections_count,
       coalesce(p.collections_fen, 0) AS collections_fen,
       coalesce(p.reversals_count, 0) AS reversals_count,
       coalesce(p.reversals_fen, 0) AS reversals_fen,
       coalesce(p.commission_fen, 0) AS commission_fen,
       coalesce(tu.topups_fen, 0) AS topups_fen,
       (coalesce(tu.topups_fen, 0) + coalesce(p.transactions_float_fen, 0))::bigint AS float_movement_fen
  FROM per_agent p FULL JOIN topups tu ON tu.agent_code = p.agent_code
 WHERE tu.topups_fen IS NOT NULL OR p.collections_count > 0 OR p.commission_fen <> 0
    OR p.transactions_float_fen <> 0
 ORDER BY 1
"""

# What the day's transactions say they moved, from their own columns: the
# amount of each approved purchase, void, bill payment and voucher sale (with
# their commission), and for each reversal that undid a posting the amount (and
# commission) of the transaction it undid. One posting per such row.
_DAILY_REPORT_MOVEMENT_QUERY = """
SELECT count(*) AS postings,
       coalesce(sum(CASE WHEN g.kind = 'reversal'
                         THEN o.amount_fen + CASE WHEN o.kind IN ('bill_payment', 'voucher_sale')
                                                  THEN coalesce(o.commission_fen, 0) ELSE 0 END
                         WHEN g.kind IN ('bill_payment', 'voucher_sale') THEN g.amount_fen + coalesce(g.commission_fen, 0)
                         ELSE g.amount_fen END), 0)::bigint AS movement_fen
  FROM gw_transactions g
  LEFT JOIN gw_transactions o ON o.id = g.original_id
 WHERE g.created_at >= $1 AND g.created_at < $2
   AND ((g.kind IN ('purchase', 'void', 'bill_payment', 'voucher_sale') AND g.response_code = '00')
        OR (g.kind = 'reversal' AND g.posting_key IS NOT NULL))
"""

_DAILY_EXCEPTIONS_QUERY = """
SELECT g.created_at, g.tid, g.batch, g.stan, g.kind, g.exception, g.amount_fen, g.rrn,
       o.kind AS original_kind, o.rrn AS original_rrn, c.pan_masked
  FROM gw_transactions g
  LEFT JOIN gw_transactions o ON o.id = g.original_id
  LEFT JOIN cards c ON c.id = coalesce(g.card_id, o.card_id)  -- a reversal names no card: its original's
 WHERE g.created_at >= $1 AND g.created_at < $2 AND g.exception IS NOT NULL
 ORDER BY g.created_at, g.id
"""


async def daily_report(conn: asyncpg.Connection, day: date, tz: ZoneInfo) -> dict[str, Any]:
    """The local day's transactions, per type, agent and merchant, its
    exceptions, and a check of them against the ledger.

    Read it in one snapshot (``consistent_snapshot``). Every row counts on the
    day it was recorded: a purchase today voided tomorrow is today's purchase
    and tomorrow's return. Only requests recorded in gw_transactions appear
    (financial requests that got a storable answer; not sign-ons or echoes).

    - ``by_type``: per kind and response code, the count and the sum of the
      requests' amounts (as requested; an approved purchase voided later still
      counts under 00).
    - ``agents`` (those with activity): ``collections_*`` are the approved cash
      bill payments; ``reversals_*`` the reversals that gave float back;
      ``commission_fen`` the net commission credited (card payments earn it
      too, reversals take it back); ``topups_fen`` the operator's top-ups
      (money from the cash account);
      ``float_movement_fen`` the net change of the float (closing minus
      opening of ``agent statement``).
    - ``merchants`` (those with an approved purchase or money moved):
      ``purchases_*`` the approved purchases (gross); ``returns_*`` what voids
      and purchase reversals took back (a reversed void gives it again, so it
      counts negative); ``fees_fen`` the net discount (MDR) charged;
      ``net_fen`` the net movement of the merchant's account, which is
      ``purchases_fen - returns_fen - fees_fen``. Fees and net come from the
      postings the transactions made.
    - ``exceptions``: the day's rows with an exception (e.g.
      ``void_reversal_not_covered``: a void's reversal the card could not
      cover; answered 00, the purchase stays voided).
    - ``ledger_check`` compares two sums over the day. ``report_movement_fen``:
      what the transactions say they moved, from their own columns (amount of
      each approved purchase, void and bill payment plus a bill payment's
      commission; for each reversal that undid a posting, the amount and
      commission of what it undid). ``ledger_movement_fen``: the sum of the
      amounts of all the day's ledger transfers except those to or from the
      cash account, i.e. money from outside (operator top-ups of floats, card
      loads at issue: ``external_fen``, shown apart; no transaction touches
      the cash account). Each transfer counts once at its amount,
      reversal transfers too. The number of postings is compared as well
      (each such transaction makes exactly one). ``ok`` when both agree: every
      movement of the day is explained by a transaction, and every transaction
      that says it moved money did, by its amount.
    """
    start, end = day_bounds(day, tz)
    by_type = [dict(row) for row in await conn.fetch(_DAILY_BY_TYPE_QUERY, start, end)]
    agents = [dict(row) for row in await conn.fetch(_DAILY_AGENTS_QUERY, start, end)]
    merchants = [dict(row) for row in await conn.fetch(_DAILY_MERCHANTS_QUERY, start, end)]
    exceptions = []
    for row in await conn.fetch(_DAILY_EXCEPTIONS_QUERY, start, end):
        item = dict(row)
        exceptions.append({"time": _local(item.pop("created_at"), tz), **item})
    report_side = await conn.fetchrow(_DAILY_REPORT_MOVEMENT_QUERY, start, end)
    ledger_side = await queries.window_totals(conn, start, end)  # every transfer but those with the cash account
    problems = []
    if report_side["movement_fen"] != ledger_side.movement_fen:
        problems.append(f"the day's ledger transfers move {ledger_side.movement_fen} fen,"
                        f" the day's transactions say {report_side['movement_fen']}")
    if report_side["postings"] != ledger_side.postings:
        problems.append(f"the day has {ledger_side.postings} ledger postings,"
                        f" the day's transactions say {report_side['postings']}")
    return {
        "date": day.isoformat(),
        "timezone": tz.key,
        "by_type": by_type,
        "agents": agents,
        "merchants": merchants,
        "exceptions": exceptions,
        "ledger_check": {
            "ok": not problems,
            "ledger_movement_fen": ledger_side.movement_fen,
            "report_movement_fen": report_side["movement_fen"],
            "difference_fen": ledger_side.movement_fen - report_side["movement_fen"],
            "ledger_postings_count": ledger_side.postings,
            "report_postings_count": report_side["postings"],
            "external_fen": ledger_side.external_fen,
            "problems": problems,
        },
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


async def agents_float_below(conn: asyncpg.Connection | asyncpg.Pool, threshold_fen: int) -> int:
    """How many agents' floats are below ``threshold_fen`` (for /metrics)."""
    floats = [row["float_account_id"] for row in await conn.fetch("SELECT float_account_id FROM agents")]
    return await queries.count_below(conn, floats, threshold_fen)


async def batches_unbalanced(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Settled batches whose totals disagree (all of them, as ``batch list --unbalanced``)."""
    return await conn.fetchval("SELECT count(*) FROM gw_batches WHERE NOT balanced")


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


async def risk_events(conn: asyncpg.Connection, tid: str | None, day: date | None,
                      tz: ZoneInfo) -> list[dict[str, Any]]:
    """Declines by risk rules, oldest first, for one terminal and/or one local day."""
    start, end = day_bounds(day, tz) if day is not None else (None, None)
    rows = await conn.fetch(
        """SELECT created_at, tid, rule, response_code, risk_values FROM risk_events
            WHERE ($1::text IS NULL OR tid = $1)
              AND ($2::timestamptz IS NULL OR (created_at >= $2 AND created_at < $3))
            ORDER BY created_at, id""", tid, start, end)
    return [{"time": _local(row["created_at"], tz), "tid": row["tid"], "rule": row["rule"],
             "response_code": row["response_code"], "values": json.loads(row["risk_values"])} for row in rows]

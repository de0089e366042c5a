"""What the back office's pages read. Read only; every change goes through gateway.services.

Every query of a page an agent user may open takes ``scope``: None for staff
(everything), or the agent code whose subtree (itself and its descendants,
their merchants and terminals) bounds the rows, inside the SQL itself. Cards
are only ever read as ``pan_masked`` (the table holds no clear PAN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.reports.views import day_bounds, list_batches
from gateway.upstream.outbox import queue_depth

ROWS_MAX = 500  # rows a list page shows (the CSV export has them all)

# The agents of the subtree of $1 (none when $1 is NULL: staff read everything).
_SUBTREE = """
WITH RECURSIVE subtree (code) AS (
    SELECT code FROM agents WHERE code = $1
    UNION ALL
    SELECT a.code FROM agents a JOIN subtree s ON a.parent_code = s.code
)"""
_IN_SCOPE = "($1::text IS NULL OR {column} IN (SELECT code FROM subtree))"
# A terminal's agent: its merchant's, or, in stock (no merchant), its owner's.
_TERMINAL_AGENT = "coalesce(m.agent_code, t.owner_agent)"

_DIGITS = re.compile(r"^\d+$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


# -- filters: what a person types, checked (InvalidInput: 400) --------------------------------


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def digits(value: str | None, length: int, what: str) -> str | None:
    value = _blank(value)
    if value is not None and not (len(value) == length and _DIGITS.match(value)):
        raise InvalidInput(f"{what} is {length} digits")
    return value


def text(value: str | None, length_max: int, what: str) -> str | None:
    value = _blank(value)
    if value is not None and not (len(value) <= length_max and _PRINTABLE.match(value)):
        raise InvalidInput(f"{what} is at most {length_max} printable characters")
    return value


def choice(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    value = _blank(value)
    if value is not None and value not in choices:
        raise InvalidInput(f"{what} is one of {', '.join(choices)}")
    return value


def day(value: str | None) -> date | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("the date is YYYY-MM-DD") from None


@dataclass(frozen=True, slots=True)
class TerminalFilter:
    q: str | None = None  # the start of a TID or MID
    status: str | None = None  # active, frozen
    agent: str | None = None  # the merchant's agent

    @classmethod
    def parse(cls, params: Any) -> TerminalFilter:
        return cls(text(params.get("q"), 15, "the TID or MID"), choice(params.get("status"), ("active", "frozen"),
                   "status"), text(params.get("agent"), 16, "the agent"))


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    tid: str | None = None
    rrn: str | None = None
    stan: str | None = None
    day: date | None = None
    last4: str | None = None

    @classmethod
    def parse(cls, params: Any) -> TransactionFilter:
        return cls(text(params.get("tid"), 8, "the TID"), digits(params.get("rrn"), 12, "the RRN"),
                   digits(params.get("stan"), 6, "the STAN"), day(params.get("date")),
                   digits(params.get("last4"), 4, "the card's last four"))

    def query_string(self) -> str:
        pairs = {"tid": self.tid, "rrn": self.rrn, "stan": self.stan,
                 "date": self.day.isoformat() if self.day else None, "last4": self.last4}
        return "&".join(f"{k}={v}" for k, v in pairs.items() if v is not None)


# -- agents ---------------------------------------------------------------------------------


async def agent_in_scope(conn: asyncpg.Connection, scope: str | None, code: str) -> bool:
    """Whether the agent exists and lies in the scope (an agent user: its own subtree)."""
    return bool(await conn.fetchval(
        _SUBTREE + f"SELECT 1 FROM agents WHERE code = $2 AND {_IN_SCOPE.format(column='code')}", scope, code))


async def agent_tree(conn: asyncpg.Connection, scope: str | None) -> list[dict[str, Any]]:
    """Agents in the scope, depth first from their roots, with ``depth``, float and commission."""
    return [dict(row) for row in await conn.fetch(_SUBTREE + """
        , tree (code, depth, path) AS (
            SELECT code, 0, ARRAY[code] FROM agents
             WHERE CASE WHEN $1::text IS NULL THEN parent_code IS NULL ELSE code = $1 END
            UNION ALL
            SELECT a.code, t.depth + 1, t.path || a.code FROM agents a JOIN tree t ON a.parent_code = t.code
        )
        SELECT a.code, a.name, a.parent_code AS parent, a.status, t.depth,
               f.credits_posted - f.debits_posted AS float_fen, c.credits_posted - c.debits_posted AS commission_fen,
               (SELECT count(*) FROM merchants m WHERE m.agent_code = a.code) AS merchants
          FROM tree t JOIN agents a USING (code)
          JOIN ledger_accounts f ON f.id = a.float_account_id
          JOIN ledger_accounts c ON c.id = a.commission_account_id
         ORDER BY t.path""", scope)]


async def floats_below(conn: asyncpg.Connection, threshold_fen: int) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(
        """SELECT a.code, a.name, f.credits_posted - f.debits_posted AS float_fen
             FROM agents a JOIN ledger_accounts f ON f.id = a.float_account_id
            WHERE f.credits_posted - f.debits_posted < $1 ORDER BY float_fen, a.code""", threshold_fen)]


async def top_ups(conn: asyncpg.Connection, code: str, tz: ZoneInfo, limit: int = 50) -> list[dict[str, Any]]:
    """The agent's latest float top-ups, newest first."""
    rows = await conn.fetch(
        """SELECT t.created_at, t.amount
             FROM ledger_transfers t JOIN agents a ON a.float_account_id = t.credit_account_id
            WHERE a.code = $1 AND t.code = 'float_topup' ORDER BY t.id DESC LIMIT $2""", code, limit)
    return [{"time": row["created_at"].astimezone(tz).isoformat(timespec="seconds"), "amount_fen": row["amount"]}
            for row in rows]


async def merchants_volume(conn: asyncpg.Connection, scope: str | None, start: datetime,
                           end: datetime) -> list[dict[str, Any]]:
    """Each merchant in scope with the count and amount of its approved purchases in [start, end)."""
    return [dict(row) for row in await conn.fetch(_SUBTREE + f"""
        SELECT m.mid, m.name, m.agent_code AS agent, m.status,
               count(g.id) AS count, coalesce(sum(g.amount_fen), 0)::bigint AS amount_fen
          FROM merchants m
          LEFT JOIN terminals t ON t.mid = m.mid
          LEFT JOIN gw_transactions g ON g.tid = t.tid AND g.kind = 'purchase' AND g.status = 'approved'
                                     AND g.created_at >= $2 AND g.created_at < $3
         WHERE {_IN_SCOPE.format(column='m.agent_code')}
         GROUP BY m.mid ORDER BY m.mid""", scope, start, end)]


# -- terminals ------------------------------------------------------------------------------

TERMINAL_COLUMNS = ("tid", "mid", "merchant", "agent", "status", "signed_on", "last_seen", "location")


async def terminals(conn: asyncpg.Connection, scope: str | None, where: TerminalFilter,
                    tz: ZoneInfo, limit: int | None = ROWS_MAX) -> list[dict[str, Any]]:
    rows = await conn.fetch(_SUBTREE + f"""
        SELECT t.tid, t.mid, m.name AS merchant, {_TERMINAL_AGENT} AS agent, t.status,
               (t.mak_lmk IS NOT NULL AND t.keys_expire_at > now()) AS signed_on, t.last_seen,
               t.latitude, t.longitude
          FROM terminals t LEFT JOIN merchants m ON m.mid = t.mid
         WHERE {_IN_SCOPE.format(column=_TERMINAL_AGENT)}
           AND ($2::text IS NULL OR starts_with(t.tid, $2) OR starts_with(t.mid, $2))
           AND ($3::text IS NULL OR t.status = $3)
           AND ($4::text IS NULL OR {_TERMINAL_AGENT} = $4)
         ORDER BY t.tid LIMIT $5""", scope, where.q, where.status, where.agent, limit)
    return [{**{name: row[name] for name in TERMINAL_COLUMNS[:6]},
             "last_seen": row["last_seen"].astimezone(tz).isoformat(timespec="seconds") if row["last_seen"] else None,
             "location": f"{row['latitude']},{row['longitude']}" if row["latitude"] is not None else None}
            for row in rows]


async def terminal_in_scope(conn: asyncpg.Connection, scope: str | None, tid: str) -> dict[str, Any] | None:
    """The terminal's merchant and agent, or None when it does not exist or lies outside the scope."""
    row = await conn.fetchrow(_SUBTREE + f"""
        SELECT t.tid, t.mid, m.name AS merchant, {_TERMINAL_AGENT} AS agent
          FROM terminals t LEFT JOIN merchants m ON m.mid = t.mid
         WHERE t.tid = $2 AND {_IN_SCOPE.format(column=_TERMINAL_AGENT)}""", scope, tid)
    return None if row is None else dict(row)


# -- transactions ---------------------------------------------------------------------------

TRANSACTION_COLUMNS = ("time", "tid", "kind", "stan", "rrn", "pan_masked", "amount_fen", "response_code", "status")


async def transactions(conn: asyncpg.Connection, scope: str | None, where: TransactionFilter, tz: ZoneInfo,
                       limit: int | None = ROWS_MAX) -> list[dict[str, Any]]:
    """Transactions in scope matching the filter, newest first; the card only as ``pan_masked``."""
    start, end = day_bounds(where.day, tz) if where.day is not None else (None, None)
    rows = await conn.fetch(_SUBTREE + f"""
        SELECT g.id, g.created_at, g.tid, g.kind, g.stan, g.rrn, c.pan_masked, g.amount_fen, g.response_code,
               g.status
          FROM gw_transactions g
          JOIN terminals t ON t.tid = g.tid JOIN merchants m ON m.mid = t.mid
          LEFT JOIN cards c ON c.id = g.card_id
         WHERE {_IN_SCOPE.format(column='m.agent_code')}
           AND ($2::text IS NULL OR g.tid = $2) AND ($3::text IS NULL OR g.rrn = $3)
           AND ($4::text IS NULL OR g.stan = $4)
           AND ($5::timestamptz IS NULL OR (g.created_at >= $5 AND g.created_at < $6))
           AND ($7::text IS NULL OR right(c.pan_masked, 4) = $7)
         ORDER BY g.created_at DESC, g.id DESC LIMIT $8""",
        scope, where.tid, where.rrn, where.stan, start, end, where.last4, limit)
    return [{"id": row["id"], "time": row["created_at"].astimezone(tz).isoformat(timespec="seconds"),
             **{name: row[name] for name in TRANSACTION_COLUMNS[1:]}} for row in rows]


# -- the dashboard --------------------------------------------------------------------------


async def dashboard(conn: asyncpg.Connection, tz: ZoneInfo, float_low_threshold_fen: int,
                    today: date) -> dict[str, Any]:
    """Today's answers by type and response code, the floats below the threshold, the unbalanced batches,
    today's declines by risk rules, the store-and-forward messages pending."""
    start, end = day_bounds(today, tz)
    by_code = [dict(row) for row in await conn.fetch(
        """SELECT kind, response_code, count(*) AS count, coalesce(sum(amount_fen), 0)::bigint AS amount_fen
             FROM gw_transactions WHERE created_at >= $1 AND created_at < $2
            GROUP BY kind, response_code ORDER BY kind, response_code""", start, end)]
    return {
        "date": today.isoformat(),
        "by_code": by_code,
        "approvals": sum(row["count"] for row in by_code if row["response_code"] == "00"),
        "declines": sum(row["count"] for row in by_code if row["response_code"] != "00"),
        "approved_fen": sum(row["amount_fen"] for row in by_code if row["response_code"] == "00"),
        "floats_below": await floats_below(conn, float_low_threshold_fen),
        "threshold_fen": float_low_threshold_fen,
        "unbalanced_batches": await list_batches(conn, True, tz),
        "risk_declines": await risk_declines_count(conn, start, end),
        "saf_pending": (await queue_depth(conn)).pending,
    }


# -- merchants, cards ---------------------------------------------------------------------------

MERCHANT_COLUMNS = ("mid", "name", "agent", "status", "mdr_bp", "balance_fen", "terminals")


async def merchants(conn: asyncpg.Connection, scope: str | None, q: str | None,
                    limit: int | None = ROWS_MAX) -> list[dict[str, Any]]:
    """Merchants in scope (MID or name starting with ``q``), with their balance and number of terminals."""
    return [dict(row) for row in await conn.fetch(_SUBTREE + f"""
        SELECT m.mid, m.name, m.agent_code AS agent, m.status, m.mdr_bp,
               a.credits_posted - a.debits_posted AS balance_fen,
               (SELECT count(*) FROM terminals t WHERE t.mid = m.mid) AS terminals
          FROM merchants m JOIN ledger_accounts a ON a.id = m.account_id
         WHERE {_IN_SCOPE.format(column='m.agent_code')}
           AND ($2::text IS NULL OR starts_with(m.mid, $2) OR starts_with(lower(m.name), lower($2)))
         ORDER BY m.mid LIMIT $3""", scope, q, limit)]


async def merchant_in_scope(conn: asyncpg.Connection, scope: str | None, mid: str) -> bool:
    return bool(await conn.fetchval(
        _SUBTREE + f"SELECT 1 FROM merchants m WHERE m.mid = $2 AND {_IN_SCOPE.format(column='m.agent_code')}",
        scope, mid))


CARD_COLUMNS = ("pan_masked", "status", "pin_blocked", "expiry", "balance_fen")


async def cards(conn: asyncpg.Connection, last4: str | None, limit: int | None = ROWS_MAX) -> list[dict[str, Any]]:
    """Cards (masked: the first 6 and last 4 digits), with their balance; by the last four when given."""
    return [dict(row) for row in await conn.fetch(
        """SELECT c.pan_masked, c.status, c.pin_blocked, c.expiry, a.credits_posted - a.debits_posted AS balance_fen
             FROM cards c JOIN ledger_accounts a ON a.id = c.account_id
            WHERE ($1::text IS NULL OR right(c.pan_masked, 4) = $1)
            ORDER BY c.id LIMIT $2""", last4, limit)]


# -- a transaction's story ------------------------------------------------------------------------

STORY_COLUMNS = ("id", "time", "tid", "batch", "kind", "mti_class", "processing_code", "stan", "rrn", "pan_masked",
                 "amount_fen", "response_code", "status", "original_id", "exception")


async def transaction_story(conn: asyncpg.Connection, scope: str | None, txn_id: int,
                            tz: ZoneInfo) -> list[dict[str, Any]] | None:
    """The transaction, what it undid (its original) and what undid it (voids, reversals, and theirs),
    oldest first; None when it does not exist or lies outside the scope. Of the stored answer only the
    auth code is shown (the rest are the columns)."""
    rows = await conn.fetch(_SUBTREE + f"""
        , story (id) AS (
            SELECT g.id FROM gw_transactions g
              JOIN terminals t ON t.tid = g.tid JOIN merchants m ON m.mid = t.mid
             WHERE g.id = $2 AND {_IN_SCOPE.format(column='m.agent_code')}
        ), root (id) AS (  -- up to the first original
            SELECT id FROM story
            UNION
            SELECT g.original_id FROM gw_transactions g JOIN root r ON g.id = r.id WHERE g.original_id IS NOT NULL
        ), family (id) AS (  -- and down to everything that refers to it
            SELECT id FROM root
            UNION
            SELECT g.id FROM gw_transactions g JOIN family f ON g.original_id = f.id
        )
        SELECT g.*, g.response ->> 'auth_id' AS auth_id, c.pan_masked FROM gw_transactions g
          LEFT JOIN gw_transactions o ON o.id = g.original_id
          LEFT JOIN cards c ON c.id = coalesce(g.card_id, o.card_id)
         WHERE g.id IN (SELECT id FROM family)
         ORDER BY g.created_at, g.id""", scope, txn_id)
    if not rows:
        return None
    return [{**{name: row[name] for name in STORY_COLUMNS if name in row.keys()},
             "time": row["created_at"].astimezone(tz).isoformat(timespec="seconds"),
             "auth_id": row["auth_id"], "pan_masked": row["pan_masked"]} for row in rows]


# -- the daily report's chart ---------------------------------------------------------------------


async def hourly_volume(conn: asyncpg.Connection, day: date, tz: ZoneInfo) -> list[dict[str, Any]]:
    """The local day's approved purchases per local hour (0..23, every hour present): count and amount."""
    start, end = day_bounds(day, tz)
    rows = {row["hour"]: row for row in await conn.fetch(
        """SELECT extract(hour FROM created_at AT TIME ZONE $3)::int AS hour, count(*) AS count,
                  coalesce(sum(amount_fen), 0)::bigint AS amount_fen
             FROM gw_transactions
            WHERE created_at >= $1 AND created_at < $2 AND kind = 'purchase' AND response_code = '00'
            GROUP BY 1""", start, end, tz.key)}
    return [{"hour": hour, "count": rows[hour]["count"] if hour in rows else 0,
             "amount_fen": rows[hour]["amount_fen"] if hour in rows else 0} for hour in range(24)]


async def risk_declines_count(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    return await conn.fetchval("SELECT count(*) FROM risk_events WHERE created_at >= $1 AND created_at < $2",
                               start, end)

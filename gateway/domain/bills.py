"""The operator's side of bills: billers, open bills, meters, tokens."""

from __future__ import annotations

import secrets
from datetime import date
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.upstream.billers import BILLER_FIELDS, Biller
from ledger.accounts import AccountKind, create_account


def new_reference() -> str:
    """A bill reference (BR): opaque to the terminal, unguessable, 16 characters."""
    return secrets.token_hex(8).upper()


async def load_biller(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> Biller | None:
    row = await conn.fetchrow(f"SELECT {', '.join(BILLER_FIELDS)} FROM billers WHERE code = $1", code)
    return Biller(**dict(row)) if row is not None else None


async def _biller(conn: asyncpg.Connection, code: str) -> Biller:
    biller = await load_biller(conn, code)
    if biller is None:
        raise InvalidInput(f"unknown biller {code}")
    return biller


def biller_view(biller: Biller) -> dict[str, Any]:
    """What ``biller add`` prints (not the connector's URL, which may carry credentials)."""
    return {"code": biller.code, "name": biller.name, "prepaid": biller.prepaid, "exact": biller.exact,
            "commission_bp": biller.commission_bp, "commission_fixed_fen": biller.commission_fixed_fen,
            "connector": biller.connector, "notify": biller.notify,
            "voucher_values_fen": list(biller.voucher_values_fen)}


def biller_show_view(biller: Biller) -> dict[str, Any]:
    """``biller show`` (CLI.md rule "Vouchers"): the commission as ``commission_fen`` when
    it is a fixed amount, else ``commission_bp``; the voucher face values."""
    view: dict[str, Any] = {"code": biller.code, "name": biller.name, "prepaid": biller.prepaid,
                            "exact": biller.exact}
    if biller.commission_fixed_fen:
        view["commission_fen"] = biller.commission_fixed_fen
    else:
        view["commission_bp"] = biller.commission_bp
    return view | {"voucher_values_fen": list(biller.voucher_values_fen), "connector": biller.connector,
                   "notify": biller.notify}


async def add_biller(conn: asyncpg.Connection, code: str, name: str, *, prepaid: bool, exact: bool,
                     commission_bp: int, commission_fixed_fen: int, connector: str,
                     connector_url: str | None, notify: bool = False) -> dict[str, Any]:
    if await load_biller(conn, code) is not None:
        raise InvalidInput(f"biller {code} already exists")
    if connector == "http" and not connector_url:
        raise InvalidInput("--connector http needs --url")
    account = await create_account(conn, AccountKind.BILLER, f"biller:{code}", debits_must_not_exceed_credits=False)
    await conn.execute(
        """INSERT INTO billers (code, name, prepaid, exact, commission_bp, commission_fixed_fen, connector,
                                connector_url, account_id, notify)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        code, name, prepaid, exact, commission_bp, commission_fixed_fen, connector, connector_url, account, notify)
    return biller_view(await _biller(conn, code))


async def set_notify(conn: asyncpg.Connection, code: str, notify: bool) -> bool:
    """Whether the biller gets a notice of each payment that stands (``biller add --notify``):
    the payment's transaction queues it in the biller outbox (``POST /payments/{receipt}/confirm``)."""
    await _biller(conn, code)
    await conn.execute("UPDATE billers SET notify = $2 WHERE code = $1", code, notify)
    return notify


async def biller_notifies(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> bool:
    return bool(await conn.fetchval("SELECT notify FROM billers WHERE code = $1", code))


async def add_bill(conn: asyncpg.Connection, biller_code: str, account: str, name: str, amount_fen: int,
                   period: str, due: str | None, reference: str | None = None) -> dict[str, Any]:
    """An open bill under ``reference`` (default a new one)."""
    biller = await _biller(conn, biller_code)
    if biller.prepaid:
        raise InvalidInput(f"biller {biller_code} is prepaid: register meters, not bills")
    if len(period) != 6 or not period.isdigit() or not 1 <= int(period[4:]) <= 12:
        raise InvalidInput(f"period must be YYYYMM: {period!r}")
    try:
        due_date = None if due is None else date.fromisoformat(due)
    except ValueError:
        raise InvalidInput(f"--due must be YYYY-MM-DD: {due!r}") from None
    reference = reference or new_reference()
    await conn.execute(
        """INSERT INTO bills (biller_code, account, name, period, amount_fen, due, reference)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        biller_code, account, name, period, amount_fen, due_date, reference)
    return {"biller": biller_code, "account": account, "name": name, "period": period,
            "amount_fen": amount_fen, "status": "open", "reference": reference}


async def list_bills(conn: asyncpg.Connection, biller_code: str, account: str | None) -> list[dict[str, Any]]:
    await _biller(conn, biller_code)
    rows = await conn.fetch(
        """SELECT account, name, period, amount_fen, status, reference FROM bills
            WHERE biller_code = $1 AND ($2::text IS NULL OR account = $2)
            ORDER BY account, period, id""", biller_code, account)
    return [dict(row) for row in rows]


async def add_meter(conn: asyncpg.Connection, biller_code: str, meter: str, name: str) -> dict[str, Any]:
    biller = await _biller(conn, biller_code)
    if not biller.prepaid:
        raise InvalidInput(f"biller {biller_code} is postpaid: meters belong to prepaid billers")
    if await conn.fetchval("SELECT 1 FROM meters WHERE biller_code = $1 AND meter = $2", biller_code, meter):
        raise InvalidInput(f"meter {meter} already exists for {biller_code}")
    await conn.execute("INSERT INTO meters (biller_code, meter, name, reference) VALUES ($1, $2, $3, $4)",
                       biller_code, meter, name, new_reference())
    return {"biller": biller_code, "meter": meter, "name": name}


async def find_bill(conn: asyncpg.Connection, reference: str) -> dict[str, Any] | None:
    """The bill with this reference as ``bill add`` prints it, or None."""
    row = await conn.fetchrow(
        """SELECT biller_code AS biller, account, name, period, amount_fen, status, reference FROM bills
            WHERE reference = $1""", reference)
    return None if row is None else dict(row)


async def find_meter(conn: asyncpg.Connection, biller_code: str, meter: str) -> dict[str, Any] | None:
    """The meter as ``meter add`` prints it, or None."""
    row = await conn.fetchrow(
        "SELECT biller_code AS biller, meter, name FROM meters WHERE biller_code = $1 AND meter = $2",
        biller_code, meter)
    return None if row is None else dict(row)


async def list_meters(conn: asyncpg.Connection, biller_code: str) -> list[str]:
    rows = await conn.fetch("SELECT meter FROM meters WHERE biller_code = $1 ORDER BY meter", biller_code)
    return [row["meter"] for row in rows]


async def show_tokens(conn: asyncpg.Connection, meter: str) -> dict[str, Any]:
    if not await conn.fetchval("SELECT 1 FROM meters WHERE meter = $1", meter):
        raise InvalidInput(f"unknown meter {meter}")
    rows = await conn.fetch(
        "SELECT token, amount_fen, receipt, status FROM tokens WHERE meter = $1 ORDER BY created_at, token", meter)
    return {"meter": meter, "tokens": [dict(row) for row in rows]}

"""Prepaid vouchers (WIRE.md 9.7; CLI.md "Vouchers and the biller link", rule
"Vouchers"): what a voucher is now, and the checks of a redemption in their
order: unknown → not valid → PIN → meter.

A voucher is ``valid`` until it is redeemed once (``redeemed``) or its sale is
reversed (``void``); it reads ``expired`` once ``voucher_days_max`` local days
have passed, the day of its sale the first, and ``blocked`` after 5 wrong PINs
in a row, until ``voucher unblock``. Its PIN is kept only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.domain.validate import InvalidInput

PIN_TRIES_MAX = 5
STATUSES = ("valid", "redeemed", "void", "expired", "blocked")
NOT_FOUND, NOT_VALID, WRONG_PIN = 404, 409, 422  # the biller API's answers (CLI.md)

VOUCHER_COLUMNS = """serial, biller_code, amount_fen, pin_hash, status, pin_tries, tid, receipt, txn_id, sold_at,
                     sold_on, meter, token, redeemed_at"""


class VoucherRefused(InvalidInput):
    """A redemption refused (exit 2), with the biller API's status: 404 unknown
    voucher or meter, 409 not valid, 422 wrong PIN."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Voucher:
    serial: str
    biller_code: str
    amount_fen: int
    pin_hash: bytes
    status: str  # as stored: valid, redeemed, void
    pin_tries: int
    tid: str
    receipt: str
    txn_id: int
    sold_at: Any
    sold_on: date
    meter: str | None
    token: str | None
    redeemed_at: Any

    def status_on(self, today: date, days_max: int) -> str:
        """Its status on the local day ``today``: redeemed and void as stored; a
        valid one expired once ``days_max`` days have passed, else blocked after
        5 wrong PINs in a row."""
        if self.status != "valid":
            return self.status
        if today >= self.sold_on + timedelta(days=days_max):
            return "expired"
        if self.pin_tries >= PIN_TRIES_MAX:
            return "blocked"
        return "valid"


async def load(conn: asyncpg.Connection, serial: str, *, lock: bool = False) -> Voucher | None:
    row = await conn.fetchrow(f"SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE serial = $1"
                              + (" FOR UPDATE" if lock else ""), serial)
    return None if row is None else Voucher(**dict(row))


def view(voucher: Voucher, today: date, days_max: int, tz: ZoneInfo) -> dict[str, Any]:
    """``voucher show``: never the PIN; ``meter`` and ``token`` null until redeemed."""
    return {"serial": voucher.serial, "biller": voucher.biller_code, "amount_fen": voucher.amount_fen,
            "status": voucher.status_on(today, days_max), "sold_at": voucher.sold_at.astimezone(tz).isoformat(),
            "tid": voucher.tid, "receipt": voucher.receipt, "meter": voucher.meter, "token": voucher.token}


def state(voucher: Voucher | None) -> dict[str, Any] | None:
    """A voucher in the audit trail: what may change, never the PIN or its hash."""
    if voucher is None:
        return None
    return {"serial": voucher.serial, "status": voucher.status, "pin_tries": voucher.pin_tries,
            "meter": voucher.meter, "token": voucher.token}


async def meter_known(conn: asyncpg.Connection, biller_code: str, meter: str) -> bool:
    """A meter registered for the voucher's biller (another biller's meter is unknown)."""
    return bool(await conn.fetchval("SELECT 1 FROM meters WHERE biller_code = $1 AND meter = $2",
                                    biller_code, meter))


# -- biller API keys ---------------------------------------------------------------


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def api_key_hash(key: str) -> str:
    """How a key is kept: its SHA-256 (a key of 256 random bits needs no slower hash)."""
    return hashlib.sha256(key.encode()).hexdigest()


async def set_api_key(conn: asyncpg.Connection, biller_code: str, key: str) -> None:
    await conn.execute("UPDATE billers SET api_key_hash = $2 WHERE code = $1", biller_code, api_key_hash(key))


async def biller_of_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> str | None:
    """The biller whose current API key this is, or None."""
    digest = api_key_hash(key)
    row = await conn.fetchrow("SELECT code, api_key_hash FROM billers WHERE api_key_hash = $1", digest)
    if row is None or not hmac.compare_digest(row["api_key_hash"], digest):
        return None
    return row["code"]

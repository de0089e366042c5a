"""Prepaid cards: issue, show, freeze, unblock. No clear PAN or PIN is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.keys import SoftHsm
from gateway.registry import ACTIVE, FROZEN
from gateway.validate import InvalidInput
from ledger import postings
from ledger.accounts import CASH_ACCOUNT_CODE, AccountKind, account_id, balance_fen, create_account

CARD_FIELDS = "id, status, expiry, pin_tries, pin_blocked, pvv, account_id"


@dataclass(frozen=True, slots=True)
class CardRecord:
    id: int
    status: str
    expiry: str  # YYMM
    pin_tries: int  # wrong PINs in a row
    pin_blocked: bool
    pvv: bytes
    account_id: int


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits with ``*`` between (CLI.md); all ``*`` if too short to keep any."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def _expiry(value: str) -> str:
    if len(value) != 4 or not value.isdigit() or not 1 <= int(value[2:]) <= 12:
        raise InvalidInput(f"expiry must be YYMM: {value!r}")
    return value


async def issue_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str, pin: str, expiry: str,
                     balance_fen_opening: int) -> dict[str, Any]:
    pan_hash = hsm.pan_hash(pan)
    if await conn.fetchval("SELECT 1 FROM cards WHERE pan_hash = $1", pan_hash):
        raise InvalidInput(f"card {mask_pan(pan)} already exists")
    expiry = _expiry(expiry)
    account = await create_account(conn, AccountKind.CARD, f"card:{pan_hash.hex()[:24]}",
                                   debits_must_not_exceed_credits=True)
    card_id = await conn.fetchval(
        """INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
        pan_hash, hsm.encrypt_pan(pan), mask_pan(pan), hsm.pin_verification_value(pan, pin), expiry, account,
    )
    if balance_fen_opening:
        cash = await account_id(conn, CASH_ACCOUNT_CODE)
        result = await postings.post(conn, f"card-issue:{card_id}", [
            postings.Transfer(cash, account, balance_fen_opening, "card_issue")])
        if result is not postings.PostResult.OK:
            raise RuntimeError(f"opening balance not posted: {result}")
    return await show_card(conn, hsm, pan)


async def _card_row(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM cards WHERE pan_hash = $1", hsm.pan_hash(pan))
    if row is None:
        raise InvalidInput(f"unknown card {mask_pan(pan)}")
    return row


async def show_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> dict[str, Any]:
    row = await _card_row(conn, hsm, pan)
    return {
        "pan_masked": row["pan_masked"],
        "status": row["status"],
        "pin_blocked": row["pin_blocked"],
        "expiry": row["expiry"],
        "balance_fen": await balance_fen(conn, row["account_id"]),
    }


async def set_card_status(conn: asyncpg.Connection, hsm: SoftHsm, pan: str, status: str) -> None:
    row = await _card_row(conn, hsm, pan)
    await conn.execute("UPDATE cards SET status = $2 WHERE id = $1", row["id"], status)


async def unblock_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> None:
    row = await _card_row(conn, hsm, pan)
    await conn.execute("UPDATE cards SET pin_blocked = false, pin_tries = 0 WHERE id = $1", row["id"])


__all__ = ["ACTIVE", "FROZEN", "CardRecord", "issue_card", "mask_pan", "set_card_status", "show_card",
           "unblock_card"]

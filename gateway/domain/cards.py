"""Prepaid cards: issue, show, freeze, unblock. No clear PAN or PIN is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.domain.registry import ACTIVE, FROZEN
from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm
from ledger import postings
from ledger.accounts import CASH_ACCOUNT_CODE, AccountKind, account_id, balance_fen, create_accounts

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
    if await conn.fetchval("SELECT 1 FROM cards WHERE pan_hash = $1", hsm.pan_hash(pan)):
        raise InvalidInput(f"card {mask_pan(pan)} already exists")
    await issue_cards(conn, hsm, [(pan, pin, expiry)], balance_fen_opening)
    return await show_card(conn, hsm, pan)


ISSUE_POSTINGS_MAX = 500  # opening balances posted per ledger_post_many call


async def issue_cards(conn: asyncpg.Connection, hsm: SoftHsm, new: Sequence[tuple[str, str, str]],
                      balance_fen_opening: int) -> None:
    """Issue new cards, each (PAN, PIN, expiry), in a few statements for the
    whole set: an account for each, the card, and its opening balance from the
    cash account under the key ``card-issue:<card id>``. None may exist yet
    (the unique PAN hash refuses a second). Call it in a transaction: a
    failure part-way leaves cards without their opening balance."""
    rows = []
    for pan, pin, expiry in new:
        pan_hash = hsm.pan_hash(pan)
        rows.append((f"card:{pan_hash.hex()[:24]}", pan_hash, hsm.encrypt_pan(pan), mask_pan(pan),
                     hsm.pin_verification_value(pan, pin), _expiry(expiry)))
    if not rows:
        return []
    codes, hashes, pans_lmk, masked, pvvs, expiries = map(list, zip(*rows))
    accounts = await create_accounts(conn, AccountKind.CARD, codes, debits_must_not_exceed_credits=True)
    issued = await conn.fetch(
        """INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)
           SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::bytea[], $5::text[], $6::bigint[])
           RETURNING id, account_id, pan_masked, status, pin_blocked, expiry""",
        hashes, pans_lmk, masked, pvvs, expiries, [accounts[code] for code in codes])
    views = [_card_view(card, balance_fen_opening) for card in issued]
    if not balance_fen_opening:
        return views
    cash = await account_id(conn, CASH_ACCOUNT_CODE)
    openings = [(f"card-issue:{card['id']}", [postings.Transfer(cash, card["account_id"], balance_fen_opening,
                                                                 "card_issue")]) for card in issued]
    for start in range(0, len(openings), ISSUE_POSTINGS_MAX):
        results = await postings.post_many(conn, openings[start:start + ISSUE_POSTINGS_MAX])
        if any(result is not postings.PostResult.OK for result in results):
            raise RuntimeError(f"opening balances not posted: {set(results)}")
    return views


async def issued_pan_hashes(conn: asyncpg.Connection, pan_hashes: list[bytes]) -> set[bytes]:
    """Those of ``pan_hashes`` whose card is issued."""
    rows = await conn.fetch("SELECT pan_hash FROM cards WHERE pan_hash = ANY ($1::bytea[])", pan_hashes)
    return {row["pan_hash"] for row in rows}


async def _card_row(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM cards WHERE pan_hash = $1", hsm.pan_hash(pan))
    if row is None:
        raise InvalidInput(f"unknown card {mask_pan(pan)}")
    return row


async def find_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> dict[str, Any] | None:
    """``show_card``, or None for an unknown card."""
    row = await conn.fetchrow("SELECT * FROM cards WHERE pan_hash = $1", hsm.pan_hash(pan))
    return None if row is None else _card_view(row, await balance_fen(conn, row["account_id"]))


async def show_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> dict[str, Any]:
    row = await _card_row(conn, hsm, pan)
    return _card_view(row, await balance_fen(conn, row["account_id"]))


def _card_view(row: asyncpg.Record, balance: int) -> dict[str, Any]:
    """What ``card show`` prints: no PAN but its masked form, no PIN."""
    return {
        "pan_masked": row["pan_masked"],
        "status": row["status"],
        "pin_blocked": row["pin_blocked"],
        "expiry": row["expiry"],
        "balance_fen": balance,
    }


async def set_card_status(conn: asyncpg.Connection, hsm: SoftHsm, pan: str, status: str) -> None:
    row = await _card_row(conn, hsm, pan)
    await conn.execute("UPDATE cards SET status = $2 WHERE id = $1", row["id"], status)


async def unblock_card(conn: asyncpg.Connection, hsm: SoftHsm, pan: str) -> None:
    row = await _card_row(conn, hsm, pan)
    await conn.execute("UPDATE cards SET pin_blocked = false, pin_tries = 0 WHERE id = $1", row["id"])


__all__ = ["ACTIVE", "FROZEN", "CardRecord", "find_card", "issue_card", "issue_cards", "issued_pan_hashes", "mask_pan",
           "set_card_status", "show_card", "unblock_card"]


async def holds_fen(conn: asyncpg.Connection, pan_hash: bytes) -> int:
    """What the card's open holds reserve (its account's pending debits: ledger holds)."""
    return await conn.fetchval(
        """SELECT a.debits_pending FROM cards c JOIN ledger_accounts a ON a.id = c.account_id
            WHERE c.pan_hash = $1""", pan_hash)

"""Fixtures of the ledger tests: a funded card, a merchant, and connections for races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from ledger.accounts import CASH_ACCOUNT_CODE, AccountKind, account_id, create_account
from ledger.check import check
from ledger.postings import PostResult, Transfer, post

CARD_FUNDS_FEN = 1000
UNKNOWN_ACCOUNT_ID = 987_654_321


@dataclass
class Book:
    cash: int
    card: int
    merchant: int


@pytest.fixture
async def book(db: asyncpg.Connection) -> Book:
    """A card funded with 1000 fen from the cash account, and an empty merchant."""
    cash = await account_id(db, CASH_ACCOUNT_CODE)
    card = await create_account(db, AccountKind.CARD, "card:6200000000000001",
                                debits_must_not_exceed_credits=True)
    merchant = await create_account(db, AccountKind.MERCHANT, "merchant:MERCHANT0000001",
                                    debits_must_not_exceed_credits=False)
    assert await post(db, "fund:card", [Transfer(cash, card, CARD_FUNDS_FEN, "deposit")]) is PostResult.OK
    return Book(cash, card, merchant)


async def ledger_state(db: asyncpg.Connection) -> tuple[dict[str, tuple[int, int]], list[tuple]]:
    """Every account's posted debits and credits, and every transfer row: what 'moved' means."""
    accounts = {row["code"]: (row["debits_posted"], row["credits_posted"])
                for row in await db.fetch("SELECT code, debits_posted, credits_posted FROM ledger_accounts")}
    transfers = [tuple(row) for row in await db.fetch(
        """SELECT id, posting_id, debit_account_id, credit_account_id, amount, code, reverses_transfer_id
             FROM ledger_transfers ORDER BY id""")]
    return accounts, transfers


async def transfers_under(db: asyncpg.Connection, key: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT t.* FROM ledger_transfers t JOIN ledger_postings p ON p.id = t.posting_id
            WHERE p.idempotency_key = $1 ORDER BY t.id""", key)


async def assert_check_ok(db: asyncpg.Connection) -> None:
    report = await check(db)
    assert report.ok, report.problems


@pytest.fixture
async def connections(db_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Fifty separate connections, opened before the race starts."""
    opened = await asyncio.gather(*(asyncpg.connect(db_url) for _ in range(50)))
    yield list(opened)
    await asyncio.gather(*(conn.close() for conn in opened))

"""Fixtures of the payout tests: merchants with money, bank details, a clock after the day."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg
import pytest

from gateway.domain import banking, registry
from gateway.jobs import payouts
from gateway.keys import SoftHsm
from gateway.settings import Settings
from ledger.accounts import CASH_ACCOUNT_CODE, account_id, balance_fen
from ledger.check import check
from ledger.postings import PostResult, Transfer, post
from tests.conftest import TEST_LMK

AGENT = "AG01"
_keys = itertools.count(1)


def mid(n: int) -> str:
    return f"MERCHANT{n:07d}"


def account_number(n: int, version: int = 1) -> str:
    return f"62220202{n:08d}{version:03d}"  # a new version changes the last 4 digits too


@dataclass
class Book:
    """The test's database, the HSM and the local day whose payouts are run."""

    db: asyncpg.Connection
    hsm: SoftHsm
    settings: Settings
    day: date

    def after(self, day: date | None = None, hours: int = 1) -> datetime:
        """A moment ``hours`` into the day after ``day`` (default the book's day): that day is over."""
        return payouts.day_end(day or self.day, self.settings.tz) + timedelta(hours=hours)

    async def merchant(self, n: int, balance_fen: int = 0, *, bank: bool = True) -> str:
        await registry.add_merchant(self.db, mid(n), f"Shop {n}", AGENT, 0)
        if balance_fen:
            await self.credit(n, balance_fen)
        if bank:
            await self.set_bank(n)
        return mid(n)

    async def set_bank(self, n: int, version: int = 1) -> banking.BankDetailsChange:
        return await banking.set_bank_details(
            self.db, self.hsm, "merchant", mid(n), bank_account_number=account_number(n, version),
            bank_name="Bank of Example", account_name=f"Shop {n} Ltd")

    async def credit(self, n: int, amount_fen: int, code: str = "purchase") -> None:
        """Money into the merchant's account (as a purchase would put it), posted now."""
        cash = await account_id(self.db, CASH_ACCOUNT_CODE)
        merchant = await self.db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", mid(n))
        result = await post(self.db, f"test:{next(_keys)}", [Transfer(cash, merchant, amount_fen, code)])
        assert result is PostResult.OK

    async def balance(self, n: int) -> int:
        return await balance_fen(self.db, await self.db.fetchval("SELECT account_id FROM merchants WHERE mid = $1",
                                                                 mid(n)))

    async def system_balance(self, code: str) -> int:
        """A payout system account's balance; 0 before the first run made it."""
        account = await account_id(self.db, code)
        return 0 if account is None else await balance_fen(self.db, account)

    async def run(self, day: date | None = None) -> dict:
        day = day or self.day
        return await payouts.run_payouts(self.db, self.settings, day, now=self.after(day))

    async def assert_books_exact(self) -> None:
        """The ledger's invariants and the payouts rule (clearing = sent, not confirmed; bank = paid)."""
        report = await check(self.db)
        assert report.ok, report.problems
        assert await payouts.check_payouts(self.db) == []


@pytest.fixture
async def book(db: asyncpg.Connection, settings: Settings) -> Iterator[Book]:
    await registry.add_agent(db, AGENT, "Test Agent", None)
    day = datetime.now(settings.tz).date()
    yield Book(db, SoftHsm(bytes.fromhex(TEST_LMK)), settings, day)
    if datetime.now(settings.tz).date() != day:
        pytest.skip("crossed local midnight during the test")

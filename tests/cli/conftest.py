"""Fixtures of the CLI tests: money that reached a merchant yesterday; the audit trail as stored
(tests.services.conftest)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime, timedelta

import asyncpg
import pytest

from gateway.settings import Settings
from ledger.accounts import CASH_ACCOUNT_CODE, account_id
from ledger.postings import PostResult, Transfer, post
from tests.services.conftest import trail  # noqa: F401 (a fixture)

_keys = itertools.count(1)


@pytest.fixture
def yesterday(settings: Settings) -> Iterator[date]:
    """The last local day that is over: the one a payout run may pay."""
    day = datetime.now(settings.tz).date() - timedelta(days=1)
    yield day
    if datetime.now(settings.tz).date() - timedelta(days=1) != day:
        pytest.skip("crossed local midnight during the test")


@pytest.fixture
def credit_yesterday(db: asyncpg.Connection) -> Callable[[str, int], Awaitable[None]]:
    """Money into a merchant's account as a purchase of yesterday put it: posted now, dated a day back
    (every moment of today less a day is in yesterday, so the run of yesterday pays it)."""

    async def credit(mid: str, amount_fen: int) -> None:
        cash = await account_id(db, CASH_ACCOUNT_CODE)
        merchant = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", mid)
        key = f"test:{next(_keys)}"
        assert await post(db, key, [Transfer(cash, merchant, amount_fen, "purchase")]) is PostResult.OK
        await db.execute("""UPDATE ledger_transfers SET created_at = created_at - interval '1 day'
                             WHERE id = (SELECT max(id) FROM ledger_transfers)""")

    return credit


async def stored_audit_text(db: asyncpg.Connection) -> str:
    """Every audit record's entity, before and after, as one text."""
    return " ".join(row["text"] for row in await db.fetch(
        "SELECT entity || ' ' || before::text || ' ' || after::text AS text FROM audit_events"))

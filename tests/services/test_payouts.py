"""The payout commands (gateway.jobs.payouts run and confirm): each audited as one record by
gateway.services.payouts."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

import asyncpg
import pytest

from gateway.domain import registry
from gateway.domain.validate import InvalidInput
from gateway.jobs import payouts as payout_jobs
from gateway.services import banking
from ledger.accounts import CASH_ACCOUNT_CODE, account_id
from ledger.postings import PostResult, Transfer, post
from tests.services.conftest import ACTOR

MID = "MERCHANT0000001"


@pytest.fixture
async def paid_day(db, hsm, settings) -> date:
    """A merchant with bank details and 4,200 fen; the local day whose run pays it, with a clock after it."""
    await registry.add_agent(db, "AG01", "Test Agent", None)
    await registry.add_merchant(db, MID, "Test Shop", "AG01", 0)
    await banking.set_merchant_bank_details(db, "setup", hsm, MID, bank_account_number="6222021234560123",
                                            bank_name="Bank of Example", account_name="Test Shop Ltd")
    merchant = await db.fetchval("SELECT account_id FROM merchants WHERE mid = $1", MID)
    transfer = Transfer(await account_id(db, CASH_ACCOUNT_CODE), merchant, 4_200, "purchase")
    assert await post(db, "test:1", [transfer]) is PostResult.OK
    return datetime.now(settings.tz).date()


def after(day: date, settings) -> datetime:
    return payout_jobs.day_end(day, settings.tz) + timedelta(hours=1)


async def test_two_runs_of_a_date_at_once_pay_once_and_write_one_record(db, db_url, settings, paid_day, trail):
    connections = [await asyncpg.connect(db_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(payout_jobs.run(conn, f"runner:{n}", settings, paid_day,
                                                         now=after(paid_day, settings))
                                         for n, conn in enumerate(connections)))
    finally:
        for conn in connections:
            await conn.close()
    assert results[0] == results[1] == {"date": paid_day.isoformat(), "count": 1, "total_fen": 4_200,
                                        "skipped": []}
    records = [r for r in await trail() if r["action"] == "payout.run"]
    assert len(records) == 1
    assert (records[0]["entity"], records[0]["before"], records[0]["after"]) == (
        f"payout:{paid_day.isoformat()}", {},
        {"date": paid_day.isoformat(), "count": 1, "total_fen": 4_200, "skipped": 0})


async def test_a_run_of_a_day_not_over_writes_no_record(db, settings, paid_day, trail):
    with pytest.raises(InvalidInput, match="not over"):
        await payout_jobs.run(db, ACTOR, settings, paid_day)
    assert not [r for r in await trail() if r["action"] == "payout.run"]


async def test_a_confirmation_is_one_record_only_when_it_moved_a_payout(db, settings, paid_day, trail):
    await payout_jobs.run(db, ACTOR, settings, paid_day, now=after(paid_day, settings))
    payout_id = await db.fetchval("SELECT id FROM payouts")
    answer = f"payout_id,status,reason\n{payout_id},paid,\n".encode()
    assert await payout_jobs.confirm(db, ACTOR, settings, answer, "answer.csv") == {
        "paid": 1, "returned": 0, "unchanged": 0, "conflicts": []}
    assert (await payout_jobs.confirm(db, ACTOR, settings, answer, "answer.csv"))["unchanged"] == 1
    records = [r for r in await trail() if r["action"] == "payout.confirm"]
    assert [(r["entity"], r["after"]["paid"], r["after"]["unchanged"]) for r in records] == [
        ("payout:answer.csv", 1, 0)]

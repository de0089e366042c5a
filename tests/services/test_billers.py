"""Biller, bill and meter services: each addition audited."""

from __future__ import annotations

import pytest

from gateway.domain.validate import InvalidInput
from gateway.services import billers
from tests.services.conftest import ACTOR, table_counts

TERMS = {"exact": False, "commission_bp": 0, "commission_fixed_fen": 0, "connector": "builtin", "connector_url": None}


@pytest.fixture
async def both(db):
    await billers.add_biller(db, ACTOR, "ELEC01", "City Electricity", prepaid=False, **TERMS)
    await billers.add_biller(db, ACTOR, "PREPAID01", "Prepaid Power", prepaid=True,
                             **TERMS | {"connector": "http", "connector_url": "https://user:secret@biller.example/"})


async def test_biller_bill_and_meter_additions_are_audited_without_the_connector_url(db, both, trail):
    bill = await billers.add_bill(db, ACTOR, "ELEC01", "E00001", "Customer 1", 12_345, "202611", None)
    meter = await billers.add_meter(db, ACTOR, "PREPAID01", "M00001", "Meter owner 1")
    records = await trail()
    assert [(r["action"], r["entity"]) for r in records] == [
        ("biller.add", "biller:ELEC01"), ("biller.add", "biller:PREPAID01"),
        ("bill.add", f"bill:{bill['reference']}"), ("meter.add", "meter:PREPAID01/M00001")]
    assert all(r["before"] == {} for r in records)
    assert records[1]["after"] == {"code": "PREPAID01", "name": "Prepaid Power", "prepaid": True, "exact": False,
                                   "commission_bp": 0, "commission_fixed_fen": 0, "connector": "http",
                                   "notify": False, "voucher_values_fen": []}
    assert "secret" not in str(records)
    assert records[2]["after"] == {**bill, "biller": "ELEC01"}
    assert records[3]["after"] == meter


@pytest.mark.parametrize("change, message", [
    (lambda db: billers.add_biller(db, ACTOR, "ELEC01", "again", prepaid=False, **TERMS), "already exists"),
    (lambda db: billers.add_bill(db, ACTOR, "PREPAID01", "E00001", "x", 100, "202611", None), "is prepaid"),
    (lambda db: billers.add_bill(db, ACTOR, "ELEC01", "E00001", "x", 100, "202613", None), "YYYYMM"),
    (lambda db: billers.add_meter(db, ACTOR, "ELEC01", "M00001", "x"), "is postpaid"),
    (lambda db: billers.add_meter(db, ACTOR, "NOPE", "M00001", "x"), "unknown biller"),
])
async def test_a_failing_change_writes_no_record_and_changes_nothing(db, both, change, message):
    before = await table_counts(db)
    with pytest.raises(InvalidInput, match=message):
        await change(db)
    assert await table_counts(db) == before

"""Merchant services: each change audited with the merchant's state (and limit overrides) before and after."""

from __future__ import annotations

import pytest

from gateway.domain.validate import InvalidInput
from gateway.services import agents, merchants
from tests.services.conftest import ACTOR, table_counts

MID = "MERCHANT0000001"


@pytest.fixture
async def agent(db):
    await agents.add_agent(db, "setup", "AG01", "Test Agent", None)


async def test_add_freeze_and_limits_are_audited_and_a_change_to_the_same_value_is_not(db, agent, trail):
    await merchants.add_merchant(db, ACTOR, MID, "Test Shop", "AG01", 60)
    await merchants.set_merchant_status(db, ACTOR, MID, "frozen")
    await merchants.set_merchant_status(db, ACTOR, MID, "frozen")
    await merchants.set_merchant_limits(db, ACTOR, MID, {"txn_amount_max_fen": 50_000})
    await merchants.set_merchant_limits(db, ACTOR, MID, {"txn_amount_max_fen": 50_000})
    await merchants.set_merchant_limits(db, ACTOR, MID, {})
    added, frozen, limited = [r for r in await trail() if r["actor"] == ACTOR]
    assert (added["action"], added["entity"], added["before"]) == ("merchant.add", f"merchant:{MID}", {})
    assert added["after"] == {"mid": MID, "name": "Test Shop", "agent": "AG01", "status": "active", "mdr_bp": 60,
                              "balance_fen": 0, "limits": {}}
    assert (frozen["action"], frozen["before"]["status"], frozen["after"]["status"]) == (
        "merchant.freeze", "active", "frozen")
    assert (limited["action"], limited["before"]["limits"], limited["after"]["limits"]) == (
        "merchant.limits", {}, {"txn_amount_max_fen": 50_000})


@pytest.mark.parametrize("change, message", [
    (lambda db: merchants.add_merchant(db, ACTOR, MID, "again", "AG01", 0), "already exists"),
    (lambda db: merchants.add_merchant(db, ACTOR, "MERCHANT0000002", "x", "NOAGENT", 0), "unknown agent"),
    (lambda db: merchants.set_merchant_status(db, ACTOR, "MERCHANT0000009", "frozen"), "unknown merchant"),
    (lambda db: merchants.set_merchant_limits(db, ACTOR, "MERCHANT0000009", {"txn_amount_max_fen": 1}),
     "unknown merchant"),
])
async def test_a_failing_change_writes_no_record_and_changes_nothing(db, agent, change, message):
    await merchants.add_merchant(db, ACTOR, MID, "Test Shop", "AG01", 0)
    before = await table_counts(db)
    with pytest.raises(InvalidInput, match=message):
        await change(db)
    assert await table_counts(db) == before

"""Agent services: each change audited with the agent's state before and after."""

from __future__ import annotations

import pytest

from gateway.domain.validate import InvalidInput
from gateway.services import agents
from tests.services.conftest import ACTOR, table_counts


async def test_add_top_up_freeze_and_unfreeze_are_each_one_record_with_before_and_after(db, trail):
    await agents.add_agent(db, ACTOR, "AG01", "Test Agent", None)
    await agents.top_up(db, ACTOR, "AG01", 12_345)
    await agents.set_agent_status(db, ACTOR, "AG01", "frozen")
    await agents.set_agent_status(db, ACTOR, "AG01", "active")
    records = await trail()
    assert [(r["actor"], r["action"], r["entity"]) for r in records] == [
        (ACTOR, "agent.add", "agent:AG01"), (ACTOR, "agent.topup", "agent:AG01"),
        (ACTOR, "agent.freeze", "agent:AG01"), (ACTOR, "agent.unfreeze", "agent:AG01")]
    added, topped_up, frozen, unfrozen = records
    assert added["before"] == {}
    assert added["after"] == {"code": "AG01", "name": "Test Agent", "parent": None, "status": "active",
                              "float_fen": 0, "commission_fen": 0}
    assert (topped_up["before"]["float_fen"], topped_up["after"]["float_fen"]) == (0, 12_345)
    assert (frozen["before"]["status"], frozen["after"]["status"]) == ("active", "frozen")
    assert (unfrozen["before"]["status"], unfrozen["after"]["status"]) == ("frozen", "active")


async def test_freezing_a_frozen_agent_writes_no_record(db, trail):
    await agents.add_agent(db, ACTOR, "AG01", "Test Agent", None)
    await agents.set_agent_status(db, ACTOR, "AG01", "frozen")
    await agents.set_agent_status(db, ACTOR, "AG01", "frozen")
    await agents.set_agent_status(db, ACTOR, "AG01", "active")
    await agents.set_agent_status(db, ACTOR, "AG01", "active")
    assert [r["action"] for r in await trail()] == ["agent.add", "agent.freeze", "agent.unfreeze"]


@pytest.mark.parametrize("change, message", [
    (lambda db: agents.add_agent(db, ACTOR, "AG01", "again", None), "already exists"),
    (lambda db: agents.add_agent(db, ACTOR, "AG02", "orphan", "NOPE"), "unknown parent"),
    (lambda db: agents.top_up(db, ACTOR, "NOBODY", 100), "unknown agent"),
    (lambda db: agents.set_agent_status(db, ACTOR, "NOBODY", "frozen"), "unknown agent"),
])
async def test_a_failing_change_writes_no_record_and_changes_nothing(db, change, message):
    await agents.add_agent(db, ACTOR, "AG01", "Test Agent", None)
    before = await table_counts(db)
    with pytest.raises(InvalidInput, match=message):
        await change(db)
    assert await table_counts(db) == before

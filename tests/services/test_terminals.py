"""Terminal services: each change audited with the terminal's state before and after, never its TMK."""

from __future__ import annotations

import pytest

from gateway.domain.validate import InvalidInput
from gateway.services import agents, merchants, terminals
from tests.conftest import TEST_TMK
from tests.services.conftest import ACTOR, table_counts

TID, MID = "TERM0001", "MERCHANT0000001"
NO_OPTIONS = {"permit": None, "mac_algorithm": None, "location": None, "radius_km": None}


@pytest.fixture
async def terminal(db, hsm):
    await agents.add_agent(db, "setup", "AG01", "Test Agent", None)
    await merchants.add_merchant(db, "setup", MID, "Test Shop", "AG01", 0)
    await terminals.add_terminal(db, ACTOR, hsm, TID, MID, TEST_TMK, **NO_OPTIONS)


async def test_add_records_the_terminal_without_its_tmk(terminal, trail):
    [added] = [r for r in await trail() if r["actor"] == ACTOR]
    assert (added["action"], added["entity"], added["before"]) == ("terminal.add", f"terminal:{TID}", {})
    assert added["after"] == {"tid": TID, "mid": MID, "status": "active", "mac": "cup-ecb", "location": None,
                              "permit": ["purchase", "balance", "void", "bill", "refund", "preauth", "voucher"],
                              "radius_km": None, "owner_agent": "AG01", "bound": True, "activated_at": None,
                              "limits": {}}
    assert TEST_TMK.hex().lower() not in str(added).lower()


async def test_set_freeze_unfreeze_and_limits_record_what_changed(db, terminal, trail):
    await terminals.set_terminal(db, ACTOR, TID, permit=["purchase"], mac_algorithm=None, location=(31.23, 121.47),
                                 radius_km=5.0)
    await terminals.set_terminal_status(db, ACTOR, TID, "frozen")
    await terminals.set_terminal_status(db, ACTOR, TID, "frozen")  # nothing changes: no record
    await terminals.set_terminal_status(db, ACTOR, TID, "active")
    await terminals.set_terminal_limits(db, ACTOR, TID, {"terminal_daily_count_max": 3})
    await terminals.set_terminal(db, ACTOR, TID, **NO_OPTIONS)  # nothing changes: no record
    records = (await trail())[-4:]
    assert [r["action"] for r in records] == ["terminal.set", "terminal.freeze", "terminal.unfreeze", "terminal.limits"]
    changed_set, frozen, unfrozen, limited = records
    assert {k: v for k, v in changed_set["after"].items() if changed_set["before"][k] != v} == {
        "permit": ["purchase"], "location": "31.23,121.47", "radius_km": 5.0, "limits": {"location_radius_km": 5}}
    assert (frozen["before"]["status"], frozen["after"]["status"]) == ("active", "frozen")
    assert (unfrozen["before"]["status"], unfrozen["after"]["status"]) == ("frozen", "active")
    assert limited["after"]["limits"] == {"location_radius_km": 5, "terminal_daily_count_max": 3}


@pytest.mark.parametrize("change, message", [
    (lambda db, hsm: terminals.add_terminal(db, ACTOR, hsm, TID, MID, TEST_TMK, **NO_OPTIONS), "already exists"),
    (lambda db, hsm: terminals.add_terminal(db, ACTOR, hsm, "TERM0002", "MERCHANT0000009", TEST_TMK, **NO_OPTIONS),
     "unknown merchant"),
    (lambda db, hsm: terminals.set_terminal(db, ACTOR, TID, **NO_OPTIONS | {"permit": ["void"], "radius_km": -1.0}),
     "more than zero"),
    (lambda db, hsm: terminals.set_terminal_status(db, ACTOR, "NOPE0001", "frozen"), "unknown terminal"),
    (lambda db, hsm: terminals.set_terminal_limits(db, ACTOR, "NOPE0001", {"txn_amount_max_fen": 1}),
     "unknown terminal"),
])
async def test_a_failing_change_writes_no_record_and_changes_nothing(db, hsm, terminal, change, message):
    before = await table_counts(db), await db.fetchrow("SELECT * FROM terminals")
    with pytest.raises(InvalidInput, match=message):
        await change(db, hsm)
    assert (await table_counts(db), await db.fetchrow("SELECT * FROM terminals")) == before

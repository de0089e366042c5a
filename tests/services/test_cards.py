"""Card services: each change audited on card:<pan_masked>, never with the PAN or PIN."""

from __future__ import annotations

import json

import pytest

from gateway.domain.cards import mask_pan
from gateway.domain.demo import demo_pan
from gateway.domain.validate import InvalidInput
from gateway.services import cards
from tests.services.conftest import ACTOR, table_counts

PAN, PIN = demo_pan(7), "975318"


async def test_issue_freeze_unfreeze_and_unblock_are_audited_only_when_they_change_the_card(db, hsm, trail):
    await cards.issue_card(db, ACTOR, hsm, PAN, PIN, "2912", 5_000)
    await cards.set_card_status(db, ACTOR, hsm, PAN, "frozen")
    await cards.set_card_status(db, ACTOR, hsm, PAN, "frozen")
    await cards.unblock_card(db, ACTOR, hsm, PAN)  # not blocked: nothing changes
    await db.execute("UPDATE cards SET pin_blocked = true, pin_tries = 3")  # the engine blocks it
    await cards.unblock_card(db, ACTOR, hsm, PAN)
    await cards.set_card_status(db, ACTOR, hsm, PAN, "active")
    records = await trail()
    entity = f"card:{mask_pan(PAN)}"
    assert [(r["action"], r["entity"]) for r in records] == [
        ("card.issue", entity), ("card.freeze", entity), ("card.unblock", entity), ("card.unfreeze", entity)]
    issued, frozen, unblocked, _ = records
    assert issued["before"] == {}
    assert issued["after"] == {"pan_masked": mask_pan(PAN), "status": "active", "pin_blocked": False,
                               "expiry": "2912", "balance_fen": 5_000}
    assert (frozen["before"]["status"], frozen["after"]["status"]) == ("active", "frozen")
    assert (unblocked["before"]["pin_blocked"], unblocked["after"]["pin_blocked"]) == (True, False)
    stored = json.dumps(records)
    assert PAN not in stored and PIN not in stored


async def test_issuing_a_set_writes_one_record_per_card_like_issuing_each(db, hsm, trail):
    await cards.issue_cards(db, ACTOR, hsm, [(demo_pan(1), PIN, "3012"), (demo_pan(2), PIN, "3012")], 100)
    await cards.issue_card(db, ACTOR, hsm, demo_pan(3), PIN, "3012", 100)
    records = await trail()
    assert [r["entity"] for r in records] == [f"card:{mask_pan(demo_pan(i))}" for i in (1, 2, 3)]
    assert records[0]["after"] | {"pan_masked": None} == records[2]["after"] | {"pan_masked": None}


@pytest.mark.parametrize("change, message", [
    (lambda db, hsm: cards.issue_card(db, ACTOR, hsm, PAN, "1111", "2912", 0), "already exists"),
    (lambda db, hsm: cards.issue_card(db, ACTOR, hsm, demo_pan(8), "1111", "2913", 100), "YYMM"),
    (lambda db, hsm: cards.set_card_status(db, ACTOR, hsm, demo_pan(9), "frozen"), "unknown card"),
    (lambda db, hsm: cards.unblock_card(db, ACTOR, hsm, demo_pan(9)), "unknown card"),
])
async def test_a_failing_change_writes_no_record_and_changes_nothing(db, hsm, change, message):
    await cards.issue_card(db, ACTOR, hsm, PAN, PIN, "2912", 5_000)
    before = await table_counts(db)
    with pytest.raises(InvalidInput, match=message):
        await change(db, hsm)
    assert await table_counts(db) == before

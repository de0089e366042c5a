"""The back office's terminal inventory (gateway.backoffice.inventory) over HTTP:
operators move any terminal, an agent user only those its subtree owns and
never out of it; the rules' refusals are 400 naming the rule, and each move is
audited as ``web:<user>``. (Every route × role: tests/backoffice/test_access.py.)"""

from __future__ import annotations

import json


async def owner_and_mid(db, tid: str = "STOCK001") -> tuple[str, str | None]:
    row = await db.fetchrow("SELECT owner_agent, mid FROM terminals WHERE tid = $1", tid)
    return row["owner_agent"], row["mid"]


async def test_an_agent_sees_and_moves_the_stock_of_its_subtree(web_world, browse, db):
    agent = await browse("agent1")
    listing = (await agent.get("/inventory")).text
    assert "STOCK001" in listing and "TERM0002" in listing and "TERM0003" not in listing
    page = await agent.get("/inventory/STOCK001")
    assert page.status_code == 200 and 'id="allocate-form"' in page.text and 'id="bind-form"' in page.text
    assert (await agent.post("/inventory/STOCK001/allocate", {"to": "AG02"})).status_code == 303
    assert await owner_and_mid(db) == ("AG02", None)
    [record] = await db.fetch("SELECT actor, entity, before, after FROM audit_events WHERE action = 'terminal.allocate'")
    assert (record["actor"], record["entity"]) == ("web:agent1", "terminal:STOCK001")
    assert (json.loads(record["before"])["owner_agent"], json.loads(record["after"])["owner_agent"]) == ("AG01", "AG02")
    bound = await agent.post("/inventory/STOCK001/bind", {"merchant": "MERCHANT0000002"})
    assert (bound.status_code, bound.headers["location"]) == (303, "/inventory/STOCK001")
    assert await owner_and_mid(db) == ("AG02", "MERCHANT0000002")
    page = (await agent.get("/inventory/STOCK001")).text
    assert "MERCHANT0000002" in page and 'id="recall-form"' not in page and 'id="bind-form"' not in page


async def test_an_agent_gets_403_outside_its_subtree_and_nothing_moves(web_world, browse, db):
    other = await browse("agent3")
    assert "STOCK001" not in (await other.get("/inventory")).text
    assert (await other.get("/inventory/STOCK001")).status_code == 403
    assert (await other.get("/inventory/NOSUCH01")).status_code == 403  # unknown ones too: nothing is told
    for action, form in (("allocate", {"to": "AG03"}), ("bind", {"merchant": "MERCHANT0000003"})):
        assert (await other.post(f"/inventory/STOCK001/{action}", form)).status_code == 403
    agent = await browse("agent1")
    assert (await agent.post("/inventory/STOCK001/allocate", {"to": "AG02"})).status_code == 303
    assert (await agent.post("/inventory/STOCK001/recall", {"to": "AG03"})).status_code == 403  # out of its subtree
    assert await owner_and_mid(db) == ("AG02", None)
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE actor = 'web:agent3'") == 0


async def test_the_rules_refusals_are_400_naming_the_terminal_and_the_rule(web_world, browse, db):
    operator = await browse("operator")
    refused = await operator.post("/inventory/STOCK001/allocate", {"to": "AG03"})
    assert refused.status_code == 400
    assert "STOCK001" in refused.text and "descendant" in refused.text
    assert (await operator.post("/inventory/STOCK001/bind", {"merchant": "MERCHANT0000003"})).status_code == 400
    assert (await operator.post("/inventory/STOCK001/allocate", {"to": ""})).status_code == 400
    assert (await operator.post("/inventory/STOCK001/bind", {"merchant": "MERCHANT0000001"})).status_code == 303
    again = await operator.post("/inventory/STOCK001/bind", {"merchant": "MERCHANT0000001"})
    assert again.status_code == 400 and "already bound" in again.text
    assert (await operator.post("/inventory/STOCK001/recall", {"to": "AG01"})).status_code == 400
    assert await owner_and_mid(db) == ("AG01", "MERCHANT0000001")
    assert (await operator.get("/inventory/NOSUCH01")).status_code == 404

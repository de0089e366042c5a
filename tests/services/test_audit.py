"""The audit trail: one helper makes a change and its record in one transaction;
``posgw audit list`` and its filters; the CLI's ``--actor``; no secret in any record."""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timedelta

import pytest

from gateway.domain.demo import DEMO_CARD_PIN, demo_tmk
from gateway.services import agents
from gateway.services.audit import audited, record_many
from tests.services.conftest import ACTOR


async def test_a_change_that_fails_after_writing_is_rolled_back_with_no_record(db, trail):
    await agents.add_agent(db, ACTOR, "AG01", "Test Agent", None)

    async def state():
        return dict(await db.fetchrow("SELECT name FROM agents WHERE code = 'AG01'"))

    async def change():
        await db.execute("UPDATE agents SET name = 'renamed' WHERE code = 'AG01'")
        raise RuntimeError("the change failed half-way")

    with pytest.raises(RuntimeError):
        await audited(db, ACTOR, "agent.rename", "agent:AG01", state, change)
    assert await db.fetchval("SELECT name FROM agents WHERE code = 'AG01'") == "Test Agent"
    assert [r["action"] for r in await trail()] == ["agent.add"]


async def test_a_failing_record_undoes_its_change(db):
    """A state naming a secret is refused: the change it would have recorded is undone with it."""
    await agents.add_agent(db, ACTOR, "AG01", "Test Agent", None)

    async def state():
        return {"name": await db.fetchval("SELECT name FROM agents WHERE code = 'AG01'"), "pin": "1234"}

    with pytest.raises(AssertionError, match="no secret"):
        await audited(db, ACTOR, "agent.rename", "agent:AG01", state,
                      lambda: db.execute("UPDATE agents SET name = 'renamed' WHERE code = 'AG01'"))
    assert await db.fetchval("SELECT name FROM agents WHERE code = 'AG01'") == "Test Agent"


@pytest.mark.parametrize("name", ["pin", "pan", "tmk", "password", "tmk_lmk", "api_key"])
async def test_a_state_naming_a_secret_is_refused(db, name):
    with pytest.raises(AssertionError):
        await record_many(db, ACTOR, "agent.add", [("agent:AG01", None, {name: "x"})])


async def test_audit_list_gives_every_change_in_order_with_its_json_types(cli, world):
    assert (await cli("--actor", "alice", "terminal", "freeze", world.tid)).code == 0
    result = await cli("audit", "list", "--json")
    assert result.code == 0, result.stderr
    events = result.json["events"]
    assert [(e["action"], e["entity"]) for e in events] == [
        ("agent.add", "agent:AG01"), ("merchant.add", f"merchant:{world.mid}"),
        ("terminal.add", f"terminal:{world.tid}"), ("terminal.freeze", f"terminal:{world.tid}")]
    for event in events:
        assert set(event) == {"at", "actor", "action", "entity", "before", "after"}
        assert isinstance(event["before"], dict) and isinstance(event["after"], dict)
        assert datetime.fromisoformat(event["at"]).utcoffset() is not None
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert events[-1]["actor"] == "alice"
    assert (events[-1]["before"]["status"], events[-1]["after"]["status"]) == ("active", "frozen")


async def test_audit_list_filters_by_actor_entity_and_time(cli, world, db):
    for actor, argv in (("alice", ("terminal", "freeze", world.tid)), ("bob", ("merchant", "freeze", world.mid)),
                        ("alice", ("terminal", "unfreeze", world.tid))):
        assert (await cli("--actor", actor, *argv)).code == 0
    by_alice = (await cli("audit", "list", "--actor", "alice", "--json")).json["events"]
    assert [e["action"] for e in by_alice] == ["terminal.freeze", "terminal.unfreeze"]
    on_terminal = (await cli("audit", "list", "--entity", f"terminal:{world.tid}", "--json")).json["events"]
    assert [e["action"] for e in on_terminal] == ["terminal.add", "terminal.freeze", "terminal.unfreeze"]
    both = (await cli("audit", "list", "--actor", "bob", "--entity", f"merchant:{world.mid}", "--json")).json
    assert [e["action"] for e in both["events"]] == ["merchant.freeze"]
    await db.execute("UPDATE audit_events SET at = at - interval '2 days' WHERE actor <> 'alice'")
    since = (datetime.now().astimezone() - timedelta(days=1)).isoformat()
    assert [e["actor"] for e in (await cli("audit", "list", "--since", since, "--json")).json["events"]] == [
        "alice", "alice"]
    assert (await cli("audit", "list", "--since", "2999-01-01", "--json")).json == {"events": []}


@pytest.mark.parametrize("argv, message", [
    (("audit", "list", "--since", "yesterday"), "ISO 8601"),
    (("audit", "list", "--entity", "DEMO0001"), "KIND:ID"),
    (("--actor", "", "agent", "add", "AG09", "--name", "x"), "--actor"),
])
async def test_bad_audit_input_exits_2(cli, argv, message):
    result = await cli(*argv)
    assert result.code == 2 and message in result.stderr.strip().splitlines()[-1]


async def test_the_cli_actor_is_the_os_user_unless_actor_is_given(cli):
    assert (await cli("agent", "add", "AG01", "--name", "One")).code == 0
    assert (await cli("--actor", "ops:alice", "agent", "add", "AG02", "--name", "Two")).code == 0
    events = (await cli("audit", "list", "--json")).json["events"]
    assert [e["actor"] for e in events] == [f"cli:{getpass.getuser()}", "ops:alice"]


async def test_the_demo_world_is_audited_as_demo_with_no_pin_tmk_or_full_pan(cli, db):
    world = (await cli("demo", "--terminals", "2", "--cards", "3", "--json")).json
    events = (await cli("audit", "list", "--actor", "demo", "--json")).json["events"]
    assert len(events) == await db.fetchval("SELECT count(*) FROM audit_events")
    assert (await cli("demo", "--terminals", "2", "--cards", "3", "--json")).code == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events") == len(events)  # the second run changed nothing
    actions = [e["action"] for e in events]
    network_terminals = world["network"]["terminals"]  # the agent network's (gateway.services.demo_network)
    assert actions.count("terminal.add") == 2 + len(network_terminals) and actions.count("card.issue") == 3
    assert actions.count("agent.policy") == 4
    assert {"agent.add", "merchant.add", "biller.add", "bill.add", "meter.add", "agent.topup"} <= set(actions)
    stored = " ".join(row["text"] for row in await db.fetch(
        "SELECT entity || ' ' || before::text || ' ' || after::text AS text FROM audit_events")).lower()
    secrets = [DEMO_CARD_PIN] + [card["pan"] for card in world["cards"]]
    secrets += [key for t in world["terminals"] + network_terminals for key in (t["tmk"].lower(), demo_tmk(t["tid"]).hex())]
    assert not [secret for secret in secrets if secret.lower() in stored]
    assert all(json.dumps(e).count("pan") == json.dumps(e).count("pan_masked") for e in events)

"""Terminal inventory through the CLI (CLI.md "Agent network", rule "Terminals"):
terminals in stock, allocation (划拨) down the tree, recall (回拨) up it, binding
to a merchant; every refusal exits 2 naming the terminal and the rule and
changes nothing; one audit record per terminal changed.

The tree: HQ → A1 → A2 → A3, and HQ → B1; merchants M_A2 (A2's) and M_B1 (B1's)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import datetime, timedelta

import pytest

from gateway.cli.main import main as cli_main
from tests.conftest import TEST_TMK, CliResult

M_A2, M_B1 = "MERCHANTA200001", "MERCHANTB100001"
TMK = TEST_TMK.hex()


@pytest.fixture
async def tree(cli):
    for argv in (
        ("agent", "add", "HQ", "--name", "Head office"),
        ("agent", "add", "A1", "--name", "Level 1", "--parent", "HQ"),
        ("agent", "add", "A2", "--name", "Level 2", "--parent", "A1"),
        ("agent", "add", "A3", "--name", "Level 3", "--parent", "A2"),
        ("agent", "add", "B1", "--name", "Other level 1", "--parent", "HQ"),
        ("merchant", "add", M_A2, "--name", "Shop of A2", "--agent", "A2"),
        ("merchant", "add", M_B1, "--name", "Shop of B1", "--agent", "B1"),
        *(("terminal", "add", tid, "--agent", "HQ", "--tmk", TMK) for tid in ("STOCK001", "STOCK002", "STOCK003")),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


async def owners(cli, *tids: str) -> list[str]:
    return [(await cli("terminal", "show", tid, "--json")).json["owner_agent"] for tid in tids]


async def inventory_records(db) -> list[tuple[str, str, str | None, str | None]]:
    """The inventory's audit records: action, entity, owner before and after."""
    rows = await db.fetch("""SELECT action, entity, before->>'owner_agent' AS before, after->>'owner_agent' AS after
                               FROM audit_events WHERE action IN ('terminal.allocate', 'terminal.recall',
                                                                  'terminal.bind')
                              ORDER BY at, id""")
    return [tuple(row) for row in rows]


async def refused(cli, db, *argv: str) -> str:
    """Run a command that must exit 2 and change nothing; its message."""
    terminals_before = [tuple(r) for r in await db.fetch("SELECT tid, owner_agent, mid FROM terminals ORDER BY tid")]
    records_before = await db.fetchval("SELECT count(*) FROM audit_events")
    result = await cli(*argv)
    assert result.code == 2, (result.stdout, result.stderr)
    assert [tuple(r) for r in await db.fetch("SELECT tid, owner_agent, mid FROM terminals ORDER BY tid")] == \
        terminals_before
    assert await db.fetchval("SELECT count(*) FROM audit_events") == records_before
    return result.stderr


# -- terminal add ---------------------------------------------------------------------------------


async def test_a_terminal_added_with_an_agent_is_in_stock(tree, cli):
    shown = (await cli("terminal", "show", "STOCK001", "--json")).json
    assert {k: shown[k] for k in ("tid", "mid", "owner_agent", "bound", "activated_at")} == {
        "tid": "STOCK001", "mid": None, "owner_agent": "HQ", "bound": False, "activated_at": None}
    listed = {t["tid"]: t for t in (await cli("terminal", "list", "--json")).json["terminals"]}
    assert (listed["STOCK002"]["owner_agent"], listed["STOCK002"]["bound"]) == ("HQ", False)


async def test_a_terminal_added_with_a_merchant_is_bound_and_owned_by_the_merchants_agent(tree, cli, db):
    added = await cli("terminal", "add", "SHOP0001", "--merchant", M_A2, "--tmk", TMK, "--json")
    assert added.code == 0, added.stderr
    assert (added.json["mid"], added.json["owner_agent"], added.json["bound"]) == (M_A2, "A2", True)
    assert await db.fetchval("SELECT bound_at IS NOT NULL FROM terminals WHERE tid = 'SHOP0001'")


@pytest.mark.parametrize("placement", [("--agent", "HQ", "--merchant", M_A2), ()])
async def test_terminal_add_with_both_agent_and_merchant_or_neither_exits_2(tree, cli, db, placement):
    message = await refused(cli, db, "terminal", "add", "NEW00001", *placement, "--tmk", TMK)
    assert "--merchant" in message and "--agent" in message
    assert await db.fetchval("SELECT count(*) FROM terminals WHERE tid = 'NEW00001'") == 0


async def test_terminal_add_to_an_unknown_agent_exits_2(tree, cli, db):
    assert "unknown agent NOPE" in await refused(cli, db, "terminal", "add", "NEW00001", "--agent", "NOPE",
                                                 "--tmk", TMK)


# -- allocate -------------------------------------------------------------------------------------


async def test_allocation_goes_to_any_descendant_one_record_per_terminal(tree, cli, db):
    result = await cli("terminal", "allocate", "STOCK001,STOCK002", "--to", "A2", "--json")
    assert result.code == 0, result.stderr
    assert [t["owner_agent"] for t in result.json["terminals"]] == ["A2", "A2"]
    assert await owners(cli, "STOCK001", "STOCK002", "STOCK003") == ["A2", "A2", "HQ"]
    assert await inventory_records(db) == [("terminal.allocate", "terminal:STOCK001", "HQ", "A2"),
                                           ("terminal.allocate", "terminal:STOCK002", "HQ", "A2")]
    actor = await db.fetchval("SELECT DISTINCT actor FROM audit_events WHERE action = 'terminal.allocate'")
    assert actor.startswith("cli:")


async def test_allocation_outside_the_owners_subtree_exits_2(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001", "--to", "A1")).code == 0
    message = await refused(cli, db, "terminal", "allocate", "STOCK001", "--to", "B1")
    assert "STOCK001" in message and "descendant" in message
    for target in ("A1", "HQ"):  # to itself or up the tree is not an allocation
        assert "descendant" in await refused(cli, db, "terminal", "allocate", "STOCK001", "--to", target)


async def test_allocation_is_all_or_none_naming_the_terminal_that_may_not_go(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK002", "--to", "B1")).code == 0
    message = await refused(cli, db, "terminal", "allocate", "STOCK001,STOCK002,STOCK003", "--to", "A1")
    assert "terminal STOCK002" in message and "STOCK001" not in message
    assert await owners(cli, "STOCK001", "STOCK002", "STOCK003") == ["HQ", "B1", "HQ"]


@pytest.mark.parametrize("argv, message", [
    (("terminal", "allocate", "STOCK001,NOPE0001", "--to", "A1"), "unknown terminal NOPE0001"),
    (("terminal", "allocate", "STOCK001", "--to", "NOPE"), "unknown agent NOPE"),
    (("terminal", "recall", "STOCK001", "--to", "NOPE"), "unknown agent NOPE"),
    (("terminal", "bind", "STOCK001", "--merchant", "MERCHANT9999999"), "unknown merchant"),
    (("terminal", "bind", "NOPE0001", "--merchant", M_A2), "unknown terminal NOPE0001"),
])
async def test_unknown_terminals_agents_and_merchants_exit_2(tree, cli, db, argv, message):
    assert message in await refused(cli, db, *argv)


async def test_a_bound_terminal_goes_only_to_an_agent_on_its_merchants_path(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001", "--to", "A1")).code == 0
    assert (await cli("terminal", "bind", "STOCK001", "--merchant", M_A2)).code == 0
    message = await refused(cli, db, "terminal", "allocate", "STOCK001", "--to", "A3")  # below A2: off the path
    assert "STOCK001" in message and "path" in message
    result = await cli("terminal", "allocate", "STOCK001", "--to", "A2", "--json")
    assert result.code == 0, result.stderr
    assert (result.json["terminals"][0]["owner_agent"], result.json["terminals"][0]["mid"]) == ("A2", M_A2)


# -- recall ---------------------------------------------------------------------------------------


async def test_recall_goes_back_to_an_ancestor(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001,STOCK002", "--to", "A3")).code == 0
    result = await cli("terminal", "recall", "STOCK001,STOCK002", "--to", "A1", "--json")
    assert result.code == 0, result.stderr
    assert await owners(cli, "STOCK001", "STOCK002") == ["A1", "A1"]
    assert (await inventory_records(db))[-2:] == [("terminal.recall", "terminal:STOCK001", "A3", "A1"),
                                                  ("terminal.recall", "terminal:STOCK002", "A3", "A1")]
    for target in ("B1", "A2", "A1"):  # another branch, below the owner, the owner itself
        message = await refused(cli, db, "terminal", "recall", "STOCK001", "--to", target)
        assert "STOCK001" in message and "ancestor" in message


async def test_recall_of_a_bound_or_activated_terminal_exits_2_and_recalls_none(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001,STOCK002,STOCK003", "--to", "A2")).code == 0
    assert (await cli("terminal", "bind", "STOCK002", "--merchant", M_A2)).code == 0
    assert "STOCK002" in await refused(cli, db, "terminal", "recall", "STOCK001,STOCK002", "--to", "HQ")
    await db.execute("UPDATE terminals SET activated_at = now() WHERE tid = 'STOCK002'")  # as the run sets it
    message = await refused(cli, db, "terminal", "recall", "STOCK003,STOCK002", "--to", "A1")
    assert "STOCK002" in message and "activated" in message
    assert await owners(cli, "STOCK001", "STOCK002", "STOCK003") == ["A2", "A2", "A2"]


# -- bind -----------------------------------------------------------------------------------------


async def test_bind_to_a_merchant_of_a_descendant_keeps_the_owner(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001", "--to", "A1")).code == 0
    result = await cli("terminal", "bind", "STOCK001", "--merchant", M_A2, "--json")
    assert result.code == 0, result.stderr
    assert (result.json["mid"], result.json["owner_agent"], result.json["bound"]) == (M_A2, "A1", True)
    [record] = await db.fetch("SELECT entity, before, after FROM audit_events WHERE action = 'terminal.bind'")
    assert record["entity"] == "terminal:STOCK001"
    assert '"bound": false' in record["before"] and '"bound": true' in record["after"]


async def test_bind_to_a_merchant_outside_the_owners_subtree_or_twice_exits_2(tree, cli, db):
    assert (await cli("terminal", "allocate", "STOCK001", "--to", "A2")).code == 0
    message = await refused(cli, db, "terminal", "bind", "STOCK001", "--merchant", M_B1)
    assert "STOCK001" in message and "descendants" in message
    assert (await cli("terminal", "allocate", "STOCK002", "--to", "A3")).code == 0
    assert "descendants" in await refused(cli, db, "terminal", "bind", "STOCK002", "--merchant", M_A2)  # A2 is above
    assert (await cli("terminal", "bind", "STOCK001", "--merchant", M_A2)).code == 0
    assert "already bound" in await refused(cli, db, "terminal", "bind", "STOCK001", "--merchant", M_A2)


async def test_bind_takes_the_time_from_the_settings_clock(tree, settings, db):
    """``clock_offset_s`` (CLI.md "Time") moves the time a terminal is bound at."""
    later = settings.model_copy(update={"clock_offset_s": 3 * 86400})

    def call(*argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv), later)
        return CliResult(code, out.getvalue(), err.getvalue())

    assert (await asyncio.to_thread(call, "terminal", "bind", "STOCK001", "--merchant", M_A2)).code == 0
    assert (await asyncio.to_thread(call, "terminal", "add", "SHOP0001", "--merchant", M_A2, "--tmk", TMK)).code == 0
    now = await db.fetchval("SELECT now()")
    for tid in ("STOCK001", "SHOP0001"):
        bound_at: datetime = await db.fetchval("SELECT bound_at FROM terminals WHERE tid = $1", tid)
        assert abs(bound_at - (now + timedelta(days=3))) < timedelta(minutes=1)

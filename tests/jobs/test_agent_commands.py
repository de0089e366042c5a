"""The agent network's commands (CLI.md "Agent network"): policy, run, earnings, tree,
show and redirect, through the CLI against a real PostgreSQL; and the clock of
CLI.md's Time rule in a real ``posgw`` process (``POSGW_CLOCK_OFFSET_S``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.jobs import agent_run
from gateway.settings import Settings
from tests.jobs.agent_world import DAY, TMK, TZ, at

POSGW = Path(sys.executable).parent / "posgw"
RUN_KEYS = {"date", "shares_fen", "rewards_fen", "deposits_charged_fen", "deposits_refunded_fen",
            "deposits_forfeited_fen", "service_fees_fen", "clawbacks_fen", "house_fen", "discount_fen",
            "deposit_shares_fen", "service_fee_shares_fen", "receivables_netted_fen"}


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``posgw`` process on the test's database (settings by POSGW_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSGW_")}
    env |= {"POSGW_DATABASE_URL": settings.database_url, "POSGW_DATA_DIR": str(settings.data_dir),
            "POSGW_LMK": settings.lmk.get_secret_value(), "POSGW_TIMEZONE": settings.timezone}
    return env | extra


async def posgw(settings: Settings, *argv: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(str(POSGW), *argv, env=process_env(settings, **env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_a_cli_process_with_clock_offset_s_sees_tomorrow(settings):
    tomorrow = settings.today() + timedelta(days=1)
    code, _, err = await posgw(settings, "agent", "run", "--date", tomorrow.isoformat(), "--json")
    assert code == 2 and "has not begun" in err
    code, out, err = await posgw(settings, "agent", "run", "--date", tomorrow.isoformat(), "--json",
                                 POSGW_CLOCK_OFFSET_S=str(2 * 86_400))
    assert code == 0, err
    assert json.loads(out)["date"] == tomorrow.isoformat()
    # and a day's default is the shifted today
    code, out, err = await posgw(settings, "agent", "earnings", "X", "--json", POSGW_CLOCK_OFFSET_S=str(86_400))
    assert code == 2 and "unknown agent X" in err


@pytest.fixture
async def world(network):
    """HQ (38 bp) > L1 (45) > L2 (51); merchants at 60 bp under L2 and under L1."""
    await network.agent("HQ", cost_bp=38)
    await network.agent("L1", "HQ", cost_bp=45)
    await network.agent("L2", "L1", cost_bp=51)
    await network.merchant("MERCHANT0000001", "L2", 60, "TERM0001")
    await network.merchant("MERCHANT0000002", "L1", 60, "TERM0002")
    return network


async def test_policy_sets_from_a_day_prints_the_one_in_force_and_refuses_a_broken_invariant(cli, db, world):
    day = DAY + timedelta(days=5)
    result = await cli("--actor", "pricing", "agent", "policy", "L2", "cost_bp=52", "share_pct=85",
                       "--from", day.isoformat(), "--json")
    assert result.code == 0, result.stderr
    assert result.json == {"code": "L2", "from": day.isoformat(),
                           "policy": {"cost_bp": 52, "share_pct": 85, "activation_reward_fen": 0,
                                      "deposit_share_fen": 0, "service_fee_share_fen": 0}}
    events = (await cli("audit", "list", "--entity", "agent:L2", "--json")).json["events"]
    policy_events = [e for e in events if e["action"] == "agent.policy"]
    assert len(policy_events) == 1 and policy_events[0]["actor"] == "pricing"
    assert policy_events[0]["before"]["policy"]["cost_bp"] == 51 and policy_events[0]["after"]["policy"]["cost_bp"] == 52

    cheaper = await cli("agent", "policy", "L2", "cost_bp=44", "--from", day.isoformat())
    assert cheaper.code == 2 and "a child is never cheaper than its parent" in cheaper.stderr
    richer = await cli("agent", "policy", "L1", "activation_reward_fen=100", "--from", day.isoformat())
    assert richer.code == 2 and "a child is never richer than its parent" in richer.stderr
    lowering_parent = await cli("agent", "policy", "L1", "cost_bp=53", "--from", day.isoformat())
    assert lowering_parent.code == 2 and "L2's cost_bp 52 is below L1's 53" in lowering_parent.stderr
    assert (await cli("agent", "policy", "L2", "colour=5")).code == 2
    assert (await cli("agent", "policy", "NOPE", "--json")).code == 2
    assert (await cli("agent", "policy", "L2", "cost_bp=10001")).code == 2
    # nothing of the refused ones stayed, and each wrote no record
    assert (await cli("agent", "policy", "L2", "--from", day.isoformat(), "--json")).json["policy"]["cost_bp"] == 52
    assert len([e for e in (await cli("audit", "list", "--json")).json["events"]
                if e["action"] == "agent.policy"]) == 1

    await world.purchase("TERM0001", 100_000, at(DAY))
    assert (await cli("agent", "run", "--date", DAY.isoformat())).code == 0
    posted = await cli("agent", "policy", "L2", "cost_bp=53", "--from", DAY.isoformat())
    assert posted.code == 2 and "a run has already posted" in posted.stderr


async def test_run_json_has_the_totals_of_cli_md_and_is_audited_once(cli, db, world):
    await world.purchase("TERM0001", 1_000_000, at(DAY))   # 6000 discount: L2 900, L1 600, HQ 700, house 3800
    await world.purchase("TERM0002", 333_333, at(DAY))     # 2000 discount (the engine rounds): L1 499, HQ 233, house 1268
    result = await cli("--actor", "ops", "agent", "run", "--date", DAY.isoformat(), "--json")
    assert result.code == 0, result.stderr
    totals = result.json
    assert set(totals) >= RUN_KEYS
    assert (totals["date"], totals["discount_fen"], totals["shares_fen"], totals["house_fen"]) == (
        DAY.isoformat(), 6000 + 2000, 900 + 600 + 700 + 499 + 233, 6000 + 2000 - (900 + 600 + 700 + 499 + 233))
    again = await cli("agent", "run", "--date", DAY.isoformat(), "--json")
    assert again.json == totals
    runs = [e for e in (await cli("audit", "list", "--json")).json["events"] if e["action"] == "agent.run"]
    assert [(e["actor"], e["entity"]) for e in runs] == [("ops", f"agentrun:{DAY.isoformat()}")]

    not_over = await cli("agent", "run", "--date", (DAY + timedelta(days=400)).isoformat())
    assert not_over.code == 2


async def test_earnings_by_day_and_month_json_and_csv(cli, world):
    await world.purchase("TERM0001", 1_000_000, at(DAY))
    await world.purchase("TERM0002", 200_000, at(DAY + timedelta(days=1)))
    assert (await cli("agent", "run", "--date", (DAY + timedelta(days=1)).isoformat())).code == 0
    month = await cli("agent", "earnings", "L1", "--month", DAY.strftime("%Y-%m"), "--json")
    assert month.code == 0, month.stderr
    assert [(r["date"], r["source"], r["tid"], r["volume_fen"], r["amount_fen"]) for r in month.json["rows"]] == [
        (DAY.isoformat(), "share", "TERM0001", 1_000_000, 600),
        ((DAY + timedelta(days=1)).isoformat(), "share", "TERM0002", 200_000, 300)]
    assert month.json["totals"]["share"] == 900 and month.json["profit_fen"] == 900
    assert (month.json["direct_volume_fen"], month.json["team_volume_fen"]) == (200_000, 1_200_000)
    day = await cli("agent", "earnings", "L1", "--date", DAY.isoformat(), "--csv")
    rows = list(csv.DictReader(io.StringIO(day.stdout)))
    assert [(r["date"], r["source"], r["mid"], r["amount_fen"]) for r in rows] == [
        (DAY.isoformat(), "share", "MERCHANT0000001", "600")]
    assert (await cli("agent", "earnings", "L1", "--month", "2026-13")).code == 2
    assert (await cli("agent", "earnings", "L1", "--month", "2026-11", "--date", "2026-11-02")).code == 2


async def test_tree_and_show_count_each_agents_own_terminals(cli, db, world):
    # a terminal in stock of L1 (as `terminal add --agent` makes it: another helper's command)
    assert (await cli("terminal", "add", "STOCK001", "--merchant", "MERCHANT0000002", "--tmk", TMK)).code == 0
    await db.execute("UPDATE terminals SET mid = NULL, bound_at = NULL WHERE tid = 'STOCK001'")
    await db.execute("UPDATE terminals SET activated_at = bound_at WHERE tid = 'TERM0001'")
    tree = await cli("agent", "tree", "--json")
    assert tree.code == 0, tree.stderr

    def shape(node):
        return (node["code"], node["parent"], node["level"], node["cost_bp"], node["terminals"],
                [shape(child) for child in node["children"]])

    assert [shape(node) for node in tree.json["agents"]] == [
        ("HQ", None, 1, 38, {"in_stock": 0, "bound": 0, "activated": 0}, [
            ("L1", "HQ", 2, 45, {"in_stock": 1, "bound": 1, "activated": 0}, [
                ("L2", "L1", 3, 51, {"in_stock": 0, "bound": 1, "activated": 1}, [])])])]
    sub = await cli("agent", "tree", "L2", "--json")
    assert [node["code"] for node in sub.json["agents"]] == ["L2"]
    assert (await cli("agent", "tree", "NOPE")).code == 2

    await world.purchase("TERM0001", 1_000_000, at(DAY))
    await cli("agent", "run", "--date", DAY.isoformat())
    shown = (await cli("agent", "show", "L2", "--json")).json
    assert {k: shown[k] for k in ("code", "parent", "level", "profit_fen", "reward_fen", "receivable_fen",
                                  "terminals", "redirect")} == {
        "code": "L2", "parent": "L1", "level": 3, "profit_fen": 900, "reward_fen": 0, "receivable_fen": 0,
        "terminals": {"in_stock": 0, "bound": 1, "activated": 1}, "redirect": None}


async def test_redirect_pays_the_offenders_shares_in_the_descendants_subtree_to_it_from_the_next_day(
        cli, db, settings, world):
    """L1 withholds L2's shares: from tomorrow L1's shares on L2's merchants go to L2; its shares
    on its own merchant go to the house; clawbacks come from whoever received."""
    today = settings.today()
    tomorrow, until = today + timedelta(days=1), today + timedelta(days=3)
    result = await cli("--actor", "compliance", "agent", "redirect", "L1", "--to", "L2", "--until",
                       until.isoformat(), "--json")
    assert result.code == 0, result.stderr
    assert result.json["redirect"] == {"to": "L2", "until": until.isoformat(), "from": tomorrow.isoformat()}
    events = [e for e in (await cli("audit", "list", "--entity", "agent:L1", "--json")).json["events"]
              if e["action"] == "agent.redirect"]
    assert [(e["actor"], e["before"], e["after"]["redirect"]["to"]) for e in events] == [
        ("compliance", {"redirect": None}, "L2")]
    assert (await cli("agent", "show", "L1", "--json")).json["redirect"]["to"] == "L2"

    assert (await cli("agent", "redirect", "L2", "--to", "L1")).code == 2      # not a descendant
    assert (await cli("agent", "redirect", "L1", "--to", "L1")).code == 2
    assert (await cli("agent", "redirect", "L1")).code == 2                   # --to or --off

    before = await world.purchase("TERM0001", 1_000_000, at(today, 0))        # today: not redirected
    under_l2 = await world.purchase("TERM0001", 1_000_000, at(tomorrow))
    own = await world.purchase("TERM0002", 1_000_000, at(tomorrow))
    after = await world.purchase("TERM0001", 1_000_000, at(until + timedelta(days=1)))
    now = at(until + timedelta(days=3))
    await agent_run.run(db, until + timedelta(days=1), TZ, now=now)
    shares = {(row["txn_id"], row["agent_code"]): row["recipient"] for row in await db.fetch(
        "SELECT txn_id, agent_code, recipient FROM agent_shares WHERE agent_code = 'L1'")}
    assert shares == {(before.id, "L1"): "L1", (under_l2.id, "L1"): "L2", (after.id, "L1"): "L1"}
    day_rows = (await cli("agent", "earnings", "L2", "--date", tomorrow.isoformat(), "--json")).json
    assert [(r["source"], r["amount_fen"]) for r in day_rows["rows"]] == [("redirect", 600), ("share", 900)]
    house = await agent_run.day_totals(db, tomorrow)
    assert house["house_fen"] == 2 * 6000 - (900 + 600 + 700) - 700   # own: L1's 1500 kept by the house

    await world.void(under_l2, at(until + timedelta(days=2)))
    await agent_run.run(db, until + timedelta(days=2), TZ, now=now)
    assert (await cli("agent", "earnings", "L2", "--date", (until + timedelta(days=2)).isoformat(),
                      "--json")).json["totals"]["clawback"] == -1500
    assert own.id

    off = await cli("--actor", "compliance", "agent", "redirect", "L1", "--off", "--json")
    assert off.code == 0 and off.json["redirect"] is None
    assert (await cli("agent", "redirect", "L1", "--off")).code == 0          # nothing to end: no record
    assert len([e for e in (await cli("audit", "list", "--json")).json["events"]
                if e["action"] == "agent.redirect"]) == 2


async def test_demo_builds_a_hierarchy_with_policies_and_a_purchase_is_shared_up_it(cli, db, settings, network):
    first = await cli("demo", "--terminals", "1", "--cards", "1", "--json")
    assert first.code == 0, first.stderr
    again = await cli("demo", "--terminals", "1", "--cards", "1", "--json")
    assert again.json["network"] == first.json["network"]          # idempotent
    assert [t["tid"] for t in first.json["terminals"]] == ["DEMO0001"]  # the version 1 world as it was

    def shape(node):
        return (node["code"], node["level"], node["cost_bp"], node["terminals"]["bound"],
                [shape(child) for child in node["children"]])

    assert [shape(node) for node in first.json["network"]["agents"]] == [
        ("DEMOHQ", 1, 38, 0, [("DEMOL1", 2, 45, 0, [("DEMOL2A", 3, 49, 1, []), ("DEMOL2B", 3, 51, 1, [])])])]
    assert [(m["mid"], m["agent"], m["mdr_bp"]) for m in first.json["network"]["merchants"]] == [
        ("898100000000101", "DEMOL2A", 60), ("898100000000102", "DEMOL2B", 60)]
    policy = (await cli("agent", "policy", "DEMOL2B", "--json")).json
    assert policy["policy"] == {"cost_bp": 51, "share_pct": 100, "activation_reward_fen": 8_000,
                                "deposit_share_fen": 2_000, "service_fee_share_fen": 1_000}

    today = settings.today()
    await network.purchase("DEMN0002", 1_000_000, datetime.now(TZ))   # 10,000 yuan at 60 bp: 6,000 fen
    totals = (await cli("agent", "run", "--date", today.isoformat(), "--now", "--json")).json
    assert (totals["discount_fen"], totals["shares_fen"]) == (6000, 900 + 600 + 700)
    # 10,000 yuan is also the activation volume: the owner's chain earns its rewards, each level its
    # activation_reward_fen less its child's (8,000; 15,000 - 8,000; 20,000 - 15,000)
    assert totals["rewards_fen"] == 20_000
    assert [(await cli("agent", "show", code, "--json")).json["profit_fen"]
            for code in ("DEMOL2B", "DEMOL1", "DEMOHQ")] == [900 + 8_000, 600 + 7_000, 700 + 5_000]

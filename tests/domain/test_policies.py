"""Agent policies (gateway/domain/policies.py) against a real PostgreSQL: versioned by
local day, merged, logged with who set them; the invariants both ways, on every day
from the new policy on; no policy from a day a run has posted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.domain import policies
from gateway.domain.policies import PolicyError, policy_in_force, policy_log, set_policy
from gateway.domain.validate import InvalidInput
from gateway.jobs import agent_run
from tests.jobs.agent_world import TZ

D = date(2026, 11, 2)


@pytest.fixture
async def agents(cli):
    for argv in (("agent", "add", "TOP", "--name", "Top"), ("agent", "add", "CHILD", "--name", "Child", "--parent",
                                                               "TOP")):
        result = await cli(*argv)
        assert result.code == 0, result.stderr


async def log_size(db) -> int:
    return await db.fetchval("SELECT count(*) FROM agent_policies")


async def test_a_policy_takes_effect_from_its_day_and_keeps_the_values_not_given(db, agents):
    printed = await set_policy(db, "TOP", {"cost_bp": 49, "activation_reward_fen": 20000}, D, "cli:ops")
    assert printed == {"code": "TOP", "from": D.isoformat(),
                       "policy": {"cost_bp": 49, "share_pct": 100, "activation_reward_fen": 20000,
                                  "deposit_share_fen": 0, "service_fee_share_fen": 0}}
    await set_policy(db, "TOP", {"cost_bp": 45}, D + timedelta(days=10), "cli:boss")
    assert await policy_in_force(db, "TOP", D - timedelta(days=1)) == policies.DEFAULTS
    assert (await policy_in_force(db, "TOP", D + timedelta(days=9)))["cost_bp"] == 49
    later = await policy_in_force(db, "TOP", D + timedelta(days=10))
    assert (later["cost_bp"], later["activation_reward_fen"]) == (45, 20000)
    log = await policy_log(db, "TOP")
    assert [(e["from"], e["policy"]["cost_bp"], e["set_by"]) for e in log] == [
        (D.isoformat(), 49, "cli:ops"), ((D + timedelta(days=10)).isoformat(), 45, "cli:boss")]


async def test_a_child_cheaper_than_its_parent_is_refused_naming_the_rule_and_nothing_changes(db, agents):
    await set_policy(db, "TOP", {"cost_bp": 49}, D, "ops")
    before = await log_size(db)
    with pytest.raises(PolicyError, match="never cheaper.*CHILD's cost_bp 48 is below TOP's 49"):
        await set_policy(db, "CHILD", {"cost_bp": 48}, D, "ops")
    assert await log_size(db) == before
    await set_policy(db, "CHILD", {"cost_bp": 49}, D, "ops")  # equal: a margin of 0, allowed


async def test_raising_a_parent_above_its_child_is_refused_both_ways(db, agents):
    await set_policy(db, "TOP", {"cost_bp": 49}, D, "ops")
    await set_policy(db, "CHILD", {"cost_bp": 51}, D, "ops")
    with pytest.raises(PolicyError, match="never cheaper"):
        await set_policy(db, "TOP", {"cost_bp": 52}, D + timedelta(days=3), "ops")
    # A later version is checked on its own day against the other's policy in force then.
    with pytest.raises(PolicyError, match="CHILD's cost_bp 51 is below TOP's 54 on 2026-11-07"):
        await set_policy(db, "TOP", {"cost_bp": 54}, D + timedelta(days=5), "ops")
    await set_policy(db, "CHILD", {"cost_bp": 55}, D + timedelta(days=5), "ops")
    await set_policy(db, "TOP", {"cost_bp": 54}, D + timedelta(days=5), "ops")
    # A version before another's takes effect is checked on each day that other changes too.
    await set_policy(db, "CHILD", {"cost_bp": 50}, D + timedelta(days=1), "ops")
    with pytest.raises(PolicyError, match="CHILD's cost_bp 50 is below TOP's 51 on 2026-11-04"):
        await set_policy(db, "TOP", {"cost_bp": 51}, D + timedelta(days=2), "ops")


async def test_a_child_richer_in_rewards_or_shares_than_its_parent_is_refused(db, agents):
    await set_policy(db, "TOP", {"activation_reward_fen": 15000, "deposit_share_fen": 5000}, D, "ops")
    with pytest.raises(PolicyError, match="never richer.*activation_reward_fen 16000 is above TOP's 15000"):
        await set_policy(db, "CHILD", {"activation_reward_fen": 16000}, D, "ops")
    with pytest.raises(PolicyError, match="service_fee_share_fen 1 is above TOP's 0"):
        await set_policy(db, "CHILD", {"service_fee_share_fen": 1}, D, "ops")
    await set_policy(db, "CHILD", {"activation_reward_fen": 15000, "deposit_share_fen": 3000}, D, "ops")
    with pytest.raises(PolicyError, match="CHILD's deposit_share_fen 3000 is above TOP's 2000"):
        await set_policy(db, "TOP", {"deposit_share_fen": 2000}, D + timedelta(days=1), "ops")


async def test_share_pct_is_not_compared_and_an_agent_without_cost_is_not_checked(db, agents):
    await set_policy(db, "TOP", {"cost_bp": 49, "share_pct": 50}, D, "ops")
    await set_policy(db, "CHILD", {"share_pct": 90}, D, "ops")
    assert (await policy_in_force(db, "CHILD", D))["cost_bp"] is None


async def test_a_policy_from_a_day_a_run_has_posted_is_refused(db, agents):
    await set_policy(db, "TOP", {"cost_bp": 40}, D, "ops")
    await agent_run.run(db, D + timedelta(days=1), TZ, now=datetime.now(UTC))
    with pytest.raises(PolicyError, match="a run has already posted 2026-11-03"):
        await set_policy(db, "TOP", {"cost_bp": 41}, D + timedelta(days=1), "ops")
    await set_policy(db, "TOP", {"cost_bp": 41}, D + timedelta(days=2), "ops")


@pytest.mark.parametrize("values, message", [
    ({"cost_bp": 10001}, "cost_bp must be an integer from 0 to 10000"),
    ({"share_pct": 101}, "share_pct must be an integer from 0 to 100"),
    ({"activation_reward_fen": -1}, "activation_reward_fen must be"),
    ({"cost": 5}, "unknown policy name 'cost'"),
])
async def test_values_out_of_range_or_unknown_are_refused(db, agents, values, message):
    with pytest.raises(InvalidInput, match=message):
        await set_policy(db, "TOP", values, D, "ops")


async def test_an_unknown_agent_is_refused(db, agents):
    with pytest.raises(InvalidInput, match="unknown agent NOBODY"):
        await set_policy(db, "NOBODY", {"cost_bp": 1}, D, "ops")


def test_name_value_arguments_parse_as_integers():
    assert policies.parse_values(["cost_bp=49", "share_pct=85"]) == {"cost_bp": 49, "share_pct": 85}
    for bad in (["cost_bp"], ["cost_bp=4.9"], ["cost_bp=-1"]):
        with pytest.raises(InvalidInput):
            policies.parse_values(bad)

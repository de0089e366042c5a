"""The demo world's agent network (``posgw demo``, CLI.md "Agent network"): a
small hierarchy with policies, merchants at 60 bp and their terminals, owned by
their merchants' agents. Built idempotently through the services, as the actor
``demo``, so every change is audited like an operator's.

    DEMOHQ   总部        cost 38 bp, activation reward 200 yuan, deposit share 50, fee share 20
    └ DEMOL1  一级代理   cost 45 bp, 150, 40, 15
      ├ DEMOL2A 二级代理 cost 49 bp, 100, 30, 10  ─ merchant 898100000000101 (60 bp), DEMN0001
      └ DEMOL2B 二级代理 cost 51 bp,  80, 20, 10  ─ merchant 898100000000102 (60 bp), DEMN0002

Policies take effect from today (or the day after the last day a run posted,
if later), set only for an agent that has none yet.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import asyncpg

from gateway.domain import policies, registry
from gateway.domain.demo import DEMO_ACTOR, demo_tmk
from gateway.keys import SoftHsm
from gateway.reports import agent_network
from gateway.services import agents, merchants, terminals

# code, name, parent, cost_bp, activation_reward_fen, deposit_share_fen, service_fee_share_fen
NETWORK_AGENTS = (
    ("DEMOHQ", "Demo HQ", None, 38, 20_000, 5_000, 2_000),
    ("DEMOL1", "Demo Level 1", "DEMOHQ", 45, 15_000, 4_000, 1_500),
    ("DEMOL2A", "Demo Level 2 A", "DEMOL1", 49, 10_000, 3_000, 1_000),
    ("DEMOL2B", "Demo Level 2 B", "DEMOL1", 51, 8_000, 2_000, 1_000),
)
# mid, name, agent, tid
NETWORK_MERCHANTS = (
    ("898100000000101", "Demo Noodle Shop", "DEMOL2A", "DEMN0001"),
    ("898100000000102", "Demo Tea House", "DEMOL2B", "DEMN0002"),
)
NETWORK_MDR_BP = 60


async def build_network(conn: asyncpg.Connection, hsm: SoftHsm, today: date) -> dict[str, Any]:
    """Create what is missing of the network; return its ``agents`` (the tree),
    ``merchants`` and ``terminals`` (with ``tid``, ``mid``, ``tmk``)."""
    posted = await policies.last_posted_day(conn)
    from_day = max(today, posted + timedelta(days=1)) if posted is not None else today
    for code, name, parent, cost_bp, reward_fen, deposit_fen, fee_fen in NETWORK_AGENTS:
        if await registry.find_agent(conn, code) is None:
            await agents.add_agent(conn, DEMO_ACTOR, code, name, parent)
        if not (await policies.policy_log(conn, code)):
            await agents.set_policy(conn, DEMO_ACTOR, code, {
                policies.COST_BP: cost_bp, "activation_reward_fen": reward_fen, "deposit_share_fen": deposit_fen,
                "service_fee_share_fen": fee_fen}, from_day)
    existing = await registry.existing_tids(conn, [tid for *_, tid in NETWORK_MERCHANTS])
    for mid, name, agent, tid in NETWORK_MERCHANTS:
        if await registry.find_merchant(conn, mid) is None:
            await merchants.add_merchant(conn, DEMO_ACTOR, mid, name, agent, NETWORK_MDR_BP)
        if tid not in existing:
            await terminals.add_terminal(conn, DEMO_ACTOR, hsm, tid, mid, demo_tmk(tid), permit=None,
                                         mac_algorithm=None, location=None, radius_km=None)
    return {
        "agents": (await agent_network.tree(conn, NETWORK_AGENTS[0][0], today))["agents"],
        "merchants": [await registry.show_merchant(conn, mid) for mid, *_ in NETWORK_MERCHANTS],
        "terminals": [{"tid": tid, "mid": mid, "tmk": demo_tmk(tid).hex().upper()}
                      for mid, _, _, tid in NETWORK_MERCHANTS],
    }

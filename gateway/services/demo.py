"""The demo world (``posgw demo``): an agent, a merchant, terminals with known
TMKs, cards with a known PIN, two billers, and the published test CAPKs and
AIDs of chip terminals (gateway/domain/ic_test_keys.json). Built idempotently
through the services, as the actor ``demo``, so every change is audited like
an operator's; its names and identities are in gateway.domain.demo."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from gateway.domain import bills, cards, ic, registry
from gateway.domain.demo import (
    DEMO_ACTOR,
    DEMO_AGENT,
    DEMO_CARD_BALANCE_FEN,
    DEMO_CARD_EXPIRY,
    DEMO_CARD_PIN,
    DEMO_CARDS_MAX,
    DEMO_FLOAT_FEN,
    DEMO_MERCHANT,
    DEMO_POSTPAID,
    DEMO_PREPAID,
    DEMO_TERMINALS_MAX,
    demo_pan,
    demo_tid,
    demo_tmk,
)
from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm
from gateway.services import agents, billers, merchants, terminals
from gateway.services import cards as card_services
from gateway.services import ic as ic_services
from gateway.services.demo_network import build_network


async def build_world(conn: asyncpg.Connection, hsm: SoftHsm, terminal_count: int, card_count: int,
                      today: date) -> dict[str, Any]:
    """Create what is missing of the demo world with ``terminal_count`` terminals
    and ``card_count`` cards, and return all of it, TMKs and PINs included (CLI.md);
    ``network``: the agent network's hierarchy (gateway.services.demo_network)."""
    if not 1 <= terminal_count <= DEMO_TERMINALS_MAX:
        raise InvalidInput(f"--terminals must be 1 to {DEMO_TERMINALS_MAX}")
    if not 0 <= card_count <= DEMO_CARDS_MAX:
        raise InvalidInput(f"--cards must be 0 to {DEMO_CARDS_MAX}")
    if await registry.find_agent(conn, DEMO_AGENT) is None:
        await agents.add_agent(conn, DEMO_ACTOR, DEMO_AGENT, "Demo Agent", None)
    if await registry.find_merchant(conn, DEMO_MERCHANT) is None:
        await merchants.add_merchant(conn, DEMO_ACTOR, DEMO_MERCHANT, "Demo Store", DEMO_AGENT, 0)
    world_terminals = await _terminals(conn, hsm, terminal_count)
    world_cards = await _cards(conn, hsm, card_count)
    world_billers = await _billers(conn)  # tops up the agent's float the first time
    await ic_services.seed_test_lists(conn, DEMO_ACTOR)
    network = await build_network(conn, hsm, today)
    return {
        "agents": [await registry.show_agent(conn, DEMO_AGENT)],
        "merchants": [await registry.show_merchant(conn, DEMO_MERCHANT)],
        "terminals": world_terminals,
        "cards": world_cards,
        "billers": world_billers,
        "ic": {"capks": len(await ic.list_capks(conn)), "aids": len(await ic.list_aids(conn))},
        "network": network,
    }


async def _terminals(conn: asyncpg.Connection, hsm: SoftHsm, count: int) -> list[dict[str, Any]]:
    tids = [demo_tid(index) for index in range(1, count + 1)]
    existing = await registry.existing_tids(conn, tids)
    for tid in tids:
        if tid not in existing:
            await terminals.add_terminal(conn, DEMO_ACTOR, hsm, tid, DEMO_MERCHANT, demo_tmk(tid), permit=None,
                                         mac_algorithm=None, location=None, radius_km=None)
    return [{"tid": tid, "mid": DEMO_MERCHANT, "tmk": demo_tmk(tid).hex().upper()} for tid in tids]


async def _cards(conn: asyncpg.Connection, hsm: SoftHsm, count: int) -> list[dict[str, Any]]:
    pans = [demo_pan(index) for index in range(1, count + 1)]
    hashes = [hsm.pan_hash(pan) for pan in pans]
    issued = await cards.issued_pan_hashes(conn, hashes)
    await card_services.issue_cards(conn, DEMO_ACTOR, hsm,
                                    [(pan, DEMO_CARD_PIN, DEMO_CARD_EXPIRY)
                                     for pan, pan_hash in zip(pans, hashes) if pan_hash not in issued],
                                    DEMO_CARD_BALANCE_FEN)
    return [{"pan": pan, "pin": DEMO_CARD_PIN, "expiry": DEMO_CARD_EXPIRY} for pan in pans]


async def _billers(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The two billers with three bills and three meters, and the agent's float
    topped up, once: the first time the world is built."""
    if await bills.load_biller(conn, DEMO_POSTPAID) is None:
        await billers.add_biller(conn, DEMO_ACTOR, DEMO_POSTPAID, "City Electricity", prepaid=False, exact=True,
                                 commission_bp=50, commission_fixed_fen=0, connector="builtin", connector_url=None)
        await billers.add_biller(conn, DEMO_ACTOR, DEMO_PREPAID, "Prepaid Power", prepaid=True, exact=False,
                                 commission_bp=0, commission_fixed_fen=100, connector="builtin", connector_url=None)
        for index in range(1, 4):
            await billers.add_bill(conn, DEMO_ACTOR, DEMO_POSTPAID, f"E{index:05d}", f"Customer {index}",
                                   12_345 * index, "202611", None)
            await billers.add_meter(conn, DEMO_ACTOR, DEMO_PREPAID, f"M{index:05d}", f"Meter owner {index}")
        await agents.top_up(conn, DEMO_ACTOR, DEMO_AGENT, DEMO_FLOAT_FEN)
    return [
        {"code": DEMO_POSTPAID, "prepaid": False, "bills": await bills.list_bills(conn, DEMO_POSTPAID, None)},
        {"code": DEMO_PREPAID, "prepaid": True, "meters": await bills.list_meters(conn, DEMO_PREPAID)},
    ]

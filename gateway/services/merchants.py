"""Merchants: add, freeze and unfreeze, risk limit overrides; each audited as
``merchant.<verb>`` on ``merchant:<mid>``."""

from __future__ import annotations

import asyncpg

from gateway.domain import registry
from gateway.services.audit import State, audited, status_action


def merchant_entity(mid: str) -> str:
    return f"merchant:{mid}"


async def merchant_state(conn: asyncpg.Connection, mid: str) -> State:
    """What ``merchant show`` shows, and the merchant's ``limits`` overrides."""
    merchant = await registry.find_merchant(conn, mid)
    if merchant is None:
        return None
    return merchant | {"limits": await registry.limit_overrides(conn, "merchant", mid)}


async def add_merchant(conn: asyncpg.Connection, actor: str, mid: str, name: str, agent: str, mdr_bp: int) -> None:
    await audited(conn, actor, "merchant.add", merchant_entity(mid), lambda: merchant_state(conn, mid),
                  lambda: registry.add_merchant(conn, mid, name, agent, mdr_bp))


async def set_merchant_status(conn: asyncpg.Connection, actor: str, mid: str, status: str) -> None:
    await audited(conn, actor, status_action("merchant", status), merchant_entity(mid),
                  lambda: merchant_state(conn, mid), lambda: registry.set_merchant_status(conn, mid, status))


async def set_merchant_limits(conn: asyncpg.Connection, actor: str, mid: str, values: dict[str, int]) -> None:
    """Override risk limits for every terminal of the merchant (a terminal's own override wins)."""

    async def change() -> None:
        await registry.show_merchant(conn, mid)  # unknown merchant: InvalidInput
        await registry.set_limit_overrides(conn, "merchant", mid, values)

    await audited(conn, actor, "merchant.limits", merchant_entity(mid), lambda: merchant_state(conn, mid), change)

"""Terminals: add, set, freeze and unfreeze, risk limit overrides, and the
inventory (allocate, recall, bind: gateway.domain.inventory); each audited as
``terminal.<verb>`` on ``terminal:<tid>``, one record per terminal. The TMK is
stored only under the LMK and is never in a record."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from gateway.domain import inventory, registry
from gateway.keys import SoftHsm
from gateway.services.audit import State, audited, status_action

# What the engine changes as terminals talk (sign-on, the batch, last seen) is not the operator's to audit.
_ENGINE_FIELDS = ("signed_on", "batch", "last_seen", "last_sign_on")


def terminal_entity(tid: str) -> str:
    return f"terminal:{tid}"


async def terminal_state(conn: asyncpg.Connection, tid: str) -> State:
    """What ``terminal show`` shows but what the engine changes, and the terminal's ``limits`` overrides."""
    terminal = await registry.find_terminal(conn, tid)
    if terminal is None:
        return None
    state = {name: value for name, value in terminal.items() if name not in _ENGINE_FIELDS}
    return state | {"limits": await registry.limit_overrides(conn, "terminal", tid)}


async def add_terminal(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, tid: str, mid: str | None, tmk: bytes, *,
                       permit: list[str] | None, mac_algorithm: str | None, location: tuple[float, float] | None,
                       radius_km: float | None, agent: str | None = None, now: datetime | None = None) -> None:
    """Register a terminal of the merchant ``mid``, bound at ``now`` and owned by the merchant's agent, or
    (``agent``, no ``mid``) a terminal in stock owned by that agent; both or neither: InvalidInput.
    None: the default permits, MAC algorithm; no location; ``now`` the database's clock."""
    placement = registry.Placement(mid, agent, now)
    await audited(conn, actor, "terminal.add", terminal_entity(tid), lambda: terminal_state(conn, tid),
                  lambda: registry.add_terminal(conn, hsm, tid, placement, tmk, permit=permit,
                                                mac_algorithm=mac_algorithm, location=location, radius_km=radius_km))


async def _move(conn: asyncpg.Connection, actor: str, action: str, tids: list[str], owner: str) -> None:
    """Each terminal's new owner, audited one record per terminal (the rules already checked)."""
    for tid in tids:
        await audited(conn, actor, action, terminal_entity(tid), lambda tid=tid: terminal_state(conn, tid),
                      lambda tid=tid: inventory.set_owner(conn, [tid], owner))


async def allocate_terminals(conn: asyncpg.Connection, actor: str, tids: list[str], to: str) -> None:
    """划拨: every terminal to ``to``, a descendant of its owner (a bound one: on its merchant's path),
    or none (CLI.md rule "Terminals")."""
    async with conn.transaction():
        inventory.check_allocation(await inventory.stock(conn, tids, to), to)
        await _move(conn, actor, "terminal.allocate", tids, to)


async def recall_terminals(conn: asyncpg.Connection, actor: str, tids: list[str], to: str) -> None:
    """回拨: every terminal back to ``to``, an ancestor of its owner (in stock, never activated), or none."""
    async with conn.transaction():
        inventory.check_recall(await inventory.stock(conn, tids, to), to)
        await _move(conn, actor, "terminal.recall", tids, to)


async def bind_terminal(conn: asyncpg.Connection, actor: str, tid: str, mid: str, now: datetime) -> None:
    """Bind a terminal in stock to a merchant of its owner or of the owner's descendants, at ``now``."""
    async def change() -> None:
        await inventory.check_binding(conn, tid, mid)
        await inventory.bind(conn, tid, mid, now)

    await audited(conn, actor, "terminal.bind", terminal_entity(tid), lambda: terminal_state(conn, tid), change)


async def set_terminal(conn: asyncpg.Connection, actor: str, tid: str, *, permit: list[str] | None,
                       mac_algorithm: str | None, location: tuple[float, float] | None,
                       radius_km: float | None) -> None:
    """Change the permits, MAC algorithm, location or radius (None: unchanged)."""
    await audited(conn, actor, "terminal.set", terminal_entity(tid), lambda: terminal_state(conn, tid),
                  lambda: registry.set_terminal(conn, tid, permit=permit, mac_algorithm=mac_algorithm,
                                                location=location, radius_km=radius_km))


async def set_terminal_status(conn: asyncpg.Connection, actor: str, tid: str, status: str) -> None:
    """Freezing keeps the working keys; either clears the count of MAC failures."""
    await audited(conn, actor, status_action("terminal", status), terminal_entity(tid),
                  lambda: terminal_state(conn, tid), lambda: registry.set_terminal_status(conn, tid, status))


async def set_terminal_limits(conn: asyncpg.Connection, actor: str, tid: str, values: dict[str, int]) -> None:
    async def change() -> None:
        await registry.show_terminal(conn, tid)  # unknown terminal: InvalidInput
        await registry.set_limit_overrides(conn, "terminal", tid, values)

    await audited(conn, actor, "terminal.limits", terminal_entity(tid), lambda: terminal_state(conn, tid), change)

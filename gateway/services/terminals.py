"""Terminals: add, set, freeze and unfreeze, risk limit overrides; each audited
as ``terminal.<verb>`` on ``terminal:<tid>``. The TMK is stored only under the
LMK and is never in a record."""

from __future__ import annotations

import asyncpg

from gateway.domain import registry
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


async def add_terminal(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, tid: str, mid: str, tmk: bytes, *,
                       permit: list[str] | None, mac_algorithm: str | None, location: tuple[float, float] | None,
                       radius_km: float | None) -> None:
    """Register a terminal of the merchant (None: the default permits, MAC algorithm; no location)."""
    await audited(conn, actor, "terminal.add", terminal_entity(tid), lambda: terminal_state(conn, tid),
                  lambda: registry.add_terminal(conn, hsm, tid, mid, tmk, permit=permit, mac_algorithm=mac_algorithm,
                                                location=location, radius_km=radius_km))


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

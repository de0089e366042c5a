"""Agents, merchants and terminals: the operator's registry, in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm
from ledger.accounts import AccountKind, balance_fen, create_account

ACTIVE = "active"
FROZEN = "frozen"


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """What the pipeline needs to know about a terminal, read in one query.

    A terminal in stock (bound to no merchant: CLI.md ``terminal bind``) has no
    ``mid``, merchant status, account or rate; its agent is its owner."""

    tid: str
    mid: str | None
    status: str
    merchant_status: str | None
    agent_status: str
    agent_code: str
    permit: tuple[str, ...]
    mac_algorithm: str
    tmk_lmk: bytes
    pik_lmk: bytes | None
    mak_lmk: bytes | None
    tdk_lmk: bytes | None
    keys_expire_at: datetime | None
    batch: int
    merchant_account_id: int | None
    mdr_bp: int | None
    agent_float_account_id: int
    agent_commission_account_id: int
    latitude: float | None
    longitude: float | None
    radius_km: float | None
    mac_failures: int

    @property
    def position(self) -> tuple[float, float] | None:
        return (self.latitude, self.longitude) if self.latitude is not None else None

    @property
    def bound(self) -> bool:
        """Bound to a merchant; an unbound terminal's financial requests get 58 (WIRE.md 9.9)."""
        return self.mid is not None

    @property
    def frozen(self) -> bool:
        return FROZEN in (self.status, self.merchant_status, self.agent_status)

    def keys_current(self, now: datetime) -> bool:
        return self.mak_lmk is not None and self.keys_expire_at is not None and now < self.keys_expire_at


TERMINAL_COLUMNS = """
       t.tid, t.mid, t.status, m.status AS merchant_status, a.status AS agent_status,
       a.code AS agent_code, t.permit, t.mac_algorithm, t.tmk_lmk, t.pik_lmk, t.mak_lmk,
       t.tdk_lmk, t.keys_expire_at, t.batch, m.account_id AS merchant_account_id, m.mdr_bp,
       a.float_account_id AS agent_float_account_id,
       a.commission_account_id AS agent_commission_account_id, t.latitude, t.longitude, t.radius_km,
       t.mac_failures"""
_TERMINAL_FIELDS = ("tid", "mid", "status", "merchant_status", "agent_status", "agent_code", "permit",
                    "mac_algorithm", "tmk_lmk", "pik_lmk", "mak_lmk", "tdk_lmk", "keys_expire_at", "batch",
                    "merchant_account_id", "mdr_bp", "agent_float_account_id", "agent_commission_account_id",
                    "latitude", "longitude", "radius_km", "mac_failures")

# A bound terminal's agent is its merchant's; a terminal in stock has no merchant and its owner is its agent.
TERMINAL_JOINS = """
  FROM terminals t
  LEFT JOIN merchants m ON m.mid = t.mid
  JOIN agents a ON a.code = COALESCE(m.agent_code, t.owner_agent)"""

_TERMINAL_QUERY = f"""
SELECT {TERMINAL_COLUMNS}{TERMINAL_JOINS}
 WHERE t.tid = $1
"""


def terminal_from_row(row: asyncpg.Record) -> TerminalRecord:
    values = {name: row[name] for name in _TERMINAL_FIELDS}
    values["permit"] = tuple(values["permit"])
    return TerminalRecord(**values)


async def load_terminal(conn: asyncpg.Connection | asyncpg.Pool, tid: str) -> TerminalRecord | None:
    row = await conn.fetchrow(_TERMINAL_QUERY, tid)
    return terminal_from_row(row) if row is not None else None


async def store_working_keys(conn: asyncpg.Connection | asyncpg.Pool, tid: str,
                             keys_lmk: tuple[bytes, ...], expire_at: datetime) -> None:
    pik, mak, *rest = keys_lmk
    await conn.execute(
        """UPDATE terminals SET pik_lmk = $2, mak_lmk = $3, tdk_lmk = $4,
                  keys_expire_at = $5, signed_on_at = now(), last_seen = now()
            WHERE tid = $1""",
        tid, pik, mak, rest[0] if rest else None, expire_at,
    )


async def end_working_keys(conn: asyncpg.Connection | asyncpg.Pool, tid: str) -> None:
    await conn.execute(
        """UPDATE terminals SET pik_lmk = NULL, mak_lmk = NULL, tdk_lmk = NULL,
                  keys_expire_at = NULL, last_seen = now()
            WHERE tid = $1""",
        tid,
    )


async def touch_terminal(conn: asyncpg.Connection | asyncpg.Pool, tid: str) -> None:
    await conn.execute("UPDATE terminals SET last_seen = now() WHERE tid = $1", tid)


# -- agents -----------------------------------------------------------------


async def add_agent(conn: asyncpg.Connection, code: str, name: str, parent: str | None) -> None:
    if await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", code):
        raise InvalidInput(f"agent {code} already exists")
    if parent is not None and not await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", parent):
        raise InvalidInput(f"unknown parent agent {parent}")
    float_id = await create_account(conn, AccountKind.AGENT_FLOAT, f"agent:{code}:float",
                                    debits_must_not_exceed_credits=True)
    commission_id = await create_account(conn, AccountKind.COMMISSION, f"agent:{code}:commission",
                                         debits_must_not_exceed_credits=True)
    await conn.execute(
        """INSERT INTO agents (code, name, parent_code, float_account_id, commission_account_id)
           VALUES ($1, $2, $3, $4, $5)""",
        code, name, parent, float_id, commission_id,
    )


async def _agent_row(conn: asyncpg.Connection, code: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM agents WHERE code = $1", code)
    if row is None:
        raise InvalidInput(f"unknown agent {code}")
    return row


async def agent_float_account(conn: asyncpg.Connection, code: str) -> int:
    """The ledger account of the agent's float (unknown agent: InvalidInput)."""
    return (await _agent_row(conn, code))["float_account_id"]


async def find_agent(conn: asyncpg.Connection, code: str) -> dict[str, Any] | None:
    """``show_agent``, or None for an unknown agent."""
    row = await conn.fetchrow("SELECT * FROM agents WHERE code = $1", code)
    return None if row is None else await _agent_view(conn, row)


async def show_agent(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    return await _agent_view(conn, await _agent_row(conn, code))


async def _agent_view(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "code": row["code"],
        "name": row["name"],
        "parent": row["parent_code"],
        "status": row["status"],
        "float_fen": await balance_fen(conn, row["float_account_id"]),
        "commission_fen": await balance_fen(conn, row["commission_account_id"]),
    }


async def set_agent_status(conn: asyncpg.Connection, code: str, status: str) -> None:
    await _agent_row(conn, code)
    await conn.execute("UPDATE agents SET status = $2 WHERE code = $1", code, status)


# -- merchants --------------------------------------------------------------


async def add_merchant(conn: asyncpg.Connection, mid: str, name: str, agent: str, mdr_bp: int) -> None:
    if await conn.fetchval("SELECT 1 FROM merchants WHERE mid = $1", mid):
        raise InvalidInput(f"merchant {mid} already exists")
    await _agent_row(conn, agent)
    account = await create_account(conn, AccountKind.MERCHANT, f"merchant:{mid}",
                                   debits_must_not_exceed_credits=True)
    await conn.execute(
        "INSERT INTO merchants (mid, name, agent_code, mdr_bp, account_id) VALUES ($1, $2, $3, $4, $5)",
        mid, name, agent, mdr_bp, account,
    )


async def _merchant_row(conn: asyncpg.Connection, mid: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM merchants WHERE mid = $1", mid)
    if row is None:
        raise InvalidInput(f"unknown merchant {mid}")
    return row


async def find_merchant(conn: asyncpg.Connection, mid: str) -> dict[str, Any] | None:
    """``show_merchant``, or None for an unknown merchant."""
    row = await conn.fetchrow("SELECT * FROM merchants WHERE mid = $1", mid)
    return None if row is None else await _merchant_view(conn, row)


async def show_merchant(conn: asyncpg.Connection, mid: str) -> dict[str, Any]:
    return await _merchant_view(conn, await _merchant_row(conn, mid))


async def _merchant_view(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "mid": row["mid"],
        "name": row["name"],
        "agent": row["agent_code"],
        "status": row["status"],
        "mdr_bp": row["mdr_bp"],
        "balance_fen": await balance_fen(conn, row["account_id"]),
    }


async def set_merchant_status(conn: asyncpg.Connection, mid: str, status: str) -> None:
    await _merchant_row(conn, mid)
    await conn.execute("UPDATE merchants SET status = $2 WHERE mid = $1", mid, status)


# -- terminals --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new terminal goes (CLI.md ``terminal add``): to a merchant, bound at
    ``now`` (None: the database's clock) and owned by the merchant's agent, or in
    stock with an agent."""

    mid: str | None
    agent: str | None
    now: datetime | None = None

    def __post_init__(self) -> None:
        if (self.mid is None) == (self.agent is None):
            raise InvalidInput("terminal add takes either --merchant (bound at once) or --agent (in stock)")


async def add_terminal(conn: asyncpg.Connection, hsm: SoftHsm, tid: str, placement: Placement, tmk: bytes, *,
                       permit: list[str] | None, mac_algorithm: str | None,
                       location: tuple[float, float] | None, radius_km: float | None) -> None:
    if await conn.fetchval("SELECT 1 FROM terminals WHERE tid = $1", tid):
        raise InvalidInput(f"terminal {tid} already exists")
    if placement.mid is not None:
        owner = (await _merchant_row(conn, placement.mid))["agent_code"]
        bound_at = placement.now or await conn.fetchval("SELECT now()")
    else:
        owner = (await _agent_row(conn, placement.agent or ""))["code"]
        bound_at = None
    tmk_lmk = hsm.encrypt_key(tmk)
    await conn.execute(
        """INSERT INTO terminals (tid, mid, owner_agent, bound_at, tmk_lmk, tmk_kcv)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        tid, placement.mid, owner, bound_at, tmk_lmk, hsm.check_value(tmk_lmk),
    )
    await set_terminal(conn, tid, permit=permit, mac_algorithm=mac_algorithm,
                       location=location, radius_km=radius_km)


async def set_terminal(conn: asyncpg.Connection, tid: str, *, permit: list[str] | None,
                       mac_algorithm: str | None, location: tuple[float, float] | None,
                       radius_km: float | None) -> None:
    await _terminal_row(conn, tid)
    if radius_km is not None and radius_km <= 0:
        raise InvalidInput("--radius-km must be more than zero")
    lat, lon = location if location is not None else (None, None)
    await conn.execute(
        """UPDATE terminals
              SET permit = COALESCE($2, permit),
                  mac_algorithm = COALESCE($3, mac_algorithm),
                  latitude = COALESCE($4, latitude),
                  longitude = COALESCE($5, longitude),
                  radius_km = COALESCE($6, radius_km)
            WHERE tid = $1""",
        tid, permit, mac_algorithm, lat, lon, radius_km,
    )
    if radius_km is not None:  # the radius is the terminal's own location_radius_km limit (CLI.md)
        await set_limit_overrides(conn, "terminal", tid, {"location_radius_km": max(1, round(radius_km))})


async def _terminal_row(conn: asyncpg.Connection, tid: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM terminals WHERE tid = $1", tid)
    if row is None:
        raise InvalidInput(f"unknown terminal {tid}")
    return row


def _terminal_view(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    location = None
    if row["latitude"] is not None:
        location = f"{row['latitude']},{row['longitude']}"
    return {
        "tid": row["tid"],
        "mid": row["mid"],
        "status": row["status"],
        "permit": list(row["permit"]),
        "mac": row["mac_algorithm"],
        "signed_on": row["mak_lmk"] is not None and row["keys_expire_at"] is not None
        and now < row["keys_expire_at"],
        "batch": row["batch"],
        "last_seen": row["last_seen"].isoformat() if row["last_seen"] else None,
        "last_sign_on": row["signed_on_at"].isoformat() if row["signed_on_at"] else None,
        "location": location,
        "radius_km": row["radius_km"],
        "owner_agent": row["owner_agent"],
        "bound": row["mid"] is not None,
        "activated_at": row["activated_at"].isoformat() if row["activated_at"] else None,
    }


async def find_terminal(conn: asyncpg.Connection, tid: str) -> dict[str, Any] | None:
    """``show_terminal``, or None for an unknown terminal."""
    row = await conn.fetchrow("SELECT * FROM terminals WHERE tid = $1", tid)
    return None if row is None else _terminal_view(row, await conn.fetchval("SELECT now()"))


async def show_terminal(conn: asyncpg.Connection, tid: str) -> dict[str, Any]:
    row = await _terminal_row(conn, tid)
    return _terminal_view(row, await conn.fetchval("SELECT now()"))


async def existing_tids(conn: asyncpg.Connection, tids: list[str]) -> set[str]:
    """Those of ``tids`` that are registered."""
    return {row["tid"] for row in await conn.fetch("SELECT tid FROM terminals WHERE tid = ANY ($1::text[])", tids)}


async def list_terminals(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch("SELECT * FROM terminals ORDER BY tid")
    return [_terminal_view(row, now) for row in rows]


async def set_terminal_status(conn: asyncpg.Connection, tid: str, status: str) -> None:
    await _terminal_row(conn, tid)
    await conn.execute("UPDATE terminals SET status = $2, mac_failures = 0 WHERE tid = $1", tid, status)


async def count_mac_failure(conn: asyncpg.Connection | asyncpg.Pool, tid: str, freeze_after: int) -> bool:
    """Count a MAC failure; freeze the terminal at ``freeze_after`` in a row (0: never).
    Returns whether this failure froze it."""
    row = await conn.fetchrow(
        """UPDATE terminals SET mac_failures = mac_failures + 1,
                  status = CASE WHEN $2 > 0 AND mac_failures + 1 >= $2 THEN 'frozen' ELSE status END
            WHERE tid = $1 RETURNING mac_failures, status""", tid, freeze_after)
    return row is not None and freeze_after > 0 and row["mac_failures"] == freeze_after


async def reset_mac_failures(conn: asyncpg.Connection | asyncpg.Pool, tid: str) -> None:
    await conn.execute("UPDATE terminals SET mac_failures = 0 WHERE tid = $1 AND mac_failures <> 0", tid)


# -- risk limit overrides -----------------------------------------------------


async def set_limit_overrides(conn: asyncpg.Connection, scope: str, owner: str, values: dict[str, int]) -> None:
    """Override limits of config/risk.toml for one merchant or terminal (``scope``), by name."""
    for name, value in values.items():
        await conn.execute(
            """INSERT INTO risk_limits (scope, owner, name, value) VALUES ($1, $2, $3, $4)
               ON CONFLICT (scope, owner, name) DO UPDATE SET value = $4""", scope, owner, name, value)


async def limit_overrides(conn: asyncpg.Connection, scope: str, owner: str) -> dict[str, int]:
    """A merchant's or terminal's overrides, by name."""
    rows = await conn.fetch("SELECT name, value FROM risk_limits WHERE scope = $1 AND owner = $2 ORDER BY name",
                            scope, owner)
    return {row["name"]: row["value"] for row in rows}

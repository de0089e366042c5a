"""Agent policies (CLI.md "Agent network", "Policy values"): versioned by the
local day they take effect, with their invariants.

A policy holds ``cost_bp`` (the agent's settlement cost rate; none: the agent
earns no share), ``share_pct`` (the part of its margin it is paid, default
100), ``activation_reward_fen``, ``deposit_share_fen`` and
``service_fee_share_fen`` (default 0). The rows of ``agent_policies`` are never
changed: the table is the price-change log (who set what, from which day, when).

Invariants, checked both ways on every day from the new policy's first day on
(the agent against its parent, and each of its children against it):
a child is never cheaper than its parent (``cost_bp`` at least its parent's,
when both have one), and never richer in rewards or shares (each ``*_fen``
value at most its parent's). ``share_pct`` is the agent's own affair and not
compared. A policy may not take effect on a day a run has already posted.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput

POLICY_LOCK_KEY = 0x706F6C69  # taken alone by set_policy, shared by the agent run
COST_BP = "cost_bp"
SHARE_PCT = "share_pct"
FEN_NAMES = ("activation_reward_fen", "deposit_share_fen", "service_fee_share_fen")
POLICY_NAMES = (COST_BP, SHARE_PCT, *FEN_NAMES)
DEFAULTS: dict[str, int | None] = {COST_BP: None, SHARE_PCT: 100} | {name: 0 for name in FEN_NAMES}
_LIMITS = {COST_BP: (0, 10_000), SHARE_PCT: (0, 100)} | {name: (0, 10**12) for name in FEN_NAMES}
_COLUMNS = ", ".join(POLICY_NAMES)


class PolicyError(InvalidInput):
    """A policy refused: the CLI exits 2 with this message, which names the rule."""


def parse_values(pairs: list[str]) -> dict[str, int]:
    """``NAME=VALUE`` arguments as integers (CLI.md: as in ``terminal limits``)."""
    values: dict[str, int] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise InvalidInput(f"expected NAME=VALUE: {pair!r}")
        if not text.strip().isdigit():
            raise InvalidInput(f"{name} must be a whole number: {text!r}")
        values[name.strip()] = int(text)
    return check_values(values)


def check_values(values: dict[str, int]) -> dict[str, int]:
    """Known names and values in their ranges (``cost_bp`` 0..10,000, ``share_pct`` 0..100)."""
    for name, value in values.items():
        if name not in _LIMITS:
            raise InvalidInput(f"unknown policy name {name!r}: one of {', '.join(POLICY_NAMES)}")
        low, high = _LIMITS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidInput(f"{name} must be an integer from {low} to {high}: {value!r}")
    return values


def in_force_sql(agent: str, day: str) -> str:
    """A subquery: the policy row of ``agent`` in force on ``day`` (SQL expressions)."""
    return (f"(SELECT * FROM agent_policies p WHERE p.agent_code = {agent} AND p.from_day <= {day}"
            " ORDER BY p.from_day DESC, p.id DESC LIMIT 1)")


async def policy_in_force(conn: asyncpg.Connection, code: str, day: date) -> dict[str, int | None]:
    """The agent's policy on a local day (the defaults before its first)."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {in_force_sql('$1', '$2::date')} p", code, day)
    return dict(DEFAULTS) if row is None else dict(row)


async def last_posted_day(conn: asyncpg.Connection) -> date | None:
    """The latest local day a run of the agent network has posted."""
    return await conn.fetchval("SELECT max(day) FROM agent_runs")


async def set_policy(conn: asyncpg.Connection, code: str, values: dict[str, int], from_day: date,
                     actor: str) -> dict[str, Any]:
    """Set the agent's policy from ``from_day``: the values given, the rest as in force
    that day. Returns ``code``, ``from`` and the ``policy`` now in force from that day.
    Raises PolicyError (nothing changed) for a day a run has posted or a broken invariant."""
    check_values(values)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", POLICY_LOCK_KEY)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agents WHERE code = $1)", code):
            raise InvalidInput(f"unknown agent {code}")
        posted = await last_posted_day(conn)
        if posted is not None and from_day <= posted:
            raise PolicyError(f"--from {from_day.isoformat()}: a run has already posted {posted.isoformat()};"
                              " a policy takes effect only on a day no run has posted")
        policy = await policy_in_force(conn, code, from_day) | values
        await conn.execute(
            f"""INSERT INTO agent_policies (agent_code, from_day, {_COLUMNS}, set_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            code, from_day, *(policy[name] for name in POLICY_NAMES), actor)
        broken = await first_broken_rule(conn, code, from_day)
        if broken is not None:
            raise PolicyError(broken)
    return {"code": code, "from": from_day.isoformat(), "policy": policy}


async def first_broken_rule(conn: asyncpg.Connection, code: str, from_day: date) -> str | None:
    """The first invariant broken, on any day from ``from_day`` on, between the agent
    and its parent or one of its children (each pair on every day either changes), or None."""
    row = await conn.fetchrow(
        f"""WITH pairs AS (
                SELECT a.code AS child, a.parent_code AS parent FROM agents a
                 WHERE a.parent_code IS NOT NULL AND (a.code = $1 OR a.parent_code = $1)),
            days AS (
                SELECT p.child, p.parent, d.day FROM pairs p,
                       LATERAL (SELECT $2::date AS day
                                UNION
                                SELECT from_day FROM agent_policies
                                 WHERE agent_code IN (p.child, p.parent) AND from_day > $2) d),
            pairs_in_force AS (
                SELECT d.child, d.parent, d.day, c.cost_bp AS c_cost, pa.cost_bp AS p_cost,
                       ARRAY[coalesce(c.activation_reward_fen, 0), coalesce(c.deposit_share_fen, 0),
                             coalesce(c.service_fee_share_fen, 0)] AS c_fen,
                       ARRAY[coalesce(pa.activation_reward_fen, 0), coalesce(pa.deposit_share_fen, 0),
                             coalesce(pa.service_fee_share_fen, 0)] AS p_fen
                  FROM days d
                  LEFT JOIN LATERAL {in_force_sql('d.child', 'd.day')} c ON true
                  LEFT JOIN LATERAL {in_force_sql('d.parent', 'd.day')} pa ON true)
            SELECT child, parent, day, rule, c_value, p_value
              FROM pairs_in_force,
                   LATERAL (VALUES (0, 'cost_bp', c_cost::bigint, p_cost::bigint),
                                   (1, 'activation_reward_fen', c_fen[1], p_fen[1]),
                                   (2, 'deposit_share_fen', c_fen[2], p_fen[2]),
                                   (3, 'service_fee_share_fen', c_fen[3], p_fen[3])) AS r (n, rule, c_value, p_value)
             WHERE CASE WHEN n = 0 THEN c_value < p_value ELSE c_value > p_value END
             ORDER BY day, child, n LIMIT 1""",
        code, from_day)
    if row is None:
        return None
    if row["rule"] == COST_BP:
        return (f"a child is never cheaper than its parent: {row['child']}'s cost_bp {row['c_value']} is below"
                f" {row['parent']}'s {row['p_value']} on {row['day'].isoformat()}")
    return (f"a child is never richer than its parent: {row['child']}'s {row['rule']} {row['c_value']} is above"
            f" {row['parent']}'s {row['p_value']} on {row['day'].isoformat()}")


async def policy_log(conn: asyncpg.Connection, code: str) -> list[dict[str, Any]]:
    """The agent's price-change log: every policy set, in order, with who set it and when."""
    rows = await conn.fetch(
        f"""SELECT from_day, {_COLUMNS}, set_by, set_at FROM agent_policies WHERE agent_code = $1
             ORDER BY set_at, id""", code)
    return [{"from": row["from_day"].isoformat(), "policy": {name: row[name] for name in POLICY_NAMES},
             "set_by": row["set_by"], "set_at": row["set_at"].isoformat()} for row in rows]

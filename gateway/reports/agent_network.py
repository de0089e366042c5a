"""The agent network's read-only views (CLI.md "Agent network"): `agent tree` and
what `agent show` adds (its ``level``, balances, terminal counts and redirect).

Levels count from the top (an agent without a parent: 1). Terminal counts are
an agent's own (the terminals it owns): ``in_stock`` (bound to no merchant),
``bound`` (bound to one) and ``activated`` (bound, and activated).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from gateway.domain import redirects
from gateway.domain.policies import in_force_sql
from gateway.domain.validate import InvalidInput
from gateway.reports.agent_earnings import balances

TERMINAL_COUNTS = ("in_stock", "bound", "activated")

_AGENTS = f"""WITH RECURSIVE tree (code, parent, level) AS (
                  SELECT code, parent_code, 1 FROM agents WHERE parent_code IS NULL
                  UNION ALL
                  SELECT a.code, a.parent_code, t.level + 1 FROM agents a JOIN tree t ON a.parent_code = t.code
                   WHERE t.level < 64)
              SELECT t.code, t.parent, t.level, p.cost_bp,
                     count(x.tid) FILTER (WHERE x.mid IS NULL) AS in_stock,
                     count(x.tid) FILTER (WHERE x.mid IS NOT NULL) AS bound,
                     count(x.tid) FILTER (WHERE x.activated_at IS NOT NULL) AS activated
                FROM tree t
                LEFT JOIN LATERAL {in_force_sql('t.code', '$1::date')} p ON true
                LEFT JOIN terminals x ON x.owner_agent = t.code
               GROUP BY t.code, t.parent, t.level, p.cost_bp
               ORDER BY t.level, t.code"""


def _terminals(row: asyncpg.Record) -> dict[str, int]:
    return {name: row[name] for name in TERMINAL_COUNTS}


async def tree(conn: asyncpg.Connection, code: str | None, today: date) -> dict[str, Any]:
    """`agent tree [CODE]`: ``agents``, the roots (CODE, or every agent without a parent),
    each ``code``, ``parent``, ``level``, ``cost_bp`` (in force today), ``terminals`` and
    ``children`` (nested, by code)."""
    rows = await conn.fetch(_AGENTS, today)
    nodes = {row["code"]: {"code": row["code"], "parent": row["parent"], "level": row["level"],
                           "cost_bp": row["cost_bp"], "terminals": _terminals(row), "children": []}
             for row in rows}
    for node in nodes.values():  # rows come by level, then code: children in code order
        if node["parent"] is not None:
            nodes[node["parent"]]["children"].append(node)
    if code is not None:
        if code not in nodes:
            raise InvalidInput(f"unknown agent {code}")
        return {"agents": [nodes[code]]}
    return {"agents": [node for node in nodes.values() if node["parent"] is None]}


async def network_view(conn: asyncpg.Connection, code: str, today: date) -> dict[str, Any]:
    """What `agent show` adds: ``level``, ``profit_fen``, ``reward_fen``, ``receivable_fen``,
    ``terminals`` (its own: ``in_stock``, ``bound``, ``activated``) and ``redirect``
    (``to``, ``until``, ``from``; or null)."""
    row = await conn.fetchrow(
        """WITH RECURSIVE up (code, level) AS (
                SELECT parent_code, 1 FROM agents WHERE code = $1
                UNION ALL
                SELECT a.parent_code, u.level + 1 FROM agents a JOIN up u ON a.code = u.code
                 WHERE u.code IS NOT NULL AND u.level < 64)
            SELECT (SELECT max(level) FROM up) AS level,
                   count(x.tid) FILTER (WHERE x.mid IS NULL) AS in_stock,
                   count(x.tid) FILTER (WHERE x.mid IS NOT NULL) AS bound,
                   count(x.tid) FILTER (WHERE x.activated_at IS NOT NULL) AS activated
              FROM terminals x WHERE x.owner_agent = $1""", code)
    return {"level": row["level"], **await balances(conn, code), "terminals": _terminals(row),
            "redirect": await redirects.current(conn, code, today)}

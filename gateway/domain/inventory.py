"""Terminal inventory (CLI.md "Agent network", rule "Terminals"): who may move a
terminal where. The questions about the agent tree are asked in SQL, one
query per command.

- ``allocate`` (划拨): the owner becomes an agent below the current owner (a
  strict descendant); a bound terminal only to an agent on its merchant's
  path (the merchant's agent or one of its ancestors), so it keeps its
  merchant; all listed terminals or none.
- ``recall`` (回拨): back to an agent above the owner (a strict ancestor);
  only terminals in stock and never activated.
- ``bind``: a terminal in stock to a merchant of its owner or of the owner's
  descendants; the owner stays; a bound terminal: refused.

Each check names the terminal and the rule it breaks (``InventoryError``: the
CLI exits 2 with that message).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.domain.validate import InvalidInput


class InventoryError(InvalidInput):
    """An allocation, recall or binding refused: names the terminal and the rule."""


@dataclass(frozen=True, slots=True)
class Stock:
    """A terminal as the inventory rules see it, with the answers of the tree about it."""

    tid: str
    owner: str
    mid: str | None
    activated_at: datetime | None
    target_below_owner: bool  # the target agent is a strict descendant of the owner
    target_above_owner: bool  # the target agent is a strict ancestor of the owner
    target_on_merchant_path: bool  # the merchant's agent is the target or below it (True when unbound)


def parse_tids(text: str) -> list[str]:
    """``TID[,TID...]``: the terminal ids in the order given, each once."""
    tids = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not tids:
        raise InvalidInput("name at least one terminal")
    return tids


# The agents below $1 and above it, each with its distance (0: $1 itself), and
# the listed terminals ($2) locked, with their merchants' agents.
_STOCK_QUERY = """
WITH RECURSIVE
  below (code, depth) AS (
    SELECT code, 0 FROM agents WHERE code = $1
    UNION ALL
    SELECT a.code, b.depth + 1 FROM agents a JOIN below b ON a.parent_code = b.code),
  above (code, parent, depth) AS (
    SELECT code, parent_code, 0 FROM agents WHERE code = $1
    UNION ALL
    SELECT a.code, a.parent_code, u.depth + 1 FROM agents a JOIN above u ON a.code = u.parent),
  listed AS (
    SELECT t.tid, t.owner_agent, t.mid, t.activated_at FROM terminals t
     WHERE t.tid = ANY ($2::text[]) ORDER BY t.tid FOR UPDATE)
SELECT l.tid, l.owner_agent, l.mid, l.activated_at,
       EXISTS (SELECT 1 FROM above u WHERE u.code = l.owner_agent AND u.depth > 0) AS target_below_owner,
       EXISTS (SELECT 1 FROM below b WHERE b.code = l.owner_agent AND b.depth > 0) AS target_above_owner,
       (l.mid IS NULL OR EXISTS (SELECT 1 FROM below b WHERE b.code = m.agent_code)) AS target_on_merchant_path
  FROM listed l
  LEFT JOIN merchants m ON m.mid = l.mid
"""


async def _agent_known(conn: asyncpg.Connection, code: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", code):
        raise InvalidInput(f"unknown agent {code}")


async def stock(conn: asyncpg.Connection, tids: list[str], target: str) -> list[Stock]:
    """The terminals (locked for the change, in the order given) as seen from the agent ``target``;
    an unknown agent or terminal: InvalidInput."""
    await _agent_known(conn, target)
    rows = {row["tid"]: row for row in await conn.fetch(_STOCK_QUERY, target, tids)}
    missing = [tid for tid in tids if tid not in rows]
    if missing:
        raise InvalidInput(f"unknown terminal {missing[0]}")
    return [Stock(tid, rows[tid]["owner_agent"], rows[tid]["mid"], rows[tid]["activated_at"],
                  rows[tid]["target_below_owner"], rows[tid]["target_above_owner"],
                  rows[tid]["target_on_merchant_path"]) for tid in tids]


def check_allocation(terminals: list[Stock], target: str) -> None:
    """Every terminal may go down to ``target``, or none goes (the first that may not is named)."""
    for t in terminals:
        if not t.target_below_owner:
            raise InventoryError(f"terminal {t.tid}: allocate only to a descendant of its owner {t.owner} "
                                 f"({target} is not below {t.owner})")
        if not t.target_on_merchant_path:
            raise InventoryError(f"terminal {t.tid}: a bound terminal goes only to an agent on its merchant "
                                 f"{t.mid}'s path ({target} is not)")


def check_recall(terminals: list[Stock], target: str) -> None:
    """Every terminal may go back up to ``target``, or none goes (the first that may not is named)."""
    for t in terminals:
        if t.activated_at is not None:
            raise InventoryError(f"terminal {t.tid}: an activated terminal cannot be recalled")
        if t.mid is not None:
            raise InventoryError(f"terminal {t.tid}: a bound terminal cannot be recalled (bound to {t.mid})")
        if not t.target_above_owner:
            raise InventoryError(f"terminal {t.tid}: recall only to an ancestor of its owner {t.owner} "
                                 f"({target} is not above {t.owner})")


_BIND_QUERY = """
WITH RECURSIVE above (code, parent) AS (
    SELECT code, parent_code FROM agents WHERE code = $2
    UNION ALL
    SELECT a.code, a.parent_code FROM agents a JOIN above u ON a.code = u.parent)
SELECT t.tid, t.owner_agent, t.mid, EXISTS (SELECT 1 FROM above u WHERE u.code = t.owner_agent) AS in_subtree
  FROM terminals t WHERE t.tid = $1 FOR UPDATE OF t
"""


async def check_binding(conn: asyncpg.Connection, tid: str, mid: str) -> None:
    """The terminal is in stock and the merchant's agent is its owner or below it (locks the terminal)."""
    agent = await conn.fetchval("SELECT agent_code FROM merchants WHERE mid = $1", mid)
    if agent is None:
        raise InvalidInput(f"unknown merchant {mid}")
    row = await conn.fetchrow(_BIND_QUERY, tid, agent)
    if row is None:
        raise InvalidInput(f"unknown terminal {tid}")
    if row["mid"] is not None:
        raise InventoryError(f"terminal {tid}: already bound (to {row['mid']})")
    if not row["in_subtree"]:
        raise InventoryError(f"terminal {tid}: binds only to a merchant of its owner {row['owner_agent']} or of "
                             f"its descendants ({mid} is {agent}'s)")


async def set_owner(conn: asyncpg.Connection, tids: list[str], owner: str) -> None:
    await conn.execute("UPDATE terminals SET owner_agent = $2 WHERE tid = ANY ($1::text[])", tids, owner)


async def bind(conn: asyncpg.Connection, tid: str, mid: str, now: datetime) -> None:
    """Bind the terminal at ``now``; its owner stays (the rules checked by ``check_binding``)."""
    await conn.execute("UPDATE terminals SET mid = $2, bound_at = $3 WHERE tid = $1 AND mid IS NULL", tid, mid, now)

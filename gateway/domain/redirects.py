"""Redirects of the agent network (CLI.md `agent redirect`, rule "Redirect";
停发作恶者分润，直接发给下下级): from the local day after the command through
``--until`` (included), the shares and rewards an agent would earn on
transactions of merchants in a descendant's subtree go to that descendant, the
others to the house; clawbacks come from whoever received the share.

``agent_redirects`` is the log (migration 0051): each command adds a row, never
changes one; ``--off`` adds a row without a descendant. The redirect in force on
a day is the last row set whose first day is at most that day.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput

# The redirect in force on day $2 of agent $1 (SQL, for the run and for show).
IN_FORCE_SQL = """SELECT DISTINCT ON (agent_code) agent_code, to_code, from_day, until_day FROM agent_redirects
                   WHERE from_day <= $2 AND ($1::text IS NULL OR agent_code = $1)
                   ORDER BY agent_code, from_day DESC, id DESC"""


async def is_descendant(conn: asyncpg.Connection, ancestor: str, code: str) -> bool:
    """Whether ``code`` is below ``ancestor`` (not ``ancestor`` itself)."""
    return bool(await conn.fetchval(
        """WITH RECURSIVE up (code, depth) AS (
               SELECT parent_code, 1 FROM agents WHERE code = $2
               UNION ALL
               SELECT a.parent_code, u.depth + 1 FROM agents a JOIN up u ON a.code = u.code
                WHERE u.code IS NOT NULL AND u.depth < 64)
           SELECT EXISTS (SELECT 1 FROM up WHERE code = $1)""", ancestor, code))


async def _known(conn: asyncpg.Connection, code: str) -> None:
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agents WHERE code = $1)", code):
        raise InvalidInput(f"unknown agent {code}")


async def set_redirect(conn: asyncpg.Connection, code: str, to_code: str, until: date | None, today: date,
                       actor: str) -> None:
    """Redirect ``code``'s shares to ``to_code`` from the day after ``today`` through ``until``.
    A ``to_code`` not below ``code``, or an ``until`` before the first day: InvalidInput."""
    await _known(conn, code)
    await _known(conn, to_code)
    if not await is_descendant(conn, code, to_code):
        raise InvalidInput(f"--to {to_code} is not a descendant of {code}: a redirect goes down the agent's path")
    first_day = today + timedelta(days=1)
    if until is not None and until < first_day:
        raise InvalidInput(f"--until {until.isoformat()} is before the redirect's first day, {first_day.isoformat()}")
    await conn.execute(
        "INSERT INTO agent_redirects (agent_code, to_code, from_day, until_day, set_by) VALUES ($1, $2, $3, $4, $5)",
        code, to_code, first_day, until, actor)


async def redirect_off(conn: asyncpg.Connection, code: str, today: date, actor: str) -> None:
    """End ``code``'s redirect from the day after ``today`` on (nothing when none is in force or to come)."""
    await _known(conn, code)
    if await current(conn, code, today) is None:
        return
    await conn.execute("INSERT INTO agent_redirects (agent_code, to_code, from_day, set_by) VALUES ($1, NULL, $2, $3)",
                       code, today + timedelta(days=1), actor)


async def current(conn: asyncpg.Connection, code: str, today: date) -> dict[str, Any] | None:
    """What ``agent show`` lists as ``redirect``: ``to``, ``until`` (or null) and ``from`` of the
    redirect in force tomorrow (from the next run on), else of the one in force today, or None."""
    for day in (today + timedelta(days=1), today):
        row = await conn.fetchrow(IN_FORCE_SQL, code, day)
        if row is not None and row["to_code"] is not None and (row["until_day"] is None or row["until_day"] >= day):
            return {"to": row["to_code"], "until": row["until_day"].isoformat() if row["until_day"] else None,
                    "from": row["from_day"].isoformat()}
    return None

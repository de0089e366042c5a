"""The back office's terminal inventory (CLI.md "Agent network", rule
"Terminals"): the terminals owned in the viewer's scope, and for one terminal
its owner, merchant and activation with the forms to allocate (划拨), recall
(回拨) and bind it.

Operators and admins act on any terminal; an agent user only on terminals
owned inside its own subtree, and never moves one out of it (a recall above
itself is 403). The rules themselves are the services' (gateway.services.terminals,
gateway.domain.inventory): a refusal is a 400 naming the terminal and the rule.
Every action is audited as ``web:<user>`` and redirects (303) to the terminal's
inventory page.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.backoffice import queries
from gateway.backoffice.security import Forbidden, NotFound, Page, guarded
from gateway.domain import registry
from gateway.domain.validate import InvalidInput
from gateway.services import terminals

STOCK_COLUMNS = ("tid", "owner_agent", "mid", "bound", "activated", "status")

# The terminals owned in the subtree of $1 (every terminal when $1 is NULL), in stock first.
_STOCK_QUERY = """
WITH RECURSIVE subtree (code) AS (
    SELECT code FROM agents WHERE code = $1
    UNION ALL
    SELECT a.code FROM agents a JOIN subtree s ON a.parent_code = s.code)
SELECT t.tid, t.owner_agent, t.mid, t.mid IS NOT NULL AS bound, t.activated_at IS NOT NULL AS activated, t.status
  FROM terminals t
 WHERE $1::text IS NULL OR t.owner_agent IN (SELECT code FROM subtree)
 ORDER BY t.mid IS NOT NULL, t.tid
 LIMIT $2"""


async def stock(conn: asyncpg.Connection, scope: str | None, limit: int = queries.ROWS_MAX) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(_STOCK_QUERY, scope, limit)]


async def _owned_or_refuse(page: Page, tid: str) -> dict[str, Any]:
    """The terminal as ``terminal show`` has it; unknown: 404; owned outside an agent user's subtree: 403."""
    terminal = await registry.find_terminal(page.conn, tid)
    if terminal is None:
        if page.viewer.scope is not None:
            raise Forbidden  # an agent learns nothing of terminals outside its subtree, not even that they exist
        raise NotFound(f"No terminal {tid}.")
    if not await queries.agent_in_scope(page.conn, page.viewer.scope, terminal["owner_agent"]):
        raise Forbidden
    return terminal


def _required(page: Page, name: str, what: str) -> str:
    value = (page.field(name) or "").strip()
    if not value or len(value) > 40:
        raise InvalidInput(f"name {what}")
    return value


def _back(tid: str) -> Response:
    return RedirectResponse(f"/inventory/{tid}", status_code=303)


@guarded("GET", "/inventory")
async def stock_list(page: Page) -> Response:
    return page.render("inventory_list.html", terminals=await stock(page.conn, page.viewer.scope),
                       rows_max=queries.ROWS_MAX)


@guarded("GET", "/inventory/{stock_tid}")
async def stock_page(page: Page) -> Response:
    terminal = await _owned_or_refuse(page, page.request.path_params["stock_tid"])
    return page.render("inventory.html", terminal=terminal,
                       may_move=page.viewer.may("POST", "/inventory/{stock_tid}/allocate"))


@guarded("POST", "/inventory/{stock_tid}/allocate")
async def allocate(page: Page) -> Response:
    """划拨 to a descendant of the owner (inside an agent user's subtree, as every descendant of its terminals is)."""
    tid = page.request.path_params["stock_tid"]
    await _owned_or_refuse(page, tid)
    to = _required(page, "to", "the agent to allocate to")
    async with page.conn.transaction():
        await terminals.allocate_terminals(page.conn, page.viewer.actor, [tid], to)
    return _back(tid)


@guarded("POST", "/inventory/{stock_tid}/recall")
async def recall(page: Page) -> Response:
    """回拨 to an ancestor of the owner; an agent user only as far up as itself."""
    tid = page.request.path_params["stock_tid"]
    await _owned_or_refuse(page, tid)
    to = _required(page, "to", "the agent to recall to")
    if not await queries.agent_in_scope(page.conn, page.viewer.scope, to):
        raise Forbidden
    async with page.conn.transaction():
        await terminals.recall_terminals(page.conn, page.viewer.actor, [tid], to)
    return _back(tid)


@guarded("POST", "/inventory/{stock_tid}/bind")
async def bind(page: Page) -> Response:
    """Bind to a merchant of the owner or below it (inside an agent user's subtree, as those merchants are)."""
    tid = page.request.path_params["stock_tid"]
    await _owned_or_refuse(page, tid)
    mid = _required(page, "merchant", "the merchant to bind to")
    async with page.conn.transaction():
        await terminals.bind_terminal(page.conn, page.viewer.actor, tid, mid, page.request.app.state.settings.now())
    return _back(tid)


ROUTES: list[Route] = [stock_list, stock_page, allocate, recall, bind]

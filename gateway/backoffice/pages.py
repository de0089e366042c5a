"""The back office's pages and actions, one handler each, every one guarded by
``gateway.backoffice.access.ROUTE_ROLES``. Pages read through
``gateway.backoffice.queries`` (scoped to an agent user's subtree); actions
change things only through gateway.services, as the actor ``web:<user>``,
each in one transaction, then redirect (303) to the page they came from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.backoffice import queries
from gateway.backoffice.access import AGENT
from gateway.backoffice.security import Forbidden, NotFound, Page, guarded
from gateway.domain import registry, validate
from gateway.domain.validate import InvalidInput
from gateway.reports.views import STATEMENT_COLUMNS, agent_statement, day_bounds, to_csv
from gateway.services import agents, audit, terminals, users

AUDIT_ROWS_MAX = 200


def _settings(page: Page) -> Any:
    return page.request.app.state.settings


def _today(page: Page) -> Any:
    return datetime.now(_settings(page).tz).date()


def _csv(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def _status(value: str | None) -> str:
    if value not in (registry.FROZEN, registry.ACTIVE):
        raise InvalidInput("status is frozen or active")
    return value


# -- the dashboard ----------------------------------------------------------------------------


async def _dashboard_figures(page: Page) -> dict[str, Any]:
    settings = _settings(page)
    return await queries.dashboard(page.conn, settings.tz, settings.float_low_threshold_fen, _today(page))


@guarded("GET", "/dashboard")
async def dashboard(page: Page) -> Response:
    return page.render("dashboard.html", figures=await _dashboard_figures(page),
                       poll_s=page.request.app.state.web.dashboard_poll_s)


@guarded("GET", "/dashboard/figures")
async def dashboard_figures(page: Page) -> Response:
    return page.render("_figures.html", figures=await _dashboard_figures(page),
                       poll_s=page.request.app.state.web.dashboard_poll_s)


# -- terminals --------------------------------------------------------------------------------


@guarded("GET", "/terminals")
async def terminal_list(page: Page) -> Response:
    where = queries.TerminalFilter.parse(page.request.query_params)
    rows = await queries.terminals(page.conn, page.viewer.scope, where, _settings(page).tz)
    return page.render("terminals.html", terminals=rows, where=where, rows_max=queries.ROWS_MAX,
                       query=page.request.url.query)


@guarded("GET", "/terminals.csv")
async def terminal_csv(page: Page) -> Response:
    where = queries.TerminalFilter.parse(page.request.query_params)
    rows = await queries.terminals(page.conn, page.viewer.scope, where, _settings(page).tz, limit=None)
    return _csv(to_csv(rows, queries.TERMINAL_COLUMNS), "terminals.csv")


async def _terminal_or_refuse(page: Page, tid: str) -> dict[str, Any]:
    found = await queries.terminal_in_scope(page.conn, page.viewer.scope, tid)
    if found is None:
        if page.viewer.scope is not None:
            raise Forbidden  # an agent learns nothing of terminals outside its subtree, not even that they exist
        raise NotFound(f"No terminal {tid}.")
    return found


@guarded("GET", "/terminals/{tid}")
async def terminal_page(page: Page) -> Response:
    tid = page.request.path_params["tid"]
    owner = await _terminal_or_refuse(page, tid)
    recent = await queries.transactions(page.conn, page.viewer.scope, queries.TransactionFilter(tid=tid),
                                        _settings(page).tz, limit=20)
    return page.render("terminal.html", terminal=await registry.show_terminal(page.conn, tid), owner=owner,
                       transactions=recent, may_operate=page.viewer.may("POST", "/terminals/{tid}/status"))


@guarded("POST", "/terminals/{tid}/status")
async def terminal_status(page: Page) -> Response:
    tid = page.request.path_params["tid"]
    await _terminal_or_refuse(page, tid)
    async with page.conn.transaction():
        await terminals.set_terminal_status(page.conn, page.viewer.actor, tid, _status(page.field("status")))
    return RedirectResponse(f"/terminals/{tid}", status_code=303)


# -- agents -----------------------------------------------------------------------------------


async def _agent_or_refuse(page: Page, code: str) -> None:
    if not await queries.agent_in_scope(page.conn, page.viewer.scope, code):
        if page.viewer.scope is not None:
            raise Forbidden
        raise NotFound(f"No agent {code}.")


@guarded("GET", "/agents")
async def agent_list(page: Page) -> Response:
    return page.render("agents.html", agents=await queries.agent_tree(page.conn, page.viewer.scope),
                       threshold_fen=_settings(page).float_low_threshold_fen)


@guarded("GET", "/agents/{code}")
async def agent_page(page: Page) -> Response:
    code = page.request.path_params["code"]
    await _agent_or_refuse(page, code)
    settings = _settings(page)
    start, end = day_bounds(_today(page), settings.tz)
    return page.render("agent.html", agent=await registry.show_agent(page.conn, code),
                       subtree=await queries.agent_tree(page.conn, code),
                       merchants=await queries.merchants_volume(page.conn, code, start, end),
                       top_ups=await queries.top_ups(page.conn, code, settings.tz),
                       may_operate=page.viewer.may("POST", "/agents/{code}/topup"))


@guarded("POST", "/agents/{code}/topup")
async def agent_topup(page: Page) -> Response:
    code = page.request.path_params["code"]
    await _agent_or_refuse(page, code)
    amount_fen = validate.amount_fen((page.field("amount") or "").strip())
    async with page.conn.transaction():
        await agents.top_up(page.conn, page.viewer.actor, code, amount_fen)
    return RedirectResponse(f"/agents/{code}", status_code=303)


@guarded("POST", "/agents/{code}/status")
async def agent_status(page: Page) -> Response:
    code = page.request.path_params["code"]
    await _agent_or_refuse(page, code)
    async with page.conn.transaction():
        await agents.set_agent_status(page.conn, page.viewer.actor, code, _status(page.field("status")))
    return RedirectResponse(f"/agents/{code}", status_code=303)


# -- the agent portal -------------------------------------------------------------------------


@guarded("GET", "/portal")
async def portal(page: Page) -> Response:
    code = page.viewer.agent
    assert code is not None and page.viewer.role == AGENT
    settings = _settings(page)
    start, end = day_bounds(_today(page), settings.tz)
    return page.render("portal.html", agent=await registry.show_agent(page.conn, code),
                       top_ups=await queries.top_ups(page.conn, code, settings.tz),
                       merchants=await queries.merchants_volume(page.conn, code, start, end),
                       terminals=await queries.terminals(page.conn, code, queries.TerminalFilter(), settings.tz),
                       subtree=await queries.agent_tree(page.conn, code), today=_today(page).isoformat())


@guarded("GET", "/portal/statement.csv")
async def portal_statement(page: Page) -> Response:
    code = page.viewer.agent
    assert code is not None
    day = queries.day(page.request.query_params.get("date")) or _today(page)
    statement = await agent_statement(page.conn, code, day, _settings(page).tz)
    return _csv(to_csv(statement["movements"], STATEMENT_COLUMNS), f"statement-{code}-{day.isoformat()}.csv")


# -- transactions -----------------------------------------------------------------------------


@guarded("GET", "/transactions")
async def transaction_list(page: Page) -> Response:
    where = queries.TransactionFilter.parse(page.request.query_params)
    rows = await queries.transactions(page.conn, page.viewer.scope, where, _settings(page).tz)
    return page.render("transactions.html", transactions=rows, where=where, rows_max=queries.ROWS_MAX)


@guarded("GET", "/transactions.csv")
async def transaction_csv(page: Page) -> Response:
    where = queries.TransactionFilter.parse(page.request.query_params)
    rows = await queries.transactions(page.conn, page.viewer.scope, where, _settings(page).tz, limit=None)
    return _csv(to_csv(rows, queries.TRANSACTION_COLUMNS), "transactions.csv")


# -- the audit log and users ------------------------------------------------------------------


@guarded("GET", "/audit")
async def audit_log(page: Page) -> Response:
    params = page.request.query_params
    actor = queries.text(params.get("actor"), 80, "the actor")
    entity = queries.text(params.get("entity"), 80, "the entity")
    events = await audit.list_events(page.conn, actor=actor, entity=entity)
    tz = _settings(page).tz
    shown = [event.as_json(tz) for event in reversed(events[-AUDIT_ROWS_MAX:])]
    return page.render("audit.html", events=shown, actor=actor or "", entity=entity or "",
                       total=len(events), rows_max=AUDIT_ROWS_MAX)


@guarded("GET", "/users")
async def user_list(page: Page) -> Response:
    return page.render("users.html", users=await users.list_users(page.conn), roles=users.ROLES,
                       may_manage=page.viewer.may("POST", "/users"))


@guarded("POST", "/users")
async def user_add(page: Page) -> Response:
    role = page.field("role") or ""
    agent = (page.field("agent") or "").strip() or None
    async with page.conn.transaction():
        await users.add_user(page.conn, page.viewer.actor, (page.field("name") or "").strip(), role,
                             agent if role == AGENT else None, page.field("password") or "")
    return RedirectResponse("/users", status_code=303)


@guarded("POST", "/users/{name}/disable")
async def user_disable(page: Page) -> Response:
    async with page.conn.transaction():
        await users.disable_user(page.conn, page.viewer.actor, page.request.path_params["name"])
    return RedirectResponse("/users", status_code=303)


@guarded("POST", "/users/{name}/totp")
async def user_totp(page: Page) -> Response:
    name = page.request.path_params["name"]
    async with page.conn.transaction():
        uri = await users.set_totp(page.conn, page.viewer.actor, name)
    return page.render("totp.html", name=name, uri=uri)  # shown once: the URI is kept nowhere


ROUTES: list[Route] = [dashboard, dashboard_figures, terminal_list, terminal_csv, terminal_page, terminal_status,
                       agent_list, agent_page, agent_topup, agent_status, portal, portal_statement,
                       transaction_list, transaction_csv, audit_log, user_list, user_add, user_disable, user_totp]

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

from gateway.acquiring import risk
from gateway.backoffice import queries
from gateway.backoffice.access import AGENT
from gateway.backoffice.security import Forbidden, NotFound, Page, guarded
from gateway.domain import registry, validate
from gateway.domain.validate import InvalidInput
from gateway.reports.views import (
    DAILY_BY_TYPE_COLUMNS,
    REMITTANCE_COLUMNS,
    STATEMENT_COLUMNS,
    agent_statement,
    biller_remittance,
    consistent_snapshot,
    daily_report,
    day_bounds,
    list_batches,
    risk_events,
    to_csv,
)
from gateway.services import agents, audit, merchants, terminals, users
from gateway.settings import config_dir

AUDIT_ROWS_MAX = 200


def _settings(page: Page) -> Any:
    return page.request.app.state.settings


def _today(page: Page) -> Any:
    return _settings(page).today()  # Settings.today(): clock_offset_s included


def _csv(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def _status(value: str | None) -> str:
    if value not in (registry.FROZEN, registry.ACTIVE):
        raise InvalidInput("status is frozen or active")
    return value


# -- the dashboard ----------------------------------------------------------------------------


async def _dashboard_figures(page: Page) -> dict[str, Any]:
    settings, today, state = _settings(page), _today(page), page.request.app.state
    figures = await state.dashboard_figures.get(today, lambda: queries.dashboard(
        page.conn, settings.tz, settings.float_low_threshold_fen, today))
    return figures | {"gateways": await state.gateways.figures()}


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
    limits = risk.effective_limits(risk.load_defaults(config_dir()),
                                   await registry.limit_overrides(page.conn, "merchant", owner["mid"]),
                                   await registry.limit_overrides(page.conn, "terminal", tid))
    terminal = await registry.show_terminal(page.conn, tid)
    for name in ("last_seen", "last_sign_on"):  # ISO 8601 in UTC from the registry; shown in local time
        if terminal.get(name):
            terminal[name] = datetime.fromisoformat(terminal[name]).astimezone(_settings(page).tz).isoformat(
                timespec="seconds")
    return page.render("terminal.html", terminal=terminal, owner=owner,
                       transactions=recent, may_operate=page.viewer.may("POST", "/terminals/{tid}/status"),
                       limits=limits, overrides=await registry.limit_overrides(page.conn, "terminal", tid),
                       permits=validate.PERMITS, macs=validate.MAC_ALGORITHMS)


@guarded("POST", "/terminals/{tid}/settings")
async def terminal_settings(page: Page) -> Response:
    """Permits (checkboxes; at least one), MAC algorithm, location and radius (blank: unchanged)."""
    tid = page.request.path_params["tid"]
    await _terminal_or_refuse(page, tid)
    assert page.form is not None
    permit = [name for name in page.form.getlist("permit") if isinstance(name, str)]
    location, radius = (page.field("location") or "").strip(), (page.field("radius_km") or "").strip()
    try:
        radius_km = float(radius) if radius else None
    except ValueError:
        raise InvalidInput(f"the radius is a number of km: {radius!r}") from None
    async with page.conn.transaction():
        await terminals.set_terminal(page.conn, page.viewer.actor, tid,
                                     permit=validate.permits(",".join(permit)),
                                     mac_algorithm=validate.mac_algorithm(page.field("mac") or ""),
                                     location=validate.location(location) if location else None, radius_km=radius_km)
    return RedirectResponse(f"/terminals/{tid}", status_code=303)


@guarded("POST", "/terminals/{tid}/limits")
async def terminal_limits(page: Page) -> Response:
    """The terminal's own overrides: a whole number per limit (0 switches it off); blank ones unchanged."""
    tid = page.request.path_params["tid"]
    await _terminal_or_refuse(page, tid)
    values = {}
    for name in risk.LIMIT_NAMES:
        value = (page.field(name) or "").strip()
        if value:
            if not value.isdigit() or len(value) > 15:
                raise InvalidInput(f"{name} must be a whole number (0 switches it off): {value!r}")
            values[name] = int(value)
    async with page.conn.transaction():
        await terminals.set_terminal_limits(page.conn, page.viewer.actor, tid, values)
    return RedirectResponse(f"/terminals/{tid}", status_code=303)


MAP_WIDTH_PX, MAP_HEIGHT_PX, MAP_MARGIN_PX = 900, 520, 30


def map_points(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Terminals with a registered location placed on an equirectangular plane fitted to them (an SVG,
    no tiles: nothing leaves the host)."""
    placed = []
    for row in rows:
        if row["location"]:
            lat, lon = (float(part) for part in row["location"].split(","))
            placed.append((row, lat, lon))
    if not placed:
        return {"points": [], "width": MAP_WIDTH_PX, "height": MAP_HEIGHT_PX}
    lats, lons = [p[1] for p in placed], [p[2] for p in placed]
    span_lat, span_lon = max(max(lats) - min(lats), 0.01), max(max(lons) - min(lons), 0.01)
    scale = min((MAP_WIDTH_PX - 2 * MAP_MARGIN_PX) / span_lon, (MAP_HEIGHT_PX - 2 * MAP_MARGIN_PX) / span_lat)
    points = [{"tid": row["tid"], "status": row["status"], "merchant": row["merchant"], "location": row["location"],
               "x": round(MAP_MARGIN_PX + (lon - min(lons)) * scale, 1),
               "y": round(MAP_HEIGHT_PX - MAP_MARGIN_PX - (lat - min(lats)) * scale, 1)} for row, lat, lon in placed]
    return {"points": points, "width": MAP_WIDTH_PX, "height": MAP_HEIGHT_PX,
            "south": min(lats), "north": max(lats), "west": min(lons), "east": max(lons)}


@guarded("GET", "/map")
async def terminal_map(page: Page) -> Response:
    rows = await queries.terminals(page.conn, page.viewer.scope, queries.TerminalFilter(), _settings(page).tz,
                                   limit=None)
    return page.render("map.html", map=map_points(rows), unplaced=sum(not row["location"] for row in rows))


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
                       terminal_settings, terminal_limits, terminal_map,
                       agent_list, agent_page, agent_topup, agent_status, portal, portal_statement,
                       transaction_list, transaction_csv, audit_log, user_list, user_add, user_disable, user_totp]


# -- merchants, cards, a transaction's story ---------------------------------------------------


@guarded("GET", "/merchants")
async def merchant_list(page: Page) -> Response:
    q = queries.text(page.request.query_params.get("q"), 40, "the MID or name")
    rows = await queries.merchants(page.conn, page.viewer.scope, q)
    return page.render("merchants.html", merchants=rows, q=q or "", rows_max=queries.ROWS_MAX,
                       may_operate=page.viewer.may("POST", "/merchants/{mid}/status"))


@guarded("GET", "/merchants.csv")
async def merchant_csv(page: Page) -> Response:
    q = queries.text(page.request.query_params.get("q"), 40, "the MID or name")
    rows = await queries.merchants(page.conn, page.viewer.scope, q, limit=None)
    return _csv(to_csv(rows, queries.MERCHANT_COLUMNS), "merchants.csv")


@guarded("POST", "/merchants/{mid}/status")
async def merchant_status(page: Page) -> Response:
    mid = page.request.path_params["mid"]
    if not await queries.merchant_in_scope(page.conn, page.viewer.scope, mid):
        raise NotFound(f"No merchant {mid}.")
    async with page.conn.transaction():
        await merchants.set_merchant_status(page.conn, page.viewer.actor, mid, _status(page.field("status")))
    return RedirectResponse("/merchants", status_code=303)


@guarded("GET", "/cards")
async def card_list(page: Page) -> Response:
    last4 = queries.digits(page.request.query_params.get("last4"), 4, "the card's last four")
    return page.render("cards.html", cards=await queries.cards(page.conn, last4), last4=last4 or "",
                       rows_max=queries.ROWS_MAX)


@guarded("GET", "/transactions/{txn_id:int}")
async def transaction_story(page: Page) -> Response:
    txn_id = page.request.path_params["txn_id"]
    story = await queries.transaction_story(page.conn, page.viewer.scope, txn_id, _settings(page).tz)
    if story is None:
        if page.viewer.scope is not None:
            raise Forbidden
        raise NotFound(f"No transaction {txn_id}.")
    return page.render("story.html", story=story, txn_id=txn_id)


# -- batches, risk events, reports -------------------------------------------------------------

DAILY_PARTS = {
    "by_type": DAILY_BY_TYPE_COLUMNS,
    "agents": ("agent", "collections_count", "collections_fen", "reversals_count", "reversals_fen", "commission_fen",
               "topups_fen", "float_movement_fen"),
    "merchants": ("mid", "purchases_count", "purchases_fen", "returns_count", "returns_fen", "fees_fen", "net_fen"),
}
CHART_HEIGHT_PX, CHART_BAR_PX, CHART_GAP_PX = 160, 24, 6


def bar_chart(hours: list[dict[str, Any]]) -> dict[str, Any]:
    """The geometry of an SVG bar chart of the amount per hour (drawn by the template; no script)."""
    top_fen = max((hour["amount_fen"] for hour in hours), default=0) or 1
    bars = []
    for i, hour in enumerate(hours):
        height = round(hour["amount_fen"] * CHART_HEIGHT_PX / top_fen)
        bars.append({**hour, "x": i * (CHART_BAR_PX + CHART_GAP_PX), "y": CHART_HEIGHT_PX - height,
                     "height": height})
    return {"bars": bars, "width": len(hours) * (CHART_BAR_PX + CHART_GAP_PX), "height": CHART_HEIGHT_PX,
            "bar": CHART_BAR_PX, "top_fen": top_fen}


@guarded("GET", "/batches")
async def batch_list(page: Page) -> Response:
    unbalanced = page.request.query_params.get("unbalanced") == "1"
    return page.render("batches.html", batches=await list_batches(page.conn, unbalanced, _settings(page).tz),
                       unbalanced=unbalanced)


@guarded("GET", "/risk")
async def risk_list(page: Page) -> Response:
    params = page.request.query_params
    tid = queries.text(params.get("tid"), 8, "the TID")
    day = queries.day(params.get("date")) or _today(page)
    events = await risk_events(page.conn, tid, day, _settings(page).tz)
    return page.render("risk.html", events=events, tid=tid or "", day=day.isoformat())


async def _daily(page: Page) -> tuple[Any, dict[str, Any]]:
    day = queries.day(page.request.query_params.get("date")) or _today(page)
    async with page.conn.transaction():
        await consistent_snapshot(page.conn)
        return day, await daily_report(page.conn, day, _settings(page).tz)


@guarded("GET", "/reports/daily")
async def report_daily(page: Page) -> Response:
    day, report = await _daily(page)
    chart = bar_chart(await queries.hourly_volume(page.conn, day, _settings(page).tz))
    billers = [row["code"] for row in await page.conn.fetch("SELECT code FROM billers ORDER BY code")]
    return page.render("daily.html", report=report, chart=chart, billers=billers)


@guarded("GET", "/reports/daily.csv")
async def report_daily_csv(page: Page) -> Response:
    part = queries.choice(page.request.query_params.get("part"), tuple(DAILY_PARTS), "part") or "by_type"
    day, report = await _daily(page)
    return _csv(to_csv(report[part], DAILY_PARTS[part]), f"daily-{day.isoformat()}-{part}.csv")


@guarded("GET", "/reports/remittance.csv")
async def report_remittance_csv(page: Page) -> Response:
    params = page.request.query_params
    biller = queries.text(params.get("biller"), 16, "the biller")
    if biller is None:
        raise InvalidInput("name the biller")
    day = queries.day(params.get("date")) or _today(page)
    remittance = await biller_remittance(page.conn, biller, day, _settings(page).tz)
    return _csv(to_csv(remittance["payments"], REMITTANCE_COLUMNS), f"remittance-{biller}-{day.isoformat()}.csv")


ROUTES += [merchant_list, merchant_csv, merchant_status, card_list, transaction_story, batch_list, risk_list,
           report_daily, report_daily_csv, report_remittance_csv]

"""The agent network in the back office, read only: an agent's earnings (分润明细,
``gateway.reports.agent_earnings.earnings``: rows by source, totals, CSV), its
policy in force and its price-change log (``gateway.domain.policies``), and the
terminals of its subtree by owner (in stock, bound, activated).

Staff open any agent's; an agent user its own and its subtree's only: the page
of an agent outside its subtree (or of no agent) is 403, decided by the scoped
query ``gateway.backoffice.queries.agent_in_scope`` before anything is read.
Policies, withdrawals and redirects are set on the CLI (``posgw agent policy``,
``withdraw``, ``redirect``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gateway.backoffice import money_queries, queries
from gateway.backoffice.page_tools import csv_response, today
from gateway.backoffice.security import Forbidden, NotFound, Page, guarded
from gateway.domain import policies
from gateway.domain.validate import InvalidInput
from gateway.reports.agent_earnings import ROW_KEYS, SOURCES, earnings
from gateway.reports.views import to_csv

PERIOD_DAYS_MAX = 366


async def agent_or_refuse(page: Page) -> str:
    """The path's agent code, if the viewer may read it: else 403 for an agent user (nothing is told),
    404 for staff."""
    code = page.request.path_params["code"]
    if not await queries.agent_in_scope(page.conn, page.viewer.scope, code):
        if page.viewer.scope is not None:
            raise Forbidden
        raise NotFound(f"No agent {code}.")
    return code


def period(params: Any, now: date) -> tuple[date, date]:
    """``from`` and ``to`` (local days, both included); by default this month so far."""
    first = queries.day(params.get("from")) or now.replace(day=1)
    last = queries.day(params.get("to")) or now
    if last < first:
        raise InvalidInput("the period ends before it starts")
    if (last - first).days >= PERIOD_DAYS_MAX:
        raise InvalidInput(f"the period is at most {PERIOD_DAYS_MAX} days")
    return first, last


@guarded("GET", "/agents/{code}/earnings")
async def agent_earnings(page: Page) -> Response:
    code = await agent_or_refuse(page)
    now = today(page)
    first, last = period(page.request.query_params, now)
    report = await earnings(page.conn, code, first, last)
    rows = report["rows"]
    return page.render("earnings.html", code=code, report=report, rows=rows[:queries.ROWS_MAX],
                       rows_max=queries.ROWS_MAX, sources=SOURCES, today=now.isoformat(),
                       policy=await policies.policy_in_force(page.conn, code, now), policy_names=policies.POLICY_NAMES,
                       policy_log=await policies.policy_log(page.conn, code),
                       terminal_counts=await money_queries.terminal_counts(page.conn, code))


@guarded("GET", "/agents/{code}/earnings.csv")
async def agent_earnings_csv(page: Page) -> Response:
    code = await agent_or_refuse(page)
    first, last = period(page.request.query_params, today(page))
    report = await earnings(page.conn, code, first, last)
    return csv_response(to_csv(report["rows"], ROW_KEYS), f"earnings-{code}-{first.isoformat()}-{last.isoformat()}.csv")


ROUTES: list[Route] = [agent_earnings, agent_earnings_csv]

"""The back office's billers and bills (staff, read only): the billers, and a
biller's page with its bills (by status and account, CSV), its remittance of a day
(``gateway.reports.views.biller_remittance``, the CSV at ``/reports/remittance.csv``)
and its store-and-forward messages (retried from ``/saf``'s button, shown here too).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from gateway.backoffice import money_queries, queries
from gateway.backoffice.page_tools import csv_response, today, tz_of
from gateway.backoffice.security import NotFound, Page, guarded
from gateway.reports.views import biller_remittance, to_csv

BILLER_MESSAGES_MAX = 50  # the biller page's latest outbox messages (all of them on /saf)


@guarded("GET", "/billers")
async def biller_list(page: Page) -> Response:
    return page.render("billers.html", billers=await money_queries.billers(page.conn))


async def _biller_or_404(page: Page) -> dict:
    code = page.request.path_params["biller"]
    found = await money_queries.biller(page.conn, code)
    if found is None:
        raise NotFound(f"No biller {code}.")
    return found


@guarded("GET", "/billers/{biller}")
async def biller_page(page: Page) -> Response:
    biller = await _biller_or_404(page)
    params = page.request.query_params
    where = money_queries.BillFilter.parse(params)
    day = queries.day(params.get("date")) or today(page)
    messages, messages_total = await money_queries.outbox_messages(page.conn, biller["code"], include_done=True,
                                                                   tz=tz_of(page), limit=BILLER_MESSAGES_MAX)
    return page.render("biller.html", biller=biller, where=where, day=day.isoformat(),
                       bills=await money_queries.bills(page.conn, biller["code"], where, tz_of(page)),
                       remittance=await biller_remittance(page.conn, biller["code"], day, tz_of(page)),
                       messages=messages, messages_total=messages_total, rows_max=queries.ROWS_MAX,
                       may_retry=page.viewer.may("POST", "/saf/{message_id:int}/retry"))


@guarded("GET", "/billers/{biller}/bills.csv")
async def biller_bills_csv(page: Page) -> Response:
    biller = await _biller_or_404(page)
    where = money_queries.BillFilter.parse(page.request.query_params)
    rows = await money_queries.bills(page.conn, biller["code"], where, tz_of(page), limit=None)
    return csv_response(to_csv(rows, money_queries.BILL_COLUMNS), f"bills-{biller['code']}.csv")


ROUTES: list[Route] = [biller_list, biller_page, biller_bills_csv]

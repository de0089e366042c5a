"""The back office's store-and-forward outbox and payouts.

- ``/saf``: the biller outbox (``posgw saf list``'s messages, bounded:
  ``money_queries.outbox_messages``), pending only or all, of one biller or every one; staff
  read it. Retry (``POST /saf/{id}/retry``, admin and operator) makes a pending
  message due now through ``gateway.services.biller_link.retry_message``,
  audited as ``saf.retry`` with the web user as the actor; a ``done`` or
  unknown message is refused (400, saying why) and nothing changes.
- ``/payouts`` (+ ``.csv``): the payouts of a date (``gateway.jobs.payouts``'
  ``list_payouts`` and ``payout_summary``, as ``posgw payout list``), by status;
  bank accounts only masked. Running payouts, their bank files and the bank's
  answer stay on the CLI (``posgw payout run|file|confirm``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.backoffice import money_queries, queries
from gateway.backoffice.page_tools import csv_response, today, tz_of
from gateway.backoffice.security import Page, guarded
from gateway.jobs.payouts import STATUSES, list_payouts, payout_summary
from gateway.reports.views import to_csv
from gateway.services import biller_link
from gateway.upstream import outbox

PAYOUT_COLUMNS = ("id", "date", "beneficiary_kind", "beneficiary", "amount_fen", "status", "bank_account_masked",
                  "reason")
ALL_DATES = "all"

# -- store and forward --------------------------------------------------------------------------


def saf_filter(params: Any) -> tuple[str | None, bool]:
    """The biller (None: every one) and whether done messages are listed too."""
    biller = queries.text(params.get("biller"), 16, "the biller")
    which = queries.choice(params.get("which"), ("pending", "all"), "which") or "pending"
    return biller, which == "all"


@guarded("GET", "/saf")
async def saf_list(page: Page) -> Response:
    biller, include_done = saf_filter(page.request.query_params)
    messages, total = await money_queries.outbox_messages(page.conn, biller, include_done=include_done,
                                                          tz=tz_of(page), limit=queries.ROWS_MAX)
    billers = [row["code"] for row in await page.conn.fetch("SELECT code FROM billers ORDER BY code")]
    return page.render("saf.html", messages=messages, total=total, rows_max=queries.ROWS_MAX, biller=biller or "",
                       which="all" if include_done else "pending", billers=billers,
                       depth=await outbox.queue_depth(page.conn),
                       may_retry=page.viewer.may("POST", "/saf/{message_id:int}/retry"))


@guarded("POST", "/saf/{message_id:int}/retry")
async def saf_retry(page: Page) -> Response:
    message_id = page.request.path_params["message_id"]
    async with page.conn.transaction():
        await biller_link.retry_message(page.conn, page.viewer.actor, message_id)
    back = page.field("back") or ""
    # back to the page the button was on (a path of ours only: never an address elsewhere)
    target = back if back.startswith(("/saf", "/billers/")) and "//" not in back and "\\" not in back else "/saf"
    return RedirectResponse(target, status_code=303)


# -- payouts ------------------------------------------------------------------------------------


def payout_filter(params: Any, now: date) -> tuple[date | None, str | None]:
    """The date (default the day before ``now``: a day's payouts are made the day after, T+1;
    ``all``: every date, and the withdrawals no run has taken yet) and the status."""
    raw_day = (params.get("date") or "").strip()
    day = None if raw_day == ALL_DATES else queries.day(raw_day) or now - timedelta(days=1)
    return day, queries.choice(params.get("status"), STATUSES, "status")


@guarded("GET", "/payouts")
async def payout_list(page: Page) -> Response:
    day, status = payout_filter(page.request.query_params, today(page))
    payouts = (await list_payouts(page.conn, day, status))["payouts"]
    summary = await payout_summary(page.conn, day) if day is not None else None
    return page.render("payouts.html", payouts=payouts[:queries.ROWS_MAX], total=len(payouts),
                       rows_max=queries.ROWS_MAX, day=day.isoformat() if day else ALL_DATES, status=status or "",
                       statuses=STATUSES, summary=summary)


@guarded("GET", "/payouts.csv")
async def payout_csv(page: Page) -> Response:
    day, status = payout_filter(page.request.query_params, today(page))
    payouts = (await list_payouts(page.conn, day, status))["payouts"]
    return csv_response(to_csv(payouts, PAYOUT_COLUMNS), f"payouts-{day.isoformat() if day else ALL_DATES}.csv")


ROUTES: list[Route] = [saf_list, saf_retry, payout_list, payout_csv]

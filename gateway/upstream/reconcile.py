"""Daily reconciliation with a biller (对账): the utility's book of a day against ours.

The utility's list of the day's payments (its CSV file, header
``receipt,account,amount_fen,status`` with status ``paid`` or ``cancelled``, or
its connector's ``payments``) is compared, receipt by receipt, with our bill
payments of that local day (``gw_transactions``: approved ones stand,
reversed ones do not). Each receipt is one of (CLI.md, ``biller reconcile``
and the rule "Store-and-forward and reconciliation"):

- ``matched``: paid there and standing here with the same amount and
  account; or cancelled there and not standing here (reversed, declined
  after the biller's accept, or never ours: no money on either side);
- ``biller_only``: paid there, not standing here (missing here: an orphan the
  utility holds while we hold no money; ``--cancel-orphans`` queues a cancel);
- ``gateway_only``: standing here, absent there or cancelled there (missing at
  the biller);
- ``amount_differs``: paid there and standing here, with another amount or
  account (both listed).

``biller_total_fen`` is what the utility counts as paid, ``gateway_total_fen``
what we hold for it; all match when the three lists are empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.upstream import outbox
from gateway.upstream.billers import BILLER_PAYMENT_STATUSES, BillerPayment

FILE_COLUMNS = ("receipt", "account", "amount_fen", "status")
RESULTS = ("matched", "biller_only", "gateway_only", "amount_differs")
CSV_COLUMNS = ("result", "receipt", "biller_status", "biller_account", "biller_fen", "gateway_status",
               "gateway_account", "gateway_fen")


@dataclass(frozen=True, slots=True)
class GatewayPayment:
    """One of our bill payments of the day: ``standing`` unless reversed."""

    receipt: str
    account: str
    amount_fen: int
    standing: bool


def parse_biller_file(text: str) -> list[BillerPayment]:
    """The utility's CSV; a wrong header, a bad row or a receipt twice is ``InvalidInput`` naming its line."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None or tuple(name.strip() for name in header) != FILE_COLUMNS:
        raise InvalidInput(f"the biller's file must start with the header {','.join(FILE_COLUMNS)}")
    payments: list[BillerPayment] = []
    seen: set[str] = set()
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(FILE_COLUMNS):
            raise InvalidInput(f"line {line_number}: {len(row)} fields, not {len(FILE_COLUMNS)}")
        receipt, account, amount, status = (cell.strip() for cell in row)
        if not receipt:
            raise InvalidInput(f"line {line_number}: no receipt")
        if receipt in seen:
            raise InvalidInput(f"line {line_number}: receipt {receipt} appears twice")
        if not amount.isdigit():
            raise InvalidInput(f"line {line_number}: amount_fen must be a whole number of fen: {amount!r}")
        if status not in BILLER_PAYMENT_STATUSES:
            raise InvalidInput(f"line {line_number}: status must be paid or cancelled: {status!r}")
        seen.add(receipt)
        payments.append(BillerPayment(receipt, account, int(amount), status))
    return payments


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants at which the local day starts and the next one starts."""
    return (datetime.combine(day, time(0), tzinfo=tz), datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz))


async def gateway_payments(conn: asyncpg.Connection, biller_code: str, day: date,
                           tz: ZoneInfo) -> list[GatewayPayment]:
    """Our approved bill payments of the local day, standing or since reversed."""
    start, end = day_bounds(day, tz)
    rows = await conn.fetch(
        """SELECT receipt, bill_account AS account, amount_fen, status = 'approved' AS standing
             FROM gw_transactions
            WHERE biller_code = $1 AND kind = 'bill_payment' AND response_code = '00'
              AND status IN ('approved', 'reversed') AND created_at >= $2 AND created_at < $3
            ORDER BY created_at, id""", biller_code, start, end)
    return [GatewayPayment(**dict(row)) for row in rows]


def compare(biller: Iterable[BillerPayment], gateway: Iterable[GatewayPayment]) -> dict[str, Any]:
    """The reconciliation of two books of one day (CLI.md's keys), with ``rows``: every receipt
    with its result, in the order of the biller's list then ours."""
    theirs = {p.receipt: p for p in biller}
    ours = {p.receipt: p for p in gateway}
    rows: list[dict[str, Any]] = []
    for receipt in list(theirs) + [r for r in ours if r not in theirs]:
        there, here = theirs.get(receipt), ours.get(receipt)
        paid_there = there is not None and there.status == "paid"
        standing_here = here is not None and here.standing
        if paid_there and standing_here:
            same = there.amount_fen == here.amount_fen and there.account == here.account
            result = "matched" if same else "amount_differs"
        elif paid_there:
            result = "biller_only"
        elif standing_here:
            result = "gateway_only"
        elif there is not None:
            result = "matched"  # cancelled there, nothing standing here: no money on either side
        else:
            continue  # reversed here and unknown there: nothing to compare
        rows.append({
            "result": result, "receipt": receipt,
            "biller_status": there.status if there else None, "biller_account": there.account if there else None,
            "biller_fen": there.amount_fen if there else None,
            "gateway_status": ("standing" if here.standing else "reversed") if here else None,
            "gateway_account": here.account if here else None, "gateway_fen": here.amount_fen if here else None})
    return {
        "matched": sum(1 for row in rows if row["result"] == "matched"),
        "biller_only": [{"receipt": r["receipt"], "account": r["biller_account"], "amount_fen": r["biller_fen"]}
                        for r in rows if r["result"] == "biller_only"],
        "gateway_only": [{"receipt": r["receipt"], "account": r["gateway_account"], "amount_fen": r["gateway_fen"]}
                         for r in rows if r["result"] == "gateway_only"],
        "amount_differs": [{"receipt": r["receipt"], "biller_fen": r["biller_fen"], "gateway_fen": r["gateway_fen"],
                            "biller_account": r["biller_account"], "gateway_account": r["gateway_account"]}
                           for r in rows if r["result"] == "amount_differs"],
        "biller_total_fen": sum(p.amount_fen for p in theirs.values() if p.status == "paid"),
        "gateway_total_fen": sum(p.amount_fen for p in ours.values() if p.standing),
        "rows": rows,
    }


def all_match(result: dict[str, Any]) -> bool:
    return not (result["biller_only"] or result["gateway_only"] or result["amount_differs"])


async def reconcile(conn: asyncpg.Connection, biller_code: str, day: date, tz: ZoneInfo,
                    biller: list[BillerPayment]) -> dict[str, Any]:
    """``biller reconcile``'s report: ``biller``, ``date``, ``timezone``, then ``compare``'s keys."""
    result = compare(biller, await gateway_payments(conn, biller_code, day, tz))
    return {"biller": biller_code, "date": day.isoformat(), "timezone": tz.key, **result}


async def queue_orphan_cancels(conn: asyncpg.Connection, biller_code: str, receipts: list[str]) -> list[str]:
    """A cancel through the outbox for each receipt that has none yet (``--cancel-orphans``:
    once per receipt, however often it runs); return the receipts newly queued."""
    queued = {row["receipt"] for row in await conn.fetch(
        "SELECT receipt FROM biller_outbox WHERE biller_code = $1 AND kind = 'cancel' AND receipt = ANY($2::text[])",
        biller_code, receipts)}
    new = [receipt for receipt in dict.fromkeys(receipts) if receipt not in queued]
    for receipt in new:
        await outbox.enqueue(conn, biller_code, "cancel", receipt, {"reason": "reconciliation_orphan"})
    return new


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()

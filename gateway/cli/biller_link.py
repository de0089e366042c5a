"""``posgw saf list``, ``saf retry``, ``biller reconcile``: the biller link's
outbox and the daily reconciliation (CLI.md "Vouchers and the biller link",
and the rule "Store-and-forward and reconciliation")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group, print_result
from gateway.db.pool import connect, database_url
from gateway.domain import validate
from gateway.domain.bills import load_biller
from gateway.domain.validate import InvalidInput, Problem
from gateway.reports import views as reports
from gateway.services import biller_link
from gateway.upstream import outbox, reconcile
from gateway.upstream.billers import Biller, BillerPayment, BillerUnavailable, HttpConnector


async def saf_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    biller = validate.code(args.biller, "biller code") if args.biller else None
    messages = await outbox.list_messages(ctx.conn, biller, include_done=args.all)
    return {"messages": [message.as_json() for message in messages]}


async def saf_retry(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await biller_link.retry_message(ctx.conn, ctx.actor, args.id)


async def _biller_book(biller: Biller, day: Any, timeout_s: float) -> list[BillerPayment]:
    """The biller's payments of the day, asked of its connector."""
    if biller.connector != "http":
        raise InvalidInput(f"biller {biller.code} is built in: give its file with --file")
    connector = HttpConnector(timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            return await connector.payments(biller, day)
    except (BillerUnavailable, TimeoutError) as exc:
        raise Problem(f"could not ask biller {biller.code} for its payments: {exc or 'no answer in time'}") from None
    finally:
        await connector.close()


async def biller_reconcile(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """Printed in full; exit 1 when anything differs. ``--cancel-orphans`` commits its cancels
    on a connection of its own, so that they stand although the command exits 1."""
    if args.json and args.csv:
        raise InvalidInput("--json and --csv exclude each other")
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz, ctx.settings.today())
    biller = await load_biller(ctx.conn, validate.code(args.code, "biller code"))
    if biller is None:
        raise InvalidInput(f"unknown biller {args.code}")
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {args.file}: {exc}") from None
        book = reconcile.parse_biller_file(text)
    else:
        book = await _biller_book(biller, day, ctx.settings.biller_timeout_s)
    result = await reconcile.reconcile(ctx.conn, biller.code, day, tz, book)
    if args.cancel_orphans:
        result["cancels_queued"] = await _cancel_orphans(ctx, biller.code,
                                                         [row["receipt"] for row in result["biller_only"]])
    rows = result.pop("rows")
    output: dict[str, Any] | None = result
    if args.csv:
        sys.stdout.write(reconcile.to_csv(rows))
        output = None
    if not reconcile.all_match(result):
        print_result(output, args.json)
        raise Problem(f"biller {biller.code} on {day}: {len(result['biller_only'])} only at the biller, "
                      f"{len(result['gateway_only'])} only here, {len(result['amount_differs'])} differ")
    return output


async def _cancel_orphans(ctx: Context, biller_code: str, receipts: list[str]) -> list[str]:
    conn = await connect(database_url(ctx.settings), timeout=ctx.settings.db_command_timeout_s)
    try:
        return await biller_link.cancel_orphans(conn, ctx.actor, biller_code, receipts)
    finally:
        await conn.close()


def add_reconcile(biller: Subcommands) -> None:
    """``biller reconcile``, in the ``biller`` group."""
    p = add_command(biller, "reconcile", biller_reconcile, help="the utility's payments of a day against ours")
    p.add_argument("code")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, a local day")
    p.add_argument("--file", help="the utility's CSV: receipt,account,amount_fen,status (default: ask its connector)")
    p.add_argument("--cancel-orphans", action="store_true",
                   help="queue a cancel for each payment the utility holds and we do not")
    p.add_argument("--csv", action="store_true", help="print every receipt with its result as CSV")


def register(groups: Subcommands) -> None:
    """``saf`` (``biller reconcile`` is added by the ``biller`` group: gateway.cli.billers)."""
    saf = add_group(groups, "saf", "the biller outbox (store-and-forward)")
    p = add_command(saf, "list", saf_list, help="messages to billers not yet acknowledged")
    p.add_argument("--biller", metavar="CODE")
    p.add_argument("--all", action="store_true", help="acknowledged ones too")
    p = add_command(saf, "retry", saf_retry, help="send a pending message at the next chance")
    p.add_argument("id", type=int)

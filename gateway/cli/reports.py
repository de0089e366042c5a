"""``posgw report daily``, ``batch list``, ``risk events``, and what the other
reports (``agent statement``, ``biller remittance``) share: ``--json`` or ``--csv``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli import card_batches
from gateway.cli.common import Context, Subcommands, add_command, add_group, print_result
from gateway.domain.validate import InvalidInput, Problem
from gateway.reports import card_batches as batch_views
from gateway.reports import views as reports


def add_csv_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--csv", action="store_true", help=help_text)


def report_format(args: argparse.Namespace) -> None:
    """Checked before the report is made."""
    if args.json and args.csv:
        raise InvalidInput("--json and --csv exclude each other")


def report_output(args: argparse.Namespace, result: dict[str, Any], rows: str,
                  columns: tuple[str, ...]) -> dict[str, Any] | None:
    """With ``--csv``, print the report's ``rows`` as CSV and return nothing more to print."""
    if args.csv:
        sys.stdout.write(reports.to_csv(result[rows], columns))
        return None
    return result


async def batch_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Settled batches; an unbalanced one whose upload ended shows its ``differences`` (WIRE.md 9.4)."""
    batches = await reports.list_batches(ctx.conn, args.unbalanced, ctx.settings.tz)
    differences = await batch_views.unbalanced_differences(ctx.conn)
    for batch in batches:
        if not batch["balanced"]:
            batch["differences"] = differences.get((batch["tid"], batch["batch"]))
    return {"batches": batches}


async def report_daily(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """The day's report (``reports.daily_report``); ``--csv`` prints its ``by_type`` table
    (kind, response_code, count, amount_fen). Printed in full, then exit 1, when the
    day's ledger check fails."""
    report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz, ctx.settings.today())
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.daily_report(ctx.conn, day, tz)
    output = report_output(args, result, "by_type", reports.DAILY_BY_TYPE_COLUMNS)
    if not result["ledger_check"]["ok"]:
        print_result(output, args.json)
        raise Problem("daily ledger check: " + "; ".join(result["ledger_check"]["problems"]))
    return output


async def risk_events(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz, ctx.settings.today()) if args.date else None
    return {"events": await reports.risk_events(ctx.conn, args.tid, day, tz)}


def register(groups: Subcommands) -> None:
    batch = add_group(groups, "batch", "settled batches")
    add_command(batch, "list", batch_list).add_argument("--unbalanced", action="store_true",
                                                         help="only batches out of balance")
    card_batches.register_batch_diff(batch)
    report = add_group(groups, "report", "operator reports")
    p = add_command(report, "daily", report_daily,
                    help="the day per type, agent and merchant, checked against the ledger")
    p.add_argument("--date", help="YYYY-MM-DD, a local day (default today)")
    add_csv_flag(p, "print the per-type table as CSV")
    risk_group = add_group(groups, "risk", "risk rules")
    p = add_command(risk_group, "events", risk_events, help="declines by risk rules")
    p.add_argument("--tid")
    p.add_argument("--date")

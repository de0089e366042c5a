"""``posgw biller ...``, ``bill ...``, ``meter ...``, ``token ...``: billers, their
bills and meters, prepaid tokens, and a biller's remittance."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import biller_link
from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.cli.reports import add_csv_flag, report_format, report_output
from gateway.domain import bills, validate
from gateway.domain.validate import InvalidInput
from gateway.reports import views as reports
from gateway.services import billers, vouchers


async def biller_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    code = validate.code(args.code, "biller code")
    if args.commission_bp is not None and args.commission_fixed is not None:
        raise InvalidInput("--commission-bp and --commission-fixed exclude each other")
    added = await billers.add_biller(
        ctx.conn, ctx.actor, code, args.name, prepaid=args.prepaid, exact=args.exact,
        commission_bp=validate.basis_points(args.commission_bp or 0, "--commission-bp"),
        commission_fixed_fen=validate.amount_fen(args.commission_fixed) if args.commission_fixed else 0,
        connector=args.connector, connector_url=args.url, notify=args.notify)
    return added


async def biller_set(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """``--voucher-values``: the face values (yuan, comma-separated) replace the list (CLI.md rule "Vouchers")."""
    if args.voucher_values is None:
        raise InvalidInput("nothing to set: give --voucher-values")
    values = [validate.amount_fen(value.strip()) for value in args.voucher_values.split(",") if value.strip()]
    if not values:
        raise InvalidInput("--voucher-values needs at least one face value")
    return await vouchers.set_voucher_values(ctx.conn, ctx.actor, validate.code(args.code, "biller code"), values)


async def biller_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    biller = await bills.load_biller(ctx.conn, validate.code(args.code, "biller code"))
    if biller is None:
        raise InvalidInput(f"unknown biller {args.code}")
    return bills.biller_show_view(biller)


async def biller_apikey(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """A new API key, printed once on one line (kept hashed; the old one stops working)."""
    return await vouchers.new_api_key(ctx.conn, validate.code(args.code, "biller code"))


async def biller_remittance(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz, ctx.settings.today())
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.biller_remittance(ctx.conn, args.code, day, tz)
    return report_output(args, result, "payments", reports.REMITTANCE_COLUMNS)


async def bill_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await billers.add_bill(ctx.conn, ctx.actor, args.biller, validate.account(args.account), args.name,
                                  validate.amount_fen(args.amount), args.period, args.due)


async def bill_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"bills": await bills.list_bills(ctx.conn, args.biller, args.account)}


async def meter_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await billers.add_meter(ctx.conn, ctx.actor, args.biller, validate.account(args.meter, "meter"), args.name)


async def token_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await bills.show_tokens(ctx.conn, args.meter)


def register(groups: Subcommands) -> None:
    biller = add_group(groups, "biller", "utility billers")
    p = add_command(biller, "add", biller_add)
    p.add_argument("code")
    p.add_argument("--name", required=True)
    p.add_argument("--prepaid", action="store_true")
    p.add_argument("--exact", action="store_true", help="a postpaid bill must be paid in full")
    p.add_argument("--commission-bp", type=int)
    p.add_argument("--commission-fixed")
    p.add_argument("--connector", choices=("builtin", "http"), default="builtin")
    p.add_argument("--url", help="the biller's HTTP endpoint (--connector http)")
    p.add_argument("--notify", action="store_true",
                   help="send the biller a notice of each payment that stands (POST /payments/{receipt}/confirm)")
    p = add_command(biller, "set", biller_set, help="change a biller: its voucher face values")
    p.add_argument("code")
    p.add_argument("--voucher-values", help="face values of its vouchers, yuan, comma-separated (prepaid only)")
    add_command(biller, "show", biller_show).add_argument("code")
    add_command(biller, "apikey", biller_apikey,
                help="print a new key for the biller API once (the old one stops working)").add_argument("code")
    p = add_command(biller, "remittance", biller_remittance, help="the day's standing payments")
    p.add_argument("code")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, a local day")
    add_csv_flag(p, "print the payments as CSV")
    biller_link.add_reconcile(biller)

    bill = add_group(groups, "bill", "postpaid bills")
    p = add_command(bill, "add", bill_add)
    p.add_argument("biller")
    p.add_argument("account")
    p.add_argument("--name", required=True)
    p.add_argument("--amount", required=True)
    p.add_argument("--period", required=True)
    p.add_argument("--due")
    p = add_command(bill, "list", bill_list)
    p.add_argument("biller")
    p.add_argument("--account")

    meter = add_group(groups, "meter", "prepaid meters")
    p = add_command(meter, "add", meter_add)
    p.add_argument("biller")
    p.add_argument("meter")
    p.add_argument("--name", required=True)

    token = add_group(groups, "token", "prepaid-meter tokens")
    add_command(token, "show", token_show).add_argument("meter")

"""``posgw voucher ...``: show, redeem and unblock prepaid vouchers (CLI.md
"Vouchers and the biller link", rule "Vouchers")."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.db.migrate import check_migrated
from gateway.domain.validate import InvalidInput
from gateway.services import vouchers

SERIAL_DIGITS = 12


def _serial(value: str) -> str:
    if len(value) != SERIAL_DIGITS or not value.isdigit():
        raise InvalidInput(f"a voucher serial is {SERIAL_DIGITS} digits: {value!r}")
    return value


async def voucher_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await vouchers.show_voucher(ctx.conn, ctx.settings, _serial(args.serial))


async def voucher_redeem(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Runs outside the command's one transaction: a wrong PIN is counted although the command fails."""
    await check_migrated(ctx.conn)
    redeemed = await vouchers.redeem_voucher(ctx.conn, ctx.actor, ctx.hsm, ctx.settings, _serial(args.serial),
                                             args.pin, args.meter)
    return {"token": redeemed["token"], "amount_fen": redeemed["amount_fen"], "meter": redeemed["meter"]}


async def voucher_unblock(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await vouchers.unblock_voucher(ctx.conn, ctx.actor, _serial(args.serial))


def register(groups: Subcommands) -> None:
    voucher = add_group(groups, "voucher", "prepaid vouchers sold at agents' terminals")
    add_command(voucher, "show", voucher_show).add_argument("serial")
    p = add_command(voucher, "redeem", voucher_redeem, help="redeem a voucher for a token on a meter")
    p.add_argument("serial")
    p.add_argument("--pin", required=True)
    p.add_argument("--meter", required=True)
    p.set_defaults(outside_transaction=True)
    add_command(voucher, "unblock", voucher_unblock, json_flag=False).add_argument("serial")

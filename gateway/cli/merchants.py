"""``posgw merchant ...``: add, set (bank details), show, freeze, unfreeze, limits."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import (
    Context,
    Subcommands,
    add_bank_flags,
    add_command,
    add_group,
    bank_flags,
    effective_limits,
    limit_assignments,
    status_command,
)
from gateway.domain import registry, validate
from gateway.services import banking, merchants


async def merchant_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    mid = validate.mid(args.mid)
    mdr_bp = validate.basis_points(args.mdr_bp, "--mdr-bp")
    await merchants.add_merchant(ctx.conn, ctx.actor, mid, args.name, args.agent, mdr_bp)
    return await registry.show_merchant(ctx.conn, mid)


async def merchant_view(ctx: Context, mid: str) -> dict[str, Any]:
    """``merchant show``: the merchant and where its payouts go, the account masked (null when not set)."""
    return await registry.show_merchant(ctx.conn, mid) | await banking.bank_view(ctx.conn, banking.MERCHANT, mid)


async def merchant_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await merchant_view(ctx, args.mid)


async def merchant_set(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Set where the merchant's payouts go: the three bank flags together."""
    number, bank_name, account_name = bank_flags(args)
    await banking.set_merchant_bank_details(ctx.conn, ctx.actor, ctx.hsm, args.mid,
                                            bank_account_number=number, bank_name=bank_name,
                                            account_name=account_name)
    return await merchant_view(ctx, args.mid)


async def merchant_limits(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Set overrides for every terminal of the merchant; print the merchant's effective limits."""
    await registry.show_merchant(ctx.conn, args.mid)  # an unknown merchant is named before a bad limit
    values = limit_assignments(args.limits)
    await merchants.set_merchant_limits(ctx.conn, ctx.actor, args.mid, values)
    return {"mid": args.mid, "limits": await effective_limits(ctx.conn, args.mid, None)}


def register(groups: Subcommands) -> Subcommands:
    merchant = add_group(groups, "merchant", "merchants")
    p = add_command(merchant, "add", merchant_add)
    p.add_argument("mid")
    p.add_argument("--name", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--mdr-bp", type=int, default=0)
    p = add_command(merchant, "set", merchant_set, help="set where the merchant's payouts go")
    p.add_argument("mid")
    add_bank_flags(p)
    add_command(merchant, "show", merchant_show).add_argument("mid")
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        add_command(merchant, action, status_command(merchants.set_merchant_status, status)).add_argument("id")
    p = add_command(merchant, "limits", merchant_limits, help="set overrides of risk limits, show the effective ones")
    p.add_argument("mid")
    p.add_argument("limits", nargs="*", metavar="NAME=VALUE")
    return merchant

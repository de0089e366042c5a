"""``posgw merchant ...``: add, show, freeze, unfreeze, limits."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import (Command, Context, Subcommands, add_command, add_group, effective_limits,
                                limit_assignments)
from gateway.domain import registry, validate
from gateway.services import merchants


async def merchant_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    mid = validate.mid(args.mid)
    mdr_bp = validate.basis_points(args.mdr_bp, "--mdr-bp")
    await merchants.add_merchant(ctx.conn, ctx.actor, mid, args.name, args.agent, mdr_bp)
    return await registry.show_merchant(ctx.conn, mid)


async def merchant_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await registry.show_merchant(ctx.conn, args.mid)


def merchant_status(status: str) -> Command:
    async def command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
        await merchants.set_merchant_status(ctx.conn, ctx.actor, args.id, status)
        return {"id": args.id, "status": status}

    return command


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
    add_command(merchant, "show", merchant_show).add_argument("mid")
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        add_command(merchant, action, merchant_status(status)).add_argument("id")
    p = add_command(merchant, "limits", merchant_limits, help="set overrides of risk limits, show the effective ones")
    p.add_argument("mid")
    p.add_argument("limits", nargs="*", metavar="NAME=VALUE")
    return merchant

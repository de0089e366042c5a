"""``posgw card ...``: issue, show, freeze, unfreeze, unblock."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cli.common import Command, Context, Subcommands, add_command, add_group
from gateway.domain import cards, validate
from gateway.services import cards as card_services


async def card_issue(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    pan = validate.pan(args.pan)
    pin = validate.pin(args.pin)
    balance = validate.amount_fen(args.balance, allow_zero=True)
    await card_services.issue_card(ctx.conn, ctx.actor, ctx.hsm, pan, pin, args.expiry, balance)
    return await cards.show_card(ctx.conn, ctx.hsm, pan)


async def card_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The card, with its available balance (balance less open holds) and its holds (CLI.md)."""
    pan = validate.pan(args.pan)
    view = await cards.show_card(ctx.conn, ctx.hsm, pan)
    holds_fen = await cards.holds_fen(ctx.conn, ctx.hsm.pan_hash(pan))
    return view | {"available_fen": view["balance_fen"] - holds_fen, "holds_fen": holds_fen}


def card_change(change: Callable[..., Awaitable[None]], *extra: Any) -> Command:
    """A command that changes the card ``PAN`` by a service ``change(conn, actor, hsm, pan, *extra)``,
    then shows it."""

    async def command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
        pan = validate.pan(args.pan)
        await change(ctx.conn, ctx.actor, ctx.hsm, pan, *extra)
        return await cards.show_card(ctx.conn, ctx.hsm, pan)

    return command


def register(groups: Subcommands) -> Subcommands:
    card = add_group(groups, "card", "prepaid cards")
    p = add_command(card, "issue", card_issue)
    p.add_argument("pan")
    p.add_argument("--pin", required=True)
    p.add_argument("--expiry", required=True)
    p.add_argument("--balance", default="0")
    add_command(card, "show", card_show).add_argument("pan")
    for action, handler in (("freeze", card_change(card_services.set_card_status, cards.FROZEN)),
                            ("unfreeze", card_change(card_services.set_card_status, cards.ACTIVE)),
                            ("unblock", card_change(card_services.unblock_card))):
        add_command(card, action, handler).add_argument("pan")
    return card

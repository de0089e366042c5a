"""``posgw terminal ...``: add, set, show, list, freeze, unfreeze, limits, and the
inventory: allocate, recall, bind (CLI.md "Agent network")."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import (
    Context,
    Subcommands,
    add_command,
    add_group,
    effective_limits,
    limit_assignments,
    status_command,
)
from gateway.domain import ic, inventory, registry, validate
from gateway.services import terminals


def _terminal_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "permit": validate.permits(args.permit) if args.permit is not None else None,
        "mac_algorithm": validate.mac_algorithm(args.mac) if args.mac is not None else None,
        "location": validate.location(args.location) if args.location is not None else None,
        "radius_km": args.radius_km,
    }


async def terminal_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    tid = validate.tid(args.tid)
    tmk = validate.tmk(args.tmk)
    await terminals.add_terminal(ctx.conn, ctx.actor, ctx.hsm, tid, args.merchant, tmk, agent=args.agent,
                                 now=ctx.settings.now(), **_terminal_options(args))
    return await registry.show_terminal(ctx.conn, tid)


async def terminal_allocate(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """划拨: all listed terminals to a descendant of their owner, or none (exit 2 naming the terminal)."""
    tids = inventory.parse_tids(args.tids)
    await terminals.allocate_terminals(ctx.conn, ctx.actor, tids, args.to)
    return {"terminals": [await registry.show_terminal(ctx.conn, tid) for tid in tids]}


async def terminal_recall(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """回拨: all listed terminals back to an ancestor of their owner, or none."""
    tids = inventory.parse_tids(args.tids)
    await terminals.recall_terminals(ctx.conn, ctx.actor, tids, args.to)
    return {"terminals": [await registry.show_terminal(ctx.conn, tid) for tid in tids]}


async def terminal_bind(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await terminals.bind_terminal(ctx.conn, ctx.actor, args.tid, args.merchant, ctx.settings.now())
    return await registry.show_terminal(ctx.conn, args.tid)


async def terminal_set(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await terminals.set_terminal(ctx.conn, ctx.actor, args.tid, **_terminal_options(args))
    return await registry.show_terminal(ctx.conn, args.tid)


async def terminal_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The terminal, with its chip lists' state: ``device_status``, ``capk_current``, ``aid_current``."""
    return await registry.show_terminal(ctx.conn, args.tid) | await ic.terminal_lists_view(ctx.conn, args.tid)


async def terminal_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"terminals": await registry.list_terminals(ctx.conn)}


async def terminal_limits(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Set the terminal's own overrides; print its effective limits."""
    terminal = await registry.show_terminal(ctx.conn, args.tid)  # an unknown terminal is named before a bad limit
    await terminals.set_terminal_limits(ctx.conn, ctx.actor, args.tid, limit_assignments(args.limits))
    return {"tid": args.tid, "limits": await effective_limits(ctx.conn, terminal["mid"], args.tid)}


def register(groups: Subcommands) -> Subcommands:
    terminal = add_group(groups, "terminal", "terminals")
    for name, handler in (("add", terminal_add), ("set", terminal_set)):
        p = add_command(terminal, name, handler)
        p.add_argument("tid")
        if name == "add":  # exactly one of --merchant (bound at once) and --agent (in stock)
            p.add_argument("--merchant")
            p.add_argument("--agent")
            p.add_argument("--tmk", required=True)
        p.add_argument("--permit")
        p.add_argument("--mac")
        p.add_argument("--location")
        p.add_argument("--radius-km", type=float)
    add_command(terminal, "show", terminal_show).add_argument("tid")
    for name, handler, help_text in (("allocate", terminal_allocate, "allocate terminals down the hierarchy"),
                                     ("recall", terminal_recall, "recall terminals in stock up the hierarchy")):
        p = add_command(terminal, name, handler, help=help_text)
        p.add_argument("tids", metavar="TID[,TID...]")
        p.add_argument("--to", required=True, metavar="CODE")
    p = add_command(terminal, "bind", terminal_bind, help="bind a terminal in stock to a merchant")
    p.add_argument("tid")
    p.add_argument("--merchant", required=True)
    add_command(terminal, "list", terminal_list)
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        add_command(terminal, action, status_command(terminals.set_terminal_status, status)).add_argument("id")
    p = add_command(terminal, "limits", terminal_limits, help="set overrides of risk limits, show the effective ones")
    p.add_argument("tid")
    p.add_argument("limits", nargs="*", metavar="NAME=VALUE")
    return terminal

"""``posgw demo``: the demo world (gateway.domain.demo), created idempotently and printed."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command
from gateway.services.demo import build_world


async def demo(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await build_world(ctx.conn, ctx.hsm, args.terminals, args.cards, ctx.settings.today())


def register(groups: Subcommands) -> None:
    d = add_command(groups, "demo", demo, help="create the demo world and print it")
    d.add_argument("--terminals", type=int, default=2)
    d.add_argument("--cards", type=int, default=2)

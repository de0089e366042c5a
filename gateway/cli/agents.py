"""``posgw agent ...``: add, show, topup, freeze, unfreeze, statement."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import agent_money
from gateway.cli.common import Context, Subcommands, add_command, add_group, status_command
from gateway.cli.reports import add_csv_flag, report_format, report_output
from gateway.domain import registry, validate
from gateway.reports import views as reports
from gateway.services import agents


async def agent_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    code = validate.code(args.code, "agent code")
    parent = validate.code(args.parent, "parent code") if args.parent else None
    await agents.add_agent(ctx.conn, ctx.actor, code, args.name, parent)
    return await registry.show_agent(ctx.conn, code)


async def agent_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await registry.show_agent(ctx.conn, args.code)


async def agent_topup(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await agents.top_up(ctx.conn, ctx.actor, args.code, validate.amount_fen(args.amount))
    return await registry.show_agent(ctx.conn, args.code)


async def agent_statement(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz)
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.agent_statement(ctx.conn, args.code, day, tz)
    return report_output(args, result, "movements", reports.STATEMENT_COLUMNS)


def register(groups: Subcommands) -> Subcommands:
    agent = add_group(groups, "agent", "agents")
    p = add_command(agent, "add", agent_add)
    p.add_argument("code")
    p.add_argument("--name", required=True)
    p.add_argument("--parent")
    add_command(agent, "show", agent_show).add_argument("code")
    p = add_command(agent, "topup", agent_topup)
    p.add_argument("code")
    p.add_argument("amount")
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        add_command(agent, action, status_command(agents.set_agent_status, status)).add_argument("id")
    p = add_command(agent, "statement", agent_statement, help="the day's float movements")
    p.add_argument("code")
    p.add_argument("--date", help="YYYY-MM-DD, a local day (default today)")
    add_csv_flag(p, "print the movements as CSV")
    agent_money.register(agent)
    return agent

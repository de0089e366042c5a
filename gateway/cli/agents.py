"""``posgw agent ...``: add, show, topup, freeze, unfreeze, statement, and the agent
network's policy, run, earnings, tree and redirect (CLI.md "Agent network")."""

from __future__ import annotations

import argparse
import calendar
import re
from datetime import date
from typing import Any

from gateway.cli import agent_money
from gateway.cli.common import Context, Subcommands, add_command, add_group, status_command
from gateway.cli.reports import add_csv_flag, report_format, report_output
from gateway.domain import policies, registry, validate
from gateway.domain.validate import InvalidInput
from gateway.reports import agent_earnings, agent_network
from gateway.reports import views as reports
from gateway.services import agent_banking, agents


async def agent_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    code = validate.code(args.code, "agent code")
    parent = validate.code(args.parent, "parent code") if args.parent else None
    await agents.add_agent(ctx.conn, ctx.actor, code, args.name, parent)
    return await registry.show_agent(ctx.conn, code)


async def agent_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The agent, with what the agent network adds (``level``, balances, ``terminals``, ``redirect``)
    and where its withdrawals are paid (``bank_account_masked``, ``bank_name``, ``account_name``)."""
    shown = await registry.show_agent(ctx.conn, args.code)
    return (shown | await agent_network.network_view(ctx.conn, args.code, ctx.settings.today())
            | await agent_banking.agent_bank_view(ctx.conn, args.code))


async def agent_topup(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await agents.top_up(ctx.conn, ctx.actor, args.code, validate.amount_fen(args.amount))
    return await registry.show_agent(ctx.conn, args.code)


async def agent_statement(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz, ctx.settings.today())
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.agent_statement(ctx.conn, args.code, day, tz)
    return report_output(args, result, "movements", reports.STATEMENT_COLUMNS)


def _day(value: str | None, ctx: Context) -> date:
    return reports.parse_date(value, ctx.settings.tz, ctx.settings.today())


async def agent_policy(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Set the values given from ``--from`` (default today) and print the policy in force from
    then; without values, print it."""
    day = _day(args.from_day, ctx)
    values = policies.parse_values(args.values)
    if not values:
        await registry.show_agent(ctx.conn, args.code)  # an unknown agent: exit 2
        return {"code": args.code, "from": day.isoformat(),
                "policy": await policies.policy_in_force(ctx.conn, args.code, day)}
    return await agents.set_policy(ctx.conn, ctx.actor, args.code, values, day)


async def agent_run(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await agents.run_day(ctx.conn, ctx.actor, ctx.settings, _day(args.date, ctx), so_far=args.now)


_MONTH = re.compile(r"^\d{4}-\d{2}$")


def month_days(value: str) -> tuple[date, date]:
    """``YYYY-MM``: its first and last day."""
    try:
        if not _MONTH.match(value):
            raise ValueError
        year, month = int(value[:4]), int(value[5:])
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    except ValueError:
        raise InvalidInput(f"--month must be YYYY-MM: {value!r}") from None


async def agent_earnings_command(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """分润明细 of a day (``--date``, default today) or a month (``--month``)."""
    report_format(args)
    if args.date and args.month:
        raise InvalidInput("--date and --month exclude each other")
    first, last = month_days(args.month) if args.month else (_day(args.date, ctx),) * 2
    await reports.consistent_snapshot(ctx.conn)
    result = await agent_earnings.earnings(ctx.conn, args.code, first, last)
    return report_output(args, result, "rows", agent_earnings.ROW_KEYS)


async def agent_tree(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await agent_network.tree(ctx.conn, args.code, ctx.settings.today())


async def agent_redirect(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """``--to CODE2 [--until D]`` or ``--off``; prints the agent's ``redirect`` from the next run on."""
    if args.off == (args.to is not None):
        raise InvalidInput("give --to CODE2 or --off")
    if args.off and args.until:
        raise InvalidInput("--until goes with --to")
    until = reports.parse_date(args.until, ctx.settings.tz) if args.until else None
    today = ctx.settings.today()
    await agents.set_redirect(ctx.conn, ctx.actor, args.code, args.to, until, today)
    return {"code": args.code, "redirect": (await agent_network.network_view(ctx.conn, args.code, today))["redirect"]}


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
    p = add_command(agent, "policy", agent_policy, help="set the agent's policy (NAME=VALUE) from a day")
    p.add_argument("code")
    p.add_argument("values", nargs="*", metavar="NAME=VALUE",
                   help=f"{', '.join(policies.POLICY_NAMES)}: integers (bp, percent, fen)")
    p.add_argument("--from", dest="from_day", help="YYYY-MM-DD, the local day it takes effect (default today)")
    p = add_command(agent, "run", agent_run, help="the agent network's run of a day")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, a local day")
    p.add_argument("--now", action="store_true", help="run a day not over on what it holds so far")
    p = add_command(agent, "earnings", agent_earnings_command, help="分润明细: the agent's earnings rows")
    p.add_argument("code")
    p.add_argument("--date", help="YYYY-MM-DD, a local day (default today)")
    p.add_argument("--month", help="YYYY-MM, a month of local days")
    add_csv_flag(p, "print the rows as CSV")
    p = add_command(agent, "tree", agent_tree, help="the hierarchy under an agent (default all)")
    p.add_argument("code", nargs="?")
    p = add_command(agent, "redirect", agent_redirect, help="pay an agent's shares to a descendant")
    p.add_argument("code")
    p.add_argument("--to", help="the descendant who receives them")
    p.add_argument("--until", help="YYYY-MM-DD, its last day (default: no end)")
    p.add_argument("--off", action="store_true", help="end the redirect from tomorrow")
    agent_money.register(agent)
    return agent

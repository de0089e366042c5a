"""``posgw ledger check``, ``db migrate``, ``db stop``."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group, print_result
from gateway.db.migrate import migrate
from gateway.domain.validate import Problem
from gateway.jobs.payouts import check_payouts
from ledger.check import check as check_ledger


async def ledger_check(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The ledger's invariants, and the payouts rule (the clearing account holds the payouts
    sent and not confirmed, the bank account the paid ones): exit 1 naming each broken one."""
    report = await check_ledger(ctx.conn)
    report.problems.extend(await check_payouts(ctx.conn))
    if not report.ok:
        print_result(report.as_dict(), args.json)
        raise Problem("; ".join(report.problems))
    return report.as_dict()


async def db_migrate(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"applied": await migrate(ctx.conn)}


def register(groups: Subcommands) -> None:
    db = add_group(groups, "db", "database")
    # each migration commits on its own, and the database need not be migrated yet
    add_command(db, "migrate", db_migrate, help="apply pending migrations").set_defaults(migrates=True)
    add_command(db, "stop", None, help="stop the embedded PostgreSQL").set_defaults(stop_db=True)
    ledger = add_group(groups, "ledger", "the ledger")
    add_command(ledger, "check", ledger_check, help="verify the ledger's invariants")

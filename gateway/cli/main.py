"""``posgw``: the operator command line (shared/CLI.md is its contract).

``--json`` prints exactly one JSON object on stdout; logs go to stderr.
Exit codes: 0 done, 1 the command ran and found a problem, 2 bad usage or
bad input (the last line on stderr says what). A failing command changes
nothing: each runs in one database transaction. A command changes things
only through gateway.services, as the actor ``--actor`` (default
``cli:<OS user>``), and each change is audited.

Each group of commands is a module of this package with a ``register``
that adds its parsers; this one assembles them and runs a command.

A command connects as the gateway's pool does (``gateway.db.pool.connect``):
over a multi-host URL host by host, each within ``connect_timeout``, keeping
the first that the URL's ``target_session_attrs`` accepts; asyncpg's own
multi-host connect has one timeout for the whole list, returned a broken
connection right after a failover, and sends ``connect_timeout`` to the
server as a setting. A command declared ``local`` (``db restore``,
``db stop``) runs without connecting: the database may be the one lost.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any

import asyncpg

from gateway.cli import (
    agents,
    audit,
    biller_link,
    billers,
    card_batches,
    cards,
    demo,
    ic,
    ledger,
    merchants,
    payouts,
    reports,
    serve,
    terminals,
    users,
    vouchers,
    web,
)
from gateway.cli.common import Context, print_result
from gateway.db.migrate import UnmigratedDatabase, check_migrated
from gateway.db.pool import CONNECTION_LOST, connect, database_url
from gateway.domain.validate import InvalidInput, Problem
from gateway.keys import LmkError
from gateway.logs import configure as configure_logs
from gateway.settings import Settings, get_settings

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posgw", description="posgw operator command line")
    parser.add_argument("--actor", help="who makes the changes, in the audit trail (default cli:<OS user>)")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for group in (serve, ledger, demo, agents, merchants, terminals, cards, billers, reports, audit, payouts, ic,
                  biller_link, web, users, card_batches, vouchers):
        group.register(groups)
    return parser


def default_actor() -> str:
    """``cli:<OS user>`` (the user id where the system names no user)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"cli:{os.getuid()}"


def actor(args: argparse.Namespace) -> str:
    if args.actor is None:
        return default_actor()
    if not args.actor.strip():
        raise InvalidInput("--actor must name someone")
    return args.actor


async def _run_command(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    conn = await connect(database_url(settings), timeout=settings.db_command_timeout_s)
    try:
        ctx = Context(settings, conn, actor(args))
        if getattr(args, "outside_transaction", False):  # db migrate (each migration commits on its own), db backup
            return await args.handler(args, ctx)
        await check_migrated(conn)
        async with conn.transaction():
            return await args.handler(args, ctx)
    finally:
        await conn.close()


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if settings is None:
        try:
            settings = get_settings()
        except Exception as exc:  # pydantic ValidationError: a bad setting
            print(f"posgw: error: invalid settings: {exc}", file=sys.stderr)
            return EXIT_USAGE
        configure_logs(settings.log_level, settings.log_format)
    try:
        if args.group == "serve":
            return serve.serve(args, settings, list(sys.argv[1:] if argv is None else argv))
        if args.group == "web":
            return web.web(args, settings, actor(args))
        local = getattr(args, "local", None)
        result = local(args, settings) if local is not None else asyncio.run(_run_command(args, settings))
    except (InvalidInput, LmkError, UnmigratedDatabase) as exc:
        print(f"posgw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Problem as exc:
        print(f"posgw: problem: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:  # no host answered, or the connection went
        print(f"posgw: error: database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return EXIT_OK
    print_result(result, getattr(args, "json", False))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

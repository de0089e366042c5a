"""``posgw user ...``: the back office's users (CLI.md, "The back office", and its Users rule):
add (the password from standard input), list, disable, totp."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.domain.validate import InvalidInput
from gateway.services import users


def read_password(stream: Any = None) -> str:
    """The first line of standard input, without its line end."""
    line = (stream or sys.stdin).readline()
    password = line.rstrip("\r\n")
    if not password:
        raise InvalidInput("--password-stdin: no password on standard input")
    return password


async def user_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if not args.password_stdin:
        raise InvalidInput("give the password on standard input, with --password-stdin")
    await users.add_user(ctx.conn, ctx.actor, args.name, args.role, args.agent, read_password())
    return await users.user_state(ctx.conn, args.name) or {}


async def user_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"users": await users.list_users(ctx.conn)}


async def user_disable(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await users.disable_user(ctx.conn, ctx.actor, args.name)
    return await users.user_state(ctx.conn, args.name) or {}


async def user_totp(args: argparse.Namespace, ctx: Context) -> None:
    """Prints the ``otpauth://`` URI once, on one line (as JSON ``name``, ``uri`` with --json)."""
    uri = await users.set_totp(ctx.conn, ctx.actor, args.name)
    print(json.dumps({"name": args.name, "uri": uri}) if args.json else uri)


def register(groups: Subcommands) -> None:
    user = add_group(groups, "user", "the back office's users")
    p = add_command(user, "add", user_add, help="add a user; the password comes from standard input")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=users.ROLES)
    p.add_argument("--agent", help="the agent of an agent user (required for, and only for, that role)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_command(user, "list", user_list)
    add_command(user, "disable", user_disable).add_argument("name")
    add_command(user, "totp", user_totp, help="a new TOTP secret; prints its otpauth:// URI once").add_argument("name")

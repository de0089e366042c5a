"""What every group of commands shares: the command's context (settings, the
connection of its one transaction, the actor), the way a command is declared,
and how a result is printed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.acquiring import risk
from gateway.domain import registry
from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm, load_lmk
from gateway.settings import Settings, config_dir


@dataclass
class Context:
    settings: Settings
    conn: asyncpg.Connection
    actor: str  # who changes things: --actor, default cli:<OS user>
    _hsm: SoftHsm | None = None

    @property
    def hsm(self) -> SoftHsm:
        if self._hsm is None:
            lmk = self.settings.lmk.get_secret_value() if self.settings.lmk else None
            self._hsm = SoftHsm(load_lmk(lmk, self.settings.data_dir))
        return self._hsm


Command = Callable[[argparse.Namespace, Context], Awaitable[dict[str, Any] | None]]
# A command that opens no database connection (db restore: the database may be the one lost; db stop)
LocalCommand = Callable[[argparse.Namespace, Settings], dict[str, Any] | None]
Subcommands = Any  # what ArgumentParser.add_subparsers returns (a class private to argparse)


def add_command(sub: Subcommands, name: str, handler: Command | None, json_flag: bool = True,
                **kwargs: Any) -> argparse.ArgumentParser:
    """A command ``name`` of a group, run by ``handler``, with ``--json`` unless ``json_flag`` is false."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(handler=handler)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def add_local_command(sub: Subcommands, name: str, handler: LocalCommand, **kwargs: Any) -> argparse.ArgumentParser:
    """A command ``name`` run by ``handler`` with the settings alone: no connection, no transaction."""
    p = add_command(sub, name, None, **kwargs)
    p.set_defaults(local=handler)
    return p


def status_command(setter: Callable[..., Awaitable[None]], status: str) -> Command:
    """``freeze ID`` / ``unfreeze ID``: ``setter(conn, actor, id, status)``, a service that
    audits the change (none when it changes nothing)."""

    async def command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
        await setter(ctx.conn, ctx.actor, args.id, status)
        return {"id": args.id, "status": status}

    return command


def add_group(groups: Subcommands, name: str, help_text: str) -> Subcommands:
    return groups.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)


def print_result(result: dict[str, Any] | None, as_json: bool) -> None:
    if result is None:
        return
    if as_json:
        print(json.dumps(result, ensure_ascii=False, default=str))
        return
    for key, value in result.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print("  " + (", ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item)))
        else:
            print(f"{key}: {value}")


# -- risk limits (terminal limits, merchant limits) ---------------------------


def limit_assignments(pairs: list[str]) -> dict[str, int]:
    """``NAME=VALUE`` arguments as limits by name (0 switches one off)."""
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in risk.LIMIT_NAMES:
            raise InvalidInput(f"unknown limit {name!r}; limits are {', '.join(risk.LIMIT_NAMES)}")
        if not value.isdigit():
            raise InvalidInput(f"{name} must be a whole number (0 switches it off): {value!r}")
        values[name] = int(value)
    return values


async def effective_limits(conn: asyncpg.Connection, mid: str, tid: str | None) -> dict[str, int]:
    """The limits in force for a merchant's terminals (``tid`` None) or one terminal of it."""
    return risk.effective_limits(risk.load_defaults(config_dir()),
                                 await registry.limit_overrides(conn, "merchant", mid),
                                 await registry.limit_overrides(conn, "terminal", tid) if tid is not None else None)


BANK_FLAGS = ("--bank-account", "--bank-name", "--account-name")


def add_bank_flags(parser: argparse.ArgumentParser) -> None:
    """The bank details of ``merchant set`` and ``agent set`` (CLI.md "Money out")."""
    parser.add_argument("--bank-account", metavar="N", help="8 to 30 digits (stored under the LMK, shown masked)")
    parser.add_argument("--bank-name", metavar="NAME")
    parser.add_argument("--account-name", metavar="NAME", help="the account holder's name")


def bank_flags(args: argparse.Namespace) -> tuple[str, str, str]:
    """The account number, bank name and account name given, the three together, or InvalidInput."""
    given = (args.bank_account, args.bank_name, args.account_name)
    if not any(given):
        raise InvalidInput(f"nothing to set: give {', '.join(BANK_FLAGS)}")
    if not all(given):
        raise InvalidInput(f"{', '.join(BANK_FLAGS)} go together")
    return given

"""``posgw``: the operator command line (shared/CLI.md is its contract).

``--json`` prints exactly one JSON object on stdout; logs go to stderr.
Exit codes: 0 done, 1 the command ran and found a problem, 2 bad usage or
bad input (the last line on stderr says what). A failing command changes
nothing: each runs in one database transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.domain import bills
from gateway.domain import cards
from gateway.domain import registry
from gateway.reports import views as reports
from gateway.acquiring import risk
from gateway.domain import validate
from gateway.db.pool import database_url, stop_embedded
from gateway.keys import LmkError, SoftHsm, load_lmk
from gateway.logs import configure as configure_logs
from gateway.db.migrate import UnmigratedDatabase, check_migrated, migrate
from gateway.settings import Settings, config_dir, get_settings
from gateway.domain.validate import InvalidInput
from ledger import postings
from ledger.accounts import CASH_ACCOUNT_CODE, account_id
from ledger.check import check as check_ledger
from protocol.crypto import adjust_odd_parity

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class Problem(Exception):
    """The command ran and found a problem (exit 1)."""


@dataclass
class Context:
    settings: Settings
    conn: asyncpg.Connection
    _hsm: SoftHsm | None = None

    @property
    def hsm(self) -> SoftHsm:
        if self._hsm is None:
            lmk = self.settings.lmk.get_secret_value() if self.settings.lmk else None
            self._hsm = SoftHsm(load_lmk(lmk, self.settings.data_dir))
        return self._hsm


Command = Callable[[argparse.Namespace, Context], Awaitable[dict[str, Any] | None]]


# -- agents -------------------------------------------------------------------


async def agent_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    code = validate.code(args.code, "agent code")
    parent = validate.code(args.parent, "parent code") if args.parent else None
    await registry.add_agent(ctx.conn, code, args.name, parent)
    return await registry.show_agent(ctx.conn, code)


async def agent_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await registry.show_agent(ctx.conn, args.code)


def _status_command(setter: Callable[..., Awaitable[None]], status: str) -> Command:
    async def command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
        await setter(ctx.conn, args.id, status)
        return {"id": args.id, "status": status}

    return command


async def agent_topup_fen(conn: asyncpg.Connection, code: str, amount: int) -> None:
    agent = await conn.fetchrow("SELECT float_account_id FROM agents WHERE code = $1", code)
    if agent is None:
        raise InvalidInput(f"unknown agent {code}")
    top_up_number = await conn.fetchval("SELECT nextval('topup_seq')")
    cash = await account_id(conn, CASH_ACCOUNT_CODE)
    result = await postings.post(conn, f"topup:{top_up_number}", [
        postings.Transfer(cash, agent["float_account_id"], amount, "float_topup")])
    if result is not postings.PostResult.OK:
        raise Problem(f"top-up not posted: {result}")


async def agent_topup(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await agent_topup_fen(ctx.conn, args.code, validate.amount_fen(args.amount))
    return await registry.show_agent(ctx.conn, args.code)


# -- merchants ----------------------------------------------------------------


async def merchant_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    mid = validate.mid(args.mid)
    mdr_bp = validate.basis_points(args.mdr_bp, "--mdr-bp")
    await registry.add_merchant(ctx.conn, mid, args.name, args.agent, mdr_bp)
    return await registry.show_merchant(ctx.conn, mid)


async def merchant_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await registry.show_merchant(ctx.conn, args.mid)


# -- terminals ----------------------------------------------------------------


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
    await registry.add_terminal(ctx.conn, ctx.hsm, tid, args.merchant, tmk, **_terminal_options(args))
    return await registry.show_terminal(ctx.conn, tid)


async def terminal_set(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await registry.set_terminal(ctx.conn, args.tid, **_terminal_options(args))
    return await registry.show_terminal(ctx.conn, args.tid)


async def terminal_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await registry.show_terminal(ctx.conn, args.tid)


async def terminal_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"terminals": await registry.list_terminals(ctx.conn)}


# -- cards --------------------------------------------------------------------


async def card_issue(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    pan = validate.pan(args.pan)
    pin = validate.pin(args.pin)
    balance = validate.amount_fen(args.balance, allow_zero=True)
    return await cards.issue_card(ctx.conn, ctx.hsm, pan, pin, args.expiry, balance)


async def card_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await cards.show_card(ctx.conn, ctx.hsm, validate.pan(args.pan))


def _card_command(action: Callable[..., Awaitable[None]], *extra: Any) -> Command:
    async def command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
        pan = validate.pan(args.pan)
        await action(ctx.conn, ctx.hsm, pan, *extra)
        return await cards.show_card(ctx.conn, ctx.hsm, pan)

    return command


# -- billers --------------------------------------------------------------------


async def biller_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    code = validate.code(args.code, "biller code")
    if args.commission_bp is not None and args.commission_fixed is not None:
        raise InvalidInput("--commission-bp and --commission-fixed exclude each other")
    return await bills.add_biller(
        ctx.conn, code, args.name, prepaid=args.prepaid, exact=args.exact,
        commission_bp=validate.basis_points(args.commission_bp or 0, "--commission-bp"),
        commission_fixed_fen=validate.amount_fen(args.commission_fixed) if args.commission_fixed else 0,
        connector=args.connector, connector_url=args.url)


async def bill_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await bills.add_bill(ctx.conn, args.biller, validate.account(args.account), args.name,
                                validate.amount_fen(args.amount), args.period, args.due)


async def bill_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"bills": await bills.list_bills(ctx.conn, args.biller, args.account)}


async def meter_add(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await bills.add_meter(ctx.conn, args.biller, validate.account(args.meter, "meter"), args.name)


async def token_show(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await bills.show_tokens(ctx.conn, args.meter)


# -- reports ------------------------------------------------------------------


def _report_format(args: argparse.Namespace) -> None:
    if args.json and args.csv:
        raise InvalidInput("--json and --csv exclude each other")


def _report_output(args: argparse.Namespace, result: dict[str, Any], rows: str,
                   columns: tuple[str, ...]) -> dict[str, Any] | None:
    if args.csv:
        sys.stdout.write(reports.to_csv(result[rows], columns))
        return None
    return result


async def agent_statement(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    _report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz)
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.agent_statement(ctx.conn, args.code, day, tz)
    return _report_output(args, result, "movements", reports.STATEMENT_COLUMNS)


async def biller_remittance(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    _report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz)
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.biller_remittance(ctx.conn, args.code, day, tz)
    return _report_output(args, result, "payments", reports.REMITTANCE_COLUMNS)


async def batch_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"batches": await reports.list_batches(ctx.conn, args.unbalanced, ctx.settings.tz)}


async def report_daily(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """The day's report (``reports.daily_report``); ``--csv`` prints its ``by_type`` table
    (kind, response_code, count, amount_fen). Printed in full, then exit 1, when the
    day's ledger check fails."""
    _report_format(args)
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz)
    await reports.consistent_snapshot(ctx.conn)
    result = await reports.daily_report(ctx.conn, day, tz)
    output = _report_output(args, result, "by_type", reports.DAILY_BY_TYPE_COLUMNS)
    if not result["ledger_check"]["ok"]:
        _print_result(output, args.json)
        raise Problem("daily ledger check: " + "; ".join(result["ledger_check"]["problems"]))
    return output


# -- risk ---------------------------------------------------------------------


def _limit_assignments(pairs: list[str]) -> dict[str, int]:
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in risk.LIMIT_NAMES:
            raise InvalidInput(f"unknown limit {name!r}; limits are {', '.join(risk.LIMIT_NAMES)}")
        if not value.isdigit():
            raise InvalidInput(f"{name} must be a whole number (0 switches it off): {value!r}")
        values[name] = int(value)
    return values


async def _set_limits(conn: asyncpg.Connection, scope: str, owner: str, values: dict[str, int]) -> None:
    for name, value in values.items():
        await conn.execute(
            """INSERT INTO risk_limits (scope, owner, name, value) VALUES ($1, $2, $3, $4)
               ON CONFLICT (scope, owner, name) DO UPDATE SET value = $4""", scope, owner, name, value)


async def _overrides(conn: asyncpg.Connection, scope: str, owner: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT name, value FROM risk_limits WHERE scope = $1 AND owner = $2", scope, owner)
    return {row["name"]: row["value"] for row in rows}


async def terminal_limits(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    terminal = await registry.show_terminal(ctx.conn, args.tid)
    await _set_limits(ctx.conn, "terminal", args.tid, _limit_assignments(args.limits))
    limits = risk.effective_limits(risk.load_defaults(config_dir()),
                                   await _overrides(ctx.conn, "merchant", terminal["mid"]),
                                   await _overrides(ctx.conn, "terminal", args.tid))
    return {"tid": args.tid, "limits": limits}


async def merchant_limits(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    await registry.show_merchant(ctx.conn, args.mid)
    await _set_limits(ctx.conn, "merchant", args.mid, _limit_assignments(args.limits))
    limits = risk.effective_limits(risk.load_defaults(config_dir()),
                                   await _overrides(ctx.conn, "merchant", args.mid), None)
    return {"mid": args.mid, "limits": limits}


async def risk_events_command(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    tz = ctx.settings.tz
    day = reports.parse_date(args.date, tz) if args.date else None
    return {"events": await reports.risk_events(ctx.conn, args.tid, day, tz)}


# -- ledger -------------------------------------------------------------------


async def ledger_check(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    report = await check_ledger(ctx.conn)
    if not report.ok:
        _print_result(report.as_dict(), args.json)
        raise Problem("; ".join(report.problems))
    return report.as_dict()


# -- database and demo --------------------------------------------------------


async def db_migrate(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"applied": await migrate(ctx.conn)}


DEMO_AGENT = "DEMO"
DEMO_MERCHANT = "898100000000001"
DEMO_CARD_PIN = "123456"
DEMO_CARD_BALANCE_FEN = 1_000_000
DEMO_CARD_EXPIRY = "3012"
DEMO_FLOAT_FEN = 1_000_000
DEMO_POSTPAID, DEMO_PREPAID = "ELEC01", "PREPAID01"


def demo_tmk(tid: str) -> bytes:
    """The demo terminals' TMKs are derived from their TIDs, so they are known."""
    return adjust_odd_parity(hashlib.sha256(f"posgw-demo-tmk:{tid}".encode()).digest()[:16])


def demo_tid(index: int) -> str:
    return f"DEMO{index:04d}"


def demo_pan(index: int) -> str:
    """16-digit Luhn-valid PANs: 622202 + 9-digit index + check digit."""
    body = f"622202{index:09d}"
    return next(body + d for d in "0123456789" if validate.luhn_valid(body + d))


async def demo(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.terminals < 1 or args.terminals > 9999:
        raise InvalidInput("--terminals must be 1 to 9999")
    conn = ctx.conn
    if not await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", DEMO_AGENT):
        await registry.add_agent(conn, DEMO_AGENT, "Demo Agent", None)
    if not await conn.fetchval("SELECT 1 FROM merchants WHERE mid = $1", DEMO_MERCHANT):
        await registry.add_merchant(conn, DEMO_MERCHANT, "Demo Store", DEMO_AGENT, 0)
    existing = {r["tid"] for r in await conn.fetch("SELECT tid FROM terminals WHERE tid LIKE 'DEMO%'")}
    terminals = []
    for index in range(1, args.terminals + 1):
        tid = demo_tid(index)
        tmk = demo_tmk(tid)
        if tid not in existing:
            await registry.add_terminal(conn, ctx.hsm, tid, DEMO_MERCHANT, tmk, permit=None,
                                        mac_algorithm=None, location=None, radius_km=None)
        terminals.append({"tid": tid, "mid": DEMO_MERCHANT, "tmk": tmk.hex().upper()})
    if args.cards < 0 or args.cards > 1_000_000:
        raise InvalidInput("--cards must be 0 to 1000000")
    pans = [demo_pan(index) for index in range(1, args.cards + 1)]
    hashes = [ctx.hsm.pan_hash(pan) for pan in pans]
    issued = {r["pan_hash"] for r in await conn.fetch(
        "SELECT pan_hash FROM cards WHERE pan_hash = ANY ($1::bytea[])", hashes)}
    await cards.issue_cards(conn, ctx.hsm, [(pan, DEMO_CARD_PIN, DEMO_CARD_EXPIRY)
                                            for pan, pan_hash in zip(pans, hashes) if pan_hash not in issued],
                            DEMO_CARD_BALANCE_FEN)
    card_list = [{"pan": pan, "pin": DEMO_CARD_PIN, "expiry": DEMO_CARD_EXPIRY} for pan in pans]
    if await bills.load_biller(conn, DEMO_POSTPAID) is None:
        await bills.add_biller(conn, DEMO_POSTPAID, "City Electricity", prepaid=False, exact=True,
                               commission_bp=50, commission_fixed_fen=0, connector="builtin", connector_url=None)
        await bills.add_biller(conn, DEMO_PREPAID, "Prepaid Power", prepaid=True, exact=False,
                               commission_bp=0, commission_fixed_fen=100, connector="builtin", connector_url=None)
        for index in range(1, 4):
            await bills.add_bill(conn, DEMO_POSTPAID, f"E{index:05d}", f"Customer {index}", 12_345 * index,
                                 "202611", None)
            await bills.add_meter(conn, DEMO_PREPAID, f"M{index:05d}", f"Meter owner {index}")
        await agent_topup_fen(conn, DEMO_AGENT, DEMO_FLOAT_FEN)
    return {
        "agents": [await registry.show_agent(conn, DEMO_AGENT)],
        "merchants": [await registry.show_merchant(conn, DEMO_MERCHANT)],
        "terminals": terminals,
        "cards": card_list,
        "billers": [
            {"code": DEMO_POSTPAID, "prepaid": False,
             "bills": await bills.list_bills(conn, DEMO_POSTPAID, None)},
            {"code": DEMO_PREPAID, "prepaid": True,
             "meters": [r["meter"] for r in await conn.fetch(
                 "SELECT meter FROM meters WHERE biller_code = $1 ORDER BY meter", DEMO_PREPAID)]},
        ],
    }


# -- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posgw", description="posgw operator command line")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(sub: argparse._SubParsersAction, name: str, handler: Command | None,
                json_flag: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **kwargs)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    serve = command(groups, "serve", None, json_flag=False, help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--metrics-port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="gateway processes sharing the ports")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    serve.add_argument("--wire-only", action="store_true",
                       help="benchmark baseline: answer sign-on and echo from memory, without the database")

    db = groups.add_parser("db", help="database").add_subparsers(dest="action", required=True)
    command(db, "migrate", db_migrate, help="apply pending migrations")
    command(db, "stop", None, help="stop the embedded PostgreSQL").set_defaults(stop_db=True)

    d = command(groups, "demo", demo, help="create the demo world and print it")
    d.add_argument("--terminals", type=int, default=2)
    d.add_argument("--cards", type=int, default=2)

    agent = groups.add_parser("agent", help="agents").add_subparsers(dest="action", required=True)
    p = command(agent, "add", agent_add)
    p.add_argument("code")
    p.add_argument("--name", required=True)
    p.add_argument("--parent")
    command(agent, "show", agent_show).add_argument("code")
    p = command(agent, "topup", agent_topup)
    p.add_argument("code")
    p.add_argument("amount")
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        command(agent, action, _status_command(registry.set_agent_status, status)).add_argument("id")
    p = command(agent, "statement", agent_statement, help="the day's float movements")
    p.add_argument("code")
    p.add_argument("--date", help="YYYY-MM-DD, a local day (default today)")
    p.add_argument("--csv", action="store_true", help="print the movements as CSV")

    merchant = groups.add_parser("merchant", help="merchants").add_subparsers(dest="action", required=True)
    p = command(merchant, "add", merchant_add)
    p.add_argument("mid")
    p.add_argument("--name", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--mdr-bp", type=int, default=0)
    command(merchant, "show", merchant_show).add_argument("mid")
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        command(merchant, action, _status_command(registry.set_merchant_status, status)).add_argument("id")

    terminal = groups.add_parser("terminal", help="terminals").add_subparsers(dest="action", required=True)
    for name, handler in (("add", terminal_add), ("set", terminal_set)):
        p = command(terminal, name, handler)
        p.add_argument("tid")
        if name == "add":
            p.add_argument("--merchant", required=True)
            p.add_argument("--tmk", required=True)
        p.add_argument("--permit")
        p.add_argument("--mac")
        p.add_argument("--location")
        p.add_argument("--radius-km", type=float)
    command(terminal, "show", terminal_show).add_argument("tid")
    command(terminal, "list", terminal_list)
    for action, status in (("freeze", registry.FROZEN), ("unfreeze", registry.ACTIVE)):
        command(terminal, action, _status_command(registry.set_terminal_status, status)).add_argument("id")

    card = groups.add_parser("card", help="prepaid cards").add_subparsers(dest="action", required=True)
    p = command(card, "issue", card_issue)
    p.add_argument("pan")
    p.add_argument("--pin", required=True)
    p.add_argument("--expiry", required=True)
    p.add_argument("--balance", default="0")
    command(card, "show", card_show).add_argument("pan")
    for action, handler in (("freeze", _card_command(cards.set_card_status, cards.FROZEN)),
                            ("unfreeze", _card_command(cards.set_card_status, cards.ACTIVE)),
                            ("unblock", _card_command(cards.unblock_card))):
        command(card, action, handler).add_argument("pan")

    biller = groups.add_parser("biller", help="utility billers").add_subparsers(dest="action", required=True)
    p = command(biller, "add", biller_add)
    p.add_argument("code")
    p.add_argument("--name", required=True)
    p.add_argument("--prepaid", action="store_true")
    p.add_argument("--exact", action="store_true", help="a postpaid bill must be paid in full")
    p.add_argument("--commission-bp", type=int)
    p.add_argument("--commission-fixed")
    p.add_argument("--connector", choices=("builtin", "http"), default="builtin")
    p.add_argument("--url", help="the biller's HTTP endpoint (--connector http)")
    p = command(biller, "remittance", biller_remittance, help="the day's standing payments")
    p.add_argument("code")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, a local day")
    p.add_argument("--csv", action="store_true", help="print the payments as CSV")

    bill = groups.add_parser("bill", help="postpaid bills").add_subparsers(dest="action", required=True)
    p = command(bill, "add", bill_add)
    p.add_argument("biller")
    p.add_argument("account")
    p.add_argument("--name", required=True)
    p.add_argument("--amount", required=True)
    p.add_argument("--period", required=True)
    p.add_argument("--due")
    p = command(bill, "list", bill_list)
    p.add_argument("biller")
    p.add_argument("--account")

    meter = groups.add_parser("meter", help="prepaid meters").add_subparsers(dest="action", required=True)
    p = command(meter, "add", meter_add)
    p.add_argument("biller")
    p.add_argument("meter")
    p.add_argument("--name", required=True)

    token = groups.add_parser("token", help="prepaid-meter tokens").add_subparsers(dest="action", required=True)
    command(token, "show", token_show).add_argument("meter")

    batch = groups.add_parser("batch", help="settled batches").add_subparsers(dest="action", required=True)
    command(batch, "list", batch_list).add_argument("--unbalanced", action="store_true",
                                                     help="only batches out of balance")
    report = groups.add_parser("report", help="operator reports").add_subparsers(dest="action", required=True)
    p = command(report, "daily", report_daily, help="the day per type, agent and merchant, checked against the ledger")
    p.add_argument("--date", help="YYYY-MM-DD, a local day (default today)")
    p.add_argument("--csv", action="store_true", help="print the per-type table as CSV")

    for subcommands, owner, handler in ((terminal, "tid", terminal_limits), (merchant, "mid", merchant_limits)):
        p = command(subcommands, "limits", handler, help="set overrides of risk limits, show the effective ones")
        p.add_argument(owner)
        p.add_argument("limits", nargs="*", metavar="NAME=VALUE")

    risk_group = groups.add_parser("risk", help="risk rules").add_subparsers(dest="action", required=True)
    p = command(risk_group, "events", risk_events_command, help="declines by risk rules")
    p.add_argument("--tid")
    p.add_argument("--date")

    ledger = groups.add_parser("ledger", help="the ledger").add_subparsers(dest="action", required=True)
    command(ledger, "check", ledger_check, help="verify the ledger's invariants")
    return parser


def _print_result(result: dict[str, Any] | None, as_json: bool) -> None:
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


async def _run_command(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    conn = await asyncpg.connect(database_url(settings), timeout=settings.db_command_timeout_s)
    try:
        if args.handler is not db_migrate:
            await check_migrated(conn)
        ctx = Context(settings, conn)
        if args.handler is db_migrate:  # each migration commits on its own
            return await args.handler(args, ctx)
        async with conn.transaction():
            return await args.handler(args, ctx)
    finally:
        await conn.close()


def _without_workers(argv: list[str]) -> list[str]:
    """The command line of one worker: the same, less ``--workers N``."""
    kept, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--workers":
            skip_next = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def _serve(args: argparse.Namespace, settings: Settings, argv: list[str]) -> int:
    from gateway.server.app import run, run_workers

    if args.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if args.workers > 1:
        return run_workers(_without_workers(argv), args.workers)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(run(settings, host, port, metrics_port, reuse_port=args.reuse_port, wire_only=args.wire_only))
    return EXIT_OK


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
            return _serve(args, settings, list(sys.argv[1:] if argv is None else argv))
        if getattr(args, "stop_db", False):
            stopped = stop_embedded(settings)
            _print_result({"stopped": stopped}, args.json)
            return EXIT_OK
        result = asyncio.run(_run_command(args, settings))
    except (InvalidInput, LmkError, UnmigratedDatabase) as exc:
        print(f"posgw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Problem as exc:
        print(f"posgw: problem: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"posgw: error: database: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return EXIT_OK
    _print_result(result, getattr(args, "json", False))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

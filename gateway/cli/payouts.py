"""``posgw payout ...``: run, file, confirm, list (CLI.md "Money out (T+1)").

The run and the confirmation change things, through the payout job
(gateway.jobs.payouts, audited once each by gateway.services.payouts); the file
and the list only read. A payout file carries
the beneficiaries' account numbers in clear, as the bank needs them: with
``--out`` it is written whole or not at all, readable by its owner only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group
from gateway.domain.validate import InvalidInput, Problem
from gateway.jobs import payouts as payout_jobs
from gateway.reports.views import parse_date

PAYOUT_FILE_MODE = 0o600  # it holds full bank account numbers


def _day(args: argparse.Namespace, ctx: Context) -> date | None:
    return parse_date(args.date, ctx.settings.tz) if args.date is not None else None


def _required_day(args: argparse.Namespace, ctx: Context) -> date:
    return parse_date(args.date, ctx.settings.tz)


async def payout_run(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await payout_jobs.run(ctx.conn, ctx.actor, ctx.settings, _required_day(args, ctx))


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600), replacing it whole: a failure leaves what was there."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PAYOUT_FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InvalidInput(f"--out {path}: cannot write: {exc.strerror or exc}") from None


def write_stdout(data: bytes) -> None:
    """The file's bytes on stdout, as they are (text where stdout has no byte buffer)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8"))
        return
    sys.stdout.flush()
    buffer.write(data)
    buffer.flush()


async def payout_file(args: argparse.Namespace, ctx: Context) -> dict[str, Any] | None:
    """The bank instructions of a date: to ``--out`` (then a summary is printed), else to stdout.
    A pain.001 with no payouts: exit 1."""
    if args.json and args.out is None:
        raise InvalidInput("--json goes with --out (without it, the file itself is printed)")
    day = _required_day(args, ctx)
    try:
        data = await payout_jobs.payout_file(ctx.conn, ctx.hsm, ctx.settings, day, args.format)
    except payout_jobs.PayoutError as exc:
        raise Problem(str(exc)) from None
    if args.out is None:
        write_stdout(data)
        return None
    write_file_atomically(args.out, data)
    return {"date": day.isoformat(), "format": args.format, "out": str(args.out),
            "count": len((await payout_jobs.list_payouts(ctx.conn, day))["payouts"]), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


async def payout_confirm(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The bank's answer (CSV or pain.002); an unknown payout id: exit 2 and nothing applied."""
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"--file {args.file}: cannot read: {exc.strerror or exc}") from None
    return await payout_jobs.confirm(ctx.conn, ctx.actor, ctx.settings, data, args.file.name)


async def payout_list(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return await payout_jobs.list_payouts(ctx.conn, _day(args, ctx), args.status)


def register(groups: Subcommands) -> Subcommands:
    payout = add_group(groups, "payout", "money out to merchants' banks (T+1)")
    p = add_command(payout, "run", payout_run, help="make a day's payouts (the day must be over)")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, a local day")
    p = add_command(payout, "file", payout_file, help="a day's bank instructions, CSV or pain.001")
    p.add_argument("--date", required=True, help="YYYY-MM-DD, the day of the payout run")
    p.add_argument("--format", required=True, help=" or ".join(payout_jobs.FORMATS))
    p.add_argument("--out", type=Path, help="write the file here (default: stdout)")
    p = add_command(payout, "confirm", payout_confirm, help="apply the bank's answer (CSV or pain.002)")
    p.add_argument("--file", required=True, type=Path)
    p = add_command(payout, "list", payout_list, help="payouts, oldest first")
    p.add_argument("--date", help="YYYY-MM-DD, the day of the payout run")
    p.add_argument("--status", help=", ".join(payout_jobs.STATUSES))
    return payout

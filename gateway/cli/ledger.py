"""``posgw ledger check``, ``db migrate``, ``db stop``, ``db backup``, ``db restore``."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli.common import Context, Subcommands, add_command, add_group, add_local_command, print_result
from gateway.db.backup import BackupError, base_backup, pg_bindir_for, prepare_restore
from gateway.db.migrate import migrate
from gateway.db.pool import database_url, stop_embedded
from gateway.domain.validate import InvalidInput, Problem
from gateway.jobs.agent_events import check_deposits
from gateway.jobs.payouts import check_payouts
from gateway.settings import Settings
from ledger.check import check as check_ledger

# backup_label's first line: START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
_START_WAL = re.compile(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", re.M)


async def ledger_check(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The ledger's invariants, the payouts rule (the clearing account holds the payouts made
    and not confirmed, the bank account the paid ones) and the deposits rule (the deposits
    account holds those charged less refunded less forfeited): exit 1 naming each broken one."""
    report = await check_ledger(ctx.conn)
    report.problems.extend(await check_payouts(ctx.conn))
    report.problems.extend(await check_deposits(ctx.conn))
    if not report.ok:
        print_result(report.as_dict(), args.json)
        raise Problem("; ".join(report.problems))
    return report.as_dict()


async def db_migrate(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    return {"applied": await migrate(ctx.conn)}


def db_stop(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return {"stopped": stop_embedded(settings)}


def _new_directory(path: Path, flag: str) -> Path:
    """``path`` as a directory a command may fill: absent or empty (else exit 2)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInput(f"{flag} {path} must be a new or empty directory")
    return path


async def db_backup(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """A base backup (``gateway.db.backup.base_backup``: pg_basebackup, plain, the WAL it needs
    streamed in) of the server the database URL reaches, with the pg_basebackup of that server's
    version. ``start_wal_file``: the oldest archived WAL segment a restore from it needs
    (``pg_archivecleanup ARCHIVE start_wal_file`` once it is the oldest backup kept)."""
    dest = _new_directory(Path(args.to).absolute(), "--to")
    server_major = ctx.conn.get_server_version().major
    bindir = pg_bindir_for(server_major)
    try:
        taken = await asyncio.to_thread(base_backup, database_url(ctx.settings), dest, bindir=bindir)
    except FileNotFoundError as exc:
        raise Problem(f"pg_basebackup not found ({exc.filename}): install PostgreSQL's client programs "
                      f"or set PG_BINDIR") from None
    except (BackupError, subprocess.TimeoutExpired) as exc:
        raise Problem(f"backup failed: {exc}") from None
    label = (taken.path / "backup_label").read_text(errors="replace")
    start_wal = _START_WAL.search(label)
    return {"path": str(taken.path), "label": taken.label, "taken_at": taken.taken_at.isoformat(),
            "server_major": server_major, "start_wal_file": start_wal.group(1) if start_wal else None}


def restore_target_time(text: str) -> datetime:
    """``--time``: ISO 8601 with its offset (``2026-12-07T14:30:00+08:00``); without one, exit 2:
    a restore point must not depend on the time zone of the machine that restores."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--time {text!r} is not an ISO 8601 time (e.g. 2026-12-07T14:30:00+08:00)") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"--time {text!r} must carry its offset (e.g. +08:00 or Z)")
    return moment


def _check_restore_input(args: argparse.Namespace) -> tuple[Path, Path, Path, datetime | None]:
    backup, archive = Path(args.from_).absolute(), Path(args.archive).absolute()
    if not (backup / "PG_VERSION").is_file() or not (backup / "backup_label").is_file():
        raise InvalidInput(f"--from {backup} is not a base backup (no PG_VERSION or backup_label): "
                           f"one that posgw db backup wrote")
    if not archive.is_dir():
        raise InvalidInput(f"--archive {archive} is not a directory")
    pgdata = _new_directory(Path(args.to).absolute(), "--to")
    if args.time is not None and args.name is not None:
        raise InvalidInput("--time and --name: a restore stops at a time or at a restore point, not both")
    if args.name is not None and not args.name.strip():
        raise InvalidInput("--name must name a restore point")
    if args.port is not None and not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is not a port")
    return backup, archive, pgdata, None if args.time is None else restore_target_time(args.time)


def _empty(path: Path, keep_directory: bool) -> None:
    """Undo a failed restore: ``path`` empty again, or gone if the restore created it."""
    if not keep_directory:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def db_restore(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """A new data directory ``--to`` from a base backup, set to replay ``--archive`` up to ``--time``
    or the restore point ``--name`` (neither: all of it), then promote itself
    (``gateway.db.backup.prepare_restore``); it is started by hand (``start``: as the user
    PostgreSQL runs as). Needs no database: the one it replaces may be gone. On a failure the
    directory is left as it was found."""
    backup, archive, pgdata, target_time = _check_restore_input(args)
    existed = pgdata.exists()
    try:
        prepare_restore(backup, archive, pgdata, target_time=target_time, target_name=args.name, port=args.port)
    except (BackupError, OSError) as exc:
        _empty(pgdata, keep_directory=existed)
        raise Problem(f"restore failed: {exc}") from None
    pg_version = (pgdata / "PG_VERSION").read_text().strip()
    pg_ctl = pg_bindir_for(int(pg_version)) / "pg_ctl"
    return {"pgdata": str(pgdata), "backup": str(backup), "archive": str(archive),
            "target_time": None if target_time is None else target_time.isoformat(), "target_name": args.name,
            "port": args.port, "pg_version": pg_version,
            "start": f"{pg_ctl} -D {pgdata} -l {pgdata / 'restore.log'} start"}


def register(groups: Subcommands) -> None:
    db = add_group(groups, "db", "database")
    # each migration commits on its own, and the database need not be migrated yet
    add_command(db, "migrate", db_migrate, help="apply pending migrations").set_defaults(outside_transaction=True)
    add_local_command(db, "stop", db_stop, help="stop the embedded PostgreSQL")
    # pg_basebackup copies whatever is there, from another process: no transaction, no migration check
    backup = add_command(db, "backup", db_backup, help="take a base backup (pg_basebackup) into a new directory")
    backup.set_defaults(outside_transaction=True)
    backup.add_argument("--to", required=True, metavar="DIR", help="a new or empty directory")
    restore = add_local_command(db, "restore", db_restore,
                                help="prepare a new data directory from a base backup and the WAL archive, "
                                "to a point in time or a restore point")
    restore.add_argument("--from", dest="from_", required=True, metavar="BACKUP", help="a base backup's directory")
    restore.add_argument("--archive", required=True, metavar="DIR", help="the WAL archive")
    restore.add_argument("--to", required=True, metavar="PGDATA", help="a new or empty data directory")
    restore.add_argument("--time", metavar="T", help="replay up to this time, ISO 8601 with offset")
    restore.add_argument("--name", metavar="N", help="replay up to this restore point")
    restore.add_argument("--port", type=int, metavar="P", help="the restored server's port")
    ledger = add_group(groups, "ledger", "the ledger")
    add_command(ledger, "check", ledger_check, help="verify the ledger's invariants")

"""Backups that restore: a base backup, continuous WAL archiving, restore to a point in time.

Three pieces, each PostgreSQL's own (docs/reliability.md says how an operator
uses them):

- **WAL archiving**: each primary copies every finished WAL segment into an
  archive directory (``archive_mode = on``, ``archive_command`` as
  ``archive_command()`` writes it; deploy/pgpair.py sets both on each node, so
  that a promoted standby goes on archiving where its primary stopped).
- **A base backup** (``base_backup()``: ``pg_basebackup``, plain format, the WAL
  it needs to be consistent streamed into it, a fast checkpoint), taken from the
  primary or a standby, as often as the time to replay the archive since the
  last one allows.
- **A restore** (``prepare_restore()``): the base backup copied into a new data
  directory, told to replay the archive up to a point in time (or a named
  restore point, ``create_restore_point()``) and then be promoted; started with
  ``pg_ctl start``, it replays and opens as a primary of its own (a new
  timeline: it never writes into the archive it came from, archiving is off).

Nothing here needs the gateway running; the functions take a database URL
(libpq's: a multi-host URL with ``target_session_attrs=read-write`` reaches
the primary) and paths.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PG_VERSION = "15"
BACKUP_TIMEOUT_S = 600.0
# What a restored cluster must not keep from its original: the archive it came
# from (a restore that archives into it would mix a second history in), and a
# standby's link to a primary.
RESTORE_SETTINGS = {
    "archive_mode": "off",
    "primary_conninfo": "",
    "primary_slot_name": "",
}


class BackupError(Exception):
    """A backup or restore step failed; the message says which and why."""


def pg_bindir() -> Path:
    """Where PostgreSQL's programs are: ``PG_BINDIR``, else Debian's, else the PATH's."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return Path(explicit)
    debian = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
    if (debian / "pg_basebackup").exists():
        return debian
    found = shutil.which("pg_basebackup")
    return Path(found).parent if found else debian


def embedded_bindir() -> Path | None:
    """The embedded PostgreSQL's programs (pgserver's), found without importing it; None without pgserver."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def tool_major(bindir: Path, tool: str = "pg_basebackup") -> int | None:
    """The major version of ``bindir/tool`` (``pg_basebackup (PostgreSQL) 16.2`` → 16); None if absent."""
    try:
        result = subprocess.run([str(bindir / tool), "--version"], capture_output=True, text=True, timeout=10,
                                check=False)
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\) (\d+)", result.stdout)
    return int(found.group(1)) if found else None


def pg_bindir_for(server_major: int) -> Path:
    """Where PostgreSQL's programs of the server's major version are: ``PG_BINDIR``
    (whatever its version), else the first of Debian's for that version, the
    PATH's and the embedded PostgreSQL's whose ``pg_basebackup`` is that version
    (``pg_basebackup`` refuses a newer server, and a restored data directory
    starts only under its own version), else ``pg_bindir()``."""
    if os.environ.get("PG_BINDIR"):
        return pg_bindir()
    found = shutil.which("pg_basebackup")
    candidates = [Path(f"/usr/lib/postgresql/{server_major}/bin"), Path(found).parent if found else None,
                  embedded_bindir()]
    for bindir in candidates:
        if bindir is not None and tool_major(bindir) == server_major:
            return bindir
    return pg_bindir()


def archive_command(archive_dir: Path) -> str:
    """PostgreSQL's ``archive_command`` that copies each finished WAL segment into
    ``archive_dir``: never over a file already there (a segment archived twice
    must not be replaced by another's bytes), and whole files only (copied
    under a temporary name, then renamed)."""
    target = shlex.quote(str(Path(archive_dir).resolve()))
    return f"test ! -f {target}/%f && cp %p {target}/%f.part && mv {target}/%f.part {target}/%f"


def restore_command(archive_dir: Path) -> str:
    """PostgreSQL's ``restore_command`` that reads segments back from ``archive_dir``."""
    return f"cp {shlex.quote(str(Path(archive_dir).resolve()))}/%f %p"


@dataclass(frozen=True)
class BaseBackup:
    path: Path  # a data directory's copy, ready to be restored (prepare_restore)
    label: str
    taken_at: datetime  # when pg_basebackup finished: a restore can target any time after it


def base_backup(url: str, dest: Path, *, label: str = "posgw", bindir: Path | None = None,
                timeout_s: float = BACKUP_TIMEOUT_S) -> BaseBackup:
    """``pg_basebackup`` of the server at ``url`` into ``dest`` (a new or empty
    directory): plain format, with the WAL it needs streamed in (it restores
    even without the archive, to the moment it finished), checkpoint fast."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty")
    argv = [str((bindir or pg_bindir()) / "pg_basebackup"), "--dbname", url, "--pgdata", str(dest),
            "--format=plain", "--wal-method=stream", "--checkpoint=fast", "--label", label, "--no-password"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_basebackup: exit {result.returncode}: {result.stderr.strip()[-1500:]}")
    return BaseBackup(dest, label, datetime.now().astimezone())


def prepare_restore(backup: Path, archive_dir: Path, pgdata: Path, *, target_time: datetime | None = None,
                    target_name: str | None = None, port: int | None = None) -> None:
    """A new data directory ``pgdata`` from the base backup at ``backup``, set to
    replay ``archive_dir`` up to ``target_time`` (an aware datetime: the last
    commit at or before it is kept, the first after it is not) or to the restore
    point ``target_name``, then to promote itself. Neither: replay all of the
    archive. Start it with ``pg_ctl -D pgdata start``."""
    if target_time is not None and target_name is not None:
        raise BackupError("a restore targets a time or a restore point, not both")
    if target_time is not None and target_time.tzinfo is None:
        raise BackupError("target_time must carry its time zone")
    pgdata = Path(pgdata)
    if pgdata.exists() and any(pgdata.iterdir()):
        raise BackupError(f"{pgdata} is not empty: restore into a new data directory")
    shutil.copytree(backup, pgdata, symlinks=True, dirs_exist_ok=True)
    os.chmod(pgdata, 0o700)
    for stale in ("standby.signal", "postmaster.pid", "postmaster.opts"):
        (pgdata / stale).unlink(missing_ok=True)
    settings = dict(RESTORE_SETTINGS, restore_command=restore_command(archive_dir),
                    recovery_target_action="promote", recovery_target_timeline="latest")
    if target_time is not None:
        settings["recovery_target_time"] = target_time.isoformat(sep=" ")
        settings["recovery_target_inclusive"] = "on"
    if target_name is not None:
        settings["recovery_target_name"] = target_name
    if port is not None:
        settings["port"] = str(port)
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write("\n# restore (gateway.db.backup.prepare_restore)\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value}'\n")
    (pgdata / "recovery.signal").touch()


async def create_restore_point(conn, name: str) -> str:
    """A named point in the WAL a restore can stop at (``recovery_target_name``);
    the WAL position. The segment is switched so that the point reaches the
    archive without waiting for the segment to fill."""
    lsn = await conn.fetchval("SELECT pg_create_restore_point($1)::text", name)
    await conn.execute("SELECT pg_switch_wal()")
    return lsn


async def switch_and_wait_archived(conn, timeout_s: float = 30.0) -> str:
    """Close the current WAL segment and wait until the archiver has it: then
    everything committed before this call is in the archive. The segment's name."""
    segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout_s
    while True:
        last = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
        if last is not None and len(last) == len(segment) and last[8:] >= segment[8:]:  # log and segment, any timeline
            return segment
        if time.monotonic() > deadline:
            raise BackupError(f"WAL segment {segment} not archived within {timeout_s:.0f} s (last: {last})")
        await asyncio.sleep(0.1)

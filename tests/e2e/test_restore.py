"""The restore drill: a base backup plus the archived WAL of a primary
(deploy/pgpair.py, archiving into a directory) restored to a point in time
into a new data directory (``posgw db backup`` and ``posgw db restore``, as an
operator runs them: gateway.db.backup), started, and checked: the
ledger checks clean, every purchase approved before the point is there and
none after it, and each card's balance is its opening balance less the
purchases approved before the point.

The base backup is taken before the first purchase: every approval the
restore brings back came from the WAL archive, none from the backup."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from deploy.pgpair import PairConfig, PgPair, free_port
from gateway.db.backup import pg_bindir_for, switch_and_wait_archived
from gateway.db.migrate import migrate
from sim.terminal import Terminal
from tests.conftest import TEST_TMK, make_settings, running_gateway
from tests.e2e.test_crash import OPENING_FEN, PIN, cli_runner, register_world

pytestmark = [pytest.mark.slow, pytest.mark.needs_tools("pg_autoctl")]

PURCHASES_PER_PHASE = 6  # per terminal


async def buy(port: int, terminals: dict[str, Terminal], lanes: list[tuple[str, str]], count: int,
              approved: dict[tuple[str, str], tuple[str, int]]) -> None:
    """``count`` purchases on each terminal, side by side; the approved ones into ``approved``."""

    async def lane(tid: str, pan: str) -> None:
        terminal = terminals[tid]
        for i in range(count):
            stan, amount = terminal.next_stan(), 10 + i
            response = await terminal.purchase(pan, PIN, amount, stan=stan)
            assert response.response_code == "00", response
            approved[(tid, stan)] = (pan, amount)

    await asyncio.gather(*(lane(tid, pan) for tid, pan in lanes))


def run_postgres(argv: list[str], user: str | None, log: Path | None = None) -> None:
    command = ["runuser", "-u", user, "--", *argv] if user else argv
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        raise AssertionError(f"{argv}: exit {result.returncode}: {result.stderr}\n{tail}")


def give_to(path: Path, user: str | None) -> None:
    """The restored data directory belongs to the user PostgreSQL runs as."""
    if not user:
        return
    owner = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    os.chown(path, owner.pw_uid, owner.pw_gid)


async def test_a_base_backup_and_the_wal_archive_restore_to_a_point_in_time(tmp_path):
    run_dir = Path(tempfile.mkdtemp(prefix="posgw-restore-"))
    archive, backup, restored = run_dir / "archive", run_dir / "base", run_dir / "restored"
    pair = PgPair(PairConfig(run_dir / "pair", archive_dir=archive))
    user = pair.user
    restored_port = free_port()
    try:
        await asyncio.to_thread(pair.start)
        url = pair.url()
        conn = await asyncpg.connect(url)
        await migrate(conn)
        settings = make_settings(url, tmp_path)
        cli_run = cli_runner(settings)
        lanes = await register_world(cli_run)
        taken = await cli_run("db", "backup", "--to", str(backup), "--json")
        assert taken["path"] == str(backup) and taken["server_major"] == 15
        assert (backup / "backup_label").exists() and (backup / "backup_manifest").exists()

        before, after = {}, {}
        async with running_gateway(settings) as gateway:
            terminals = {tid: Terminal("127.0.0.1", gateway.server.port, tid, "MERCHANT0000001", TEST_TMK)
                         for tid, _pan in lanes}
            for terminal in terminals.values():
                assert (await terminal.sign_on()).response_code == "00"
            await buy(gateway.server.port, terminals, lanes, PURCHASES_PER_PHASE, before)
            point = await conn.fetchval("SELECT clock_timestamp()")  # the primary's clock, after every answer
            await asyncio.sleep(0.05)
            await buy(gateway.server.port, terminals, lanes, PURCHASES_PER_PHASE, after)
            await switch_and_wait_archived(conn)  # the commits after the point are archived: replay stops at them
            for terminal in terminals.values():
                await terminal.close()
        await conn.close()

        prepared = await cli_run("db", "restore", "--from", str(backup), "--archive", str(archive),
                                 "--to", str(restored), "--time", point.isoformat(), "--port", str(restored_port),
                                 "--json")
        assert prepared["target_time"] == point.isoformat() and prepared["pg_version"] == "15"
        pg_ctl = prepared["start"].split()[0]  # the pg_ctl of the backup's version
        give_to(restored, user)
        started = time.monotonic()
        log = restored / "restore.log"  # in the data dir: PostgreSQL's user may write there
        await asyncio.to_thread(run_postgres, [
            pg_ctl, "-D", str(restored), "-l", str(log), "-w",
            "-o", f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={restored}", "start"], user, log)
        restored_url = f"postgresql://{pair.db_user}@127.0.0.1:{restored_port}/posgw"
        restored_conn = await asyncpg.connect(restored_url)
        try:
            while await restored_conn.fetchval("SELECT pg_is_in_recovery()"):  # replaying, then promoted
                assert time.monotonic() - started < 60, "the restore did not finish replaying"
                await asyncio.sleep(0.1)
            approved = {(r["tid"], r["stan"]) for r in await restored_conn.fetch(
                "SELECT tid, stan FROM gw_transactions WHERE mti_class = '0200' AND status = 'approved'")}
        finally:
            await restored_conn.close()
        replayed_s = time.monotonic() - started

        assert set(before) <= approved, sorted(set(before) - approved)  # every approval before the point
        assert not set(after) & approved, sorted(set(after) & approved)  # none after it
        restored_cli = cli_runner(make_settings(restored_url, tmp_path))
        check = await restored_cli("ledger", "check", "--json")
        assert check["ok"], check
        for _tid, pan in lanes:
            spent = sum(amount for card, amount in before.values() if card == pan)
            shown = await restored_cli("card", "show", pan, "--json")
            assert shown["balance_fen"] == OPENING_FEN - spent, (pan, shown, spent)
        print(f"\nrestore drill: {len(before)} approvals before the point restored, {len(after)} after it left out; "
              f"started and replayed in {replayed_s:.1f} s")
    finally:
        if (restored / "postmaster.pid").exists():
            await asyncio.to_thread(run_postgres, [str(pg_bindir_for(15) / "pg_ctl"), "-D", str(restored), "-m",
                                                   "immediate", "stop"], user)
        await asyncio.to_thread(pair.stop, immediate=True)
        shutil.rmtree(run_dir, ignore_errors=True)

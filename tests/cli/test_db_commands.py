"""``posgw db backup`` and ``posgw db restore`` (gateway.db.backup through the CLI), and how every
command connects: through ``gateway.db.pool.connect``, host by host, ``connect_timeout`` understood.

The backup and restore run on the test's own embedded PostgreSQL (pgserver's, version 16: the CLI
picks the pg_basebackup and pg_ctl of the server's version); the drill with a WAL archive and a
point in time runs on a pair in tests/e2e/test_restore.py, through the same commands."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.pgpair import free_port
from gateway.cli.main import main as cli_main
from gateway.settings import Settings
from tests.conftest import CliResult, make_settings

pytestmark = pytest.mark.slow  # a base backup of the test cluster, and a PostgreSQL started on it


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory PostgreSQL's own user (pgserver's, when the tests run as root) can reach."""
    path = Path(tempfile.mkdtemp(prefix="posgw-db-cli-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def embedded_user() -> str | None:
    """The user pgserver runs PostgreSQL as: ``pgserver`` under root, else ourselves."""
    return "pgserver" if os.geteuid() == 0 else None


def as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def give_to(path: Path, user: str | None) -> None:
    if not user:
        return
    owner = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    os.chown(path, owner.pw_uid, owner.pw_gid)


def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


async def test_a_backup_restores_into_a_new_data_directory_that_starts_with_the_data(cli, db_url, shared_dir):
    assert (await cli("agent", "add", "BKUP01", "--name", "Before the backup")).code == 0
    backup, archive, restored = shared_dir / "base", shared_dir / "archive", shared_dir / "restored"
    archive.mkdir()  # the embedded server archives nothing: the backup's own WAL is all there is

    taken = await cli("db", "backup", "--to", str(backup), "--json")
    assert taken.code == 0, taken.stderr
    assert taken.json["path"] == str(backup) and taken.json["server_major"] == 16
    assert len(taken.json["start_wal_file"]) == 24 and int(taken.json["start_wal_file"], 16) > 0
    assert (backup / "backup_label").read_text().startswith("START WAL LOCATION:")
    assert (await cli("agent", "add", "BKUP02", "--name", "After the backup")).code == 0

    port = free_port()
    prepared = await cli("db", "restore", "--from", str(backup), "--archive", str(archive), "--to", str(restored),
                         "--port", str(port), "--json")
    assert prepared.code == 0, prepared.stderr
    assert prepared.json["pg_version"] == "16" and prepared.json["port"] == port
    assert prepared.json["target_time"] is None and prepared.json["target_name"] is None
    assert (restored / "recovery.signal").exists()
    auto = (restored / "postgresql.auto.conf").read_text()
    assert f"port = '{port}'" in auto and "archive_mode = 'off'" in auto and "recovery_target_action = 'promote'" in auto

    pg_ctl = prepared.json["start"].split()[0]
    user = embedded_user()
    give_to(restored, user)
    started = subprocess.run(as_user([pg_ctl, "-D", str(restored), "-l", str(restored / "restore.log"), "-w", "-o",
                                      f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={restored}",
                                      "start"], user), capture_output=True, text=True, timeout=120, check=False)
    assert started.returncode == 0, started.stderr + (restored / "restore.log").read_text(errors="replace")[-2000:]
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/{database_name(db_url)}"
        conn = await asyncpg.connect(url)
        try:
            deadline = time.monotonic() + 60
            while await conn.fetchval("SELECT pg_is_in_recovery()"):  # replays the backup's WAL, then promotes
                assert time.monotonic() < deadline, "the restored server did not promote itself"
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        restored_cli = make_settings(url, shared_dir)
        shown = await run_cli(restored_cli, "agent", "show", "BKUP01", "--json")
        assert shown.code == 0 and shown.json["name"] == "Before the backup"
        assert (await run_cli(restored_cli, "agent", "show", "BKUP02", "--json")).code == 2  # taken after it
        check = await run_cli(restored_cli, "ledger", "check", "--json")
        assert check.code == 0 and check.json["ok"] is True
    finally:
        subprocess.run(as_user([pg_ctl, "-D", str(restored), "-m", "immediate", "stop"], user),
                       capture_output=True, timeout=60, check=False)


async def run_cli(settings: Settings, *argv: str) -> CliResult:
    """``posgw ARGV`` in-process against ``settings`` (the ``cli`` fixture's, for another database)."""

    def call() -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv), settings)
        return CliResult(code, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(call)


# -- bad input: exit 2, the last line on stderr says what, nothing written ------------------------

@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    """A directory that looks like a base backup (PG_VERSION, backup_label) without being one."""
    path = tmp_path / "base"
    path.mkdir()
    (path / "PG_VERSION").write_text("16\n")
    (path / "backup_label").write_text("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")
    return path


@pytest.mark.parametrize(("extra", "says"), [
    (["--time", "2026-12-07 14:30:00"], "must carry its offset"),
    (["--time", "yesterday"], "is not an ISO 8601 time"),
    (["--time", "2026-12-07T14:30:00+08:00", "--name", "before-0011"], "not both"),
    (["--name", " "], "must name a restore point"),
    (["--port", "70000"], "is not a port"),
])
async def test_a_restore_with_a_bad_target_exits_2_and_writes_nothing(cli, tmp_path, backup_dir, extra, says):
    (tmp_path / "archive").mkdir()
    result = await cli("db", "restore", "--from", str(backup_dir), "--archive", str(tmp_path / "archive"),
                       "--to", str(tmp_path / "restored"), *extra)
    assert result.code == 2 and says in result.stderr.splitlines()[-1], result.stderr
    assert not (tmp_path / "restored").exists()


async def test_a_restore_needs_a_backup_an_archive_and_a_new_data_directory(cli, tmp_path, backup_dir):
    archive, restored = tmp_path / "archive", tmp_path / "restored"
    archive.mkdir()
    not_a_backup = await cli("db", "restore", "--from", str(archive), "--archive", str(archive), "--to", str(restored))
    assert not_a_backup.code == 2 and "is not a base backup" in not_a_backup.stderr
    no_archive = await cli("db", "restore", "--from", str(backup_dir), "--archive", str(tmp_path / "none"),
                           "--to", str(restored))
    assert no_archive.code == 2 and "is not a directory" in no_archive.stderr
    restored.mkdir()
    (restored / "PG_VERSION").write_text("15\n")  # someone's data directory: never written over
    over = await cli("db", "restore", "--from", str(backup_dir), "--archive", str(archive), "--to", str(restored))
    assert over.code == 2 and "must be a new or empty directory" in over.stderr
    assert [p.name for p in restored.iterdir()] == ["PG_VERSION"] and (restored / "PG_VERSION").read_text() == "15\n"


async def test_a_restore_needs_no_database(tmp_path, backup_dir):
    """The database may be the one lost: ``db restore`` connects to nothing (here: to a port where no
    server listens, which every other command would fail on)."""
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/posgw", tmp_path)
    (tmp_path / "archive").mkdir()
    result = await run_cli(settings, "db", "restore", "--from", str(backup_dir), "--archive", str(tmp_path / "archive"),
                           "--to", str(tmp_path / "restored"), "--name", "before-0011", "--json")
    assert result.code == 0, result.stderr
    assert result.json["target_name"] == "before-0011"
    assert "recovery_target_name = 'before-0011'" in (tmp_path / "restored" / "postgresql.auto.conf").read_text()
    assert (await run_cli(settings, "ledger", "check")).code == 1  # the others do connect


async def test_a_backup_into_a_directory_in_use_exits_2(cli, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep").write_text("mine")
    result = await cli("db", "backup", "--to", str(tmp_path / "used"))
    assert result.code == 2 and "must be a new or empty directory" in result.stderr.splitlines()[-1]
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep"]


async def test_a_backup_that_pg_basebackup_cannot_take_exits_1(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "no-postgresql-here"))
    result = await cli("db", "backup", "--to", str(tmp_path / "base"))
    assert result.code == 1 and "pg_basebackup not found" in result.stderr.splitlines()[-1], result.stderr
    assert not (tmp_path / "base").exists()


# -- how commands connect ----------------------------------------------------------------------

@pytest.fixture
async def frozen_host() -> AsyncIterator[str]:
    """A TCP port that accepts connections and never says a word (a frozen server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture
async def tcp_host(db_url: str) -> AsyncIterator[str]:
    """The test's PostgreSQL (a unix socket) on a TCP port of 127.0.0.1, byte for byte."""
    socket_dir = urllib.parse.parse_qs(urllib.parse.urlsplit(db_url).query)["host"][0]
    socket_path = next(Path(socket_dir).glob(".s.PGSQL.*[0-9]"))
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_unix_connection(str(socket_path))
        for task in (pipe(reader, server_writer), pipe(server_reader, writer)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for task in tasks:
        task.cancel()


async def test_a_command_goes_past_a_frozen_first_host_within_connect_timeout(db_url, tmp_path, frozen_host,
                                                                               tcp_host):
    """Both hosts in one URL, the first frozen: the command connects host by host and runs on the
    second, within about connect_timeout; asyncpg alone sends connect_timeout to the server (and fails)."""
    url = f"postgresql://postgres@{frozen_host},{tcp_host}/{database_name(db_url)}?connect_timeout=1"
    started = time.monotonic()
    result = await run_cli(make_settings(url, tmp_path), "ledger", "check", "--json")
    took_s = time.monotonic() - started
    assert result.code == 0 and result.json["ok"] is True, result.stderr
    assert 1.0 <= took_s < 5.0, took_s  # the frozen host's second, then the second host at once


async def test_a_command_that_reaches_no_host_exits_1_naming_each(db_url, tmp_path, frozen_host):
    url = f"postgresql://postgres@{frozen_host},127.0.0.1:{free_port()}/{database_name(db_url)}?connect_timeout=0.5"
    result = await run_cli(make_settings(url, tmp_path), "ledger", "check")
    last = result.stderr.splitlines()[-1]
    assert result.code == 1 and "no host accepted the connection" in last, result.stderr
    assert "host 1: TimeoutError" in last and "host 2: ConnectionRefusedError" in last

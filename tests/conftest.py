"""Shared fixtures: a real PostgreSQL, a fresh database per test, a gateway on a
real TCP socket, and the operator CLI.

The database is ``POSGW_DATABASE_URL`` when set (its user must be allowed to
create databases), else an embedded PostgreSQL started for the session. Each
test that asks for ``db_url`` gets its own database, cloned from a template
migrated once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from deploy.cluster import find_tool
from gateway.cli.main import main as cli_main
from gateway.db.migrate import migrate
from gateway.logs import configure as configure_logs
from gateway.server.app import Gateway, build_services
from gateway.settings import Settings

TEST_LMK = "2B7E151628AED2A6ABF7158809CF4F3C"
TEMPLATE_DB = "posgw_template"
VECTORS_DIR = Path(__file__).resolve().parents[2] / "shared" / "vectors"
_db_numbers = itertools.count(1)

configure_logs("warning", "json")


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("POSGW_DATABASE_URL")
    if url:
        yield url
        return
    from gateway.db.pool import embedded_server

    server = embedded_server(tmp_path_factory.mktemp("posgw-data"))
    yield server.get_uri()
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)


@pytest.fixture(scope="session")
async def template_db(pg_admin_url: str) -> str:
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(pg_admin_url, TEMPLATE_DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def db_url(pg_admin_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"posgw_test_{os.getpid()}_{next(_db_numbers)}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    yield with_database(pg_admin_url, name)
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


def make_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "lmk": TEST_LMK,
        "db_pool_min": 1,
        "db_pool_max": 8,
        "shutdown_grace_s": 2.0,
        "risk_enabled": False,  # tests of other features run without the risk rules (CLI.md)
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    services = await build_services(settings)
    gateway = Gateway(settings, services)
    await gateway.start("127.0.0.1", 0, 0)
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with running_gateway(settings) as gw:
        yield gw


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(settings: Settings):
    """Run ``posgw ARGS`` in-process against the test database."""

    async def run(*argv: str) -> CliResult:
        def call() -> CliResult:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(list(argv), settings)
            return CliResult(code, out.getvalue(), err.getvalue())

        return await asyncio.to_thread(call)

    return run


@dataclass
class TerminalWorld:
    tid: str
    mid: str
    tmk: bytes
    agent: str


TEST_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@pytest.fixture
async def world(cli) -> TerminalWorld:
    """One agent, one merchant, one terminal, registered through the CLI."""
    for argv in (
        ("agent", "add", "AG01", "--name", "Test Agent"),
        ("merchant", "add", "MERCHANT0000001", "--name", "Test Shop", "--agent", "AG01"),
        ("terminal", "add", "TERM0001", "--merchant", "MERCHANT0000001", "--tmk", TEST_TMK.hex()),
    ):
        result = await cli(*argv)
        assert result.code == 0, result.stderr
    return TerminalWorld("TERM0001", "MERCHANT0000001", TEST_TMK, "AG01")


# -- tests that need a tool outside Python -----------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_tools(*names): the test runs programs (haproxy, prometheus, ...) that "
        "`make test` installs (deploy/test-tools.sh); missing, it skips, or fails under CI=true")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("needs_tools")
    if marker is None:
        return
    missing = [name for name in marker.args if find_tool(name) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed (make test installs them: deploy/test-tools.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)

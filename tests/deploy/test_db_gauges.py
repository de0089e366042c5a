"""The database gauges of /metrics (gateway.server.db_gauges), scraped for real:
on the test PostgreSQL (a primary with no standby), with the pool held busy, with
the database gone, and on a real primary and streaming standby built here with
pg_basebackup (the pair of issue 27 in miniature: its replay paused to make lag)."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from pgserver._commands import POSTGRES_BIN_PATH, pg_basebackup, pg_ctl  # pgserver's binaries, run as its user

from gateway.db.migrate import migrate
from gateway.db.pool import embedded_server
from gateway.server import db_gauges
from tests.conftest import make_settings, running_gateway
from tests.e2e.test_observability import Samples, eventually, scrape, value

STANDBY_NAME = "standby1"  # its cluster_name, hence its application_name in pg_stat_replication


def gauge(samples: Samples, name: str) -> float:
    assert (name, frozenset()) in samples, f"{name} not on /metrics"
    return value(samples, name)


# -- a primary with no standby ------------------------------------------------------------------

async def test_a_primary_without_standbys_and_an_idle_pool(gateway, settings):
    samples = await scrape(gateway.metrics_port)
    assert gauge(samples, "posgw_db_primary") == 1
    assert gauge(samples, "posgw_db_standbys") == 0
    assert gauge(samples, "posgw_db_sync_standbys") == 0
    assert math.isnan(gauge(samples, "posgw_db_replication_lag_bytes"))  # no standby: no lag to speak of
    assert math.isnan(gauge(samples, "posgw_db_replication_lag_seconds"))
    assert gauge(samples, "posgw_db_pool_connections_max") == settings.db_pool_max == 8
    assert 1 <= gauge(samples, "posgw_db_pool_connections") <= 8
    assert gauge(samples, "posgw_db_pool_connections_in_use") == 0
    assert 0 <= gauge(samples, "posgw_db_pool_acquire_seconds") < 0.5


async def test_a_pool_held_busy_shows_every_connection_in_use_and_the_wait_for_one(gateway, settings):
    pool = gateway.services.pool
    held = [await pool.acquire() for _ in range(settings.db_pool_max)]
    try:
        scraping = asyncio.create_task(scrape(gateway.metrics_port))
        await asyncio.sleep(0.6)  # the scrape's reads queue for a connection meanwhile
        assert not scraping.done()
        for conn in held[:1]:
            await pool.release(conn)
        samples = await scraping
    finally:
        for conn in held[1:]:
            await pool.release(conn)
    assert gauge(samples, "posgw_db_pool_connections_in_use") == settings.db_pool_max
    assert gauge(samples, "posgw_db_pool_connections") == settings.db_pool_max
    assert 0.5 <= gauge(samples, "posgw_db_pool_acquire_seconds") < 2.0
    assert gauge(samples, "posgw_db_primary") == 1  # it got a connection within the 2 s


async def test_no_answer_in_time_reads_as_no_primary_and_the_scrape_still_succeeds(gateway, settings):
    pool = gateway.services.pool
    assert gauge(await scrape(gateway.metrics_port), "posgw_db_primary") == 1
    held = [await pool.acquire() for _ in range(settings.db_pool_max)]
    try:
        started_s = time.monotonic()
        samples = await scrape(gateway.metrics_port)
        assert time.monotonic() - started_s < 3.5  # within Prometheus's scrape_timeout (4 s)
    finally:
        for conn in held:
            await pool.release(conn)
    assert gauge(samples, "posgw_db_primary") == 0
    assert gauge(samples, "posgw_db_standbys") == 0  # the last value, kept
    assert gauge(samples, "posgw_db_pool_acquire_seconds") >= 1.9  # waited out the 2 s
    assert gauge(await scrape(gateway.metrics_port), "posgw_db_primary") == 1


# -- a real pair ------------------------------------------------------------------------------

@dataclass
class Pair:
    primary_url: str
    standby_url: str
    primary_pgdata: Path
    user: str | None
    base: Path  # a directory both the tests and the servers' user can write in


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A primary (pgserver's) and a standby streaming from it, synchronous (the issue's pair),
    on unix sockets in short temporary directories; both stopped at the end."""
    base = Path(tempfile.mkdtemp(prefix="posgw-pair-"))
    base.chmod(0o755)
    server = embedded_server(base / "primary")
    user = server.system_user
    standby, socket_dir = base / "standby", Path(tempfile.mkdtemp(prefix="posgw-sb-"))
    socket_dir.chmod(0o777)
    standby.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(standby, user)
    try:
        pg_basebackup(["-D", str(standby), "-R", "-X", "stream", "-U", "postgres",
                       "-h", str(server.get_postmaster_info().socket_dir)], user=user)
        pg_ctl(["-w", "-l", str(standby / "log"), "-o", f'-h "" -k {socket_dir} -c cluster_name={STANDBY_NAME}',
                "start"], pgdata=standby, user=user)
        yield Pair(server.get_uri(), f"postgresql://postgres:@/postgres?host={socket_dir}", server.pgdata, user, base)
    finally:
        for pgdata in (standby, server.pgdata):
            try:
                pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)
            except subprocess.CalledProcessError:
                pass  # not running
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.slow
async def test_a_synchronous_standby_its_lag_and_the_standby_itself(pair, tmp_path):
    primary = await asyncpg.connect(pair.primary_url)
    standby = await asyncpg.connect(pair.standby_url)
    try:
        await migrate(primary)
        await primary.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        await primary.execute("SELECT pg_reload_conf()")
        async with running_gateway(make_settings(pair.primary_url, tmp_path)) as gateway:
            async def synchronous() -> Samples | None:
                samples = await scrape(gateway.metrics_port)
                return samples if gauge(samples, "posgw_db_sync_standbys") == 1 else None

            # pg_receivewal streams the WAL too, and is no standby: it replays nothing
            wal_dir = pair.base / "wal"
            wal_dir.mkdir(mode=0o700)
            if pair.user is not None:
                shutil.chown(wal_dir, pair.user)
            receiver = subprocess.Popen([str(POSTGRES_BIN_PATH / "pg_receivewal"), "-D", str(wal_dir), "--no-loop",
                                         "-d", pair.primary_url], user=pair.user,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                await eventually(lambda: primary.fetchval("SELECT count(*) = 2 FROM pg_stat_replication"), 10,
                                 "pg_receivewal streaming")
                samples = await eventually(synchronous, 10, "the standby synchronous")
            finally:
                receiver.terminate()
                receiver.wait(10)
            assert gauge(samples, "posgw_db_primary") == 1
            assert gauge(samples, "posgw_db_standbys") == 1

            # Replay paused, commits still return (synchronous_commit on waits for the flush,
            # not the replay): the WAL of a 2 MB table is written and not replayed.
            await standby.execute("SELECT pg_wal_replay_pause()")
            await primary.execute("CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad "
                                  "FROM generate_series(1, 10000) AS g")
            await asyncio.sleep(0.3)
            samples = await scrape(gateway.metrics_port)
            assert gauge(samples, "posgw_db_replication_lag_bytes") > 1_000_000
            assert gauge(samples, "posgw_db_replication_lag_seconds") > 0

            await standby.execute("SELECT pg_wal_replay_resume()")

            async def caught_up() -> bool:
                return gauge(await scrape(gateway.metrics_port), "posgw_db_replication_lag_bytes") == 0

            await eventually(caught_up, 10, "the standby caught up")
        # The standby knows it is one: no primary there, no standbys of its own.
        replication = await db_gauges.read_replication(standby)
        assert replication == db_gauges.Replication(primary=False, standbys=0, sync_standbys=0,
                                                    lag_bytes=None, lag_s=None)
    finally:
        await primary.close()
        await standby.close()


@pytest.mark.slow
async def test_the_primary_stopped_reads_as_no_primary_and_the_scrape_still_succeeds(pair, tmp_path):
    conn = await asyncpg.connect(pair.primary_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    async with running_gateway(make_settings(pair.primary_url, tmp_path)) as gateway:
        samples = await scrape(gateway.metrics_port)
        assert gauge(samples, "posgw_db_primary") == 1
        assert gauge(samples, "posgw_db_standbys") == 1
        await asyncio.to_thread(pg_ctl, ["-w", "-m", "immediate", "stop"], pgdata=pair.primary_pgdata, user=pair.user)
        samples = await scrape(gateway.metrics_port)
        assert gauge(samples, "posgw_db_primary") == 0
        assert gauge(samples, "posgw_db_standbys") == 1  # the last value read, kept

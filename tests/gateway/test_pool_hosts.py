"""The pool over a multi-host URL: host by host, each within its own timeout
(that a frozen first host does not starve the second is tested against the
pair: tests/e2e/test_failover.py); and a pooled connection whose server went
is replaced, not handed out broken."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.db.pool import (
    HOST_CONNECT_TIMEOUT_S,
    HostByHost,
    connect,
    create_pool,
    fetchval_retrying,
    split_hosts,
)
from tests.conftest import make_settings


def test_a_multi_host_url_splits_into_one_url_per_host_with_the_rest_kept():
    urls, timeout_s = split_hosts("postgresql://posgw:s3cret@10.0.0.1:5432,10.0.0.2:6432/posgw"
                                  "?target_session_attrs=read-write&connect_timeout=3")
    assert urls == ["postgresql://posgw:s3cret@10.0.0.1:5432/posgw?target_session_attrs=read-write",
                    "postgresql://posgw:s3cret@10.0.0.2:6432/posgw?target_session_attrs=read-write"]
    assert timeout_s == 3.0


def test_a_single_host_url_is_one_url_and_the_default_timeout():
    assert split_hosts("postgresql://u@h/db") == (["postgresql://u@h/db"], HOST_CONNECT_TIMEOUT_S)


@pytest.fixture
async def frozen_host():
    """A TCP port that accepts connections and never says a word (a frozen server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()


async def test_no_host_answering_is_a_connection_error_naming_each_host(frozen_host):
    connect = HostByHost(f"postgresql://u@{frozen_host},127.0.0.1:1/db?connect_timeout=0.2")
    with pytest.raises(ConnectionError, match=r"host 1: TimeoutError.*host 2: ConnectionRefusedError"):
        await connect()


async def test_pooled_connections_whose_backends_were_terminated_are_replaced(db_url, tmp_path):
    pool = await create_pool(make_settings(db_url, tmp_path, db_pool_min=3, db_pool_max=3))
    try:
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            pids = [await conn.fetchval("SELECT pg_backend_pid()") for conn in (a, b, c)]
        admin = await asyncpg.connect(db_url)
        try:
            for pid in pids:  # each gets the server's FATAL while idle in the pool
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        for _ in range(6):
            pid = await fetchval_retrying(pool, "SELECT pg_backend_pid()")
            assert pid not in pids
    finally:
        await pool.close()


async def test_connect_takes_a_url_with_connect_timeout_which_asyncpg_alone_would_send_as_a_setting(db_url):
    url = db_url + ("&" if "?" in db_url else "?") + "connect_timeout=3"
    with pytest.raises(asyncpg.PostgresError, match="connect_timeout"):
        await asyncpg.connect(url)  # why the CLI must connect through gateway.db.pool.connect
    conn = await connect(url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()

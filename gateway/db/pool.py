"""Where the database is, and the asyncpg pool.

With ``POSGW_DATABASE_URL`` the gateway uses that server. Without it, every
``posgw`` command shares one embedded PostgreSQL (pgserver) whose files live
under ``<data dir>/pg``: the first command starts it, the others find it
running (pgserver coordinates through the data directory), and it keeps
running after they exit so that ``serve`` and the CLI can run side by side.
``posgw db stop`` stops it.

A URL may name several hosts (a primary and its standby:
``postgresql://posgw@10.0.0.1:5432,10.0.0.2:5432/posgw?target_session_attrs=read-write``).
The pool then connects host by host, each within ``connect_timeout`` seconds
(libpq's meaning: per host; default ``HOST_CONNECT_TIMEOUT_S``), starting with
the host that last gave a connection, and keeps the first that accepts writes:
after a failover it finds the new primary by itself. asyncpg's own multi-host
connect does not do: its timeout covers the whole list, so a first host that
does not answer (frozen, not refusing) starves the others.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from gateway.settings import Settings

EMBEDDED_DIR = "pg"
HOST_CONNECT_TIMEOUT_S = 2.0  # each host of a multi-host URL, unless the URL says connect_timeout
# What a connection that has gone (the server's FATAL, a reset socket) raises:
# asyncpg's InternalClientError (after a FATAL on an idle connection) is
# neither an InterfaceError nor a PostgresError.
CONNECTION_LOST = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                   asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)


def _pgserver():  # -> the pgserver module
    """pgserver, imported only when needed (never with a URL), quietly."""
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, harmless
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


def embedded_server(data_dir: Path):  # -> pgserver.PostgresServer
    pgserver = _pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(data_dir.resolve() / EMBEDDED_DIR, cleanup_mode=None)


def database_url(settings: Settings) -> str:
    """The URL to connect to, starting the embedded server when needed."""
    if settings.database_url:
        return settings.database_url
    return embedded_server(settings.data_dir).get_uri()


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    import subprocess

    _pgserver()
    from pgserver._commands import pg_ctl

    pgdata = settings.data_dir.resolve() / EMBEDDED_DIR
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = embedded_server(settings.data_dir)
    try:
        pg_ctl(["-w", "stop"], pgdata=pgdata, user=server.system_user)
    except subprocess.CalledProcessError:
        return False
    return True


def split_hosts(url: str) -> tuple[list[str], float]:
    """One URL per host of ``url`` (user, password, database and parameters
    kept), and the per-host connect timeout (``connect_timeout``, taken out of
    the URLs: PostgreSQL would take it for a server setting)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    timeout_s = HOST_CONNECT_TIMEOUT_S
    kept = []
    for name, value in query:
        if name == "connect_timeout":
            timeout_s = float(value)
        else:
            kept.append((name, value))
    userinfo, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    urls = [urllib.parse.urlunsplit(parts._replace(netloc=prefix + host, query=urllib.parse.urlencode(kept)))
            for host in hosts.split(",")]
    return urls, timeout_s


class HostByHost:
    """asyncpg's ``connect`` for a pool over a multi-host URL: each host in
    turn within its own timeout, the one that last served first."""

    def __init__(self, url: str) -> None:
        self.urls, self.timeout_s = split_hosts(url)
        self.preferred = 0  # index of the host that gave the last connection

    async def __call__(self, _dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        order = [(self.preferred + i) % len(self.urls) for i in range(len(self.urls))]
        kwargs.pop("timeout", None)
        failures: list[str] = []
        for index in order:
            try:
                conn = await asyncpg.connect(self.urls[index], timeout=self.timeout_s, **kwargs)
            except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:  # refused, frozen, a standby, starting up
                failures.append(f"host {index + 1}: {type(exc).__name__}: {exc}")
                continue
            self.preferred = index
            return conn
        raise ConnectionError("no host accepted the connection: " + "; ".join(failures))


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection, as the pool makes them: host by host over a multi-host URL
    (``connect_timeout`` understood), else asyncpg's own connect. For commands
    that connect once (``posgw db migrate``, ``ledger check``)."""
    if url.startswith(("postgres://", "postgresql://")):
        urls, _timeout_s = split_hosts(url)
        if len(urls) > 1 or "connect_timeout=" in url:
            return await HostByHost(url)(**kwargs)
    return await asyncpg.connect(url, **kwargs)


async def fetchval_retrying(pool: asyncpg.Pool, query: str, *args: Any, timeout_s: float | None = None) -> Any:
    """A read that changes nothing, run once more on a fresh connection when
    the first fails because its connection had gone (a pooled connection whose
    server was lost raises only when used). Never for a statement that writes:
    after such a failure its outcome is unknown."""
    try:
        return await pool.fetchval(query, *args, timeout=timeout_s)
    except CONNECTION_LOST:
        return await pool.fetchval(query, *args, timeout=timeout_s)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset on release: the gateway keeps no session state (its locks are
    transaction-scoped), and asyncpg's default reset costs a round trip."""


def host_by_host(dsn: str) -> HostByHost | None:
    """The ``connect`` of a pool over ``dsn``: host by host over a multi-host URL,
    else None (asyncpg's own)."""
    hosts = split_hosts(dsn)[0] if dsn.startswith(("postgres://", "postgresql://")) else [dsn]
    return HostByHost(dsn) if len(hosts) > 1 else None


async def create_pool(settings: Settings, url: str | None = None,
                      init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> asyncpg.Pool:
    """The pool; ``init`` runs once on each connection it opens, before its first use.
    Over a multi-host URL it connects host by host (``HostByHost``)."""
    dsn = url or database_url(settings)
    return await asyncpg.create_pool(
        dsn,
        connect=host_by_host(dsn),
        min_size=settings.db_pool_min,
        max_size=max(settings.db_pool_min, settings.db_pool_max),
        command_timeout=settings.db_command_timeout_s,
        reset=_keep_session,
        init=init,
        # Every statement of the gateway looks rows up by key: one generic plan
        # serves all, where PostgreSQL's default re-plans some on every call
        # (measured: the request context query, 675 us re-planned, 264 us generic).
        server_settings={"plan_cache_mode": "force_generic_plan"},
    )

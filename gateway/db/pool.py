"""Where the database is, and the asyncpg pool.

With ``POSGW_DATABASE_URL`` the gateway uses that server. Without it, every
``posgw`` command shares one embedded PostgreSQL (pgserver) whose files live
under ``<data dir>/pg``: the first command starts it, the others find it
running (pgserver coordinates through the data directory), and it keeps
running after they exit so that ``serve`` and the CLI can run side by side.
``posgw db stop`` stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from gateway.settings import Settings

EMBEDDED_DIR = "pg"


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset on release: the gateway keeps no session state (its locks are
    transaction-scoped), and asyncpg's default reset costs a round trip."""


async def create_pool(settings: Settings, url: str | None = None,
                      init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> asyncpg.Pool:
    """The pool; ``init`` runs once on each connection it opens, before its first use."""
    return await asyncpg.create_pool(
        url or database_url(settings),
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

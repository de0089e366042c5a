"""``posgw web [--host H] [--port P] [--demo-admin]``: the back office (gateway.backoffice),
a process of its own over the same database (CLI.md, "The back office")."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
from collections.abc import Iterator

import uvicorn

from gateway.backoffice.app import create_app
from gateway.cli.common import Subcommands, add_command
from gateway.db.migrate import check_migrated
from gateway.db.pool import connect, database_url
from gateway.services.users import add_user, user_exists
from gateway.settings import Settings

EXIT_OK = 0
DEMO_ADMIN = "admin"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


async def ensure_demo_admin(settings: Settings, actor: str) -> str | None:
    """Add the user ``admin`` (role admin) with a new random password, unless it exists;
    return the password (to be printed once), or None when the user was there already."""
    conn = await connect(database_url(settings), timeout=settings.db_command_timeout_s)
    try:
        await check_migrated(conn)
        async with conn.transaction():
            if await user_exists(conn, DEMO_ADMIN):
                return None
            password = secrets.token_urlsafe(12)
            await add_user(conn, actor, DEMO_ADMIN, "admin", None, password)
            return password
    finally:
        await conn.close()


def web(args: argparse.Namespace, settings: Settings, actor: str) -> int:
    host = args.host or DEFAULT_HOST
    port = DEFAULT_PORT if args.port is None else args.port
    if args.demo_admin:
        password = asyncio.run(ensure_demo_admin(settings, actor))
        if password is not None:
            print(f"back office: user {DEMO_ADMIN}, password {password} (shown this once)", flush=True)
    print(f"back office: open http://{host}:{port}/", flush=True)
    server = DrainingServer(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning",
                                           access_log=False, proxy_headers=False, server_header=False))
    asyncio.run(server.serve())
    return EXIT_OK


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but SIGTERM and SIGINT drain and exit 0 (as ``posgw serve`` does), where
    uvicorn raises the signal again after its graceful shutdown (the process then dies of it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def register(groups: Subcommands) -> None:
    p = add_command(groups, "web", None, json_flag=False, help="run the back office (web console, agent portal)")
    p.add_argument("--host", help=f"default {DEFAULT_HOST}")
    p.add_argument("--port", type=int, help=f"default {DEFAULT_PORT}")
    p.add_argument("--demo-admin", action="store_true",
                   help=f"first add the user {DEMO_ADMIN} with a random password, printed once (make run)")

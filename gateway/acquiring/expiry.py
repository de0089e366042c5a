"""The expiry of pre-authorizations' holds (WIRE.md 9.3, 9.9), done by the
gateway itself: a background task of ``posgw serve``. A hold expires at its
approval time plus ``preauth_hold_days`` × 24 h whether or not anything looks
at it (a request finding it later sees it expired too: the ledger expires a
hold it is asked to resolve after its time). Several gateways sharing one
database each run the task; a transaction-level advisory lock lets one of
them expire at a time, and the rows it expires are locked and skipped by any
other (SKIP LOCKED), so each hold expires once."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from gateway.settings import Settings

log = structlog.get_logger("posgw.expiry")

EXPIRY_LOCK_KEY = 0x706F7368  # advisory lock of an expiry round, across gateways
EXPIRY_INTERVAL_S = 30.0  # between rounds (a round that expired a full batch runs again at once)
EXPIRY_BATCH_MAX = 500  # pre-authorizations expired per transaction


async def expire_due(pool: asyncpg.Pool | asyncpg.Connection, now: datetime | None = None,
                     limit: int = EXPIRY_BATCH_MAX) -> int | None:
    """One round: the pre-authorizations due at ``now`` (default: the database's
    clock) expired, up to ``limit``; how many, or None when another gateway holds
    the round's lock."""
    async with _connection(pool) as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_KEY):
            return None
        if now is None:
            return await conn.fetchval("SELECT gw_expire_preauths(now(), $1)", limit)
        return await conn.fetchval("SELECT gw_expire_preauths($1, $2)", now, limit)


class _connection:
    """A pool's connection for the block, or the connection given."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self.pool = pool
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self.pool, asyncpg.Connection):
            return self.pool
        self.conn = await self.pool.acquire()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.pool.release(self.conn)


async def expire_holds(pool: asyncpg.Pool, settings: Settings, interval_s: float = EXPIRY_INTERVAL_S) -> None:
    """The background task: a round every ``interval_s`` until cancelled (the first
    after ``interval_s``, so that a starting gateway's pool serves terminals first);
    a failed round (the database away) is logged and the next one tries again."""
    while True:
        await asyncio.sleep(interval_s)
        expired = EXPIRY_BATCH_MAX
        while expired == EXPIRY_BATCH_MAX:  # a full round: more may be due
            try:
                expired = await expire_due(pool, settings.now())  # clock_offset_s included (CLI.md, Time)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the task die: the next round tries again
                log.warning("preauth_expiry_failed", error=f"{type(exc).__name__}: {exc}")
                break
            if expired:
                log.info("preauths_expired", count=expired)

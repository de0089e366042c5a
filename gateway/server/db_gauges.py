"""The database gauges an operator alerts on, read when /metrics is scraped:
whether the pool reaches a primary, the standbys streaming from it and how far
behind the furthest one is, and how busy the pool is.

All cheap: one query on one pooled connection (``pg_is_in_recovery`` and
``pg_stat_replication``, a handful of rows at most) and asyncpg's own counters.
A failed or slow read (``timeout_s``) sets ``posgw_db_primary`` to 0, since no
primary answered, and keeps the last value of the others, as the other gauges
read from the database do (``gateway.metrics``).

Reading ``pg_stat_replication``'s LSN and lag columns takes a superuser or a
member of ``pg_monitor``; for another role they are NULL and the lag gauges
read NaN, as with no standby at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import asyncpg
import structlog

from gateway import metrics

log = structlog.get_logger("posgw.metrics")

# One row whatever the number of standbys. A standby is a walsender whose client
# replays: pg_receivewal and pg_basebackup stream too but replay nothing (their
# replay_lsn is NULL), and are not counted. pg_current_wal_lsn() fails during
# recovery: the CASE evaluates it only for a standby's row, and a standby has none
# in pg_stat_replication (no cascading here). replay_lag is NULL once a standby
# has caught up and no WAL is coming: that is no lag.
REPLICATION_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       count(r.pid) FILTER (WHERE r.state = 'streaming') AS standbys,
       count(r.pid) FILTER (WHERE r.state = 'streaming' AND r.sync_state IN ('sync', 'quorum')) AS sync_standbys,
       max(CASE WHEN r.pid IS NOT NULL THEN pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) END) AS lag_bytes,
       max(extract(epoch FROM coalesce(r.replay_lag, interval '0'))) FILTER (WHERE r.pid IS NOT NULL) AS lag_s
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_replication AS r ON r.replay_lsn IS NOT NULL
"""


@dataclass(frozen=True)
class Replication:
    """What the database behind the pool says of itself; lags are None with no standby (or no right to see)."""

    primary: bool
    standbys: int
    sync_standbys: int
    lag_bytes: float | None
    lag_s: float | None


@dataclass(frozen=True)
class PoolUsage:
    connections: int
    in_use: int
    max_size: int


async def read_replication(conn: asyncpg.Connection) -> Replication:
    row = await conn.fetchrow(REPLICATION_QUERY)
    lag_bytes, lag_s = row["lag_bytes"], row["lag_s"]
    return Replication(
        primary=not row["in_recovery"], standbys=row["standbys"], sync_standbys=row["sync_standbys"],
        lag_bytes=None if lag_bytes is None else float(lag_bytes), lag_s=None if lag_s is None else float(lag_s))


def pool_usage(pool: asyncpg.Pool) -> PoolUsage:
    """asyncpg's counters: connections open, of which not idle, and the maximum."""
    size = pool.get_size()
    return PoolUsage(connections=size, in_use=size - pool.get_idle_size(), max_size=pool.get_max_size())


def record_pool_usage(pool: asyncpg.Pool) -> None:
    """Set the pool gauges; call it before the scrape's own reads take connections."""
    usage = pool_usage(pool)
    metrics.DB_POOL_CONNECTIONS.set(usage.connections)
    metrics.DB_POOL_CONNECTIONS_IN_USE.set(usage.in_use)
    metrics.DB_POOL_CONNECTIONS_MAX.set(usage.max_size)


def record_replication(replication: Replication) -> None:
    metrics.DB_PRIMARY.set(1 if replication.primary else 0)
    metrics.DB_STANDBYS.set(replication.standbys)
    metrics.DB_SYNC_STANDBYS.set(replication.sync_standbys)
    metrics.DB_REPLICATION_LAG_BYTES.set(math.nan if replication.lag_bytes is None else replication.lag_bytes)
    metrics.DB_REPLICATION_LAG_SECONDS.set(math.nan if replication.lag_s is None else replication.lag_s)


async def _acquire_and_read(pool: asyncpg.Pool, acquired: list[float]) -> Replication:
    started_s = time.perf_counter()
    async with pool.acquire() as conn:
        acquired.append(time.perf_counter() - started_s)
        return await read_replication(conn)


async def refresh(pool: asyncpg.Pool, timeout_s: float) -> None:
    """Time the wait for a connection, read the replication state on it, set the gauges.
    Never raises: a failure is logged and leaves ``posgw_db_primary`` at 0."""
    acquired: list[float] = []
    started_s = time.perf_counter()
    try:
        replication = await asyncio.wait_for(_acquire_and_read(pool, acquired), timeout_s)
    except Exception as exc:  # never fail the scrape
        metrics.DB_PRIMARY.set(0)
        # no connection: the time until the acquire gave up (timeout_s) or failed (refused)
        metrics.DB_POOL_ACQUIRE_SECONDS.set(acquired[0] if acquired else time.perf_counter() - started_s)
        log.warning("metrics_refresh_failed", metric="db_replication", error=str(exc) or type(exc).__name__)
        return
    metrics.DB_POOL_ACQUIRE_SECONDS.set(acquired[0])
    record_replication(replication)

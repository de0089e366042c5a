"""The daily runs of ``posgw serve`` (CLI.md `agent run`: "by itself in posgw serve
shortly after the local day ends, once across all gateways"; `payout run`: "once
per date, after that day's agent run").

A task of every gateway: every ``DAILY_INTERVAL_S`` it looks for local days that
are due (over for ``RUN_GRACE_S``, gateway.jobs.agent_run) and not run, and runs
each, in order: the agent run of the day (which first runs every earlier day
not yet run finally), then the payout run of the day. Days not run are those
after the last day with a payout run; on a system with none, from the first
day of the agent network's policies (or only the last due day, without any).
At most ``CATCH_UP_DAYS_MAX`` days at a time, so a start after a long stop works
through the backlog turn by turn.

Once across gateways: the gateway holding the session advisory lock
``DAILY_LOCK_KEY`` runs the days; the others skip their turn. Each day's agent
run and payout run are exactly once by themselves (their own keys and locks),
so a gateway killed half-way leaves nothing half done, and the next turn of any
gateway, or the next start, catches up every day not run. Its clock is the
settings' (``clock_offset_s``: CLI.md, Time).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from gateway.jobs import payouts as payout_jobs
from gateway.jobs.agent_run import day_bounds, is_final
from gateway.services import agents as agent_services
from gateway.settings import Settings

log = structlog.get_logger("posgw.daily")

DAILY_LOCK_KEY = 0x6461696C  # held by the one gateway running the day's runs
DAILY_FIRST_DELAY_S = 5.0  # after start: terminals first, then the catch-up
DAILY_INTERVAL_S = 60.0
CATCH_UP_DAYS_MAX = 31
ACTOR = "system:scheduler"


def last_due_day(now: datetime, settings: Settings) -> date:
    """The latest local day over for at least the run's grace at ``now``."""
    day = now.astimezone(settings.tz).date() - timedelta(days=1)
    return day if is_final(day_bounds(day, settings.tz), now) else day - timedelta(days=1)


async def days_not_run(conn: asyncpg.Connection, last_due: date) -> list[date]:
    """The days through ``last_due`` after the last payout run (none: from the first policy
    day, or ``last_due`` alone), at most ``CATCH_UP_DAYS_MAX`` of them, oldest first."""
    first = await conn.fetchval(
        """SELECT coalesce((SELECT max(payout_date) + 1 FROM payout_runs),
                           least($1::date, (SELECT min(from_day) FROM agent_policies)), $1::date)""", last_due)
    days = [first + timedelta(days=n) for n in range((last_due - first).days + 1)]
    return days[:CATCH_UP_DAYS_MAX]


async def run_due(pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None) -> list[dict[str, Any]] | None:
    """One turn: each due day not run gets its agent run, then its payout run. Returns what
    was run (``date``, ``agent``: the run's totals, ``payouts``: the payout run's), or None
    when another gateway holds the turn."""
    now = now or settings.now()
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", DAILY_LOCK_KEY):
            return None
        try:
            done = []
            for day in await days_not_run(conn, last_due_day(now, settings)):
                totals = await agent_services.run_day(conn, ACTOR, settings, day, now=now)
                paid = await payout_jobs.run(conn, ACTOR, settings, day, now=now)
                log.info("daily_run", date=day.isoformat(), shares_fen=totals["shares_fen"],
                         payouts=paid["count"], payouts_fen=paid["total_fen"])
                done.append({"date": day.isoformat(), "agent": totals, "payouts": paid})
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", DAILY_LOCK_KEY)


async def run_daily(pool: asyncpg.Pool, settings: Settings, *, first_delay_s: float = DAILY_FIRST_DELAY_S,
                    interval_s: float = DAILY_INTERVAL_S) -> None:
    """The task ``posgw serve`` starts (and cancels when it stops): a turn after
    ``first_delay_s``, then every ``interval_s``; a failed turn (the database away,
    a run refused) is logged and the next one tries again."""
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            await run_due(pool, settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the task must outlive one bad turn; the run rolled back
            log.warning("daily_run_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval_s)

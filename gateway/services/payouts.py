"""Money out (T+1) as calls with an actor: the payout run of a date and the bank's
answer (gateway.jobs.payouts does the work; CLI.md "Money out").

Neither is a person's edit of one entity: the run is the daily job that moves
every merchant's money at once, and a confirmation is the bank's input. So
each is audited as one record for the whole of it, not one per merchant or
payout (whose movements the ledger and the ``payouts`` table hold):

- ``payout.run`` on ``payout:<date>``: ``{}`` before, the run's ``date``,
  ``count``, ``total_fen`` and the number ``skipped`` after. A rerun changes
  nothing and writes no record.
- ``payout.confirm`` on ``payout:<file name>``: ``{}`` before, the file's name
  and SHA-256 and the counts ``paid``, ``returned``, ``unchanged`` (and the
  ``conflicts``) after; a file that changes nothing (applied again) writes none.

No record holds a bank account number: neither has one to hold.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any

import asyncpg

from gateway.jobs import payouts
from gateway.services.audit import State, record_many
from gateway.settings import Settings

# One audited payout run at a time, so that the state before it is read after any
# concurrent run has finished (the job takes a lock of its own inside this one).
_AUDITED_RUN_LOCK_KEY = 0x706F7572


def run_entity(day: date) -> str:
    return f"payout:{day.isoformat()}"


def confirm_entity(file_name: str) -> str:
    return f"payout:{file_name}"


async def run_state(conn: asyncpg.Connection, day: date) -> State:
    """What the run of ``day`` did: ``date``, ``count``, ``total_fen``, ``skipped`` (how many); None before it ran."""
    row = await conn.fetchrow(
        """SELECT payouts, total_fen, jsonb_array_length(skipped) AS skipped FROM payout_runs
            WHERE payout_date = $1""", day)
    if row is None:
        return None
    return {"date": day.isoformat(), "count": row["payouts"], "total_fen": row["total_fen"],
            "skipped": row["skipped"]}


async def run_payouts(conn: asyncpg.Connection, actor: str, settings: Settings, day: date, *,
                      now: datetime | None = None) -> dict[str, Any]:
    """``posgw payout run --date D`` (``payouts.run_payouts``): the run's ``date``, ``count``,
    ``total_fen``, ``skipped``; the day not over: ``InvalidInput``. Audited once, as ``payout.run``."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDITED_RUN_LOCK_KEY)
        before = await run_state(conn, day)
        result = await payouts.run_payouts(conn, settings, day, now=now)
        await record_many(conn, actor, "payout.run", [(run_entity(day), before, await run_state(conn, day))])
    return result


async def confirm_payouts(conn: asyncpg.Connection, actor: str, data: bytes, file_name: str) -> dict[str, Any]:
    """``posgw payout confirm --file F`` (``payouts.confirm_payouts``): ``paid``, ``returned``,
    ``unchanged``, ``conflicts``. An unreadable file or an unknown payout id: ``InvalidInput``,
    nothing applied or recorded. Audited once, as ``payout.confirm``, when it moved any payout."""
    async with conn.transaction():
        result = await payouts.confirm_payouts(conn, data)
        if result["paid"] or result["returned"]:
            after = {"file": file_name, "sha256": hashlib.sha256(data).hexdigest()} | result
            await record_many(conn, actor, "payout.confirm", [(confirm_entity(file_name), None, after)])
    return result

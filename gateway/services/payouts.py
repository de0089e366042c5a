"""Money out (T+1), audited: the records of the payout run of a date and of the
bank's answer (CLI.md "Money out"). gateway.jobs.payouts does the work, and
writes these records in the same database transaction; this module only audits
(so the arrow goes from the job to the service, never back).

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
from datetime import date
from typing import Any

import asyncpg

from gateway.services.audit import State, record_many

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


async def lock_run(conn: asyncpg.Connection) -> None:
    """One audited payout run at a time, so that the state before it is read after any concurrent
    run has finished (the job takes a lock of its own inside this one). In the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDITED_RUN_LOCK_KEY)


async def record_run(conn: asyncpg.Connection, actor: str, day: date, before: State) -> None:
    """The ``payout.run`` record of the run of ``day`` (none when the run changed nothing)."""
    await record_many(conn, actor, "payout.run", [(run_entity(day), before, await run_state(conn, day))])


async def record_confirm(conn: asyncpg.Connection, actor: str, data: bytes, file_name: str,
                         result: dict[str, Any]) -> None:
    """The ``payout.confirm`` record of a bank's answer, when it moved any payout."""
    if result["paid"] or result["returned"]:
        after = {"file": file_name, "sha256": hashlib.sha256(data).hexdigest()} | result
        await record_many(conn, actor, "payout.confirm", [(confirm_entity(file_name), None, after)])

"""A recorded transaction's status changes only as the one transition table
allows: gw_status_transitions in the database, which gw_set_status consults,
mirrored by gateway.domain.vocabulary.TRANSITIONS. Every change the recording
functions make goes through gw_set_status and is in the table; any other
change raises."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from gateway.acquiring import outcomes
from gateway.domain.vocabulary import TRANSITIONS, Status

FUNCTIONS = Path(outcomes.__file__).parent / "functions"
_SET_STATUS = re.compile(r"gw_set_status\([^,]+,\s*'(\w+)',\s*'(\w+)'\)")


def sql_functions() -> str:
    return "\n".join(path.read_text() for path in sorted(FUNCTIONS.glob("*.sql")))


def test_every_status_change_the_recording_functions_make_is_in_the_table():
    changes = {(Status(old), Status(new)) for old, new in _SET_STATUS.findall(sql_functions())}
    assert changes == {(Status.APPROVED, Status.VOIDED), (Status.APPROVED, Status.REVERSED),
                       (Status.VOIDED, Status.APPROVED),
                       (Status.APPROVED, Status.REFUNDED), (Status.REFUNDED, Status.APPROVED),  # refunds (9.2)
                       # the pre-authorization family (9.3)
                       (Status.APPROVED, Status.COMPLETED), (Status.COMPLETED, Status.APPROVED),
                       (Status.APPROVED, Status.CANCELLED), (Status.CANCELLED, Status.APPROVED),
                       (Status.APPROVED, Status.EXPIRED)}
    assert changes <= TRANSITIONS


def test_no_recording_function_changes_a_status_but_through_gw_set_status():
    updates = re.findall(r"UPDATE gw_transactions SET[^;]*", sql_functions())
    assert [u for u in updates if re.search(r"\bstatus\s*=", u)] == ["UPDATE gw_transactions SET status = p_to WHERE "
                                                                     "id = p_id AND status = p_from"]


async def test_the_databases_table_is_the_vocabularys(db):
    rows = await db.fetch("SELECT from_status, to_status FROM gw_status_transitions")
    assert {(Status(r["from_status"]), Status(r["to_status"])) for r in rows} == TRANSITIONS


async def recorded(db: asyncpg.Connection, status: str) -> int:
    return await db.fetchval(
        """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, content_hash, response, response_code,
                                        status, rrn, local_date)
           VALUES ('TERM0001', 1, '000001', '0200', 'purchase', 'x', '{}', '00', $1, '000000000001', '1124')
           RETURNING id""", status)


async def test_a_change_in_the_table_is_made(db):
    txn = await recorded(db, "approved")
    await db.execute("SELECT gw_set_status($1, 'approved', 'voided')", txn)
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE id = $1", txn) == "voided"


@pytest.mark.parametrize("status, change", [
    ("declined", ("declined", "approved")),  # a declined transaction never changes
    ("reversed", ("reversed", "approved")),  # nor does a reversed one
    ("approved", ("voided", "reversed")),  # not in the table
    ("voided", ("approved", "reversed")),  # in the table, but the row is not in its from status
])
async def test_any_other_change_raises_and_changes_nothing(db, status, change):
    txn = await recorded(db, status)
    assert tuple(map(Status, change)) not in TRANSITIONS or change[0] != status
    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await db.execute("SELECT gw_set_status($1, $2, $3)", txn, *change)
    assert await db.fetchval("SELECT status FROM gw_transactions WHERE id = $1", txn) == status

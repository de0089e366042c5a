"""The audit trail: who changed which entity, when, and its state before and after.

Every service changes things through ``audited``: the entity's state is read,
the change made, the state read again and, when it differs, one record written,
all in one database transaction (a savepoint inside the caller's), so a change
that fails writes no record and a record is never written for a change that
did not happen. A change that changes nothing (freezing a frozen terminal)
writes no record (CLI.md, "Rules of the version 2 commands": Audit).

A state is a JSON object (``{}`` where the entity did not exist) and never
holds a secret: no PIN, key, full PAN or password; ``record_many`` refuses one
whose names say it is one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from gateway.domain.registry import FROZEN

T = TypeVar("T")
State = dict[str, Any] | None  # an entity's state; None where it does not exist
Snapshot = Callable[[], Awaitable[State]]

SECRET_NAMES = frozenset({"pan", "pin", "pin_block", "pvv", "key", "tmk", "lmk", "password", "secret"})
"""Names a state never has (nor names ending in ``_lmk`` or ``_key``): what they name is a secret."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    action: str  # <group>.<verb>: terminal.freeze
    entity: str  # <kind>:<id>: terminal:DEMO0001, card:<pan_masked>
    before: dict[str, Any]
    after: dict[str, Any]

    def as_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """``audit list --json``'s event: ``at`` in ISO 8601 with the offset of ``tz``."""
        return {"at": self.at.astimezone(tz).isoformat(), "actor": self.actor, "action": self.action,
                "entity": self.entity, "before": self.before, "after": self.after}


def status_action(group: str, status: str) -> str:
    """The action that sets an entity's status: ``<group>.freeze`` or ``<group>.unfreeze``."""
    return f"{group}.{'freeze' if status == FROZEN else 'unfreeze'}"


def _checked(state: State) -> dict[str, Any]:
    state = state or {}
    secrets = [name for name in state if name in SECRET_NAMES or name.endswith(("_lmk", "_key"))]
    assert not secrets, f"an audit record must hold no secret: {secrets}"
    return state


async def audited(conn: asyncpg.Connection, actor: str, action: str, entity: str, snapshot: Snapshot,
                  change: Callable[[], Awaitable[T]]) -> T:
    """Make ``change`` and write its audit record in one transaction; return what the change returned.

    ``snapshot`` reads the entity's state (None where it does not exist); it is
    read before and after the change, and the record is written only when they
    differ. Raising in the change rolls back the change and writes nothing."""
    async with conn.transaction():
        before = await snapshot()
        result = await change()
        await record_many(conn, actor, action, [(entity, before, await snapshot())])
    return result


async def record_many(conn: asyncpg.Connection, actor: str, action: str,
                      changes: Sequence[tuple[str, State, State]]) -> int:
    """Write one record per (entity, before, after) whose states differ, in one
    statement, in the caller's transaction; return how many were written.
    For a change made in bulk (the demo's cards); else use ``audited``."""
    assert actor, "a change has an actor"
    rows = [(entity, json.dumps(before), json.dumps(after)) for entity, before, after in
            ((entity, _checked(before), _checked(after)) for entity, before, after in changes) if before != after]
    if rows:
        entities, befores, afters = map(list, zip(*rows))
        await conn.execute(
            """INSERT INTO audit_events (actor, action, entity, before, after)
               SELECT $1, $2, entity, before, after
                 FROM unnest($3::text[], $4::jsonb[], $5::jsonb[]) AS e (entity, before, after)""",
            actor, action, entities, befores, afters)
    return len(rows)


async def list_events(conn: asyncpg.Connection, *, since: datetime | None = None, actor: str | None = None,
                      entity: str | None = None) -> list[AuditEvent]:
    """The records at or after ``since``, of ``actor``, on ``entity`` (each filter when given),
    ascending by time, then id."""
    rows = await conn.fetch(
        """SELECT id, at, actor, action, entity, before, after FROM audit_events
            WHERE ($1::timestamptz IS NULL OR at >= $1)
              AND ($2::text IS NULL OR actor = $2)
              AND ($3::text IS NULL OR entity = $3)
            ORDER BY at, id""", since, actor, entity)
    return [AuditEvent(row["id"], row["at"], row["actor"], row["action"], row["entity"],
                       json.loads(row["before"]), json.loads(row["after"])) for row in rows]

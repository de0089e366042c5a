"""Fixtures of the service tests: the HSM of the test LMK, and the audit trail as it is stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.keys import SoftHsm
from tests.conftest import TEST_LMK

ACTOR = "test:operator"


@pytest.fixture
def hsm() -> SoftHsm:
    return SoftHsm(bytes.fromhex(TEST_LMK))


@pytest.fixture
def trail(db: asyncpg.Connection) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """The stored audit records, oldest first: actor, action, entity, before, after."""

    async def read() -> list[dict[str, Any]]:
        rows = await db.fetch("SELECT actor, action, entity, before, after FROM audit_events ORDER BY at, id")
        return [{**dict(row), "before": json.loads(row["before"]), "after": json.loads(row["after"])} for row in rows]

    return read


async def table_counts(db: asyncpg.Connection) -> dict[str, int]:
    """How many rows each table that an operator's change writes to holds."""
    tables = ("agents", "merchants", "terminals", "cards", "billers", "bills", "meters", "risk_limits",
              "ledger_accounts", "ledger_transfers", "audit_events")
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in tables}

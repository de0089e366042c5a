"""Posting transfers: atomic, idempotent, never below zero where forbidden.

Each call is one database round trip (a PL/pgSQL function), so that a
caller's whole ledger work can be batched with others later (group commit)
without the callers changing. Business outcomes are flat results, not
exceptions (TigerBeetle's style).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg


class PostResult(StrEnum):
    OK = "ok"
    EXISTS = "exists"  # the same key and content posted before: nothing posted now
    EXISTS_WITH_DIFFERENT_CONTENT = "exists_with_different_content"
    EXCEEDS_CREDITS = "exceeds_credits"
    ACCOUNT_NOT_FOUND = "account_not_found"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    TRANSFERS_MUST_NOT_BE_EMPTY = "transfers_must_not_be_empty"
    LINKED_TRANSFER_NOT_FOUND = "linked_transfer_not_found"
    ALREADY_REVERSED = "already_reversed"
    # resolving a hold (ledger/holds.py)
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_ALREADY_POSTED = "hold_already_posted"
    HOLD_ALREADY_VOIDED = "hold_already_voided"
    HOLD_EXPIRED = "hold_expired"
    EXCEEDS_HOLD_AMOUNT = "exceeds_hold_amount"


def basis_points_fen(amount_fen: int, basis_points: int) -> int:
    """amount × basis points / 10,000, rounded half up to the fen (integers only):
    a merchant's discount, an agent's commission."""
    return (amount_fen * basis_points + 5_000) // 10_000


@dataclass(frozen=True, slots=True)
class Transfer:
    debit_account_id: int
    credit_account_id: int
    amount_fen: int
    code: str

    def as_json(self) -> dict[str, Any]:
        return {"debit": self.debit_account_id, "credit": self.credit_account_id,
                "amount": self.amount_fen, "code": self.code}


def transfers_json(transfers: list[Transfer]) -> str:
    return json.dumps([t.as_json() for t in transfers])


async def post(conn: asyncpg.Connection | asyncpg.Pool, key: str, transfers: list[Transfer]) -> PostResult:
    """Post ``transfers`` atomically under ``key``. A key already used returns
    the first result (``exists`` for an identical success); it never posts twice."""
    return PostResult(await conn.fetchval("SELECT ledger_post($1, $2::jsonb)", key, transfers_json(transfers)))


async def post_many(conn: asyncpg.Connection | asyncpg.Pool,
                    postings: list[tuple[str, list[Transfer]]]) -> list[PostResult]:
    """Post each (key, transfers) in one round trip and one statement per step
    for the whole set (group commit): the same results, and the same money
    moved, as ``post`` called for each in order."""
    results = await conn.fetchval("SELECT ledger_post_many($1::text[], $2::jsonb[])",
                                  [key for key, _ in postings], [transfers_json(t) for _, t in postings])
    return [PostResult(result) for result in results]


async def reverse(conn: asyncpg.Connection | asyncpg.Pool, key: str, original_key: str) -> PostResult:
    """Post the compensating transfers of the posting under ``original_key``.
    A posting is reversed at most once (``already_reversed``)."""
    return PostResult(await conn.fetchval("SELECT ledger_reverse($1, $2)", key, original_key))

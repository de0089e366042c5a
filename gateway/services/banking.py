"""Beneficiaries' bank details (``posgw merchant set --bank-account ...``): where
payouts go, audited as ``merchant.set`` on ``merchant:<mid>`` (CLI.md "Money out").

The record holds the merchant's state and its bank details as they are shown,
the account number masked (``*`` and its last 4 digits), never in clear; the
details' version is in it too, so that a new number ending in the same 4
digits is still a recorded change. The same details again change nothing and
write no record (CLI.md, Rules: Audit).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.domain import banking
from gateway.keys import SoftHsm
from gateway.services.audit import State, audited
from gateway.services.merchants import merchant_entity, merchant_state

MERCHANT = "merchant"
NO_BANK_DETAILS: dict[str, Any] = {"bank_account_masked": None, "bank_name": None, "account_name": None}


async def bank_view(conn: asyncpg.Connection, kind: str, beneficiary: str) -> dict[str, Any]:
    """``bank_account_masked``, ``bank_name``, ``account_name``: each null when none are set."""
    return await banking.show_bank_details(conn, kind, beneficiary) or dict(NO_BANK_DETAILS)


async def _bank_version(conn: asyncpg.Connection, kind: str, beneficiary: str) -> int | None:
    """How many times the details were set (None: never): a change of number shows here when its mask does not."""
    return await conn.fetchval(
        "SELECT version FROM bank_details WHERE beneficiary_kind = $1 AND beneficiary = $2", kind, beneficiary)


async def merchant_bank_state(conn: asyncpg.Connection, mid: str) -> State:
    """The merchant's state (``merchant show``, limits), its bank details masked and their version."""
    state = await merchant_state(conn, mid)
    if state is None:
        return None
    return state | await bank_view(conn, MERCHANT, mid) | {"bank_version": await _bank_version(conn, MERCHANT, mid)}


async def set_merchant_bank_details(conn: asyncpg.Connection, actor: str, hsm: SoftHsm, mid: str, *,
                                    bank_account_number: str, bank_name: str,
                                    account_name: str) -> banking.BankDetailsChange:
    """Set where the merchant's payouts go (the number kept under the LMK). An unknown
    merchant or a malformed value: ``InvalidInput``, and nothing changed or recorded."""
    return await audited(
        conn, actor, "merchant.set", merchant_entity(mid), lambda: merchant_bank_state(conn, mid),
        lambda: banking.set_bank_details(conn, hsm, MERCHANT, mid, bank_account_number=bank_account_number,
                                         bank_name=bank_name, account_name=account_name))

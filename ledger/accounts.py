"""Ledger accounts: creation and balances. No ISO 8583 in here.

An account's balance is credits minus debits: the money the ledger owes
its holder (a card, an agent's float, a merchant). The cash account is the
other side of money coming in from outside, so its balance is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import asyncpg


class AccountKind(StrEnum):
    CARD = "card"
    AGENT_FLOAT = "agent_float"
    COMMISSION = "commission"
    MERCHANT = "merchant"
    BILLER = "biller"
    FEE_INCOME = "fee_income"
    CASH = "cash"
    PAYOUT_CLEARING = "payout_clearing"
    AGENT_PROFIT = "agent_profit"  # an agent's shares and other earnings (never below zero)
    AGENT_RECEIVABLE = "agent_receivable"  # what an agent owes the house after a clawback (debits - credits)
    DEPOSIT_HELD = "deposit_held"  # terminals' deposits (押金) charged and not yet refunded or forfeited
    TAX_PAYABLE = "tax_payable"  # tax withheld from agents' withdrawals, owed to the tax authority


CASH_ACCOUNT_CODE = "system:cash"
FEE_INCOME_ACCOUNT_CODE = "system:fee_income"
DEPOSITS_HELD_ACCOUNT_CODE = "system:deposits_held"


async def create_account(conn: asyncpg.Connection, kind: AccountKind, code: str, *,
                         debits_must_not_exceed_credits: bool) -> int:
    """Create an account and return its id."""
    accounts = await create_accounts(conn, kind, [code],
                                     debits_must_not_exceed_credits=debits_must_not_exceed_credits)
    return accounts[code]


async def create_accounts(conn: asyncpg.Connection, kind: AccountKind, codes: Sequence[str], *,
                          debits_must_not_exceed_credits: bool) -> dict[str, int]:
    """Create an account for each code, in one statement; their ids by code."""
    return dict(await conn.fetch(
        """INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits)
           SELECT $1, code, $3 FROM unnest($2::text[]) AS a (code) RETURNING code, id""",
        kind.value, list(codes), debits_must_not_exceed_credits,
    ))


async def account_id(conn: asyncpg.Connection, code: str) -> int | None:
    return await conn.fetchval("SELECT id FROM ledger_accounts WHERE code = $1", code)


async def balance_fen(conn: asyncpg.Connection, account: int) -> int:
    """Credits minus debits posted to the account."""
    return await conn.fetchval(
        "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE id = $1", account
    )


async def available_fen(conn: asyncpg.Connection, account: int) -> int:
    """Credits minus debits posted, less the debits its open holds reserve
    (ledger/holds.py): what the no-overdraft rule lets the account spend."""
    return await conn.fetchval(
        "SELECT credits_posted - debits_posted - debits_pending FROM ledger_accounts WHERE id = $1", account
    )


async def pending_debits_fen(conn: asyncpg.Connection, account: int) -> int:
    """The debits the account's open holds reserve."""
    return await conn.fetchval("SELECT debits_pending FROM ledger_accounts WHERE id = $1", account)

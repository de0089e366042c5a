"""An agent's withdrawal (``posgw agent withdraw CODE AMOUNT``; CLI.md "Agent network",
Rules: Withdrawals), audited as ``agent.withdraw`` on ``agent:<code>``.

The gross, at least ``withdrawal_min_fen``, leaves the agent's profit balance at
once, in one ledger posting (key ``withdrawal:<payout id>``): the net to the
payout clearing account as a payout (``pending``, beneficiary_kind ``agent``,
no date: the next payout run sends it), the tax (⌊gross × ``withdrawal_tax_bp``
/ 10,000 + ½⌋) to the house's withholding tax account, the fee
(``withdrawal_fee_fen``) to the house's fee income (gateway.domain.payouts).

Refused (``InvalidInput``, exit 2; nothing moved or recorded): an unknown or
frozen agent, one without bank details, one whose last payout the bank returned
to the details it still has (CLI.md, Payouts: paid again once they change), a
gross below the minimum or above the profit balance, a net of 0 or less.

The record: the profit balance before, and after it with the payout's id and
its parts; never the bank account.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.domain.payouts import (
    CLEARING_ACCOUNT_CODE,
    PAYOUT_CODE,
    TAX_ACCOUNT_CODE,
    WITHDRAWAL_FEE_CODE,
    WITHDRAWAL_TAX_CODE,
    WithdrawalSplit,
    split_withdrawal,
    system_account,
)
from gateway.domain.validate import InvalidInput
from gateway.services.agents import agent_entity
from gateway.services.audit import record_many
from gateway.settings import Settings
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE, account_id, balance_fen
from ledger.postings import PostResult, Transfer, post


def withdrawal_key(payout_id: int) -> str:
    return f"withdrawal:{payout_id}"


def split(settings: Settings, gross_fen: int) -> WithdrawalSplit:
    """The parts of a withdrawal of ``gross_fen`` under the settings' minimum, tax and fee."""
    return split_withdrawal(gross_fen, minimum_fen=settings.withdrawal_min_fen, tax_bp=settings.withdrawal_tax_bp,
                            fee_fen=settings.withdrawal_fee_fen)


async def _check_agent(conn: asyncpg.Connection, code: str) -> asyncpg.Record:
    """The agent (its row locked: one withdrawal of an agent at a time) and its bank details, or ``InvalidInput``."""
    agent = await conn.fetchrow("SELECT code, status FROM agents WHERE code = $1 FOR UPDATE", code)
    if agent is None:
        raise InvalidInput(f"unknown agent {code}")
    if agent["status"] != "active":
        raise InvalidInput(f"agent {code} is {agent['status']}: no withdrawal")
    bank = await conn.fetchrow(
        "SELECT version FROM bank_details WHERE beneficiary_kind = 'agent' AND beneficiary = $1", code)
    if bank is None:
        raise InvalidInput(f"agent {code} has no bank details: set them first (posgw agent set)")
    returned = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM payouts WHERE beneficiary_kind = 'agent' AND beneficiary = $1
                             AND status = 'returned' AND bank_version = $2)""", code, bank["version"])
    if returned:
        raise InvalidInput(f"the bank returned agent {code}'s last payout to the bank details it still has: "
                           "change them first (posgw agent set)")
    return agent


def _transfers(profit: int, clearing: int, tax: int, fee: int, parts: WithdrawalSplit) -> list[Transfer]:
    transfers = [Transfer(profit, clearing, parts.net_fen, PAYOUT_CODE)]
    if parts.tax_fen:
        transfers.append(Transfer(profit, tax, parts.tax_fen, WITHDRAWAL_TAX_CODE))
    if parts.fee_fen:
        transfers.append(Transfer(profit, fee, parts.fee_fen, WITHDRAWAL_FEE_CODE))
    return transfers


async def withdraw(conn: asyncpg.Connection, actor: str, settings: Settings, code: str,
                   gross_fen: int) -> dict[str, Any]:
    """``posgw agent withdraw CODE AMOUNT``: ``code``, ``gross_fen``, ``tax_fen``, ``fee_fen``,
    ``net_fen``, ``payout_id``, ``profit_fen`` (the balance after)."""
    parts = split(settings, gross_fen)
    async with conn.transaction():
        await _check_agent(conn, code)
        profit = await conn.fetchval("SELECT profit_account_id FROM agent_accounts WHERE agent_code = $1", code)
        profit_fen = await balance_fen(conn, profit) if profit is not None else 0
        if profit is None or profit_fen < gross_fen:
            raise InvalidInput(f"agent {code}'s profit balance is {profit_fen / 100:.2f} yuan: "
                               f"less than {gross_fen / 100:.2f}")
        clearing = await system_account(conn, CLEARING_ACCOUNT_CODE)
        tax = await system_account(conn, TAX_ACCOUNT_CODE)
        fee: int = await account_id(conn, FEE_INCOME_ACCOUNT_CODE)  # type: ignore[assignment]
        payout_id = await conn.fetchval(
            """INSERT INTO payouts (beneficiary_kind, beneficiary, account_id, amount_fen, gross_fen, tax_fen, fee_fen,
                                    requested_day)
               VALUES ('agent', $1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            code, profit, parts.net_fen, parts.gross_fen, parts.tax_fen, parts.fee_fen, settings.today())
        result = await post(conn, withdrawal_key(payout_id), _transfers(profit, clearing, tax, fee, parts))
        if result is PostResult.EXCEEDS_CREDITS:  # the balance moved since it was read
            raise InvalidInput(f"agent {code}'s profit balance is less than {gross_fen / 100:.2f} yuan")
        if result is not PostResult.OK:
            raise RuntimeError(f"withdrawal {payout_id}: the ledger said {result}")
        view = {"code": code, "gross_fen": parts.gross_fen, "tax_fen": parts.tax_fen, "fee_fen": parts.fee_fen,
                "net_fen": parts.net_fen, "payout_id": payout_id, "profit_fen": profit_fen - gross_fen}
        await record_many(conn, actor, "agent.withdraw", [(agent_entity(code), {"profit_fen": profit_fen}, view)])
    return view

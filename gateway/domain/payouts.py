"""The vocabulary of money out (CLI.md "Money out", Rules: Withdrawals, Payouts),
shared by the payout job (gateway.jobs.payouts) and the withdrawal service
(gateway.services.withdrawals): the system accounts payouts move through, the
transfer codes, the statuses, and a withdrawal's arithmetic.

A withdrawal's gross leaves the agent's profit balance at once, in three parts:

    agent_profit:CODE ──payout──────────▶ system:payout_clearing  (net: paid by the next run)
                      ──withdrawal_tax──▶ system:withholding_tax  (owed to the tax authority)
                      ──withdrawal_fee──▶ system:fee_income       (the house's fee)

A returned withdrawal moves all three back (``payout_return``,
``withdrawal_tax_return``, ``withdrawal_fee_return``): the gross is the agent's again.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from gateway.domain.validate import InvalidInput
from ledger.accounts import AccountKind, account_id

CLEARING_ACCOUNT_CODE = "system:payout_clearing"
BANK_ACCOUNT_CODE = "system:bank_payouts"
TAX_ACCOUNT_CODE = "system:withholding_tax"
# Transfer codes. The first and last move money between an owner and the bank
# side: they are what "less nothing already paid out" leaves out of a balance.
PAYOUT_CODE, PAID_CODE, RETURN_CODE = "payout", "payout_paid", "payout_return"
OWNER_PAYOUT_CODES = (PAYOUT_CODE, RETURN_CODE)
WITHDRAWAL_TAX_CODE, WITHDRAWAL_FEE_CODE = "withdrawal_tax", "withdrawal_fee"
WITHDRAWAL_TAX_RETURN_CODE, WITHDRAWAL_FEE_RETURN_CODE = "withdrawal_tax_return", "withdrawal_fee_return"

PENDING, PAID, RETURNED = "pending", "paid", "returned"
STATUSES = (PENDING, PAID, RETURNED)

# The system accounts of payouts: code → (kind, whether the balance may never go below zero).
SYSTEM_ACCOUNTS = {CLEARING_ACCOUNT_CODE: (AccountKind.PAYOUT_CLEARING, True),
                   BANK_ACCOUNT_CODE: (AccountKind.CASH, False),
                   TAX_ACCOUNT_CODE: (AccountKind.TAX_PAYABLE, False)}


async def system_account(conn: asyncpg.Connection, code: str) -> int:
    """The id of a payout system account, made the first time it is needed."""
    kind, guarded = SYSTEM_ACCOUNTS[code]
    await conn.execute(
        """INSERT INTO ledger_accounts (kind, code, debits_must_not_exceed_credits) VALUES ($1, $2, $3)
           ON CONFLICT (code) DO NOTHING""", kind.value, code, guarded)
    return await account_id(conn, code)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class WithdrawalSplit:
    """A withdrawal's gross and what becomes of it: ``gross_fen`` = ``tax_fen`` + ``fee_fen`` + ``net_fen``."""

    gross_fen: int
    tax_fen: int
    fee_fen: int
    net_fen: int


def withdrawal_tax_fen(gross_fen: int, tax_bp: int) -> int:
    """⌊gross × ``withdrawal_tax_bp`` / 10,000 + ½⌋: half up, in integers."""
    return (gross_fen * tax_bp + 5_000) // 10_000


def split_withdrawal(gross_fen: int, *, minimum_fen: int, tax_bp: int, fee_fen: int) -> WithdrawalSplit:
    """The parts of a withdrawal of ``gross_fen`` (CLI.md, Rules: Withdrawals): at least
    ``withdrawal_min_fen`` and a net above 0, else ``InvalidInput`` (exit 2).
    1,000.00 yuan at 800 bp and 3.00 yuan: tax 80.00, fee 3.00, net 917.00."""
    if gross_fen < minimum_fen:
        raise InvalidInput(f"a withdrawal is at least {minimum_fen / 100:.2f} yuan: {gross_fen / 100:.2f}")
    tax_fen = withdrawal_tax_fen(gross_fen, tax_bp)
    net_fen = gross_fen - tax_fen - fee_fen
    if net_fen <= 0:
        raise InvalidInput(f"nothing left of {gross_fen / 100:.2f} yuan after tax {tax_fen / 100:.2f} "
                           f"and fee {fee_fen / 100:.2f}")
    return WithdrawalSplit(gross_fen, tax_fen, fee_fen, net_fen)

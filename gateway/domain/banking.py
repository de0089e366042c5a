"""Beneficiaries' bank details: where a merchant's (later an agent's) payouts go.

The account number is stored only encrypted under the LMK (``SoftHsm``) and
shown only masked, ``*`` then its last 4 digits (CLI.md "Users"); it is never
logged or put in an error message. Only the payout files carry it in clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.keys import SoftHsm

BENEFICIARY_KINDS = ("merchant", "agent")
_BANK_ACCOUNT = re.compile(r"^[0-9]{8,30}$")  # Chinese bank accounts are digits; the HSM's field holds up to 30
NAME_CHARS_MAX = 140  # pain.001's Max140Text


def mask_bank_account(last4: str) -> str:
    """``*`` then the last 4 digits (CLI.md: bank accounts are shown so)."""
    return f"*{last4}"


def bank_account(value: str) -> str:
    """A bank account number: 8 to 30 digits (spaces allowed between groups, dropped)."""
    digits = value.replace(" ", "")
    if not _BANK_ACCOUNT.match(digits):
        raise InvalidInput("--bank-account must be 8 to 30 digits")  # never echo the number
    return digits


def bank_text(value: str, what: str) -> str:
    """A bank or account holder name: 1 to 140 printable characters."""
    value = value.strip()
    if not 1 <= len(value) <= NAME_CHARS_MAX or not value.isprintable():
        raise InvalidInput(f"{what} must be 1 to {NAME_CHARS_MAX} printable characters")
    return value


@dataclass(frozen=True, slots=True)
class BankDetailsChange:
    """What ``set_bank_details`` did: the masked views before and after (for the audit record),
    and whether anything changed (a new number may end in the same 4 digits)."""

    before: dict[str, Any] | None
    after: dict[str, Any]
    changed: bool


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {"bank_name": row["bank_name"], "account_name": row["account_name"],
            "bank_account_masked": mask_bank_account(row["bank_account_last4"])}


async def _check_beneficiary(conn: asyncpg.Connection, kind: str, beneficiary: str) -> None:
    if kind == "merchant":
        found = await conn.fetchval("SELECT 1 FROM merchants WHERE mid = $1", beneficiary)
    elif kind == "agent":
        found = await conn.fetchval("SELECT 1 FROM agents WHERE code = $1", beneficiary)
    else:
        raise InvalidInput(f"beneficiary kind must be one of {', '.join(BENEFICIARY_KINDS)}: {kind!r}")
    if not found:
        raise InvalidInput(f"unknown {kind} {beneficiary}")


async def set_bank_details(conn: asyncpg.Connection, hsm: SoftHsm, kind: str, beneficiary: str, *,
                           bank_account_number: str, bank_name: str, account_name: str) -> BankDetailsChange:
    """Set where ``beneficiary``'s payouts go. A change raises the details'
    version (a returned payout waits for one); the same details again change nothing."""
    await _check_beneficiary(conn, kind, beneficiary)
    number = bank_account(bank_account_number)
    bank_name, account_name = bank_text(bank_name, "--bank-name"), bank_text(account_name, "--account-name")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM bank_details WHERE beneficiary_kind = $1 AND beneficiary = $2 FOR UPDATE",
            kind, beneficiary)
        if row is not None and (row["bank_name"], row["account_name"]) == (bank_name, account_name) \
                and hsm.decrypt_pan(row["bank_account_lmk"]) == number:
            return BankDetailsChange(_view(row), _view(row), changed=False)
        new = await conn.fetchrow(
            """INSERT INTO bank_details (beneficiary_kind, beneficiary, account_name, bank_name,
                                         bank_account_lmk, bank_account_last4)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (beneficiary_kind, beneficiary) DO UPDATE
                  SET account_name = $3, bank_name = $4, bank_account_lmk = $5, bank_account_last4 = $6,
                      version = bank_details.version + 1, updated_at = now()
               RETURNING *""",
            kind, beneficiary, account_name, bank_name, hsm.encrypt_pan(number), number[-4:])
    return BankDetailsChange(_view(row) if row is not None else None, _view(new), changed=True)


async def show_bank_details(conn: asyncpg.Connection | asyncpg.Pool, kind: str,
                            beneficiary: str) -> dict[str, Any] | None:
    """``bank_name``, ``account_name``, ``bank_account_masked``; None when not set."""
    row = await conn.fetchrow(
        "SELECT * FROM bank_details WHERE beneficiary_kind = $1 AND beneficiary = $2", kind, beneficiary)
    return _view(row) if row is not None else None

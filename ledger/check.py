"""The ledger's invariants, checked from its own tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass
class CheckReport:
    totals: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "totals": self.totals, "problems": self.problems}


async def check(conn: asyncpg.Connection) -> CheckReport:
    """Total debits equal total credits; every account's posted totals equal
    the sum of its transfers; no guarded account is below zero; every
    reversal mirrors the transfer it reverses."""
    totals_row = await conn.fetchrow(
        """SELECT count(*) AS accounts, coalesce(sum(debits_posted), 0) AS debits_fen,
                  coalesce(sum(credits_posted), 0) AS credits_fen,
                  (SELECT count(*) FROM ledger_transfers) AS transfers,
                  (SELECT coalesce(sum(amount), 0) FROM ledger_transfers) AS transferred_fen
             FROM ledger_accounts""")
    totals = {key: int(value) for key, value in totals_row.items()}
    report = CheckReport(totals)
    if totals["debits_fen"] != totals["credits_fen"]:
        report.problems.append(
            f"total debits {totals['debits_fen']} != total credits {totals['credits_fen']}")
    if totals["debits_fen"] != totals["transferred_fen"]:
        report.problems.append(
            f"total debits posted {totals['debits_fen']} != sum of transfers {totals['transferred_fen']}")
    for row in await conn.fetch(
        """SELECT a.code, a.debits_posted, a.credits_posted,
                  coalesce(d.amount, 0) AS debits_transferred, coalesce(c.amount, 0) AS credits_transferred
             FROM ledger_accounts a
             LEFT JOIN (SELECT debit_account_id AS id, sum(amount) AS amount
                          FROM ledger_transfers GROUP BY 1) d ON d.id = a.id
             LEFT JOIN (SELECT credit_account_id AS id, sum(amount) AS amount
                          FROM ledger_transfers GROUP BY 1) c ON c.id = a.id
            WHERE a.debits_posted <> coalesce(d.amount, 0) OR a.credits_posted <> coalesce(c.amount, 0)
            ORDER BY a.id"""):
        report.problems.append(
            f"account {row['code']}: posted debits {row['debits_posted']} / credits {row['credits_posted']},"
            f" transfers say {row['debits_transferred']} / {row['credits_transferred']}")
    for row in await conn.fetch(
        """SELECT code, credits_posted - debits_posted AS balance FROM ledger_accounts
            WHERE debits_must_not_exceed_credits AND debits_posted > credits_posted ORDER BY id"""):
        report.problems.append(f"account {row['code']} is below zero: {row['balance']}")
    for row in await conn.fetch(
        """SELECT r.id FROM ledger_transfers r JOIN ledger_transfers o ON o.id = r.reverses_transfer_id
            WHERE r.amount <> o.amount OR r.debit_account_id <> o.credit_account_id
               OR r.credit_account_id <> o.debit_account_id"""):
        report.problems.append(f"transfer {row['id']} does not mirror the transfer it reverses")
    return report

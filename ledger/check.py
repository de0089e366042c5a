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
    the sum of its transfers; no guarded account is below zero, on its
    available balance (less its pending debits); every reversal mirrors the
    transfer it reverses; and the holds' rules (check_holds)."""
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
        """SELECT code, credits_posted - debits_posted - debits_pending AS balance FROM ledger_accounts
            WHERE debits_must_not_exceed_credits AND debits_posted + debits_pending > credits_posted
            ORDER BY id"""):
        report.problems.append(f"account {row['code']} is below zero: {row['balance']}")
    for row in await conn.fetch(
        """SELECT r.id FROM ledger_transfers r JOIN ledger_transfers o ON o.id = r.reverses_transfer_id
            WHERE r.amount <> o.amount OR r.debit_account_id <> o.credit_account_id
               OR r.credit_account_id <> o.debit_account_id"""):
        report.problems.append(f"transfer {row['id']} does not mirror the transfer it reverses")
    await check_holds(conn, report)
    return report


async def check_holds(conn: asyncpg.Connection, report: CheckReport) -> None:
    """Pending debits and credits equal, and each account's equal the sum of its
    open holds; every resolved hold resolved by exactly one posting, an open one
    by none (so no hold both posted and voided); a posted hold's posting debits
    its account by the amount recorded as posted."""
    pending = await conn.fetchrow(
        """SELECT coalesce(sum(debits_pending), 0) AS debits_pending_fen,
                  coalesce(sum(credits_pending), 0) AS credits_pending_fen,
                  (SELECT count(*) FROM ledger_holds WHERE status = 'pending') AS holds_open,
                  (SELECT coalesce(sum(amount), 0) FROM ledger_holds WHERE status = 'pending') AS held_fen
             FROM ledger_accounts""")
    report.totals.update({key: int(value) for key, value in pending.items()})
    if pending["debits_pending_fen"] != pending["credits_pending_fen"]:
        report.problems.append(f"total pending debits {pending['debits_pending_fen']}"
                               f" != total pending credits {pending['credits_pending_fen']}")
    for row in await conn.fetch(
        """SELECT a.code, a.debits_pending, a.credits_pending,
                  coalesce(d.amount, 0) AS debits_held, coalesce(c.amount, 0) AS credits_held
             FROM ledger_accounts a
             LEFT JOIN (SELECT debit_account_id AS id, sum(amount) AS amount FROM ledger_holds
                         WHERE status = 'pending' GROUP BY 1) d ON d.id = a.id
             LEFT JOIN (SELECT credit_account_id AS id, sum(amount) AS amount FROM ledger_holds
                         WHERE status = 'pending' GROUP BY 1) c ON c.id = a.id
            WHERE a.debits_pending <> coalesce(d.amount, 0) OR a.credits_pending <> coalesce(c.amount, 0)
            ORDER BY a.id"""):
        report.problems.append(
            f"account {row['code']}: pending debits {row['debits_pending']} / credits {row['credits_pending']},"
            f" open holds say {row['debits_held']} / {row['credits_held']}")
    for row in await conn.fetch(
        """SELECT h.id, h.status, count(p.id) AS resolutions
             FROM ledger_holds h LEFT JOIN ledger_postings p ON p.resolves_hold_id = h.id AND p.result = 'ok'
            GROUP BY h.id, h.status
           HAVING count(p.id) <> CASE WHEN h.status = 'pending' THEN 0 ELSE 1 END
            ORDER BY h.id"""):
        report.problems.append(f"hold {row['id']} ({row['status']}) is resolved by {row['resolutions']} postings")
    for row in await conn.fetch(
        """SELECT h.id, h.posted_amount, coalesce(sum(t.amount), 0) AS debited
             FROM ledger_holds h
             JOIN ledger_postings p ON p.resolves_hold_id = h.id AND p.result = 'ok'
             LEFT JOIN ledger_transfers t ON t.posting_id = p.id AND t.debit_account_id = h.debit_account_id
            WHERE h.status = 'posted'
            GROUP BY h.id, h.posted_amount
           HAVING coalesce(sum(t.amount), 0) <> h.posted_amount
            ORDER BY h.id"""):
        report.problems.append(
            f"hold {row['id']}: posted {row['posted_amount']}, its posting debits {row['debited']}")

"""`posgw agent earnings` (分润明细, CLI.md "Agent network", "Balances"): an agent's
earnings rows over a period of local days, with totals by source, its direct and
team volume, and its balances. Read-only.

Rows: one per original and agent for shares (``redirect``: a share redirected
to this agent from an ancestor), one per cancellation and agent
for clawbacks (negative; a reversed cancellation's share given again is
positive), one per event and agent for an activation reward, a forfeited
deposit's share and a service fee's share (gateway/jobs/agent_events.py), in
order of day, then transaction id (an activation's: the approval that reached
the volume; deposits and fees after the day's transactions). ``volume_fen`` is
the original's amount (a clawback's: the amount cancelled, negative; an
activation's: the terminal's volume when it was reached; 0 for deposits and fees). Volumes are
net: the period's originals less the period's cancellations, of the agent's
own merchants (direct) or of its whole subtree (team).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput

SOURCES = ("share", "activation", "deposit", "service_fee", "clawback", "redirect", "withdrawal")
ROW_KEYS = ("date", "source", "tid", "mid", "volume_fen", "amount_fen")
_SUBTREE = """WITH RECURSIVE subtree (code) AS (
                  SELECT code FROM agents WHERE code = $1
                  UNION ALL
                  SELECT a.code FROM agents a JOIN subtree s ON a.parent_code = s.code)"""


async def earnings(conn: asyncpg.Connection, code: str, first_day: date, last_day: date) -> dict[str, Any]:
    """The agent's earnings from ``first_day`` through ``last_day`` (local days, included)."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agents WHERE code = $1)", code):
        raise InvalidInput(f"unknown agent {code}")
    rows = await conn.fetch(
        f"""{_SUBTREE},
            txns AS (
                SELECT t.* FROM agent_share_txns t
                 WHERE t.day BETWEEN $2 AND $3 AND t.base_agent IN (SELECT code FROM subtree)),
            cancelled AS (
                SELECT e.*, t.tid, t.mid FROM agent_cancel_events e JOIN agent_share_txns t ON t.txn_id = e.original_id
                 WHERE e.day BETWEEN $2 AND $3 AND t.base_agent IN (SELECT code FROM subtree))
            SELECT t.day, CASE WHEN s.agent_code = s.recipient THEN 'share' ELSE 'redirect' END AS source,
                   t.tid, t.mid, t.amount_fen AS volume_fen, s.share_fen AS amount_fen,
                   t.txn_id AS id
              FROM txns t JOIN agent_shares s ON s.txn_id = t.txn_id
             WHERE s.recipient = $1
            UNION ALL
            SELECT c.day, 'clawback', c.tid, c.mid, -c.amount_fen, -k.clawback_fen, c.event_id
              FROM cancelled c JOIN agent_clawbacks k ON k.event_id = c.event_id
             WHERE k.recipient = $1
            UNION ALL
            SELECT e.day, e.kind, e.tid, e.mid, coalesce(a.volume_fen, 0), e.amount_fen, a.txn_id
              FROM agent_event_shares e LEFT JOIN agent_activations a ON e.kind = 'activation' AND a.tid = e.tid
             WHERE e.recipient = $1 AND e.day BETWEEN $2 AND $3
            ORDER BY day, id NULLS LAST, source, tid""",
        code, first_day, last_day)
    volume = await conn.fetchrow(
        f"""{_SUBTREE}
            SELECT coalesce(sum(v.amount_fen) FILTER (WHERE v.base_agent = $1), 0)::bigint AS direct_volume_fen,
                   coalesce(sum(v.amount_fen), 0)::bigint AS team_volume_fen
              FROM (SELECT base_agent, amount_fen FROM agent_share_txns
                     WHERE day BETWEEN $2 AND $3 AND base_agent IN (SELECT code FROM subtree)
                    UNION ALL
                    SELECT t.base_agent, -e.amount_fen FROM agent_cancel_events e
                      JOIN agent_share_txns t ON t.txn_id = e.original_id
                     WHERE e.day BETWEEN $2 AND $3 AND t.base_agent IN (SELECT code FROM subtree)) v""",
        code, first_day, last_day)
    held = await balances(conn, code)
    listed = [{"date": row["day"].isoformat(), "source": row["source"], "tid": row["tid"], "mid": row["mid"],
               "volume_fen": row["volume_fen"], "amount_fen": row["amount_fen"]} for row in rows]
    listed = sorted(listed + await withdrawal_rows(conn, code, first_day, last_day), key=lambda row: row["date"])
    totals = {source: 0 for source in SOURCES}
    for row in listed:
        totals[row["source"]] += row["amount_fen"]
    return {"code": code, "from": first_day.isoformat(), "to": last_day.isoformat(), "rows": listed,
            "totals": totals, "net_fen": sum(totals.values()),
            "direct_volume_fen": volume["direct_volume_fen"], "team_volume_fen": volume["team_volume_fen"],
            "profit_fen": held["profit_fen"], "receivable_fen": held["receivable_fen"]}


async def balances(conn: asyncpg.Connection, code: str) -> dict[str, int]:
    """What `agent show` adds (CLI.md "Balances"): ``profit_fen`` (every credit, less clawbacks,
    netting and withdrawals), ``receivable_fen`` (what the agent owes the house) and
    ``reward_fen`` (the running total of the activation rewards it received).
    An agent no run has reached yet has none of its accounts: all 0."""
    row = await conn.fetchrow(
        """SELECT p.credits_posted - p.debits_posted AS profit_fen, r.debits_posted - r.credits_posted AS receivable_fen
             FROM agent_accounts x
             JOIN ledger_accounts p ON p.id = x.profit_account_id
             JOIN ledger_accounts r ON r.id = x.receivable_account_id
            WHERE x.agent_code = $1""", code)
    reward_fen = await conn.fetchval(
        "SELECT coalesce(sum(amount_fen), 0)::bigint FROM agent_event_shares WHERE recipient = $1 AND kind = 'activation'",
        code)
    return {"profit_fen": row["profit_fen"] if row else 0, "reward_fen": reward_fen,
            "receivable_fen": row["receivable_fen"] if row else 0}


async def withdrawal_rows(conn: asyncpg.Connection, code: str, first_day: date, last_day: date) -> list[dict[str, Any]]:
    """The agent's ``withdrawal`` rows: each withdrawal's gross, negative, on the local day it was
    made; a withdrawal the bank returned, its gross again, positive, on the day of the return
    (the profit balance had it back). No terminal, merchant or volume."""
    rows = await conn.fetch(
        """SELECT day, amount_fen FROM (
               SELECT requested_day AS day, -gross_fen AS amount_fen, id, 0 AS step FROM payouts
                WHERE beneficiary_kind = 'agent' AND beneficiary = $1
               UNION ALL
               SELECT returned_day, gross_fen, id, 1 FROM payouts
                WHERE beneficiary_kind = 'agent' AND beneficiary = $1 AND status = 'returned') w
            WHERE day BETWEEN $2 AND $3
            ORDER BY day, id, step""", code, first_day, last_day)
    return [{"date": row["day"].isoformat(), "source": "withdrawal", "tid": None, "mid": None, "volume_fen": 0,
             "amount_fen": row["amount_fen"]} for row in rows]

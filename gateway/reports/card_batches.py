"""Read-only views of version 2's card transactions (CLI.md "Card transactions and
batches"; WIRE.md 9.3, 9.4): the pre-authorizations and their holds, and the
differences a batch upload found between a terminal and the gateway."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

# A pre-authorization's status as the operator reads it: its row's, open while approved.
PREAUTH_STATUSES = {"open": "approved", "completed": "completed", "cancelled": "cancelled", "expired": "expired",
                    "reversed": "reversed"}
STATUS_NAMES = {row: name for name, row in PREAUTH_STATUSES.items()}
DIFFERENCE_KINDS = ("terminal_only", "gateway_only", "amount_differs")


async def list_preauths(conn: asyncpg.Connection, *, card_hash: bytes | None, tid: str | None,
                        status: str | None) -> list[dict[str, Any]]:
    """``preauths``: tid, rrn, auth_code, pan_masked, amount_fen, completed_fen (what its
    standing completion posted, else 0), status, expires_at; oldest first."""
    rows = await conn.fetch(
        """SELECT o.tid, o.rrn, a.auth_code, c.pan_masked, a.amount_fen, o.status, a.expires_at,
                  coalesce((SELECT sum(d.amount_fen) FROM gw_transactions d
                             WHERE d.original_id = o.id AND d.kind IN ('completion', 'completion_advice')
                               AND d.status IN ('approved', 'refunded')), 0)::bigint AS completed_fen
             FROM gw_preauths a JOIN gw_transactions o ON o.id = a.txn_id JOIN cards c ON c.id = a.card_id
            WHERE ($1::bytea IS NULL OR c.pan_hash = $1) AND ($2::text IS NULL OR o.tid = $2)
              AND ($3::text IS NULL OR o.status = $3)
            ORDER BY o.id""", card_hash, tid, status)
    return [{"tid": r["tid"], "rrn": r["rrn"], "auth_code": r["auth_code"], "pan_masked": r["pan_masked"],
             "amount_fen": r["amount_fen"], "completed_fen": r["completed_fen"],
             "status": STATUS_NAMES.get(r["status"], r["status"]), "expires_at": r["expires_at"].isoformat()}
            for r in rows]


async def batch_differences(conn: asyncpg.Connection, tid: str, batch: int) -> dict[str, list[dict[str, Any]]] | None:
    """The differences kept at the end of the batch's upload; None before an upload ended."""
    kept = await conn.fetchval("SELECT differences FROM gw_upload_ends WHERE tid = $1 AND batch = $2", tid, batch)
    if kept is None:
        return None
    differences = orjson.loads(kept)
    return {kind: differences.get(kind, []) for kind in DIFFERENCE_KINDS}


async def unbalanced_differences(conn: asyncpg.Connection) -> dict[tuple[str, int], dict[str, Any]]:
    """The differences of every unbalanced batch whose upload ended, by (tid, batch)."""
    rows = await conn.fetch(
        """SELECT e.tid, e.batch, e.differences FROM gw_upload_ends e
             JOIN gw_batches b ON b.tid = e.tid AND b.batch = e.batch WHERE NOT b.balanced""")
    return {(r["tid"], r["batch"]): orjson.loads(r["differences"]) for r in rows}

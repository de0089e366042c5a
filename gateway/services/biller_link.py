"""The biller link's operator changes: ``saf retry`` (audited as ``saf.retry`` on
``saf:<id>``) and the cancels that ``biller reconcile --cancel-orphans`` queues
(``saf.enqueue`` on ``saf:<biller>/cancel/<receipt>``, one record per cancel
queued, none for a receipt that already had one)."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.domain.validate import InvalidInput
from gateway.services.audit import State, audited, record_many
from gateway.upstream import outbox, reconcile


def message_entity(message_id: int) -> str:
    return f"saf:{message_id}"


async def message_state(conn: asyncpg.Connection, message_id: int) -> State:
    message = await outbox.get_message(conn, message_id)
    if message is None:
        return None
    return {"biller": message.biller, "kind": message.kind, "receipt": message.receipt, "status": message.status,
            "next_attempt_at": message.next_attempt_at.isoformat()}


async def retry_message(conn: asyncpg.Connection, actor: str, message_id: int) -> dict[str, Any]:
    """Make a pending message due now; an unknown or done one is ``InvalidInput`` (CLI.md: exit 2)."""

    async def change() -> dict[str, Any]:
        try:
            return (await outbox.retry(conn, message_id)).as_json()
        except outbox.NotRetriable as exc:
            raise InvalidInput(str(exc)) from None

    return await audited(conn, actor, "saf.retry", message_entity(message_id),
                         lambda: message_state(conn, message_id), change)


async def cancel_orphans(conn: asyncpg.Connection, actor: str, biller_code: str, receipts: list[str]) -> list[str]:
    """Queue a cancel for each receipt the biller holds and we do not, once per receipt;
    return the receipts newly queued."""
    async with conn.transaction():
        queued = await reconcile.queue_orphan_cancels(conn, biller_code, receipts)
        await record_many(conn, actor, "saf.enqueue", [
            (f"saf:{biller_code}/cancel/{receipt}", None,
             {"biller": biller_code, "kind": "cancel", "receipt": receipt, "status": "pending"})
            for receipt in queued])
    return queued

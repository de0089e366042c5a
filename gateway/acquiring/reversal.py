"""Reversals (MTI 0400) of any family: a card purchase, a void or a bill
payment. They always go through once their MAC verifies (WIRE.md 8); the
reversal of a standing bill payment queues its cancel for the biller in its
own transaction (gw_record_reversal, through the biller outbox)."""

from __future__ import annotations

from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import Reversal
from gateway.acquiring.recording import finish
from gateway.acquiring.steps import require


async def check_reversal_format(txn: Transaction, svc: Services) -> None:
    require(txn.request, "processing_code", "response_code")


async def finish_reversal(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, Reversal)

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


# The MTI class of a reversal's original by its 60.1 (WIRE.md 9.1, 9.9); any other: 0200.
ORIGINAL_CLASS_BY_TXN_TYPE = {"25": "0220", "24": "0220", "10": "0100", "11": "0100"}


async def finish_reversal(txn: Transaction, svc: Services) -> None:
    original_class = ORIGINAL_CLASS_BY_TXN_TYPE.get(txn.request.txn_type or "", "0200")
    await finish(txn, svc, Reversal, original_class=original_class)

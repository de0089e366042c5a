"""Refunds (0220, 60.1 = 25; WIRE.md 9.2, 9.9): the steps of their pipeline,
in the order of checks of WIRE.md 8 and 9.8. The original is a purchase or a
completion approved at any terminal of the merchant, in any batch, found by
RRN, 61's date and card (and 61's batch and STAN when they are not zeros);
the refund moves money from the merchant's account to the card."""

from __future__ import annotations

from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import Refund
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import finish
from gateway.acquiring.steps import require
from gateway.acquiring.store import OriginalReference, RefundableOriginal
from gateway.domain.vocabulary import Kind, Status
from ledger.postings import Transfer, basis_points_fen
from protocol.crypto import PinBlockError

ORIGINAL_TXN_MIN_DIGITS = 16  # 61: batch n6, STAN n6, date n4; longer: the rest is ignored (9.9)
CONDITION_CODES = frozenset({"00", "08"})  # 25 of a refund: normal, or mail or telephone order (9.9)
REFUNDABLE_KINDS = frozenset({Kind.PURCHASE, Kind.COMPLETION, Kind.COMPLETION_ADVICE})
REFUNDABLE_STATUSES = frozenset({Status.APPROVED, Status.REFUNDED})


async def check_refund_format(txn: Transaction, svc: Services) -> None:
    """37 and 61 (of at least 16 digits) present (30)."""
    require(txn.request, "rrn", "original_txn")
    if len(txn.request.original_txn) < ORIGINAL_TXN_MIN_DIGITS:
        raise Decline(Outcome.FORMAT_ERROR, "original_txn shorter than 16 digits")


async def check_refund_condition(txn: Transaction, svc: Services) -> None:
    """Field 25 of a refund is 00 or 08 (else 12)."""
    if txn.request.condition_code not in CONDITION_CODES:
        raise Decline(Outcome.UNKNOWN_TRANSACTION, f"condition code {txn.request.condition_code} for a refund")


def original_reference(txn: Transaction) -> OriginalReference:
    """The original as 37 and 61 name it; 61's batch and STAN count only when not zeros."""
    request = txn.request
    named = request.original_batch != 0 or request.original_stan != "000000"
    return OriginalReference(txn.terminal_record.mid, request.rrn, request.original_date,
                             request.original_batch if named else None, request.original_stan if named else None)


def refundable_fen(txn: Transaction, svc: Services, original: RefundableOriginal | None) -> int:
    """What may still be refunded from the original: none found, not a purchase or
    completion, voided or reversed, another card's, or older than refund_days_max: 25."""
    card = txn.ctx.card
    if original is None or original.kind not in REFUNDABLE_KINDS:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "no purchase or completion to refund")
    if original.status not in REFUNDABLE_STATUSES:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, f"original {original.status}")
    if card is None or card.id != original.card_id:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "not the original's card")
    age_days = (txn.now.date() - original.created_at.astimezone(svc.settings.tz).date()).days
    if age_days > svc.settings.refund_days_max:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, f"original {age_days} days old")
    return original.amount_fen - original.refunded_fen


async def check_refund_original(txn: Transaction, svc: Services) -> None:
    """The original is refundable (25) and the amount within what is left of it (64)."""
    original = await svc.store.find_refund_original(original_reference(txn))
    left_fen = refundable_fen(txn, svc, original)
    if (txn.request.amount_fen or 0) > left_fen:
        raise Decline(Outcome.AMOUNT_MISMATCH, f"only {left_fen} fen left to refund")
    txn.found_original = original


async def verify_pin_when_present(txn: Transaction, svc: Services) -> None:
    """A PIN, when 52 and 53 are present, is verified (99, 55; the third wrong in a
    row is 75); its absence is accepted whatever 22 says (WIRE.md 9.9)."""
    request, card = txn.request, txn.ctx.card
    if request.pin_block is None:
        return
    try:
        right = svc.hsm.verify_pin(txn.terminal_record.pik_lmk, request.pin_block, txn.pan, card.pvv)
    except PinBlockError as exc:
        raise Decline(Outcome.PIN_FORMAT_ERROR, str(exc)) from None
    txn.pin_result = "wrong" if not right else "ok" if card.pin_tries else None
    if not right:
        raise Decline(Outcome.PIN_INCORRECT, "wrong PIN")


def refund_transfers(txn: Transaction, svc: Services) -> tuple[Transfer, ...]:
    """From the merchant's account to the card; the merchant discount on the refunded
    amount comes back from the fee income only with ``refund_returns_fee``."""
    terminal, card, amount = txn.terminal_record, txn.ctx.card, txn.request.amount_fen
    fee = basis_points_fen(amount, terminal.mdr_bp) if svc.settings.refund_returns_fee else 0
    transfers = [Transfer(terminal.merchant_account_id, card.account_id, amount - fee, "refund"),
                 Transfer(svc.fee_account_id, card.account_id, fee, "refund_fee")]
    return tuple(t for t in transfers if t.amount_fen > 0)


async def finish_refund(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, Refund, original_id=txn.found_original.id, transfers=refund_transfers(txn, svc))

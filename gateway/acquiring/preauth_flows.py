"""The pre-authorization family (WIRE.md 9.3, 9.9): pre-authorization (0100/10)
placing a hold on the card, its cancel (0100/11), the completion request
(0200/20) and advice (0220/24) posting the hold, and the completion void
(0200/21) opening the pre-authorization again. The steps of their pipelines,
in the order of checks of WIRE.md 8 and 9.8; their recording in
functions/preauth.sql. A hold is the ledger's (ledger/holds.py)."""

from __future__ import annotations

from datetime import timedelta

from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import Completion, CompletionVoid, Preauth, PreauthCancel
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import finish, risk_check
from gateway.acquiring.refund_flows import ORIGINAL_TXN_MIN_DIGITS
from gateway.acquiring.steps import require
from gateway.acquiring.store import FoundOriginal, PreauthReference
from gateway.domain.vocabulary import Kind, Status
from ledger.postings import Transfer, basis_points_fen

CONDITION_CODE = "06"  # field 25 of the whole family (9.1)
ZERO_BATCH_STAN = (0, "000000")


def completion_amount_max_fen(preauth_fen: int, over_pct_max: int) -> int:
    """What a completion may post: the pre-authorization's amount plus
    ⌊amount × completion_over_pct_max / 100⌋ (WIRE.md 9.9)."""
    return preauth_fen + preauth_fen * over_pct_max // 100


# -- format (30) and type (12) ------------------------------------------------------


async def check_original_format(txn: Transaction, svc: Services) -> None:
    """A cancel, completion, advice or completion void carries 38 and 61 of 16 digits at least
    (30); a completion void also 37."""
    request = txn.request
    require(request, "auth_id", "original_txn")
    if txn.kind is Kind.COMPLETION_VOID:
        require(request, "rrn")
    if len(request.original_txn) < ORIGINAL_TXN_MIN_DIGITS:
        raise Decline(Outcome.FORMAT_ERROR, "original_txn shorter than 16 digits")


async def check_condition(txn: Transaction, svc: Services) -> None:
    """Field 25 of the family is 06 (else 12; missing was 30 at the format check)."""
    if txn.request.condition_code != CONDITION_CODE:
        raise Decline(Outcome.UNKNOWN_TRANSACTION, f"condition code {txn.request.condition_code}")


# -- originals (25, 64) ---------------------------------------------------------------


def reference(txn: Transaction) -> PreauthReference:
    request, card = txn.request, txn.ctx.card
    batch_stan = (request.original_batch, request.original_stan)
    batch, stan = (None, None) if batch_stan == ZERO_BATCH_STAN else batch_stan
    return PreauthReference(txn.terminal_record.mid, txn.terminal_record.tid, card.id if card else None,
                            request.auth_id, request.original_date, batch, stan, request.rrn)


def open_preauth(txn: Transaction, found: FoundOriginal | None) -> FoundOriginal:
    """The pre-authorization is found, open and not past its expiry (25)."""
    if found is None:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "no such pre-authorization")
    if found.status != Status.APPROVED:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, f"pre-authorization {found.status}")
    if found.expires_at is not None and found.expires_at <= txn.now:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "pre-authorization expired")
    return found


async def check_cancel_original(txn: Transaction, svc: Services) -> None:
    """The open pre-authorization (25), for its very amount (64)."""
    found = open_preauth(txn, await svc.store.find_preauth(reference(txn)))
    if txn.request.amount_fen != found.amount_fen:
        raise Decline(Outcome.AMOUNT_MISMATCH, "amount is not the pre-authorization's")
    txn.found_original = found


async def check_completion_original(txn: Transaction, svc: Services) -> None:
    """The open pre-authorization (25); the amount up to its limit (64)."""
    found = open_preauth(txn, await svc.store.find_preauth(reference(txn)))
    limit_fen = completion_amount_max_fen(found.amount_fen, svc.settings.completion_over_pct_max)
    if (txn.request.amount_fen or 0) > limit_fen:
        raise Decline(Outcome.AMOUNT_MISMATCH, f"more than {limit_fen} fen")
    txn.found_original = found


async def check_completion_void_original(txn: Transaction, svc: Services) -> None:
    """The completion, by terminal, 37, the whole 61, 38 and card, approved and in this
    batch (25); then its amount (64)."""
    found = await svc.store.find_completion(reference(txn))
    card = txn.ctx.card
    if found is None or found.status != Status.APPROVED or found.batch != txn.request.batch:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "no such completion in this batch")
    if card is None or card.id != found.card_id:
        raise Decline(Outcome.ORIGINAL_NOT_FOUND, "not the completion's card")
    if txn.request.amount_fen != found.amount_fen:
        raise Decline(Outcome.AMOUNT_MISMATCH, "amount is not the completion's")
    txn.found_original = found


# -- card (the advice: 14 only) -------------------------------------------------------


async def check_card_known(txn: Transaction, svc: Services) -> None:
    """A completion advice's card is known (14); it skips 62, 54 and the PIN (9.9)."""
    if txn.ctx.card is None:
        raise Decline(Outcome.CARD_UNKNOWN, "unknown card")


# -- recording ------------------------------------------------------------------------


async def finish_preauth(txn: Transaction, svc: Services) -> None:
    terminal, card = txn.terminal_record, txn.ctx.card
    expires_at = txn.now + timedelta(days=svc.settings.preauth_hold_days)
    await finish(txn, svc, Preauth, card_account_id=card.account_id,
                 merchant_account_id=terminal.merchant_account_id, mid=terminal.mid,
                 expires_at=expires_at.isoformat())


async def finish_cancel(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, PreauthCancel, original_id=txn.found_original.id)


async def finish_completion(txn: Transaction, svc: Services) -> None:
    """Posted as a purchase (merchant discount included) from the hold."""
    terminal, card, amount, found = txn.terminal_record, txn.ctx.card, txn.request.amount_fen, txn.found_original
    fee = basis_points_fen(amount, terminal.mdr_bp)
    transfers = [Transfer(card.account_id, terminal.merchant_account_id, amount - fee, "completion"),
                 Transfer(card.account_id, svc.fee_account_id, fee, "completion_fee")]
    await finish(txn, svc, Completion, original_id=found.id, transfers=tuple(t for t in transfers if t.amount_fen),
                 amount_max_fen=completion_amount_max_fen(found.amount_fen, svc.settings.completion_over_pct_max),
                 auth_code=found.auth_code, risk=risk_check(txn), position=txn.position)


async def finish_completion_void(txn: Transaction, svc: Services) -> None:
    await finish(txn, svc, CompletionVoid, original_id=txn.found_original.id)

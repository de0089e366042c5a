"""Utility bills: inquiry and payment, in cash on the agent's float or by card
(WIRE.md sections 3, 5 and 8)."""

from __future__ import annotations

from dataclasses import replace

import structlog

from gateway.acquiring.card_flows import check_card, check_card_request_format, verify_pin
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import BillInquiry, BillPayment, BillRecord
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import approved, finish, risk_check
from gateway.acquiring.steps import require
from gateway.domain.vocabulary import Kind
from gateway.upstream import outbox
from gateway.upstream.billers import AmountNotAccepted, Biller, BillerUnavailable, BillNotFound, PaymentOrder
from ledger.postings import Transfer
from protocol import answers, tlv

log = structlog.get_logger("posgw.bills")

BILL_DATA_BYTES_MAX = 600  # field 59 (WIRE.md 2)
_FB_BYTES = len(tlv.encode({tlv.FLOAT_BALANCE: answers.float_balance(0)}))  # in a cash payment's answer

_CONNECTOR_OUTCOMES = {
    BillNotFound: Outcome.BILL_NOT_FOUND,
    AmountNotAccepted: Outcome.AMOUNT_INVALID,
    BillerUnavailable: Outcome.BILLER_UNAVAILABLE,
}


async def check_bill_request_format(txn: Transaction, svc: Services) -> None:
    """Field 59 is well-formed TLV with BL and AC (30); a card payment carries the card fields."""
    request = txn.request
    require(request, "processing_code", "bill_data")
    try:
        fields = tlv.decode(request.bill_data)
    except tlv.TlvError as exc:
        raise Decline(Outcome.FORMAT_ERROR, f"field 59: {exc}") from None
    for tag in (tlv.BILLER, tlv.ACCOUNT):
        if not fields.get(tag):
            raise Decline(Outcome.FORMAT_ERROR, f"field 59 lacks {tag}")
    txn.bill_fields = fields
    if txn.kind is Kind.BILL_PAYMENT and (request.has("pan") or request.has("track2")):
        await check_card_request_format(txn, svc)


async def check_biller_known(txn: Transaction, svc: Services) -> None:
    if txn.ctx.biller is None:
        raise Decline(Outcome.BILLER_UNKNOWN, f"unknown biller {txn.bill_fields[tlv.BILLER]}")


_check_card_status = check_card(status=True)


async def check_payer_card(txn: Transaction, svc: Services) -> None:
    """A bill paid by card gets every card check (14, 62, 54, 75, 99, 55)."""
    if txn.pan is not None:
        await _check_card_status(txn, svc)
        await verify_pin(txn, svc)


def check_answer_fits(tags: dict[str, str], reserve: int = 0) -> None:
    """The answer echoes BL and AC: a request whose answer cannot fit field 59
    is a format error (30), found before anything is recorded or moves."""
    if len(tlv.encode_canonical(tags).encode(tlv.ENCODING)) + reserve > BILL_DATA_BYTES_MAX:
        raise Decline(Outcome.FORMAT_ERROR, f"the answer's field 59 would exceed {BILL_DATA_BYTES_MAX} bytes")


async def connector_call(svc: Services, operation):
    try:
        return await svc.connectors.call(operation)
    except tuple(_CONNECTOR_OUTCOMES) as exc:
        raise Decline(_CONNECTOR_OUTCOMES[type(exc)], str(exc)) from None


async def inquire_bill(txn: Transaction, svc: Services) -> None:
    biller, account = txn.ctx.biller, txn.bill_fields[tlv.ACCOUNT]
    info = await connector_call(svc, svc.connectors[biller].inquire(biller, account))
    tags = {tlv.BILLER: biller.code, tlv.ACCOUNT: account, tlv.NAME: info.name}
    approval: dict[str, object] = {}
    if info.amount_fen is not None:
        tags[tlv.AMOUNT_DUE] = f"{info.amount_fen:012d}"
        approval["amount"] = f"{info.amount_fen:012d}"
    if info.period:
        tags[tlv.PERIOD] = info.period
    tags[tlv.REFERENCE] = info.reference
    approval["bill_tlv"] = tags
    check_answer_fits(tags)
    await finish(txn, svc, BillInquiry, approval=approval)


async def pay_bill(txn: Transaction, svc: Services) -> None:
    """Ask the biller to accept the payment (30 BR missing, 25, 13, 91), then
    move the money (51): cash from the agent's float, or from the card.

    Intent before the call (docs/bills.md, the states of a payment): for a
    biller that is not built in, a cancel of the receipt is armed and committed
    before the biller is asked, due once the request's time is up. The
    recording (gw_finish) takes it back with the money, or makes it due now
    when the payment does not stand (51, the biller's outcome unknown: 91); a
    gateway killed in between leaves it to fire."""
    biller, terminal, fields = txn.ctx.biller, txn.terminal_record, txn.bill_fields
    account, reference, amount = fields[tlv.ACCOUNT], fields.get(tlv.REFERENCE), txn.request.amount_fen
    if not biller.prepaid and not reference:
        raise Decline(Outcome.FORMAT_ERROR, "BR missing")
    receipt = await svc.rrns.next()
    armed = biller.connector != "builtin"
    if armed:
        await outbox.arm_cancel(svc.pool, biller.code, receipt, after_s=svc.settings.request_timeout_s)

    card = txn.ctx.card if txn.pan is not None else None
    source = card.account_id if card is not None else terminal.agent_float_account_id
    commission = biller.commission_fen(amount)
    transfers = [Transfer(source, biller.account_id, amount, "bill_payment")]
    if commission:
        transfers.append(Transfer(biller.account_id, terminal.agent_commission_account_id, commission,
                                  "bill_commission"))
    tags = {tlv.BILLER: biller.code, tlv.ACCOUNT: account}
    bill = BillRecord(biller_code=biller.code, account=account, receipt=receipt, commission_fen=commission,
                      agent_code=terminal.agent_code,
                      float_account_id=terminal.agent_float_account_id if card is None else None,
                      cancel_armed=armed)
    recording = {"rrn": receipt, "transfers": tuple(transfers), "risk": risk_check(txn), "position": txn.position}
    try:
        try:
            accepted = await svc.connectors.call(
                svc.connectors[biller].pay(biller, PaymentOrder(account, reference, amount, receipt)))
        except BillerUnavailable as exc:
            if not armed:
                raise Decline(Outcome.BILLER_UNAVAILABLE, str(exc)) from None
            log.warning("biller_outcome_unknown", biller=biller.code, receipt=receipt, error=str(exc))
            await finish(txn, svc, BillPayment, bill=bill, approval={"bill_tlv": tags},
                         biller_outcome=Outcome.BILLER_UNAVAILABLE, **recording)
            return
        except (BillNotFound, AmountNotAccepted) as exc:
            raise Decline(_CONNECTOR_OUTCOMES[type(exc)], str(exc)) from None
        if accepted.name:
            tags[tlv.NAME] = accepted.name
        tags[tlv.RECEIPT] = receipt
        if accepted.token:
            tags[tlv.TOKEN] = accepted.token
        bill = replace(bill, bill_id=accepted.bill_id, token=accepted.token or None,
                       meter=(accepted.meter or account) if accepted.token else None)
        check_answer_fits(tags, _FB_BYTES if card is None else 0)
        await finish(txn, svc, BillPayment, bill=bill, approval={"bill_tlv": tags}, **recording)
    finally:
        if armed and not (approved(txn.answer) and txn.answer.get("rrn") == receipt):
            await _cancel_now(svc, biller, receipt)


async def _cancel_now(svc: Services, biller: Biller, receipt: str) -> None:
    """A payment that did not stand under this receipt (refused, declined before
    its recording, a repeat's answer, abandoned): its armed cancel due now rather
    than at the end of the request's time. Best effort: the armed cancel fires
    anyway."""
    try:
        await svc.pool.execute("SELECT gw_bill_cancel_now($1, $2)", biller.code, receipt)
    except Exception as exc:
        log.warning("biller_cancel_not_hastened", biller=biller.code, receipt=receipt, error=str(exc))

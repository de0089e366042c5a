"""Utility bills: inquiry and payment, in cash on the agent's float or by card
(WIRE.md sections 3, 5 and 8)."""

from __future__ import annotations

import structlog

from gateway.acquiring.card_flows import check_card, check_card_request_format, verify_pin
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import BillInquiry, BillPayment, BillRecord
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import approved, finish, risk_check
from gateway.acquiring.steps import require
from gateway.domain.bills import load_biller
from gateway.domain.vocabulary import Kind
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


def _check_answer_fits(tags: dict[str, str], reserve: int = 0) -> None:
    """The answer echoes BL and AC: a request whose answer cannot fit field 59
    is a format error (30), found before anything is recorded or moves."""
    if len(tlv.encode_canonical(tags).encode(tlv.ENCODING)) + reserve > BILL_DATA_BYTES_MAX:
        raise Decline(Outcome.FORMAT_ERROR, f"the answer's field 59 would exceed {BILL_DATA_BYTES_MAX} bytes")


async def _ask_biller(svc: Services, operation):
    try:
        return await svc.connectors.call(operation)
    except tuple(_CONNECTOR_OUTCOMES) as exc:
        raise Decline(_CONNECTOR_OUTCOMES[type(exc)], str(exc)) from None


async def inquire_bill(txn: Transaction, svc: Services) -> None:
    biller, account = txn.ctx.biller, txn.bill_fields[tlv.ACCOUNT]
    info = await _ask_biller(svc, svc.connectors[biller].inquire(biller, account))
    tags = {tlv.BILLER: biller.code, tlv.ACCOUNT: account, tlv.NAME: info.name}
    approval: dict[str, object] = {}
    if info.amount_fen is not None:
        tags[tlv.AMOUNT_DUE] = f"{info.amount_fen:012d}"
        approval["amount"] = f"{info.amount_fen:012d}"
    if info.period:
        tags[tlv.PERIOD] = info.period
    tags[tlv.REFERENCE] = info.reference
    approval["bill_tlv"] = tags
    _check_answer_fits(tags)
    await finish(txn, svc, BillInquiry, approval=approval)


async def pay_bill(txn: Transaction, svc: Services) -> None:
    """Ask the biller to accept the payment (30 BR missing, 25, 13, 91), then
    move the money (51): cash from the agent's float, or from the card."""
    biller, terminal, fields = txn.ctx.biller, txn.terminal_record, txn.bill_fields
    account, reference, amount = fields[tlv.ACCOUNT], fields.get(tlv.REFERENCE), txn.request.amount_fen
    if not biller.prepaid and not reference:
        raise Decline(Outcome.FORMAT_ERROR, "BR missing")
    receipt = await svc.rrns.next()
    accepted = await _ask_biller(
        svc, svc.connectors[biller].pay(biller, PaymentOrder(account, reference, amount, receipt)))

    card = txn.ctx.card if txn.pan is not None else None
    source = card.account_id if card is not None else terminal.agent_float_account_id
    commission = biller.commission_fen(amount)
    transfers = [Transfer(source, biller.account_id, amount, "bill_payment")]
    if commission:
        transfers.append(Transfer(biller.account_id, terminal.agent_commission_account_id, commission,
                                  "bill_commission"))
    tags = {tlv.BILLER: biller.code, tlv.ACCOUNT: account}
    if accepted.name:
        tags[tlv.NAME] = accepted.name
    tags[tlv.RECEIPT] = receipt
    if accepted.token:
        tags[tlv.TOKEN] = accepted.token
    bill = BillRecord(biller_code=biller.code, account=account, receipt=receipt, commission_fen=commission,
                      agent_code=terminal.agent_code,
                      float_account_id=terminal.agent_float_account_id if card is None else None,
                      bill_id=accepted.bill_id, token=accepted.token or None,
                      meter=(accepted.meter or account) if accepted.token else None)
    try:
        _check_answer_fits(tags, _FB_BYTES if card is None else 0)
        await finish(txn, svc, BillPayment, rrn=receipt, transfers=tuple(transfers), bill=bill,
                     approval={"bill_tlv": tags}, risk=risk_check(txn), position=txn.position)
    finally:
        if not approved(txn.answer) or txn.answer.get("rrn") != receipt:
            await cancel_payment(svc, biller, receipt)  # no money moved under this receipt


async def cancel_payment(svc: Services, biller: Biller, receipt: str) -> None:
    """Tell the biller a payment it accepted did not happen (best effort: a
    failure is logged, and the biller's remittance shows the difference)."""
    try:
        await svc.connectors.call(svc.connectors[biller].cancel(biller, receipt))
    except Exception as exc:
        log.warning("biller_cancel_failed", biller=biller.code, receipt=receipt, error=str(exc))


async def cancel_reversed_payment(svc: Services, reversed_txn: dict[str, str] | None) -> None:
    if reversed_txn and reversed_txn.get("kind") == Kind.BILL_PAYMENT:
        biller = await load_biller(svc.pool, reversed_txn["biller_code"])
        if biller is not None:
            await cancel_payment(svc, biller, reversed_txn["receipt"])

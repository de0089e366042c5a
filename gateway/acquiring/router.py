"""Which pipeline a request takes, by MTI, processing code, 60.1 and 60.3."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.acquiring import (
    batch_upload,
    bill_flows,
    card_flows,
    counter_flows,
    ic_flows,
    network,
    preauth_flows,
    refund_flows,
    reversal,
    steps,
)
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.steps import Step
from gateway.domain.vocabulary import Kind
from protocol.messages import Message

FINANCIAL_MTIS = frozenset({"0100", "0200", "0220", "0400", "0500"})
KNOWN_MTIS = frozenset({"0800", "0820", "0320"}) | FINANCIAL_MTIS


async def unknown_transaction(txn: Transaction, svc: Services) -> None:
    raise Decline(Outcome.UNKNOWN_TRANSACTION, "unknown message type or code")


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    steps: tuple[Step, ...]


_WHO = (steps.identify_terminal, steps.check_merchant)

SIGN_ON = Route(Kind.SIGN_ON, _WHO + (steps.check_not_frozen, network.sign_on))
SIGN_OFF = Route(Kind.SIGN_OFF, _WHO + (steps.check_not_frozen, network.sign_off))
ECHO = Route(Kind.ECHO, _WHO + (steps.check_not_frozen, network.echo))
UNKNOWN = Route(Kind.UNKNOWN, _WHO + (unknown_transaction,))

# Chip terminals (WIRE.md 9.5): answered like an echo (97, 58, no keys, no MAC), then one step of ic_flows.
IC_ROUTES = {key: Route(kind, _WHO + (steps.check_not_frozen, step))
             for key, (kind, step) in ic_flows.IC_MESSAGES.items()}
IC_CAPK_QUERY, IC_AID_QUERY, IC_CAPK_DOWNLOAD, IC_AID_DOWNLOAD, IC_CAPK_END, IC_AID_END, STATUS_UPLOAD = (
    IC_ROUTES[key] for key in (("0820", "372"), ("0820", "382"), ("0800", "370"), ("0800", "380"),
                               ("0800", "371"), ("0800", "381"), ("0820", "362")))

# Financial requests: load everything at once, then the checks in WIRE.md order; a terminal
# bound to no merchant gets 58 where the permits and freezes are checked (WIRE.md 9.9).
_FINANCIAL_CHECKS = (card_flows.load_context, steps.check_merchant, steps.check_keys_current, steps.verify_mac,
                     card_flows.check_repeat, card_flows.check_currency, card_flows.check_batch_open)
_FINANCIAL = _FINANCIAL_CHECKS + (steps.check_bound,)
_CARD_FORMAT = (card_flows.check_card_request_format,)
BALANCE = Route(Kind.BALANCE, _CARD_FORMAT + _FINANCIAL + (
    card_flows.check_permitted("balance"), card_flows.check_card(status=True), card_flows.verify_pin,
    card_flows.check_risk, card_flows.finish_balance))
PURCHASE = Route(Kind.PURCHASE, _CARD_FORMAT + _FINANCIAL + (
    card_flows.check_permitted("purchase"), card_flows.check_card(status=True), card_flows.verify_pin,
    card_flows.check_amount, card_flows.check_risk, card_flows.finish_purchase))
VOID = Route(Kind.VOID, _CARD_FORMAT + _FINANCIAL + (
    card_flows.check_permitted("void"), card_flows.check_void_original, card_flows.check_card(status=False),
    card_flows.verify_pin, card_flows.check_amount, card_flows.finish_void))
# Reversals always go through once their MAC verifies (WIRE.md 8).
REVERSAL = Route(Kind.REVERSAL, (reversal.check_reversal_format,) + _FINANCIAL + (reversal.finish_reversal,))
UNKNOWN_FINANCIAL = Route(Kind.UNKNOWN, _FINANCIAL_CHECKS + (unknown_transaction,))  # 12 comes before 58
SETTLEMENT = Route(Kind.SETTLEMENT, (card_flows.check_settlement_format,) + _FINANCIAL + (
    steps.check_not_frozen, card_flows.finish_settlement))
_BILL = (bill_flows.check_bill_request_format,) + _FINANCIAL + (
    bill_flows.check_biller_known, card_flows.check_permitted("bill"))
BILL_INQUIRY = Route(Kind.BILL_INQUIRY, _BILL + (card_flows.check_risk, bill_flows.inquire_bill))
BILL_PAYMENT = Route(Kind.BILL_PAYMENT, _BILL + (
    bill_flows.check_payer_card, card_flows.check_amount, card_flows.check_risk, bill_flows.pay_bill))
# The agent's counter (WIRE.md 9.7, 9.8): the history counts as `bill`; a voucher sale is permitted by `voucher`.
BILL_HISTORY = Route(Kind.BILL_HISTORY, _BILL + (card_flows.check_risk, counter_flows.bill_history))
VOUCHER_SALE = Route(Kind.VOUCHER_SALE, (counter_flows.check_voucher_format,) + _FINANCIAL + (
    counter_flows.check_voucher_biller, card_flows.check_permitted("voucher"), counter_flows.check_face_value,
    card_flows.check_risk, counter_flows.sell_voucher))

# Version 2 (WIRE.md 9): a refund skips the risk rules and the card-status checks, as a void does (9.9).
REFUND = Route(Kind.REFUND, _CARD_FORMAT + (refund_flows.check_refund_format,) + _FINANCIAL + (
    refund_flows.check_refund_condition, card_flows.check_permitted("refund"), refund_flows.check_refund_original,
    card_flows.check_card(status=False), refund_flows.verify_pin_when_present, card_flows.check_amount,
    refund_flows.finish_refund))
# The pre-authorization family (9.3): the cancel and the completion void skip the
# risk rules and the card-status checks; the advice skips 58, 62, 54, the PIN and the risk rules (9.9).
_PREAUTH = _CARD_FORMAT + _FINANCIAL + (preauth_flows.check_condition,)
_PREAUTH_NAMED = _CARD_FORMAT + (preauth_flows.check_original_format,) + _FINANCIAL + (
    preauth_flows.check_condition,)
_PERMIT_PREAUTH = card_flows.check_permitted("preauth")
PREAUTH = Route(Kind.PREAUTH, _PREAUTH + (
    _PERMIT_PREAUTH, card_flows.check_card(status=True), card_flows.verify_pin, card_flows.check_amount,
    card_flows.check_risk, preauth_flows.finish_preauth))
PREAUTH_CANCEL = Route(Kind.PREAUTH_CANCEL, _PREAUTH_NAMED + (
    _PERMIT_PREAUTH, preauth_flows.check_cancel_original, card_flows.check_card(status=False),
    refund_flows.verify_pin_when_present, card_flows.check_amount, preauth_flows.finish_cancel))
COMPLETION = Route(Kind.COMPLETION, _PREAUTH_NAMED + (
    _PERMIT_PREAUTH, preauth_flows.check_completion_original, card_flows.check_card(status=True),
    card_flows.verify_pin, card_flows.check_amount, card_flows.check_risk, preauth_flows.finish_completion))
COMPLETION_ADVICE = Route(Kind.COMPLETION_ADVICE, _PREAUTH_NAMED + (
    preauth_flows.check_completion_original, preauth_flows.check_card_known, card_flows.check_amount,
    preauth_flows.finish_completion))
COMPLETION_VOID = Route(Kind.COMPLETION_VOID, _PREAUTH_NAMED + (
    _PERMIT_PREAUTH, preauth_flows.check_completion_void_original, card_flows.check_card(status=False),
    refund_flows.verify_pin_when_present, card_flows.check_amount, preauth_flows.finish_completion_void))
# Batch upload (9.4): no keys, no MAC, any batch of the terminal, no money; routed on 60.3 (9.9).
BATCH_UPLOAD_RECORDS = Route(Kind.BATCH_UPLOAD, _WHO + (batch_upload.keep_records,))
BATCH_UPLOAD_ADVICE = Route(Kind.BATCH_UPLOAD, _WHO + (batch_upload.keep_advice_copy,))
BATCH_UPLOAD_IC = Route(Kind.BATCH_UPLOAD, _WHO + (batch_upload.keep_ic_record,))
BATCH_UPLOAD_END = Route(Kind.BATCH_UPLOAD, _WHO + (batch_upload.end_upload,))
BATCH_UPLOAD_ROUTES = {"201": BATCH_UPLOAD_RECORDS, "000": BATCH_UPLOAD_ADVICE, "202": BATCH_UPLOAD_END,
                       "207": BATCH_UPLOAD_END, "203": BATCH_UPLOAD_IC, "204": BATCH_UPLOAD_IC,
                       "205": BATCH_UPLOAD_IC, "206": BATCH_UPLOAD_IC}

FINANCIAL_ROUTES = {
    ("0200", "310000", "01"): BALANCE,
    ("0200", "000000", "22"): PURCHASE,
    ("0200", "200000", "23"): VOID,
    ("0200", "380000", "40"): BILL_INQUIRY,
    ("0200", "500000", "41"): BILL_PAYMENT,
    ("0200", "520000", "42"): VOUCHER_SALE,
    ("0200", "390000", "43"): BILL_HISTORY,
    ("0220", "200000", "25"): REFUND,
    ("0100", "030000", "10"): PREAUTH,
    ("0100", "200000", "11"): PREAUTH_CANCEL,
    ("0200", "000000", "20"): COMPLETION,
    ("0220", "000000", "24"): COMPLETION_ADVICE,
    ("0200", "200000", "21"): COMPLETION_VOID,
}


def route(request: Message) -> Route:
    mti, network_code = request.mti, request.network_code
    if request.txn_type == ic_flows.TXN_TYPE and (chip := IC_ROUTES.get((mti, network_code))) is not None:
        return chip
    if mti == "0800":
        if request.txn_type == "00" and network_code in network.KEY_COUNT_BY_NETWORK_CODE:
            return SIGN_ON
        return UNKNOWN
    if mti == "0820" and request.txn_type == "00":
        if network_code == "002":
            return SIGN_OFF
        if network_code == "301":
            return ECHO
        return UNKNOWN
    if mti == "0320":
        return BATCH_UPLOAD_ROUTES.get(network_code, UNKNOWN)
    if mti == "0400":
        return REVERSAL
    if mti == "0500":
        if request.txn_type == "00" and network_code == "201":
            return SETTLEMENT
        return UNKNOWN_FINANCIAL
    if mti in FINANCIAL_MTIS:
        return FINANCIAL_ROUTES.get((mti, request.processing_code, request.txn_type), UNKNOWN_FINANCIAL)
    return UNKNOWN

"""Recording a financial request's outcome: the one call that moves its money
and stores its answer under its key (``gw_finish`` through the store, an
operation of gateway.acquiring.operations), and what every family hands it
(the content hash repeats are told apart by, the counted risk limits, a
decline's risk event)."""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.acquiring import risk, store
from gateway.acquiring.context import Services, StaleContext, Transaction
from gateway.acquiring.operations import (
    Declined,
    Operation,
    RiskCheck,
    RiskEvent,
    RiskRecheck,
    RowVersions,
    Stamp,
)
from gateway.acquiring.outcomes import Decline, Outcome
from protocol import answers, tlv
from protocol.codes import ResponseCode
from protocol.messages import Message


def content_hash(request: Message) -> str:
    """What makes two requests under one key the same (WIRE.md 8, repeats)."""
    return hashlib.sha256(request.mac_input).hexdigest()


def card_hash(txn: Transaction) -> str | None:
    """The card as risk events name it: a prefix of its keyed PAN hash."""
    return txn.pan_hash.hex()[:16] if txn.pan_hash else None


def risk_check(txn: Transaction) -> RiskCheck | None:
    """The counted limits ``gw_finish`` enforces (risk rules on, a counted kind), for the day and the card."""
    if txn.risk_limits is None or txn.kind not in risk.COUNTED_KINDS:
        return None
    card = txn.ctx.card if txn.pan is not None else None
    return RiskCheck(txn.now.date().isoformat(), txn.key.tid, card.id if card is not None else None, card_hash(txn),
                     {name: txn.risk_limits.get(name, 0) for name in risk.COUNTED_LIMITS})


def risk_recheck(txn: Transaction) -> RiskRecheck | None:
    """The travel and spike rules of a request checked against cached records,
    left to ``gw_risk_recheck`` (gateway.acquiring.card_flows.check_risk skips
    them: a cached context has no history); None when neither applies."""
    limits, card = txn.risk_limits, txn.ctx.card
    if limits is None:
        return None
    travel = spike = None
    if limits.get("travel_speed_kmh_max") and txn.position is not None and card is not None and txn.pan is not None:
        travel = {"lat": txn.position[0], "lon": txn.position[1], "speed_kmh_max": limits["travel_speed_kmh_max"],
                  "distance_km_min": limits.get("travel_distance_km_min", 0)}
    if limits.get("spike_factor") and txn.kind in risk.COUNTED_KINDS:
        spike = {"tid": txn.key.tid, "day": txn.now.date().isoformat(), "factor": limits["spike_factor"],
                 "floor": limits.get("spike_floor_count", 0)}
    return RiskRecheck(travel, spike) if travel or spike else None


async def finish(txn: Transaction, svc: Services, operation: type[Operation], *, rrn: str | None = None,
                 **fields: Any) -> store.FinishResult:
    """Record the outcome (money moves here) and make its response the answer:
    ``operation`` built with what every operation carries, then ``fields``."""
    request, ctx = txn.request, txn.ctx
    stamp = Stamp(rrn or await svc.rrns.next(), txn.now.strftime("%H%M%S"), txn.now.strftime("%m%d"))
    versions = RowVersions(ctx.terminal_version, ctx.card_version) if ctx.cached else None
    recheck = risk_recheck(txn) if ctx.cached else None
    card = ctx.card
    recorded = operation(kind=txn.kind, key=txn.key, processing_code=request.processing_code,
                         content=content_hash(request), amount_fen=request.amount_fen,
                         card_id=card.id if card is not None else None, pin=txn.pin_result, stamp=stamp,
                         versions=versions, recheck=recheck, **fields)

    def sent() -> None:
        txn.recording_sent = True

    result = await svc.store.finish(recorded, on_sent=sent)
    if result.status == "stale":
        raise StaleContext("cached terminal or card changed")
    if result.status == "conflict":
        raise Decline(Outcome.DUPLICATE_DIFFERENT_CONTENT, "same key, different content")
    txn.answer = result.response
    txn.risk_rule = txn.risk_rule or result.risk_rule
    return result


async def record_decline(txn: Transaction, svc: Services, decline: Decline) -> None:
    """Store a decline under the request's key, so its repeats get the same answer;
    a risk rule's decline is recorded as a risk event too."""
    event = None
    if isinstance(decline, risk.RiskDecline):
        txn.risk_rule = decline.rule
        event = RiskEvent(decline.rule, decline.values, card_hash(txn))
    await finish(txn, svc, Declined, outcome=decline.outcome, risk_event=event)


def response_fields(answer: dict[str, Any]) -> tuple[ResponseCode, dict[str, Any]]:
    """The response code and fields (by message attribute) of a recorded answer
    (``txn.answer``, as gw_finish stores it): its code from its outcome, and
    field 54, field 48 and the FB tag of field 59 made from its raw values
    (protocol.answers); an answer stored before outcomes were named carries
    its code and fields as sent."""
    if "outcome" not in answer:  # stored before outcomes were named
        fields = dict(answer)
        code = ResponseCode(fields["response_code"])
    else:
        fields = {name: value for name, value in answer.items() if name not in _RAW_VALUES}
        code = Outcome(answer["outcome"]).response_code
        fields["response_code"] = code.value
        if "balance_fen" in answer:
            fields["balance"] = answers.balance(answer["balance_fen"])
        if "batch_totals" in answer:
            totals = answer["batch_totals"]
            fields["settlement_totals"] = answers.settlement_totals(
                answers.BatchTotals(totals["debit_fen"], totals["debit_count"], totals["credit_fen"],
                                    totals["credit_count"]), totals["balanced"], totals.get("foreign_balanced"))
        if "float_fen" in answer:
            fields["bill_tlv"] = fields["bill_tlv"] | {tlv.FLOAT_BALANCE: answers.float_balance(answer["float_fen"])}
    if "bill_tlv" in fields:
        fields["bill_data"] = tlv.encode_canonical(fields.pop("bill_tlv"))
    return code, fields


# Of an answer: formatted above, or (a voucher's PIN under the LMK) revealed by counter_flows.reveal_voucher_pin.
_RAW_VALUES = frozenset({"outcome", "balance_fen", "batch_totals", "float_fen", "voucher_pin_lmk"})


def approved(answer: dict[str, Any] | None) -> bool:
    """Whether a recorded answer is an approval."""
    return answer is not None and response_fields(answer)[0] is ResponseCode.APPROVED

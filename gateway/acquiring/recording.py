"""Recording a financial request's outcome: the one call that moves its money
and stores its answer under its key (``gw_finish`` through the store), and
what every family hands it (the content hash repeats are told apart by, the
risk parameters, a decline's risk event)."""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.acquiring import risk
from gateway.acquiring import store
from gateway.acquiring.context import Services, StaleContext, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from protocol.messages import Message


def content_hash(request: Message) -> str:
    """What makes two requests under one key the same (WIRE.md 8, repeats)."""
    return hashlib.sha256(request.mac_input).hexdigest()


def card_hash(txn: Transaction) -> str | None:
    """The card as risk events name it: a prefix of its keyed PAN hash."""
    return txn.pan_hash.hex()[:16] if txn.pan_hash else None


def risk_params(txn: Transaction, svc: Services) -> dict[str, Any]:
    """What ``gw_finish`` needs to enforce the counted limits and record where the card was used."""
    params: dict[str, Any] = {}
    if txn.position is not None:
        params["position"] = {"lat": txn.position[0], "lon": txn.position[1]}
    if txn.risk_limits is not None and txn.kind in risk.COUNTED_KINDS:
        card = txn.ctx.card if txn.pan is not None else None
        params["risk"] = {
            "day": txn.now.date().isoformat(), "tid": txn.key.tid,
            "card_id": card.id if card is not None else None,
            "card_hash": card_hash(txn),
            "limits": {name: txn.risk_limits.get(name, 0) for name in risk.COUNTED_LIMITS},
        }
    return params


async def finish(txn: Transaction, svc: Services, op: str, response: dict[str, Any] | None = None,
                 **params: Any) -> store.FinishResult:
    """Record the outcome (money moves here) and make its response the answer."""
    request, key = txn.request, txn.key
    card = txn.ctx.card
    response = {"local_time": txn.now.strftime("%H%M%S"), "local_date": txn.now.strftime("%m%d")} | (response or {})
    if "rrn" not in response:
        response["rrn"] = await svc.rrns.next()
    def sent() -> None:
        txn.recording_sent = True

    if txn.ctx.cached:  # recorded only if the terminal's and card's rows are as cached
        params["versions"] = {"terminal": txn.ctx.terminal_version, "card": txn.ctx.card_version}
    result = await svc.store.finish({
        "op": op,
        "kind": txn.kind,
        "tid": key.tid,
        "batch": key.batch,
        "stan": key.stan,
        "mti_class": key.mti_class,
        "processing_code": request.processing_code,
        "content": content_hash(request),
        "amount": request.amount_fen,
        "card_id": card.id if card is not None else None,
        "pin": txn.pin_result,
        "response": response,
        **params,
    }, on_sent=sent)
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
    params: dict[str, Any] = {}
    if isinstance(decline, risk.RiskDecline):
        txn.risk_rule = decline.rule
        params["risk_event"] = {"rule": decline.rule, "values": decline.values,
                                "card_hash": card_hash(txn)}
    await finish(txn, svc, "decline", {"response_code": decline.outcome.response_code.value}, **params)

"""What each recording operation hands the database (``gw_finish_many``, then
``gw_finish`` or ``gw_finish_purchases``): one frozen dataclass per operation,
checked by assertions where it is built and sent as the JSON of ``as_json()``.
These classes are the payload's definition; gw_finish.sql reads exactly these
keys.

Every operation carries its request's key, kind, processing code, content
hash and amount, its card (if any), what its PIN check leaves to record
(``pin``), the response's stamp (RRN, local time and date: decided before
the outcome, the same for an approval and a decline) and, when it was
checked against cached records, their row versions (``versions``) and, with
the risk rules on, the rules left for the database to decide (``recheck``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.acquiring.outcomes import Outcome
from gateway.domain.vocabulary import Kind
from ledger.postings import Transfer
from protocol.answers import BatchTotals, foreign_totals_zero, parse_settlement_totals

PIN_RESULTS = (None, "ok", "wrong")  # nothing to record; a right PIN restarts a count; one more wrong


@dataclass(frozen=True, slots=True)
class TxnKey:
    """A request's idempotency key (WIRE.md section 8, repeats)."""

    tid: str
    batch: int
    stan: str
    mti_class: str


@dataclass(frozen=True, slots=True)
class Stamp:
    """The response fields decided before the outcome."""

    rrn: str
    local_time: str  # hhmmss
    local_date: str  # MMDD

    def __post_init__(self) -> None:
        assert len(self.rrn) == 12 and len(self.local_time) == 6 and len(self.local_date) == 4, self

    def as_json(self) -> dict[str, str]:
        return {"local_time": self.local_time, "local_date": self.local_date, "rrn": self.rrn}

    @property
    def auth_id(self) -> str:
        """Field 38 of an approved purchase or bill payment: the last 6 digits of its RRN."""
        return self.rrn[-6:]


@dataclass(frozen=True, slots=True)
class RowVersions:
    """The cached records' row versions (xmin): the terminal's, merchant's and agent's as ``x:y:z``; the card's."""

    terminal: str
    card: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"terminal": self.terminal, "card": self.card}


@dataclass(frozen=True, slots=True)
class RiskCheck:
    """The counted limits ``gw_risk_check`` enforces under the counters' locks, counted on approval."""

    day: str  # ISO date, the gateway's local day
    tid: str
    card_id: int | None
    card_hash: str | None
    limits: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day, "tid": self.tid, "card_id": self.card_id, "card_hash": self.card_hash,
                "limits": self.limits}


@dataclass(frozen=True, slots=True)
class RiskRecheck:
    """The travel and spike rules of a request checked against cached records (which
    carry no history), for ``gw_risk_recheck`` to decide on what the database holds now:
    ``travel`` (lat, lon, speed_kmh_max, distance_km_min) and ``spike`` (tid, day,
    factor, floor), each None when the rule does not apply."""

    travel: dict[str, Any] | None
    spike: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {name: value for name, value in (("travel", self.travel), ("spike", self.spike)) if value is not None}


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A risk rule's decline, recorded in ``risk_events``."""

    rule: str
    values: dict[str, Any]
    card_hash: str | None

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "values": self.values, "card_hash": self.card_hash}


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """What every operation carries (the module's docstring)."""

    op: ClassVar[str]
    kind: Kind
    key: TxnKey
    processing_code: str | None
    content: str  # the request's content hash (gateway.acquiring.recording.content_hash)
    amount_fen: int | None
    card_id: int | None
    pin: str | None
    stamp: Stamp
    versions: RowVersions | None = None
    recheck: RiskRecheck | None = None  # with versions, the risk rules on: what the database decides

    def __post_init__(self) -> None:
        assert self.pin in PIN_RESULTS, self.pin
        assert self.recheck is None or self.versions is not None, "a recheck is for cached records"
        assert self.pin is None or self.card_id is not None, "a PIN result needs its card"
        assert self.amount_fen is None or self.amount_fen >= 0, self.amount_fen

    def as_json(self) -> dict[str, Any]:
        key = self.key
        payload = {
            "op": self.op, "kind": self.kind, "tid": key.tid, "batch": key.batch, "stan": key.stan,
            "mti_class": key.mti_class, "processing_code": self.processing_code, "content": self.content,
            "amount": self.amount_fen, "card_id": self.card_id, "pin": self.pin, "response": self.stamp.as_json(),
        }
        if self.versions is not None:
            payload["versions"] = self.versions.as_json()
        if self.recheck is not None:
            payload["recheck"] = self.recheck.as_json()
        return payload


def _transfers_json(transfers: tuple[Transfer, ...]) -> list[dict[str, Any]]:
    assert transfers and all(t.amount_fen > 0 for t in transfers), transfers
    return [t.as_json() for t in transfers]


def _risk_json(payload: dict[str, Any], risk: RiskCheck | None, position: tuple[float, float] | None
               ) -> dict[str, Any]:
    if position is not None:
        payload["position"] = {"lat": position[0], "lon": position[1]}
    if risk is not None:
        payload["risk"] = risk.as_json()
    return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Declined(Operation):
    """A decline the gateway decided, stored so that its repeats get the same answer."""

    op: ClassVar[str] = "decline"
    outcome: Outcome
    risk_event: RiskEvent | None = None

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.outcome.storable and self.outcome is not Outcome.APPROVED, self.outcome

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["outcome"] = self.outcome.value
        if self.risk_event is not None:
            payload["risk_event"] = self.risk_event.as_json()
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance(Operation):
    """A balance inquiry: answered with the card account's balance."""

    op: ClassVar[str] = "balance"
    card_account_id: int
    position: tuple[float, float] | None = None

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["card_account_id"] = self.card_account_id
        return _risk_json(payload, None, self.position)


@dataclass(frozen=True, slots=True, kw_only=True)
class Purchase(Operation):
    """A purchase: its transfers posted (51 when the card cannot cover them)."""

    op: ClassVar[str] = "purchase"
    transfers: tuple[Transfer, ...]
    risk: RiskCheck | None = None
    position: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.amount_fen and sum(t.amount_fen for t in self.transfers) == self.amount_fen, self

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"transfers": _transfers_json(self.transfers), "approval": {"auth_id": self.stamp.auth_id}}
        return _risk_json(payload, self.risk, self.position)


@dataclass(frozen=True, slots=True, kw_only=True)
class Void(Operation):
    """A void of an approved purchase (``original_id``): its posting reversed."""

    op: ClassVar[str] = "void"
    original_id: int

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["original_id"] = self.original_id
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Reversal(Operation):
    """A reversal: the request under its key undone if it was approved. Its
    original's MTI class (``original_class``) follows from its 60.1 (WIRE.md
    9.1, 9.9): 0220 for a refund, 0200 otherwise."""

    op: ClassVar[str] = "reversal"
    original_class: str = "0200"

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["original_class"] = self.original_class
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund(Operation):
    """A refund (WIRE.md 9.2) of an approved purchase or completion (``original_id``):
    ``transfers`` from the merchant's account to the card, posted unless they would
    take the original beyond its amount (64) or the merchant's account below zero (51)."""

    op: ClassVar[str] = "refund"
    original_id: int
    transfers: tuple[Transfer, ...]

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.amount_fen and sum(t.amount_fen for t in self.transfers) == self.amount_fen, self

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"original_id": self.original_id, "transfers": _transfers_json(self.transfers),
                    "approval": {"auth_id": self.stamp.auth_id}}
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class BillInquiry(Operation):
    """A bill inquiry: the biller's answer (``approval``: response fields by name) recorded."""

    op: ClassVar[str] = "bill_inquiry"
    approval: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["approval"] = self.approval
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class BillRecord:
    """A bill payment's own columns (``gw_transactions``), the bill it pays and the token it sells."""

    biller_code: str
    account: str
    receipt: str
    commission_fen: int
    agent_code: str
    float_account_id: int | None = None  # paid in cash from the agent's float
    bill_id: int | None = None  # postpaid: the open bill it pays
    token: str | None = None  # prepaid: the token sold, and its meter
    meter: str | None = None
    cancel_armed: bool = False  # a cancel of the receipt was queued before the biller was asked (not built in)

    def as_json(self) -> dict[str, Any]:
        bill: dict[str, Any] = {"biller_code": self.biller_code, "account": self.account, "receipt": self.receipt,
                                "commission_fen": self.commission_fen, "agent_code": self.agent_code}
        if self.cancel_armed:
            bill["cancel_armed"] = True
        if self.float_account_id is not None:
            bill["float_account_id"] = self.float_account_id
        if self.bill_id is not None:
            bill["bill_id"] = self.bill_id
        if self.token is not None:
            bill |= {"token": self.token, "meter": self.meter}
        return bill


@dataclass(frozen=True, slots=True, kw_only=True)
class BillPayment(Operation):
    """A bill payment, in cash or by card: its transfers posted, the bill paid, the token sold.

    ``biller_outcome``: the biller's answer to the pay call is unknown (a
    timeout, no answer, a failure: ``biller_unavailable``): nothing is posted,
    the outcome is that, and the armed cancel is due now, in the transaction
    that records it."""

    op: ClassVar[str] = "bill_payment"
    transfers: tuple[Transfer, ...]
    bill: BillRecord
    approval: dict[str, Any]
    risk: RiskCheck | None = None
    position: tuple[float, float] | None = None
    biller_outcome: Outcome | None = None

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.stamp.rrn == self.bill.receipt, "a bill payment's RRN is its receipt"
        assert self.biller_outcome in (None, Outcome.BILLER_UNAVAILABLE), self.biller_outcome
        assert self.biller_outcome is None or self.bill.cancel_armed, "an unknown outcome needs an armed cancel"

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"transfers": _transfers_json(self.transfers), "bill": self.bill.as_json(),
                    "approval": self.approval | {"auth_id": self.stamp.auth_id}}
        if self.biller_outcome is not None:
            payload["biller_outcome"] = self.biller_outcome.value
        return _risk_json(payload, self.risk, self.position)


@dataclass(frozen=True, slots=True, kw_only=True)
class VoucherRecord:
    """A voucher sale's own columns (``gw_transactions``: biller, receipt, commission,
    agent, paid in cash) and the voucher it sells (``vouchers``): its serial, its PIN's
    keyed hash (never the PIN), its local day and time of sale."""

    biller_code: str
    receipt: str
    commission_fen: int
    agent_code: str
    float_account_id: int
    serial: str
    pin_hash: bytes
    sold_at: str  # ISO 8601
    sold_on: str  # ISO date, the sale's local day

    def __post_init__(self) -> None:
        assert len(self.serial) == 12 and self.serial.isdigit(), self.serial

    def bill_json(self) -> dict[str, Any]:
        return {"biller_code": self.biller_code, "receipt": self.receipt, "commission_fen": self.commission_fen,
                "agent_code": self.agent_code, "float_account_id": self.float_account_id}

    def voucher_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "pin_hash": self.pin_hash.hex(), "sold_at": self.sold_at,
                "sold_on": self.sold_on}


@dataclass(frozen=True, slots=True, kw_only=True)
class VoucherSale(Operation):
    """A prepaid voucher sale (WIRE.md 9.7): like a cash bill payment, its transfers
    (the agent's float to the biller, the commission to the agent) posted, 51 when the
    float is short; approved, the voucher is kept (``vouchers``). ``approval`` holds
    the answer's tags and the PIN under the LMK (``voucher_pin_lmk``), never clear."""

    op: ClassVar[str] = "voucher_sale"
    transfers: tuple[Transfer, ...]
    voucher: VoucherRecord
    approval: dict[str, Any]
    risk: RiskCheck | None = None
    position: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.stamp.rrn == self.voucher.receipt, "a voucher sale's RRN is its receipt"

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"transfers": _transfers_json(self.transfers), "bill": self.voucher.bill_json(),
                    "voucher": self.voucher.voucher_json(),
                    "approval": self.approval | {"auth_id": self.stamp.auth_id}}
        return _risk_json(payload, self.risk, self.position)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement(Operation):
    """A batch settlement: the terminal's totals (field 48 as sent, 30 or 62 digits;
    its domestic half as numbers: ``claimed``, None when not digits; whether its
    foreign half is zeros: ``foreign_zero``, None for 30 digits) against the
    gateway's three counts (WIRE.md 9.6, 9.9)."""

    op: ClassVar[str] = "settlement"
    terminal_totals: str

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert len(self.terminal_totals) in (30, 62), self.terminal_totals

    @property
    def claimed(self) -> BatchTotals | None:
        return parse_settlement_totals(self.terminal_totals)

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        claimed = self.claimed
        payload |= {"terminal_totals": self.terminal_totals, "foreign_zero": foreign_totals_zero(self.terminal_totals),
                    "claimed": None if claimed is None else {
                        "debit_fen": claimed.debit_fen, "debit_count": claimed.debit_count,
                        "credit_fen": claimed.credit_fen, "credit_count": claimed.credit_count}}
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Preauth(Operation):
    """A pre-authorization (WIRE.md 9.3): a hold of its amount from the card
    (``card_account_id``) for the merchant (``merchant_account_id``), expiring at
    ``expires_at`` (ISO), under a fresh 6-digit auth code the database picks;
    51 when the card's available balance is short."""

    op: ClassVar[str] = "preauth"
    card_account_id: int
    merchant_account_id: int
    mid: str
    expires_at: str

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.amount_fen and self.card_id is not None, self

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"card_account_id": self.card_account_id, "merchant_account_id": self.merchant_account_id,
                    "mid": self.mid, "expires_at": self.expires_at}
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class PreauthCancel(Operation):
    """A cancel of the open pre-authorization ``original_id``: its hold voided."""

    op: ClassVar[str] = "preauth_cancel"
    original_id: int

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["original_id"] = self.original_id
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion(Operation):
    """A completion, request or advice, of the open pre-authorization ``original_id``:
    its hold posted as ``transfers`` (a purchase's), up to ``amount_max_fen``; 38 is
    the pre-authorization's (``approval``)."""

    op: ClassVar[str] = "completion"
    original_id: int
    transfers: tuple[Transfer, ...]
    amount_max_fen: int
    auth_code: str
    risk: RiskCheck | None = None
    position: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        Operation.__post_init__(self)
        assert self.amount_fen and sum(t.amount_fen for t in self.transfers) == self.amount_fen, self

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload |= {"original_id": self.original_id, "transfers": _transfers_json(self.transfers),
                    "amount_max": self.amount_max_fen, "approval": {"auth_id": self.auth_code}}
        return _risk_json(payload, self.risk, self.position)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionVoid(Operation):
    """A void of the approved completion ``original_id``: its posting reversed, its
    pre-authorization open again with a hold until its expiry."""

    op: ClassVar[str] = "completion_void"
    original_id: int

    def as_json(self) -> dict[str, Any]:
        payload = Operation.as_json(self)
        payload["original_id"] = self.original_id
        return payload

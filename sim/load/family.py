"""Refunds and pre-authorizations in a load (``--mix refund=N,preauth=N``; WIRE.md 9.2, 9.3).

Unlike the other types they name an earlier transaction, so they are built whole for
each request, not patched from a template. A terminal remembers what it was answered 00:
its purchases (``Sale``), which a ``refund`` slot refunds in part or whole, and its open
pre-authorizations (``Hold``), which a ``preauth`` slot finishes (a completion, up to the
amount plus 15 %, or a cancel) when the terminal has one open, else opens a new one.

The money a card sees, for ``--check`` (which reads its available balance): a purchase
and a completion spend, a refund gives back, a hold spends until it is completed (then
the completion spends instead) or cancelled. A request without an answer is reversed
(``faults``), which undoes it on the gateway, so the terminal keeps its sale or hold as
it was before.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from protocol.framing import Header, Tpdu, encode_frame
from protocol.messages import MAC_BYTES, Message, decode_message
from sim.load.money import CARD, MoneySeen, Payer
from sim.terminal import HEADER, TPDU, Terminal

FAMILY_TYPES = frozenset({"refund", "preauth"})
COMPLETION_OVER_PCT = 15  # the gateway's completion_over_pct_max default
COMPLETE_SHARE = 0.7  # of the pre-authorizations finished, the share completed (the rest cancelled)
SALES_KEPT_MAX = 64  # refundable purchases a terminal remembers (the oldest forgotten first)


@dataclass(slots=True)
class Sale:
    """A purchase answered 00 that a refund may name: the rest of its amount is refundable."""

    pan: str
    rrn: str
    date: str  # field 13 of its answer
    amount_fen: int
    refunded_fen: int = 0


@dataclass(slots=True)
class Hold:
    """An open pre-authorization: its card, auth code (38), date and amount."""

    pan: str
    auth_code: str
    date: str
    amount_fen: int


@dataclass(slots=True)
class Step:
    """One request of a refund or pre-authorization slot and what it would change."""

    kind: str  # refund, preauth, cancel, completion
    request: Message
    amount_fen: int
    sale: Sale | None = None
    hold: Hold | None = None

    @property
    def payer(self) -> Payer:
        return CARD, self.request.pan

    def frame(self, mac_of: Callable[[bytes], bytes], *, bad_mac: bool = False) -> tuple[bytes, bytes]:
        """(frame, message) of the request MAC'd with ``mac_of``; ``bad_mac`` flips a bit of the MAC."""
        message = self.request.encode_with_mac(mac_of)
        if bad_mac:
            message = message[:-MAC_BYTES] + bytes((message[-MAC_BYTES] ^ 0x01,)) + message[1 - MAC_BYTES:]
        return encode_frame(Tpdu(TPDU), Header(HEADER), message), message


class Family:
    """One terminal's refundable purchases and open pre-authorizations."""

    def __init__(self) -> None:
        self.sales: list[Sale] = []
        self.holds: list[Hold] = []

    def sold(self, pan: str, rrn: str | None, date: str | None, amount_fen: int) -> None:
        """A purchase answered 00: refundable from now on."""
        if rrn is None or date is None:
            return
        self.sales.append(Sale(pan, rrn, date, amount_fen))
        if len(self.sales) > SALES_KEPT_MAX:
            self.sales.pop(0)

    def step(self, terminal: Terminal, kind: str, stan: str, amount_fen: int, rng: random.Random,
             pan: str, pin: str) -> Step | None:
        """The next request of a ``kind`` slot, taking the sale or hold it names (given back by
        ``unanswered``); None for a refund slot when nothing is refundable."""
        if kind == "refund":
            if not self.sales:
                return None
            sale = self.sales.pop(rng.randrange(len(self.sales)))
            rest = sale.amount_fen - sale.refunded_fen
            amount = rest if rng.random() < 0.5 else rng.randint(1, rest)
            request = terminal.refund_request(sale.pan, amount, original_rrn=sale.rrn, original_date=sale.date,
                                              stan=stan)
            return Step("refund", request, amount, sale=sale)
        if self.holds:
            hold = self.holds.pop(0)
            if rng.random() < COMPLETE_SHARE:
                top = hold.amount_fen + hold.amount_fen * COMPLETION_OVER_PCT // 100
                amount = rng.randint(max(1, hold.amount_fen // 2), top)
                request = terminal.completion_request(hold.pan, amount, auth_code=hold.auth_code,
                                                      original_date=hold.date, pin=pin, stan=stan)
                return Step("completion", request, amount, hold=hold)
            request = terminal.preauth_cancel_request(hold.pan, hold.amount_fen, auth_code=hold.auth_code,
                                                      original_date=hold.date, stan=stan)
            return Step("cancel", request, hold.amount_fen, hold=hold)
        return Step("preauth", terminal.preauth_request(pan, pin, amount_fen, stan=stan), amount_fen)

    def answered(self, step: Step, code: str, response: bytes, money: MoneySeen) -> None:
        """The answer (message bytes, MTI first) to ``step``: on 00 the money moved and what the
        terminal now holds; on another code the sale or hold stays as it was, except a pre-authorization
        the gateway no longer knows (25), whose hold is then in doubt."""
        if code != "00":
            if code == "25" and step.hold is not None:
                money.doubt(step.payer, step.hold.amount_fen, f"{step.kind}_not_found", code)
                return
            self.unanswered(step)
            return
        if step.kind == "refund":
            assert step.sale is not None
            money.approved(step.payer, -step.amount_fen)
            step.sale.refunded_fen += step.amount_fen
            if step.sale.refunded_fen < step.sale.amount_fen:
                self.sales.append(step.sale)
        elif step.kind == "preauth":
            message = decode_message(response)
            money.approved(step.payer, step.amount_fen)
            if message.auth_id is not None and message.local_date is not None:
                self.holds.append(Hold(step.payer[1] or "", message.auth_id, message.local_date, step.amount_fen))
        elif step.kind == "completion":
            assert step.hold is not None
            money.approved(step.payer, step.amount_fen - step.hold.amount_fen)
        else:  # cancel
            assert step.hold is not None
            money.approved(step.payer, -step.hold.amount_fen)

    def unanswered(self, step: Step) -> None:
        """No answer (the request is reversed), or a decline: the sale or hold is as it was."""
        if step.sale is not None:
            self.sales.append(step.sale)
        if step.hold is not None:
            self.holds.append(step.hold)

"""Well-formed requests of every kind, for seeds and for hypothesis to perturb.

``request(kind, ...)`` gives a ``Message`` a terminal of the stub world would
send; ``frame_body`` wraps message bytes in a TPDU and header.
"""

from __future__ import annotations

from typing import Any

from protocol import tlv
from protocol.framing import Header, Tpdu
from protocol.messages import Message
from tests.fuzz import stub

KINDS = ("signon", "signon3", "signoff", "echo", "balance", "purchase", "void", "bill_inquiry",
         "bill_payment_cash", "bill_payment_card", "reversal", "settlement")
TPDU = Tpdu(bytes.fromhex("6000060000"))
HEADER = Header(bytes.fromhex("603100311003"))
CARD_PAN = stub.VOIDABLE_PAN


def frame_body(message: bytes, tpdu: Tpdu = TPDU, header: Header = HEADER) -> bytes:
    """TPDU, header, message: a frame without its length."""
    return tpdu.raw + header.raw + message


def request(kind: str, *, tid: str = "TERM0001", mid: str | None = None, stan: str = "000123",
            batch: int = 1, pan: str = CARD_PAN, pin: str | None = stub.PIN, amount_fen: int = 100,
            bill: dict[str, str] | None = None, currency: str = "156") -> Message:
    """The fields of a request of ``kind`` (MAC not yet set: see ``with_mac``)."""
    mid = mid if mid is not None else stub.TERMINALS.get(tid, stub.SPECIAL_MID)
    fields: dict[int, Any] = {11: stan, 41: tid, 42: mid}

    def card(processing_code: str, txn_type: str) -> None:
        fields.update({2: pan, 3: processing_code, 14: "9912", 22: "021", 25: "00", 26: "12", 49: currency,
                       60: f"{txn_type}{batch:06d}000"})
        if pin is not None:
            fields[52] = stub.World.pin_block_for(pan, pin)
            fields[53] = "2600000000000000"

    if kind in ("signon", "signon3"):
        fields[60] = f"00{batch:06d}{'004' if kind == 'signon' else '003'}"
        fields[63] = "01 "
        return Message("0800", fields)
    if kind == "signoff":
        fields[60] = f"00{batch:06d}002"
        return Message("0820", fields)
    if kind == "echo":
        fields[60] = f"00{batch:06d}301"
        return Message("0820", fields)
    if kind == "balance":
        card("310000", "01")
    elif kind == "purchase":
        card("000000", "22")
        fields[4] = f"{amount_fen:012d}"
        fields[59] = tlv.encode({tlv.LOCATION: "31.2304,121.4737"})
    elif kind == "void":
        card("200000", "23")
        fields[4] = f"{amount_fen:012d}"
        fields[37] = "000000000001"
        fields[61] = f"{batch:06d}0000010101"  # the stub's voidable purchase
    elif kind == "bill_inquiry":
        fields.update({3: "380000", 25: "00", 49: currency, 60: f"40{batch:06d}000",
                       59: tlv.encode(bill or {tlv.BILLER: stub.BILLER_POSTPAID, tlv.ACCOUNT: stub.BILL_ACCOUNT})})
    elif kind in ("bill_payment_cash", "bill_payment_card"):
        if kind == "bill_payment_card":
            card("500000", "41")
        fields.update({3: "500000", 4: f"{amount_fen:012d}", 25: "00", 49: currency, 60: f"41{batch:06d}000",
                       59: tlv.encode(bill or {tlv.BILLER: stub.BILLER_POSTPAID, tlv.ACCOUNT: stub.BILL_ACCOUNT,
                                               tlv.REFERENCE: stub.BILL_REFERENCE})})
    elif kind == "reversal":
        fields.update({2: pan, 3: "000000", 4: f"{amount_fen:012d}", 22: "021", 25: "00", 39: "98",
                       49: currency, 60: f"22{batch:06d}000"})
        return Message("0400", fields)
    elif kind == "settlement":
        fields.update({48: "000000010000001" + "0" * 15, 49: currency, 60: f"00{batch:06d}201", 63: "01 "})
        return Message("0500", fields)
    else:
        raise ValueError(f"unknown kind {kind}")
    return Message("0200", fields)


def with_mac(message: Message, world: stub.World, mac_tid: str | None = None) -> bytes:
    """Encode with field 64 set as the terminal would (a zero MAC for a TID without keys)."""
    tid = mac_tid or message.terminal_id
    return message.encode_with_mac(lambda data: world.mac_of(tid, data) or bytes(8))

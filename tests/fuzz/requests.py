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
         "bill_payment_cash", "bill_payment_card", "reversal", "settlement",
         # version 2 (WIRE.md 9.1): refunds, the pre-authorization family, settlement of 62 digits, batch upload
         "refund", "preauth", "preauth_cancel", "completion", "completion_advice", "completion_void",
         "preauth_reversal", "settlement62", "upload_records", "upload_advice", "upload_ic", "upload_end")
# The family's 38 and 61 (batch and STAN zeros, a date), as terminals send them.
_ORIGINAL = {38: "123456", 61: "0000000000000101"}
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
    elif kind == "settlement62":
        fields.update({48: "000000010000001" + "0" * 15 + "0" + "0" * 30 + "0", 49: currency,
                       60: f"00{batch:06d}201"})
        return Message("0500", fields)
    elif kind == "refund":
        card("200000", "25")
        fields.update({4: f"{amount_fen:012d}", 37: "000000000001", 61: "0000000000000101", 63: "000"})
        return Message("0220", fields)
    elif kind in ("preauth", "preauth_cancel"):
        card("030000" if kind == "preauth" else "200000", "10" if kind == "preauth" else "11")
        fields.update({4: f"{amount_fen:012d}", 25: "06"} | ({} if kind == "preauth" else _ORIGINAL))
        return Message("0100", fields)
    elif kind in ("completion", "completion_advice"):
        card("000000", "20" if kind == "completion" else "24")
        fields.update({4: f"{amount_fen:012d}", 25: "06"} | _ORIGINAL)
        if kind == "completion_advice":
            fields.pop(52, None)
            fields.pop(53, None)
        return Message("0200" if kind == "completion" else "0220", fields)
    elif kind == "completion_void":
        card("200000", "21")
        fields.update({4: f"{amount_fen:012d}", 25: "06", 37: "000000000002", 38: "123456",
                       61: f"{batch:06d}0001230101"})
    elif kind == "preauth_reversal":
        fields.update({2: pan, 3: "030000", 4: f"{amount_fen:012d}", 25: "06", 39: "98", 49: currency,
                       60: f"10{batch:06d}000"})
        return Message("0400", fields)
    elif kind == "upload_records":
        fields.update({48: "02" + "00000001" + pan.rjust(20, "0") + f"{amount_fen:012d}"
                       + "00000002" + pan.rjust(20, "0") + "000000000001", 60: f"00{batch:06d}201"})
        return Message("0320", fields)
    elif kind == "upload_advice":
        card("200000", "25")
        fields.update({4: f"{amount_fen:012d}", 37: "000000000001", 61: "0000000000000101",
                       60: f"25{batch:06d}000"})
        return Message("0320", fields)
    elif kind == "upload_ic":
        fields.update({4: f"{amount_fen:012d}", 60: f"00{batch:06d}203", 55: bytes.fromhex("9F2608AABBCCDDEEFF0011")})
        return Message("0320", fields)
    elif kind == "upload_end":
        fields.update({48: "0002", 60: f"00{batch:06d}202"})
        return Message("0320", fields)
    else:
        raise ValueError(f"unknown kind {kind}")
    return Message("0200", fields)


def with_mac(message: Message, world: stub.World, mac_tid: str | None = None) -> bytes:
    """Encode with field 64 set as the terminal would (a zero MAC for a TID without keys)."""
    tid = mac_tid or message.terminal_id
    return message.encode_with_mac(lambda data: world.mac_of(tid, data) or bytes(8))

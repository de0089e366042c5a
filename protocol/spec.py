"""The fields of WIRE.md section 2, as one table: number, name, encoding, value.

Spec as data: ``FIELDS`` is the only place that says what a field is called,
how it is encoded and what its value may hold, and ``SUBFIELDS`` where the
parts of 60 and 61 lie. Everything else is made from them: the pyiso8583
spec dict ``SPEC`` (pyiso8583's default spec, so that any field number decodes
to something, with every field of the dialect overridden), the sets of
field numbers by kind, and the names ``Message`` reads fields through.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum
from typing import Any

from iso8583.specs import default as _pyiso8583_default


def _fixed_bcd(digits: int, desc: str, *, left_pad: bool = False) -> dict[str, Any]:
    field: dict[str, Any] = {
        "data_enc": "b",
        "len_enc": "b",
        "len_type": 0,
        "max_len": digits,
        "len_count": "nibbles",
        "desc": desc,
    }
    if digits % 2:
        field["left_pad" if left_pad else "right_pad"] = "0"
    return field


def _var_bcd(length_bytes: int, max_digits: int, desc: str) -> dict[str, Any]:
    """LLVAR (1 length byte) or LLLVAR (2 length bytes) BCD, digits counted, left-aligned."""
    return {
        "data_enc": "b",
        "len_enc": "bcd",
        "len_type": length_bytes,
        "max_len": max_digits,
        "len_count": "nibbles",
        "right_pad": "0",
        "desc": desc,
    }


def _fixed_text(size: int, desc: str) -> dict[str, Any]:
    return {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": size, "desc": desc}


def _var_text(length_bytes: int, max_bytes: int, desc: str, encoding: str = "ascii") -> dict[str, Any]:
    return {
        "data_enc": encoding,
        "len_enc": "bcd",
        "len_type": length_bytes,
        "max_len": max_bytes,
        "desc": desc,
    }


def _fixed_binary(size: int, desc: str) -> dict[str, Any]:
    return {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": size, "desc": desc}


def _var_binary(length_bytes: int, max_bytes: int, desc: str) -> dict[str, Any]:
    return {"data_enc": "b", "len_enc": "bcd", "len_type": length_bytes, "max_len": max_bytes, "desc": desc}


LLVAR = 1
LLLVAR = 2


class Value(Enum):
    """What a field's value holds, checked when a request is decoded (WIRE.md 2)."""

    DIGITS = "digits"  # BCD: decimal digits only
    TRACK2 = "track2"  # digits and the separator D
    PRINTABLE = "printable"  # ASCII that must be printable
    TEXT = "text"  # text not checked beyond its encoding
    BINARY = "binary"  # bytes


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the dialect: its number, its name (``Message``'s attribute), its
    pyiso8583 encoding and what its value holds."""

    number: int
    name: str
    encoding: dict[str, Any]
    value: Value


@dataclass(frozen=True, slots=True)
class Subfield:
    """A part of a field by position, e.g. 60.1 = ``txn_data[0:2]``; ``as_int`` reads it as a number."""

    name: str
    label: str
    field: str
    start: int
    end: int
    as_int: bool = False
    doc: str = ""


FIELDS: tuple[Field, ...] = (
    Field(2, "pan", _var_bcd(LLVAR, 19, "Primary account number"), Value.DIGITS),
    Field(3, "processing_code", _fixed_bcd(6, "Processing code"), Value.DIGITS),
    Field(4, "amount", _fixed_bcd(12, "Amount, fen"), Value.DIGITS),
    Field(11, "stan", _fixed_bcd(6, "System trace audit number"), Value.DIGITS),
    Field(12, "local_time", _fixed_bcd(6, "Local time hhmmss"), Value.DIGITS),
    Field(13, "local_date", _fixed_bcd(4, "Local date MMDD"), Value.DIGITS),
    Field(14, "expiry", _fixed_bcd(4, "Card expiry YYMM"), Value.DIGITS),
    Field(15, "settlement_date", _fixed_bcd(4, "Settlement date MMDD"), Value.DIGITS),
    Field(22, "entry_mode", _fixed_bcd(3, "POS entry mode"), Value.DIGITS),
    Field(23, "card_sequence", _fixed_bcd(3, "Card sequence number", left_pad=True), Value.DIGITS),
    Field(25, "condition_code", _fixed_bcd(2, "POS condition code"), Value.DIGITS),
    Field(26, "pin_capture_code", _fixed_bcd(2, "PIN capture code"), Value.DIGITS),
    Field(32, "acquirer_id", _var_bcd(LLVAR, 11, "Acquiring institution id"), Value.DIGITS),
    Field(35, "track2", _var_bcd(LLVAR, 37, "Track 2"), Value.TRACK2),
    Field(37, "rrn", _fixed_text(12, "Retrieval reference number"), Value.PRINTABLE),
    Field(38, "auth_id", _fixed_text(6, "Authorization id"), Value.PRINTABLE),
    Field(39, "response_code", _fixed_text(2, "Response code"), Value.PRINTABLE),
    Field(41, "terminal_id", _fixed_text(8, "Terminal id"), Value.PRINTABLE),
    Field(42, "merchant_id", _fixed_text(15, "Merchant id"), Value.PRINTABLE),
    Field(44, "additional_response", _var_text(LLVAR, 25, "Additional response text"), Value.TEXT),
    Field(48, "settlement_totals", _var_bcd(LLLVAR, 322, "Settlement totals"), Value.DIGITS),
    Field(49, "currency", _fixed_text(3, "Currency code"), Value.PRINTABLE),
    Field(52, "pin_block", _fixed_binary(8, "PIN block"), Value.BINARY),
    Field(53, "security_control", _fixed_bcd(16, "Security control"), Value.DIGITS),
    Field(54, "balance", _var_text(LLLVAR, 20, "Balance"), Value.TEXT),
    Field(55, "icc_data", _var_binary(LLLVAR, 255, "ICC data"), Value.BINARY),
    Field(59, "bill_data", _var_text(LLLVAR, 600, "Bill data TLV", encoding="gbk"), Value.TEXT),
    Field(60, "txn_data", _var_bcd(LLLVAR, 100, "Transaction data"), Value.DIGITS),
    Field(61, "original_txn", _var_bcd(LLLVAR, 29, "Original transaction"), Value.DIGITS),
    Field(62, "key_data", _var_binary(LLLVAR, 999, "Key data"), Value.BINARY),
    Field(63, "operator", _var_text(LLLVAR, 163, "Operator id / receipt text", encoding="gbk"), Value.TEXT),
    Field(64, "mac", _fixed_binary(8, "MAC"), Value.BINARY),
)

SUBFIELDS: tuple[Subfield, ...] = (
    Subfield("txn_type", "60.1", "txn_data", 0, 2, doc="the transaction type code"),
    Subfield("batch", "60.2", "txn_data", 2, 8, as_int=True, doc="the batch number"),
    Subfield("network_code", "60.3", "txn_data", 8, 11, doc="the network management information code"),
    Subfield("original_batch", "61.1", "original_txn", 0, 6, as_int=True, doc="the original transaction's batch"),
    Subfield("original_stan", "61.2", "original_txn", 6, 12, doc="the original transaction's STAN"),
    Subfield("original_date", "61.3", "original_txn", 12, 16, doc="the original transaction's date MMDD"),
)

FIELDS_BY_NUMBER: dict[int, Field] = {f.number: f for f in FIELDS}
FIELD_NAMES: dict[int, str] = {f.number: f.name for f in FIELDS}
FIELD_NUMBERS: dict[str, int] = {f.name: f.number for f in FIELDS}

SPEC: dict[str, dict[str, Any]] = copy.deepcopy(_pyiso8583_default)
SPEC.update(
    {
        "h": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 0, "desc": "No header (framing)"},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "Message type"},
        "p": _fixed_binary(8, "Primary bitmap"),
        "1": _fixed_binary(8, "Secondary bitmap"),
        **{str(f.number): f.encoding for f in FIELDS},
    }
)

# Fields the dialect defines (WIRE.md section 2). Any other field in a
# request is a format error.
DIALECT_FIELDS: frozenset[int] = frozenset(FIELDS_BY_NUMBER)
BINARY_FIELDS: frozenset[int] = frozenset(f.number for f in FIELDS if f.value is Value.BINARY)
NUMERIC_FIELDS: frozenset[int] = frozenset(f.number for f in FIELDS if f.value is Value.DIGITS)

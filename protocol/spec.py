"""The field spec of WIRE.md section 2, as one pyiso8583 spec dict.

Spec as data: this dict is the only place that says how a field is encoded.
It starts from pyiso8583's default spec, so that any field number decodes to
something, and overrides every field the dialect uses.
"""

from __future__ import annotations

import copy
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

SPEC: dict[str, dict[str, Any]] = copy.deepcopy(_pyiso8583_default)
SPEC.update(
    {
        "h": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 0, "desc": "No header (framing)"},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "Message type"},
        "p": _fixed_binary(8, "Primary bitmap"),
        "1": _fixed_binary(8, "Secondary bitmap"),
        "2": _var_bcd(LLVAR, 19, "Primary account number"),
        "3": _fixed_bcd(6, "Processing code"),
        "4": _fixed_bcd(12, "Amount, fen"),
        "11": _fixed_bcd(6, "System trace audit number"),
        "12": _fixed_bcd(6, "Local time hhmmss"),
        "13": _fixed_bcd(4, "Local date MMDD"),
        "14": _fixed_bcd(4, "Card expiry YYMM"),
        "15": _fixed_bcd(4, "Settlement date MMDD"),
        "22": _fixed_bcd(3, "POS entry mode"),
        "23": _fixed_bcd(3, "Card sequence number", left_pad=True),
        "25": _fixed_bcd(2, "POS condition code"),
        "26": _fixed_bcd(2, "PIN capture code"),
        "32": _var_bcd(LLVAR, 11, "Acquiring institution id"),
        "35": _var_bcd(LLVAR, 37, "Track 2"),
        "37": _fixed_text(12, "Retrieval reference number"),
        "38": _fixed_text(6, "Authorization id"),
        "39": _fixed_text(2, "Response code"),
        "41": _fixed_text(8, "Terminal id"),
        "42": _fixed_text(15, "Merchant id"),
        "44": _var_text(LLVAR, 25, "Additional response text"),
        "48": _var_bcd(LLLVAR, 322, "Settlement totals"),
        "49": _fixed_text(3, "Currency code"),
        "52": _fixed_binary(8, "PIN block"),
        "53": _fixed_bcd(16, "Security control"),
        "54": _var_text(LLLVAR, 20, "Balance"),
        "55": _var_binary(LLLVAR, 255, "ICC data"),
        "59": _var_text(LLLVAR, 600, "Bill data TLV", encoding="gbk"),
        "60": _var_bcd(LLLVAR, 100, "Transaction data"),
        "61": _var_bcd(LLLVAR, 29, "Original transaction"),
        "62": _var_binary(LLLVAR, 999, "Key data"),
        "63": _var_text(LLLVAR, 163, "Operator id / receipt text", encoding="gbk"),
        "64": _fixed_binary(8, "MAC"),
    }
)

# Fields the dialect defines (WIRE.md section 2). Any other field in a
# request is a format error.
DIALECT_FIELDS: frozenset[int] = frozenset(
    {2, 3, 4, 11, 12, 13, 14, 15, 22, 23, 25, 26, 32, 35, 37, 38, 39, 41, 42, 44, 48, 49,
     52, 53, 54, 55, 59, 60, 61, 62, 63, 64}
)
BINARY_FIELDS: frozenset[int] = frozenset({52, 55, 62, 64})
NUMERIC_FIELDS: frozenset[int] = frozenset(
    {2, 3, 4, 11, 12, 13, 14, 15, 22, 23, 25, 26, 32, 48, 53, 60, 61}
)

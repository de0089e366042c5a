"""Field 59 bill data: ``tag (2 chars) + length (3 digits) + value`` (WIRE.md 5).

The length counts the value's bytes in GBK. Tags may come in any order, each
at most once; unknown tags are kept so callers may ignore them. Field 59 is
``ans`` text: a value with a control character (NUL included, which
PostgreSQL cannot store) is malformed.
"""

from __future__ import annotations

import re

ENCODING = "gbk"
TAG_CHARS = 2
LENGTH_DIGITS = 3

BILLER = "BL"
ACCOUNT = "AC"
NAME = "NM"
AMOUNT_DUE = "AM"
PERIOD = "PD"
REFERENCE = "BR"
RECEIPT = "RN"
TOKEN = "TK"
FLOAT_BALANCE = "FB"
LOCATION = "LC"
VOUCHER_SERIAL = "VS"  # WIRE.md 9.7: a voucher sale's answer
VOUCHER_PIN = "VP"
HISTORY = "HS"  # a bill history's entries
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CANONICAL_ORDER = (BILLER, ACCOUNT, NAME, AMOUNT_DUE, PERIOD, REFERENCE, RECEIPT, TOKEN, FLOAT_BALANCE, LOCATION,
                   VOUCHER_SERIAL, VOUCHER_PIN, HISTORY)  # section 5's order, then 9.9's


class TlvError(ValueError):
    """Field 59 is not a well-formed TLV sequence."""


def decode(text: str) -> dict[str, str]:
    """Parse field 59 (as decoded from GBK) into ``{tag: value}``."""
    try:
        data = text.encode(ENCODING)
    except UnicodeEncodeError:
        raise TlvError("not GBK text") from None
    values: dict[str, str] = {}
    position = 0
    while position < len(data):
        header_end = position + TAG_CHARS + LENGTH_DIGITS
        if header_end > len(data):
            raise TlvError(f"truncated tag at byte {position}")
        tag = data[position : position + TAG_CHARS].decode("ascii", "replace")
        length_text = data[position + TAG_CHARS : header_end]
        if not length_text.isdigit():
            raise TlvError(f"tag {tag}: length {length_text!r} is not 3 digits")
        value_end = header_end + int(length_text)
        if value_end > len(data):
            raise TlvError(f"tag {tag}: value runs past the end")
        if tag in values:
            raise TlvError(f"tag {tag} appears twice")
        try:
            value = data[header_end:value_end].decode(ENCODING)
        except UnicodeDecodeError:
            raise TlvError(f"tag {tag}: value is not GBK") from None
        if _CONTROL.search(value):
            raise TlvError(f"tag {tag}: value has a control character")
        values[tag] = value
        position = value_end
    return values


def encode(values: dict[str, str]) -> str:
    """Build field 59 from ``{tag: value}`` in the order given."""
    parts = []
    for tag, value in values.items():
        if len(tag) != TAG_CHARS or not tag.isascii():
            raise ValueError(f"tag {tag!r} must be 2 ASCII characters")
        length = len(value.encode(ENCODING))
        if length >= 10**LENGTH_DIGITS:
            raise ValueError(f"tag {tag}: value of {length} bytes is too long")
        parts.append(f"{tag}{length:0{LENGTH_DIGITS}d}{value}")
    return "".join(parts)


def encode_canonical(values: dict[str, str]) -> str:
    """``encode`` with the known tags in WIRE.md's order, then any others by name."""
    rank = {tag: i for i, tag in enumerate(CANONICAL_ORDER)}
    return encode(dict(sorted(values.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))))

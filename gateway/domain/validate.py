"""Operator input as CLI.md defines it: identifiers, amounts, keys, lists."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation


class InvalidInput(ValueError):
    """Bad usage or bad input: the CLI exits 2 with this message."""


class Problem(Exception):
    """The command ran and found a problem: the CLI exits 1 with this message."""


_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9]{1,32}$")
_AMOUNT = re.compile(r"^\d+(\.\d{1,2})?$")
PERMITS = ("purchase", "balance", "void", "bill", "refund", "preauth", "voucher")
AMOUNT_FEN_MAX = 999_999_999_999  # what field 4 (n12) can carry
MAC_ALGORITHMS = ("cup-ecb", "x9.19")


def tid(value: str) -> str:
    if len(value) != 8 or not value.isascii() or not value.isprintable():
        raise InvalidInput(f"TID must be 8 printable ASCII characters: {value!r}")
    return value


def mid(value: str) -> str:
    if len(value) != 15 or not value.isascii() or not value.isprintable():
        raise InvalidInput(f"MID must be 15 printable ASCII characters: {value!r}")
    return value


def code(value: str, what: str = "code") -> str:
    if not _CODE.match(value):
        raise InvalidInput(f"{what} must be 1 to 16 letters, digits, _ or -: {value!r}")
    return value


def account(value: str, what: str = "account") -> str:
    if not _ACCOUNT.match(value):
        raise InvalidInput(f"{what} must be 1 to 32 letters or digits: {value!r}")
    return value


def tmk(value: str) -> bytes:
    if len(value) != 32:
        raise InvalidInput("TMK must be 32 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidInput("TMK must be 32 hex digits") from None


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def pan(value: str) -> str:
    if not (value.isdigit() and 13 <= len(value) <= 19 and luhn_valid(value)):
        raise InvalidInput("PAN must be 13 to 19 digits and Luhn-valid")
    return value


def pin(value: str) -> str:
    if not (value.isdigit() and 4 <= len(value) <= 12):
        raise InvalidInput("PIN must be 4 to 12 digits")
    return value


def amount_fen(value: str, *, allow_zero: bool = False) -> int:
    """Yuan on the command line (``123``, ``123.4``, ``123.45``) to fen."""
    if not _AMOUNT.match(value):
        raise InvalidInput(f"amount must be yuan like 123, 123.4 or 123.45: {value!r}")
    try:
        fen = int(Decimal(value) * 100)
    except InvalidOperation:
        raise InvalidInput(f"amount must be yuan like 123, 123.4 or 123.45: {value!r}") from None
    if fen == 0 and not allow_zero:
        raise InvalidInput("amount must be more than zero")
    if fen > AMOUNT_FEN_MAX:
        raise InvalidInput(f"amount must be at most {AMOUNT_FEN_MAX // 100} yuan")
    return fen


def permits(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PERMITS))
    if unknown or not names:
        raise InvalidInput(f"--permit takes a list of {', '.join(PERMITS)}; got {value!r}")
    return [name for name in PERMITS if name in names]


def mac_algorithm(value: str) -> str:
    if value not in MAC_ALGORITHMS:
        raise InvalidInput(f"--mac must be one of {', '.join(MAC_ALGORITHMS)}")
    return value


def location(value: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = value.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise InvalidInput(f"location must be LAT,LON in decimal degrees: {value!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidInput(f"location out of range: {value!r}")
    return lat, lon


def basis_points(value: int, what: str) -> int:
    if not 0 <= value <= 10000:
        raise InvalidInput(f"{what} must be 0 to 10000 basis points")
    return value

"""Response codes of the wire protocol (WIRE.md section 7)."""

from __future__ import annotations

from enum import StrEnum


class ResponseCode(StrEnum):
    APPROVED = "00"
    INVALID_MERCHANT = "03"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"
    ORIGINAL_NOT_FOUND = "25"
    FORMAT_ERROR = "30"
    INSUFFICIENT_FUNDS = "51"
    EXPIRED_CARD = "54"
    INCORRECT_PIN = "55"
    NOT_PERMITTED = "58"
    SUSPECTED_FRAUD = "59"
    EXCEEDS_AMOUNT_LIMIT = "61"
    RESTRICTED_CARD = "62"
    AMOUNT_MISMATCH = "64"
    EXCEEDS_FREQUENCY_LIMIT = "65"
    PIN_TRIES_EXCEEDED = "75"
    SIGN_ON_FIRST = "77"
    BILLER_UNAVAILABLE = "91"
    DUPLICATE_DIFFERENT_CONTENT = "94"
    RECONCILIATION_ERROR = "95"
    SYSTEM_MALFUNCTION = "96"
    TERMINAL_NOT_REGISTERED = "97"
    PIN_FORMAT_ERROR = "99"
    MAC_FAILED = "A0"

    @property
    def asks_sign_on(self) -> bool:
        """Responses after which the terminal must sign on again (header digit 3)."""
        return self in _SIGN_ON_AGAIN


_SIGN_ON_AGAIN = frozenset(
    {ResponseCode.SIGN_ON_FIRST, ResponseCode.MAC_FAILED, ResponseCode.PIN_FORMAT_ERROR}
)

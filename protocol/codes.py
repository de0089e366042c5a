"""Response codes of the wire protocol (WIRE.md section 7), and what each implies:
whether the terminal must sign on again, whether the answer is stored for repeats,
whether it carries a MAC."""

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

    @property
    def stored(self) -> bool:
        """Whether an answer with this code is stored under the request's key, so that a repeat
        (same key, same content) gets it again byte for byte (WIRE.md 8, repeats). Not stored:
        30, 97, 03, 77, A0 and 64, after which the same STAN may be sent again; 94, the answer
        to a repeat whose first answer stays the stored one; 96, where nothing was decided."""
        return self not in _NOT_STORED

    @property
    def always_macced(self) -> bool:
        """Whether every answer with this code to a MAC'd request (0200, 0400, 0500) carries a
        MAC in 64, which it does exactly when the request's MAC was verified (WIRE.md 6 and 8).
        Not the codes of ``never_macced``, nor those that come either way: 30 (at decode none,
        for a missing BR one) and 96 (the database failing before or after the MAC check)."""
        return self not in _NEVER_MACCED and self not in _MACCED_EITHER_WAY

    @property
    def never_macced(self) -> bool:
        """Whether no answer with this code carries a MAC: only the checks before the MAC's
        give it (terminal 97, merchant 03, keys 77, the MAC itself A0; WIRE.md 8)."""
        return self in _NEVER_MACCED

    @classmethod
    def of(cls, text: str) -> ResponseCode | None:
        """The code ``text`` (field 39) names, or None for one the dialect does not have."""
        try:
            return cls(text)
        except ValueError:
            return None


_SIGN_ON_AGAIN = frozenset(
    {ResponseCode.SIGN_ON_FIRST, ResponseCode.MAC_FAILED, ResponseCode.PIN_FORMAT_ERROR}
)
_NOT_STORED = frozenset({
    ResponseCode.FORMAT_ERROR, ResponseCode.TERMINAL_NOT_REGISTERED, ResponseCode.INVALID_MERCHANT,
    ResponseCode.SIGN_ON_FIRST, ResponseCode.MAC_FAILED, ResponseCode.AMOUNT_MISMATCH,
    ResponseCode.DUPLICATE_DIFFERENT_CONTENT, ResponseCode.SYSTEM_MALFUNCTION,
})
_NEVER_MACCED = frozenset({
    ResponseCode.TERMINAL_NOT_REGISTERED, ResponseCode.INVALID_MERCHANT, ResponseCode.SIGN_ON_FIRST,
    ResponseCode.MAC_FAILED,
})
_MACCED_EITHER_WAY = frozenset({ResponseCode.FORMAT_ERROR, ResponseCode.SYSTEM_MALFUNCTION})

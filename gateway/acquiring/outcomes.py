"""Internal outcomes of a transaction, and the one table mapping them to wire codes.

The database's recording functions name outcomes too (``approved``,
``insufficient_funds``, ...) and store the answer's outcome by name; the
response code they write beside it (``gw_transactions.response_code``, for
reports) comes from ``gw_response_code``, made from this table
(``outcome_codes_sql``: functions/outcomes.sql, checked by a test)."""

from __future__ import annotations

from enum import Enum

from protocol.codes import ResponseCode as RC


class Outcome(Enum):
    APPROVED = "approved"
    FORMAT_ERROR = "format_error"
    TERMINAL_UNKNOWN = "terminal_unknown"
    MERCHANT_MISMATCH = "merchant_mismatch"
    KEYS_NOT_CURRENT = "keys_not_current"
    MAC_INVALID = "mac_invalid"
    DUPLICATE_DIFFERENT_CONTENT = "duplicate_different_content"
    UNKNOWN_TRANSACTION = "unknown_transaction"
    CURRENCY_NOT_SUPPORTED = "currency_not_supported"
    BATCH_SETTLED = "batch_settled"
    BILLER_UNKNOWN = "biller_unknown"
    NOT_PERMITTED = "not_permitted"
    FROZEN = "frozen"
    ORIGINAL_NOT_FOUND = "original_not_found"
    AMOUNT_MISMATCH = "amount_mismatch"
    CARD_UNKNOWN = "card_unknown"
    CARD_RESTRICTED = "card_restricted"
    CARD_EXPIRED = "card_expired"
    PIN_TRIES_EXCEEDED = "pin_tries_exceeded"
    PIN_FORMAT_ERROR = "pin_format_error"
    PIN_INCORRECT = "pin_incorrect"
    AMOUNT_INVALID = "amount_invalid"
    AMOUNT_LIMIT = "amount_limit"
    FREQUENCY_LIMIT = "frequency_limit"
    SUSPECTED_FRAUD = "suspected_fraud"
    BILL_NOT_FOUND = "bill_not_found"
    BILLER_UNAVAILABLE = "biller_unavailable"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SYSTEM_ERROR = "system_error"

    @property
    def response_code(self) -> RC:
        return OUTCOME_CODES[self]

    @property
    def storable(self) -> bool:
        """Whether the answer is stored under the request's key (WIRE.md 8, repeats)."""
        return self.response_code.stored


OUTCOME_CODES: dict[Outcome, RC] = {
    Outcome.APPROVED: RC.APPROVED,
    Outcome.FORMAT_ERROR: RC.FORMAT_ERROR,
    Outcome.TERMINAL_UNKNOWN: RC.TERMINAL_NOT_REGISTERED,
    Outcome.MERCHANT_MISMATCH: RC.INVALID_MERCHANT,
    Outcome.KEYS_NOT_CURRENT: RC.SIGN_ON_FIRST,
    Outcome.MAC_INVALID: RC.MAC_FAILED,
    Outcome.DUPLICATE_DIFFERENT_CONTENT: RC.DUPLICATE_DIFFERENT_CONTENT,
    Outcome.UNKNOWN_TRANSACTION: RC.INVALID_TRANSACTION,
    Outcome.CURRENCY_NOT_SUPPORTED: RC.INVALID_TRANSACTION,
    Outcome.BATCH_SETTLED: RC.INVALID_TRANSACTION,
    Outcome.BILLER_UNKNOWN: RC.INVALID_TRANSACTION,
    Outcome.NOT_PERMITTED: RC.NOT_PERMITTED,
    Outcome.FROZEN: RC.NOT_PERMITTED,
    Outcome.ORIGINAL_NOT_FOUND: RC.ORIGINAL_NOT_FOUND,
    Outcome.AMOUNT_MISMATCH: RC.AMOUNT_MISMATCH,
    Outcome.CARD_UNKNOWN: RC.INVALID_CARD,
    Outcome.CARD_RESTRICTED: RC.RESTRICTED_CARD,
    Outcome.CARD_EXPIRED: RC.EXPIRED_CARD,
    Outcome.PIN_TRIES_EXCEEDED: RC.PIN_TRIES_EXCEEDED,
    Outcome.PIN_FORMAT_ERROR: RC.PIN_FORMAT_ERROR,
    Outcome.PIN_INCORRECT: RC.INCORRECT_PIN,
    Outcome.AMOUNT_INVALID: RC.INVALID_AMOUNT,
    Outcome.AMOUNT_LIMIT: RC.EXCEEDS_AMOUNT_LIMIT,
    Outcome.FREQUENCY_LIMIT: RC.EXCEEDS_FREQUENCY_LIMIT,
    Outcome.SUSPECTED_FRAUD: RC.SUSPECTED_FRAUD,
    Outcome.BILL_NOT_FOUND: RC.ORIGINAL_NOT_FOUND,
    Outcome.BILLER_UNAVAILABLE: RC.BILLER_UNAVAILABLE,
    Outcome.INSUFFICIENT_FUNDS: RC.INSUFFICIENT_FUNDS,
    Outcome.SYSTEM_ERROR: RC.SYSTEM_MALFUNCTION,
}



class Decline(Exception):
    """Raised by a pipeline step: the transaction ends with this outcome."""

    def __init__(self, outcome: Outcome, reason: str = "") -> None:
        super().__init__(f"{outcome.value}: {reason}" if reason else outcome.value)
        self.outcome = outcome
        self.reason = reason


def outcome_codes_sql() -> str:
    """functions/outcomes.sql: ``gw_response_code(outcome)``, this module's table in SQL."""
    cases = "\n".join(f"        WHEN '{outcome.value}' THEN '{code.value}'" for outcome, code in OUTCOME_CODES.items())
    return f"""-- Made from gateway/acquiring/outcomes.py (OUTCOME_CODES) by `python -m gateway.acquiring.outcomes`:
-- change the table there, then write this file again. Re-applied by `posgw db migrate` when it changes.

-- The response code of an outcome the recording functions name (NULL for a name not in the table).
CREATE OR REPLACE FUNCTION gw_response_code(p_outcome text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_outcome
{cases}
    END
$$;
"""


if __name__ == "__main__":
    print(outcome_codes_sql(), end="")

"""Response fields made from raw values: field 54 (a balance), field 48 of a
settlement's answer (the batch totals and whether they balance), the FB tag
of field 59 (an agent's float), and field 48 of a settlement request read
back into numbers (WIRE.md sections 3, 4 and 5). The gateway's database
decides the values; these are their one wire form."""

from __future__ import annotations

from dataclasses import dataclass

BALANCE_ACCOUNT_TYPE = "10"
BALANCE_AMOUNT_TYPE = "02"  # available
CURRENCY_CNY = "156"
AMOUNT_DIGITS = 12
COUNT_DIGITS = 3
SETTLEMENT_TOTALS_DIGITS = 2 * (AMOUNT_DIGITS + COUNT_DIGITS)  # debit n12, count n3, credit n12, count n3
BALANCED, OUT_OF_BALANCE = "1", "2"
_DIGITS = frozenset("0123456789")


def _digits(value: int, width: int) -> str:
    """``value`` left-padded with zeros to ``width`` characters, and cut to
    ``width`` when longer (as the database's lpad formatted it)."""
    return str(value).rjust(width, "0")[:width]


def balance(balance_fen: int, currency: str = CURRENCY_CNY) -> str:
    """Field 54: ``10 02 156 C|D amount``, the amount in fen, 12 digits (``D`` when below zero)."""
    sign = "D" if balance_fen < 0 else "C"
    return f"{BALANCE_ACCOUNT_TYPE}{BALANCE_AMOUNT_TYPE}{currency}{sign}{_digits(abs(balance_fen), AMOUNT_DIGITS)}"


def float_balance(float_fen: int) -> str:
    """Tag FB of a cash payment's field 59: the agent's float after it, in fen, 12 digits."""
    return _digits(float_fen, AMOUNT_DIGITS)


@dataclass(frozen=True, slots=True)
class BatchTotals:
    """A batch's totals: its debits and credits, amounts in fen and counts."""

    debit_fen: int
    debit_count: int
    credit_fen: int
    credit_count: int

    def digits(self) -> str:
        """The 30 digits of field 48 (counts modulo 1,000: they have 3 digits)."""
        return (_digits(self.debit_fen, AMOUNT_DIGITS) + _digits(self.debit_count % 1000, COUNT_DIGITS)
                + _digits(self.credit_fen, AMOUNT_DIGITS) + _digits(self.credit_count % 1000, COUNT_DIGITS))


def settlement_totals(totals: BatchTotals, balanced: bool, foreign_balanced: bool | None = None) -> str:
    """Field 48 of a settlement's answer: the gateway's 30 digits, then 1 (balanced) or 2 (out of balance);
    for a 62-digit request (``foreign_balanced`` not None, WIRE.md 9.6), then 30 zeros (the gateway has no
    foreign cards) and the foreign flag."""
    domestic = totals.digits() + (BALANCED if balanced else OUT_OF_BALANCE)
    if foreign_balanced is None:
        return domestic
    return domestic + "0" * SETTLEMENT_TOTALS_DIGITS + (BALANCED if foreign_balanced else OUT_OF_BALANCE)


SETTLEMENT_TOTALS_V2_DIGITS = 2 * SETTLEMENT_TOTALS_DIGITS + 2  # domestic 30 + digit, foreign 30 + digit


def foreign_totals_zero(digits: str) -> bool | None:
    """Whether the foreign half of a 62-digit field 48 (its digits 32 to 61) is all zeros;
    None for a 30-digit one (WIRE.md 9.6: the digit after each half is not checked)."""
    if len(digits) != SETTLEMENT_TOTALS_V2_DIGITS:
        return None
    foreign = digits[SETTLEMENT_TOTALS_DIGITS + 1:2 * SETTLEMENT_TOTALS_DIGITS + 1]
    return set(foreign) == {"0"}


def parse_settlement_totals(digits: str) -> BatchTotals | None:
    """The totals in the first 30 digits of a settlement request's field 48
    (None when they are not 30 digits: such totals balance nothing)."""
    head = digits[:SETTLEMENT_TOTALS_DIGITS]
    if len(head) != SETTLEMENT_TOTALS_DIGITS or not _DIGITS.issuperset(head):
        return None
    debit_end = AMOUNT_DIGITS + COUNT_DIGITS
    return BatchTotals(int(head[:AMOUNT_DIGITS]), int(head[AMOUNT_DIGITS:debit_end]),
                       int(head[debit_end:debit_end + AMOUNT_DIGITS]), int(head[debit_end + AMOUNT_DIGITS:]))


HISTORY_ENTRIES_MAX = 12  # WIRE.md 9.7
HISTORY_PAID, HISTORY_OPEN = "PD", "OP"


def bill_history(entries: list[tuple[str, int, str]]) -> str:
    """Tag HS of a bill history's field 59 (WIRE.md 9.7): up to 12 entries of 20
    characters, newest first as given, each a period YYYYMM, an amount in fen
    (12 digits) and a status (``PD`` paid, ``OP`` open); none: the empty value."""
    parts = []
    for period, amount_fen, status in entries[:HISTORY_ENTRIES_MAX]:
        assert len(period) == 6 and period.isdigit() and status in (HISTORY_PAID, HISTORY_OPEN), (period, status)
        parts.append(f"{period}{_digits(amount_fen, AMOUNT_DIGITS)}{status}")
    return "".join(parts)

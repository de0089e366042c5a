"""Response fields made from raw values (protocol.answers): fields 54 and 48 and the FB tag (WIRE.md 3, 4, 5)."""

from __future__ import annotations

from protocol import answers
from protocol.answers import BatchTotals


def test_field_54_is_account_type_amount_type_currency_sign_and_12_digits():
    assert answers.balance(12_345) == "1002156C000000012345"
    assert answers.balance(0) == "1002156C000000000000"
    assert answers.balance(-5) == "1002156D000000000005"


def test_the_fb_tag_is_the_float_in_12_digits():
    assert answers.float_balance(49_000) == "000000049000"


def test_field_48_of_the_answer_is_the_30_digits_and_the_balance_flag():
    totals = BatchTotals(1000, 1, 0, 0)
    assert answers.settlement_totals(totals, True) == "000000001000001000000000000000" + "1"
    assert answers.settlement_totals(totals, False).endswith("2")
    assert BatchTotals(5, 1001, 0, 0).digits()[12:15] == "001"  # counts have 3 digits


def test_a_requests_30_digits_read_back_into_totals_and_anything_else_into_none():
    assert answers.parse_settlement_totals("000000001000001000000000700002") == BatchTotals(1000, 1, 700, 2)
    assert answers.parse_settlement_totals("00000000100000100000000000000X") is None
    assert answers.parse_settlement_totals("0" * 29) is None
    assert answers.parse_settlement_totals("0" * 31) == BatchTotals(0, 0, 0, 0)  # the first 30 digits

"""Tag HS of a bill history (WIRE.md 9.7): entries of 20 characters, at most 12."""

from __future__ import annotations

import pytest

from protocol import answers, tlv


def test_entries_are_period_amount_and_status_in_the_order_given():
    value = answers.bill_history([("202611", 6789, "OP"), ("202610", 12345, "PD")])
    assert value == "202611000000006789OP202610000000012345PD"
    assert tlv.encode_canonical({tlv.HISTORY: value, tlv.NAME: "张三", tlv.BILLER: "ELEC01"}).startswith("BL006ELEC01")


def test_no_entries_is_hs000_and_more_than_12_are_cut():
    assert tlv.encode({tlv.HISTORY: answers.bill_history([])}) == "HS000"
    assert len(answers.bill_history([("202601", 1, "PD")] * 13)) == 12 * 20


def test_a_bad_period_or_status_is_refused():
    with pytest.raises(AssertionError):
        answers.bill_history([("2026-1", 1, "PD")])
    with pytest.raises(AssertionError):
        answers.bill_history([("202601", 1, "XX")])

"""What a response code implies: stored for repeats or not, MAC'd or not (WIRE.md 6 and 8)."""

from __future__ import annotations

import pytest

from gateway.acquiring.outcomes import Outcome
from protocol.codes import ResponseCode as RC


def test_the_answers_wire_md_says_are_not_stored_are_not_nor_are_94_and_96() -> None:
    not_stored = {code.value for code in RC if not code.stored}
    assert not_stored == {"30", "97", "03", "77", "A0", "64", "94", "96"}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_gateway_stores_an_outcome_exactly_when_its_code_is_stored(outcome: Outcome) -> None:
    assert outcome.storable is outcome.response_code.stored


def test_only_the_checks_before_the_mac_give_answers_never_macced() -> None:
    assert {code.value for code in RC if code.never_macced} == {"97", "03", "77", "A0"}


def test_30_and_96_come_macced_or_not_and_every_other_code_always_macced() -> None:
    either = {code.value for code in RC if not code.never_macced and not code.always_macced}
    assert either == {"30", "96"}
    assert RC.APPROVED.always_macced and RC.DUPLICATE_DIFFERENT_CONTENT.always_macced


@pytest.mark.parametrize(("text", "code"), [("00", RC.APPROVED), ("A0", RC.MAC_FAILED), ("a0", None), ("42", None)])
def test_a_field_39_names_its_code_or_none_outside_the_dialect(text: str, code: RC | None) -> None:
    assert RC.of(text) is code

from gateway.acquiring.outcomes import OUTCOME_CODES, Outcome
from protocol.codes import ResponseCode


def test_every_outcome_has_a_wire_response_code():
    assert set(OUTCOME_CODES) == set(Outcome)
    assert all(isinstance(code, ResponseCode) for code in OUTCOME_CODES.values())


def test_only_77_a0_and_99_ask_the_terminal_to_sign_on_again():
    assert {code for code in ResponseCode if code.asks_sign_on} == {
        ResponseCode.SIGN_ON_FIRST, ResponseCode.MAC_FAILED, ResponseCode.PIN_FORMAT_ERROR}

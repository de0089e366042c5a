from pathlib import Path

from gateway.acquiring import outcomes
from gateway.acquiring.outcomes import OUTCOME_CODES, Outcome
from protocol.codes import ResponseCode


def test_every_outcome_has_a_wire_response_code():
    assert set(OUTCOME_CODES) == set(Outcome)
    assert all(isinstance(code, ResponseCode) for code in OUTCOME_CODES.values())


def test_only_77_a0_and_99_ask_the_terminal_to_sign_on_again():
    assert {code for code in ResponseCode if code.asks_sign_on} == {
        ResponseCode.SIGN_ON_FIRST, ResponseCode.MAC_FAILED, ResponseCode.PIN_FORMAT_ERROR}


def test_the_databases_outcome_table_is_made_from_this_one():
    """functions/outcomes.sql (gw_response_code) is outcome_codes_sql()'s text:
    `python -m gateway.acquiring.outcomes > gateway/acquiring/functions/outcomes.sql`."""
    path = Path(outcomes.__file__).parent / "functions" / "outcomes.sql"
    assert path.read_text() == outcomes.outcome_codes_sql()


async def test_gw_response_code_gives_each_outcome_its_code(db):
    for outcome, code in OUTCOME_CODES.items():
        assert await db.fetchval("SELECT gw_response_code($1)", outcome.value) == code.value
    assert await db.fetchval("SELECT gw_response_code('no_such_outcome')") is None

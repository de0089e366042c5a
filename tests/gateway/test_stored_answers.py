"""A repeat gets byte for byte the answer of the first time, whatever form its
answer was stored in: named outcome and raw values (the response made from
them by the gateway each time), or, stored before outcomes were named, the
response code and fields as sent (sent as stored). Against a real gateway and
PostgreSQL: each answer is rewritten in its old form, as the former
gw_finish stored it, before the repeat."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from gateway.acquiring.recording import response_fields
from gateway.domain.demo import demo_pan
from protocol.codes import ResponseCode
from sim.terminal import Response, Terminal
from tests.e2e.helpers import terminal_for

PAN, PIN = demo_pan(3), "135790"


@pytest.fixture
async def shop(gateway, world, cli):
    for argv in (("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "100"),
                 ("biller", "add", "P1", "--name", "Prepaid Power", "--prepaid", "--commission-fixed", "1"),
                 ("meter", "add", "P1", "M0001", "--name", "Meter one"),
                 ("agent", "topup", world.agent, "500")):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)
    terminal = terminal_for(gateway, world)
    assert (await terminal.sign_on()).response_code == "00"
    yield terminal
    await terminal.close()


def old_form(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as the former gw_finish stored it: its response code, and
    fields 54, 48 and the FB tag formatted in SQL (lpad, as it did)."""
    old = {name: value for name, value in answer.items()
           if name not in ("outcome", "balance_fen", "batch_totals", "float_fen")}
    old["response_code"] = response_fields(answer)[0].value
    if "balance_fen" in answer:
        fen = answer["balance_fen"]
        old["balance"] = "1002156" + ("D" if fen < 0 else "C") + str(abs(fen)).rjust(12, "0")
    if "batch_totals" in answer:
        t = answer["batch_totals"]
        old["settlement_totals"] = (str(t["debit_fen"]).rjust(12, "0") + str(t["debit_count"] % 1000).rjust(3, "0")
                                    + "0" * 15 + ("1" if t["balanced"] else "2"))
    if "float_fen" in answer:
        old["bill_tlv"] = old["bill_tlv"] | {"FB": str(answer["float_fen"]).rjust(12, "0")}
    return old


async def repeated_from_old_form(db: asyncpg.Connection, terminal: Terminal, first: Response,
                                 mti_class: str = "0200") -> Response:
    """Store the first answer in its old form, then send the request again."""
    request = terminal.last_request
    row = await db.fetchrow("SELECT id, response FROM gw_transactions WHERE tid = $1 AND stan = $2 AND mti_class = $3",
                            terminal.tid, request.stan, mti_class)
    answer = json.loads(row["response"])
    assert "outcome" in answer and "response_code" not in answer  # stored in the new form
    await db.execute("UPDATE gw_transactions SET response = $2::jsonb WHERE id = $1", row["id"],
                     json.dumps(old_form(answer)))
    again = await terminal.send(request)
    assert again.message.raw == first.message.raw
    return again


async def test_a_balance_stored_in_the_old_form_is_repeated_byte_for_byte(shop, db):
    first = await shop.balance(PAN, PIN)
    assert first.response_code == "00" and first.message.balance == "1002156C000000010000"
    await repeated_from_old_form(db, shop, first)


async def test_a_purchase_and_a_decline_stored_in_the_old_form_are_repeated_byte_for_byte(shop, db):
    first = await shop.purchase(PAN, PIN, 2500)
    assert first.response_code == "00" and first.message.auth_id == first.message.rrn[-6:]
    await repeated_from_old_form(db, shop, first)
    declined = await shop.purchase(PAN, PIN, 999_999)
    assert declined.response_code == "51"
    await repeated_from_old_form(db, shop, declined)


async def test_a_cash_bill_payment_stored_in_the_old_form_is_repeated_byte_for_byte(shop, db):
    first = await shop.bill_payment("P1", "M0001", 1000)
    assert first.response_code == "00" and "FB012" in first.message.bill_data
    await repeated_from_old_form(db, shop, first)


async def test_a_settlement_stored_in_the_old_form_is_repeated_byte_for_byte(shop, db):
    assert (await shop.purchase(PAN, PIN, 300)).response_code == "00"
    balanced = await shop.settle(300, 1)
    assert balanced.message.settlement_totals == "000000000300001000000000000000" + "1"
    await repeated_from_old_form(db, shop, balanced, "0500")
    unbalanced = await shop.settle(1, 1)
    assert unbalanced.message.settlement_totals == "0" * 30 + "2"


def test_an_old_form_answer_and_its_new_form_make_the_same_response_fields():
    stamp = {"rrn": "000000000042", "local_time": "101010", "local_date": "1124"}
    tags = {"BL": "P1", "AC": "M0001", "RN": "000000000042", "TK": "1" * 20}
    new = stamp | {"outcome": "approved", "auth_id": "000042", "bill_tlv": tags, "float_fen": 49_000}
    old = stamp | {"response_code": "00", "auth_id": "000042", "bill_tlv": tags | {"FB": "000000049000"}}
    assert response_fields(new) == response_fields(old)
    code, fields = response_fields(new)
    assert code is ResponseCode.APPROVED and fields["bill_data"].endswith("FB012000000049000")
    assert response_fields(stamp | {"outcome": "insufficient_funds"}) == (
        ResponseCode.INSUFFICIENT_FUNDS, stamp | {"response_code": "51"})

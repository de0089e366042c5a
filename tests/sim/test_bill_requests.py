"""Bill inquiries, bill payments (cash and card) and their reversals, against the in-test host."""

from __future__ import annotations

import json
from functools import partial

import pytest

from protocol import tlv
from protocol.crypto import cup_ecb_mac
from protocol.messages import Message
from sim.cli import main
from sim.terminal import Response, bill_fields, build_request
from tests.sim.test_card_requests import PAN, PIN, assert_card_request, gateway, signed_on
from tests.sim.test_terminal import (
    HEADER,
    MAK,
    MID,
    PIK,
    TID,
    TPDU,
    FakeHost,
    answer,
    cli_args,
    key_data,
    run_cli,
)

INQUIRY_ANSWER = {"BL": "ELEC01", "AC": "M0001", "NM": "张三", "AM": "000000012345", "PD": "202411",
                  "BR": "B2024110001"}
CARD_FIELDS = ("pan", "track2", "expiry", "entry_mode", "condition_code", "pin_block", "security_control")


def assert_bill_request(request: Message, processing_code: str, txn_data: str) -> None:
    """The fields every bill request carries, MAC'd under the MAK."""
    assert request.mti == "0200"
    assert (request.processing_code, request.txn_data) == (processing_code, txn_data)
    assert (request.terminal_id, request.merchant_id, request.currency) == (TID, MID, "156")
    assert request.mac == cup_ecb_mac(MAK, request.mac_input)


@pytest.mark.parametrize(("location", "tags"), [
    (None, {"BL": "ELEC01", "AC": "M0001"}),
    ("31.2304,121.4737", {"BL": "ELEC01", "AC": "M0001", "LC": "31.2304,121.4737"}),
])
async def test_bill_inquiry_sends_biller_and_account_and_reads_the_bill(location: str | None,
                                                                       tags: dict[str, str]) -> None:
    async with gateway(amount="000000012345", bill_data=tlv.encode(INQUIRY_ANSWER)) as host:
        terminal = signed_on(host)
        response = await terminal.bill_inquiry("ELEC01", "M0001", location=location)
        await terminal.close()
    [(_, request)] = host.requests
    assert_bill_request(request, "380000", "40000007000")
    assert request.stan == "000001" and tlv.decode(request.bill_data) == tags
    assert not any(request.has(name) for name in ("amount", *CARD_FIELDS))
    assert "张三".encode("gbk") in response.message.raw
    assert bill_fields(response) == INQUIRY_ANSWER and response.message.amount_fen == 12345


def test_bill_fields_of_a_response_without_59_are_empty() -> None:
    assert bill_fields(Response(build_request("0210", response_code="51"), TPDU, HEADER, 0.0)) == {}


async def test_cash_bill_payment_carries_the_reference_and_no_card_fields() -> None:
    receipt = {"BL": "ELEC01", "AC": "M0001", "RN": "000000001234", "FB": "000000987655"}
    async with gateway(auth_id="A00001", bill_data=tlv.encode(receipt)) as host:
        terminal = signed_on(host)
        response = await terminal.bill_payment("ELEC01", "M0001", 12345, reference="B2024110001", stan="000042")
        await terminal.close()
    [(_, request)] = host.requests
    assert_bill_request(request, "500000", "41000007000")
    assert (request.stan, request.amount) == ("000042", "000000012345")
    assert tlv.decode(request.bill_data) == {"BL": "ELEC01", "AC": "M0001", "BR": "B2024110001"}
    assert not any(request.has(name) for name in CARD_FIELDS)
    assert bill_fields(response) == receipt


async def test_card_bill_payment_adds_the_card_fields_and_pin_under_the_pik() -> None:
    async with gateway(auth_id="A00001") as host:
        terminal = signed_on(host)
        await terminal.bill_payment("GAS02", "G77", 5000, pan=PAN, pin=PIN, location="39.9,116.4")
        await terminal.close()
    [(_, request)] = host.requests
    assert_card_request(request, "500000", "41000007000")
    assert request.amount == "000000005000" and not request.has("expiry")
    assert tlv.decode(request.bill_data) == {"BL": "GAS02", "AC": "G77", "LC": "39.9,116.4"}


@pytest.mark.parametrize("card", [{"pan": PAN}, {"pin": PIN}])
async def test_card_bill_payment_needs_pan_and_pin_together(card: dict[str, str]) -> None:
    async with gateway() as host:
        terminal = signed_on(host)
        with pytest.raises(ValueError, match="PAN and the PIN"):
            await terminal.bill_payment("ELEC01", "M0001", 100, **card)
        await terminal.close()
    assert host.requests == []


async def test_reverse_of_a_bill_payment_carries_its_59() -> None:
    async with gateway() as host:
        terminal = signed_on(host)
        await terminal.bill_payment("ELEC01", "M0001", 12345, reference="B2024110001")
        payment = terminal.last_request
        assert payment is not None
        response = await terminal.reverse(payment)
        await terminal.close()
    [(_, original), (_, reversal)] = host.requests
    assert (reversal.mti, response.message.mti, reversal.stan) == ("0400", "0410", original.stan)
    assert reversal.bill_data == original.bill_data
    assert tlv.decode(reversal.bill_data)["BR"] == "B2024110001"
    assert (reversal.processing_code, reversal.amount, reversal.txn_data) == ("500000", "000000012345",
                                                                               "41000007000")
    assert not any(reversal.has(name) for name in CARD_FIELDS)
    assert reversal.mac == cup_ecb_mac(MAK, reversal.mac_input)


async def test_cli_bill_inquiry_json_prints_the_bill_and_the_amount_due() -> None:
    async with gateway(amount="000000012345", bill_data=tlv.encode(INQUIRY_ANSWER)) as host:
        code, stdout, stderr = await run_cli(*cli_args(
            "bill-inquiry", host.port, "--biller", "ELEC01", "--account", "M0001", "--batch", "7",
            "--stan", "000005", "--location", "31.2304,121.4737", "--json"))
    assert code == 0, stderr
    [(_, sign_on), (_, request)] = host.requests
    assert (sign_on.mti, sign_on.stan) == ("0800", "000004")
    assert_bill_request(request, "380000", "40000007000")
    assert tlv.decode(request.bill_data) == {"BL": "ELEC01", "AC": "M0001", "LC": "31.2304,121.4737"}
    output = json.loads(stdout)
    assert output["response_code"] == "00" and output["stan"] == "000005"
    assert output["bill"] == INQUIRY_ANSWER and output["amount_due_fen"] == 12345


async def test_cli_bill_pay_cash_prints_the_receipt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")
    receipt = {"BL": "ELEC01", "AC": "M0001", "NM": "张三", "RN": "000000001234",
               "TK": "12345678901234567890", "FB": "000000987655"}
    async with gateway(auth_id="A00001", bill_data=tlv.encode(receipt)) as host:
        code, stdout, stderr = await run_cli(*cli_args(
            "bill-pay", host.port, "--biller", "ELEC01", "--account", "M0001", "--amount", "123.45"))
    assert code == 0, stderr
    [_, (_, request)] = host.requests
    assert_bill_request(request, "500000", "41000001000")
    assert request.amount == "000000012345" and not request.has("pan")
    assert tlv.decode(request.bill_data) == {"BL": "ELEC01", "AC": "M0001"}
    summary, *slip = stdout.splitlines()
    assert summary.startswith("bill-pay: 0210 response 00 (approved) in ")
    assert slip == [
        "------ RECEIPT ------",
        "Biller   ELEC01",
        "Account  M0001",
        "Name     张三",
        "Amount   123.45",
        "Receipt  000000001234",
        "Token    1234 5678 9012 3456 7890",
        "Float    9876.55",
        "Date     0101 12:00:00   Terminal T0000001",
        "---------------------",
    ]


def declining(code: str) -> FakeHost:
    """A host that signs on, then answers every request ``code``, MAC'd and without 59."""
    def respond(request: Message) -> Message:
        if request.mti == "0800":
            return answer(request, key_data=key_data(PIK, MAK))
        response = answer(request, code, processing_code=request.processing_code, amount=request.amount,
                          currency=request.currency)
        response.encode_with_mac(partial(cup_ecb_mac, MAK))
        return response
    return FakeHost(respond)


async def test_cli_declined_bill_pay_prints_no_receipt() -> None:
    async with declining("51") as host:
        code, stdout, stderr = await run_cli(*cli_args(
            "bill-pay", host.port, "--biller", "ELEC01", "--account", "M0001", "--amount", "5"))
    assert code == 1, stderr
    assert "response 51" in stdout and "RECEIPT" not in stdout


async def test_cli_bill_pay_by_card_json_never_shows_the_card() -> None:
    async with gateway(bill_data=tlv.encode({"RN": "R1"})) as host:
        code, stdout, stderr = await run_cli(*cli_args(
            "bill-pay", host.port, "--biller", "ELEC01", "--account", "M0001", "--amount", "50",
            "--reference", "B2024110001", "--pan", PAN, "--pin", PIN, "--json"))
    assert code == 0, stderr
    [_, (_, request)] = host.requests
    assert_card_request(request, "500000", "41000001000")
    assert tlv.decode(request.bill_data) == {"BL": "ELEC01", "AC": "M0001", "BR": "B2024110001"}
    output = json.loads(stdout)
    assert output["bill"] == {"RN": "R1"} and output["pan"] == "622588*6789" and "amount_due_fen" not in output
    for secret in (PAN, PIN, request.pin_block.hex()):
        assert secret.lower() not in (stdout + stderr).lower()


@pytest.mark.parametrize(("extra", "error"), [
    (("--pan", PAN), "--pan and --pin go together"),
    (("--pin", PIN), "--pan and --pin go together"),
    (("--biller", "ELEC 01"), "biller code must be"),
    (("--account", "M-0001"), "bill account must be"),
    (("--location", "91.0,121.4"), "location must be LAT,LON"),
    (("--location", "31.2"), "location must be LAT,LON"),
    (("--reference", "B" * 33), "bill reference must be"),
])
def test_cli_bill_pay_bad_usage_exits_2(extra: tuple[str, ...], error: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = {"--biller": "ELEC01", "--account": "M0001", "--amount": "1"} | dict([extra])
    with pytest.raises(SystemExit) as exit_info:
        main(cli_args("bill-pay", 1, *(item for pair in args.items() for item in pair)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and error in err.strip().splitlines()[-1]
    assert PIN not in err and PAN not in err

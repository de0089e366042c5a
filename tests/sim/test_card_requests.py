"""Card transactions and reversals of the terminal, against the in-test host."""

from __future__ import annotations

import json
from functools import partial

import pytest

from protocol.crypto import cup_ecb_mac, decrypt_pin
from protocol.messages import ECHOED_WHEN_PRESENT, Message
from sim.cli import build_parser
from sim.terminal import BalanceFormatError, Response, Terminal, WorkingKeys, balance_fen, build_request
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

PAN, PIN = "6225880123456789", "135790"


def gateway(**approval_fields: str) -> FakeHost:
    """A host that signs on with PIK and MAK and answers every other request MAC'd, like the gateway."""
    def respond(request: Message) -> Message:
        if request.mti == "0800":
            return answer(request, key_data=key_data(PIK, MAK))
        echoed = {name: getattr(request, name) for name in ECHOED_WHEN_PRESENT if name != "txn_data"}
        response = answer(request, **{**echoed, **approval_fields})
        response.encode_with_mac(partial(cup_ecb_mac, MAK))
        return response
    return FakeHost(respond)


def signed_on(host: FakeHost) -> Terminal:
    terminal = host.terminal(batch=7)
    terminal.keys = WorkingKeys(pik=PIK, mak=MAK, tdk=None)
    return terminal


def assert_card_request(request: Message, processing_code: str, txn_data: str) -> None:
    assert request.mti == "0200"
    assert (request.pan, request.processing_code, request.txn_data) == (PAN, processing_code, txn_data)
    assert (request.terminal_id, request.merchant_id, request.currency) == (TID, MID, "156")
    assert (request.entry_mode, request.condition_code) == ("021", "00")
    assert request.security_control == "2600000000000000"
    assert decrypt_pin(PIK, request.pin_block, PAN) == PIN
    assert request.mac == cup_ecb_mac(MAK, request.mac_input)


async def test_purchase_sends_pin_under_the_pik_and_macs_under_the_mak() -> None:
    async with gateway(auth_id="A00001") as host:
        terminal = signed_on(host)
        response = await terminal.purchase(PAN, PIN, 12345, expiry="2812")
        await terminal.close()
    [(_, request)] = host.requests
    assert_card_request(request, "000000", "22000007000")
    assert (request.amount, request.stan, request.expiry) == ("000000012345", "000001", "2812")
    assert terminal.last_request is not None and terminal.last_request.raw == request.raw
    assert response.response_code == "00" and response.message.auth_id == "A00001"


async def test_balance_reads_field_54() -> None:
    async with gateway(balance="1002156C000000012345") as host:
        terminal = signed_on(host)
        response = await terminal.balance(PAN, PIN, stan="000042")
        await terminal.close()
    [(_, request)] = host.requests
    assert_card_request(request, "310000", "01000007000")
    assert request.stan == "000042" and not request.has("amount") and not request.has("expiry")
    assert balance_fen(response) == 12345


@pytest.mark.parametrize(("field_54", "fen"), [
    ("1002156C000000012345", 12345), ("1002156D000000000100", -100), (None, None),
])
def test_balance_fen(field_54: str | None, fen: int | None) -> None:
    message = build_request("0210", balance=field_54)
    assert balance_fen(Response(message, TPDU, HEADER, 0.0)) == fen


@pytest.mark.parametrize("field_54", ["1002156X000000012345", "1002156C00000001234", "1002156C00000001234A"])
def test_malformed_balance_raises(field_54: str) -> None:
    with pytest.raises(BalanceFormatError):
        balance_fen(Response(build_request("0210", balance=field_54), TPDU, HEADER, 0.0))


async def test_void_names_the_purchase_in_37_and_61() -> None:
    async with gateway() as host:
        terminal = signed_on(host)
        await terminal.void(PAN, PIN, 12345, original_rrn="240101000123", original_batch=6,
                            original_stan="000017", original_date="0102")
        await terminal.close()
    [(_, request)] = host.requests
    assert_card_request(request, "200000", "23000007000")
    assert request.amount == "000000012345"
    assert (request.rrn, request.original_txn) == ("240101000123", "0000060000170102")


async def test_reverse_repeats_the_original_without_pin() -> None:
    async with gateway() as host:
        terminal = signed_on(host)
        await terminal.purchase(PAN, PIN, 500)
        purchase = terminal.last_request
        assert purchase is not None
        response = await terminal.reverse(purchase)
        await terminal.close()
    [(_, original), (_, reversal)] = host.requests
    assert reversal.mti == "0400" and response.message.mti == "0410"
    assert reversal.stan == original.stan == "000001"
    for name in ("pan", "processing_code", "amount", "terminal_id", "merchant_id", "currency", "txn_data"):
        assert getattr(reversal, name) == getattr(original, name), name
    assert reversal.txn_data == "22000007000" and reversal.response_code == "98"
    assert not any(reversal.has(name) for name in ("pin_block", "security_control", "entry_mode", "rrn"))
    assert reversal.mac == cup_ecb_mac(MAK, reversal.mac_input)


async def test_reverse_copies_track2_and_bill_data_and_zeroes_60_3() -> None:
    original = build_request(
        "0200", track2="6225880123456789D2812", processing_code="500000", amount="000000002000",
        stan="000033", terminal_id=TID, merchant_id=MID, currency="156", bill_data="BL006ELEC01",
        txn_data="410000071235",
    )
    async with gateway() as host:
        terminal = signed_on(host)
        await terminal.reverse(original, reason="06")
        await terminal.close()
    [(_, reversal)] = host.requests
    assert (reversal.track2, reversal.bill_data, reversal.stan) == (original.track2, "BL006ELEC01", "000033")
    assert (reversal.txn_data, reversal.response_code, reversal.pan) == ("410000070005", "06", None)


async def test_reverse_needs_the_original_field_60() -> None:
    terminal = Terminal("127.0.0.1", 1, TID, MID, bytes(16))
    with pytest.raises(ValueError, match="field 60"):
        await terminal.reverse(build_request("0200", stan="000001", terminal_id=TID, merchant_id=MID))


async def test_cli_purchase_json_signs_on_then_purchases_without_showing_the_card() -> None:
    async with gateway() as host:
        code, stdout, stderr = await run_cli(*cli_args(
            "purchase", host.port, "--pan", PAN, "--pin", PIN, "--amount", "12.3", "--batch", "7",
            "--stan", "000001", "--json"))
    assert code == 0, stderr
    [(_, sign_on), (_, request)] = host.requests
    assert (sign_on.mti, sign_on.stan, request.stan) == ("0800", "999999", "000001")
    assert_card_request(request, "000000", "22000007000")
    assert request.amount == "000000001230"
    output = json.loads(stdout)
    assert output["response_code"] == "00" and output["amount"] == "000000001230"
    assert (output["stan"], output["batch"]) == ("000001", 7)
    assert (output["rrn"], output["local_date"]) == ("000000000001", "0101")  # what a void needs besides
    assert output["pan"] == "622588*6789"
    for secret in (PAN, PIN, request.pin_block.hex()):
        assert secret.lower() not in (stdout + stderr).lower()


@pytest.mark.parametrize(("command", "extra", "expected"), [
    ("balance", ("--pin", PIN), {"mti": "0200", "processing_code": "310000", "txn_data": "01000003000"}),
    ("void", ("--pin", PIN, "--amount", "5", "--rrn", "240101000123", "--orig-stan", "000017",
              "--orig-date", "0102"),
     {"mti": "0200", "amount": "000000000500", "rrn": "240101000123", "original_txn": "0000030000170102"}),
    ("reverse", ("--amount", "5", "--orig-stan", "000017"),
     {"mti": "0400", "stan": "000017", "amount": "000000000500", "response_code": "98",
      "txn_data": "22000003000", "pin_block": None}),
])
async def test_cli_card_commands_send_their_request(command: str, extra: tuple[str, ...],
                                                    expected: dict[str, str | None]) -> None:
    async with gateway(balance="1002156C000000012345") as host:
        args = cli_args(command, host.port, "--pan", PAN, "--batch", "3", *extra, "--json")
        code, stdout, stderr = await run_cli(*args)
    assert code == 0, stderr
    [(_, sign_on), (_, request)] = host.requests
    assert sign_on.mti == "0800" and request.mac == cup_ecb_mac(MAK, request.mac_input)
    assert {name: getattr(request, name) for name in expected} == expected
    assert json.loads(stdout).get("balance_fen") == (12345 if command == "balance" else None)


@pytest.mark.parametrize(("amount", "fen"), [("12", 1200), ("12.3", 1230), ("12.34", 1234), ("0.01", 1)])
def test_cli_amount_is_yuan_to_fen(amount: str, fen: int) -> None:
    args = build_parser().parse_args(cli_args("purchase", 1, "--pan", PAN, "--pin", PIN, "--amount", amount))
    assert args.amount == fen


@pytest.mark.parametrize("amount", ["0", "0.00", "1.234", "1e3", "-5", "12.", "NaN", "1,5"])
def test_cli_rejects_bad_amounts(amount: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(cli_args("purchase", 1, "--pan", PAN, "--pin", PIN, "--amount", amount))
    assert exit_info.value.code == 2 and "amount" in capsys.readouterr().err


def test_cli_bad_pin_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(cli_args("balance", 1, "--pan", PAN, "--pin", "12a456"))
    err = capsys.readouterr().err
    assert "PIN must be 4 to 12 digits" in err and "12a456" not in err

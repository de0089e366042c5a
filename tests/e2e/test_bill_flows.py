"""Utility bills end to end over TCP with real PostgreSQL: inquiry, cash and
card payment on the agent's float, prepaid tokens, commission, reversal, and a
biller reached over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.domain.demo import demo_pan
from protocol import tlv
from sim.terminal import bill_fields, build_request
from tests.conftest import make_settings, running_gateway
from tests.e2e.helpers import terminal_for

PAN, PIN = demo_pan(11), "135790"


@pytest.fixture
async def billers(cli, world):
    for argv in (
        ("biller", "add", "ELEC01", "--name", "City Electricity", "--exact", "--commission-bp", "50"),
        ("biller", "add", "WATER1", "--name", "Water", "--commission-fixed", "0.30"),
        ("biller", "add", "PRE01", "--name", "Prepaid Power", "--prepaid", "--commission-bp", "100"),
        ("meter", "add", "PRE01", "M0001", "--name", "王五"),
        ("bill", "add", "ELEC01", "A1001", "--name", "张三", "--amount", "123.45", "--period", "202610"),
        ("bill", "add", "ELEC01", "A1001", "--name", "张三", "--amount", "67.89", "--period", "202611"),
        ("bill", "add", "WATER1", "W1", "--name", "李四", "--amount", "50", "--period", "202611"),
        ("agent", "topup", "AG01", "500"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


@pytest.fixture
async def terminal(gateway, world, billers):
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()


async def agent(cli) -> dict:
    return (await cli("agent", "show", "AG01", "--json")).json


async def bills_of(cli, biller, account=None) -> list[dict]:
    argv = ["bill", "list", biller, "--json"] + (["--account", account] if account else [])
    return (await cli(*argv)).json["bills"]


async def assert_ledger_clean(cli):
    result = await cli("ledger", "check", "--json")
    assert result.code == 0 and result.json["ok"], result.stdout


async def test_inquiry_answers_the_oldest_open_bill_with_name_period_amount_and_reference(terminal, cli):
    response = await terminal.bill_inquiry("ELEC01", "A1001")
    assert response.response_code == "00"
    assert response.message.amount == "000000012345"
    fields = bill_fields(response)
    oldest = (await bills_of(cli, "ELEC01", "A1001"))[0]
    assert fields == {"BL": "ELEC01", "AC": "A1001", "NM": "张三", "AM": "000000012345", "PD": "202610",
                      "BR": oldest["reference"]}
    assert "张三".encode("gbk") in response.message.raw


async def test_inquire_pay_then_paying_the_same_bill_again_gets_25(terminal, cli):
    fields = bill_fields(await terminal.bill_inquiry("ELEC01", "A1001"))
    paid = await terminal.bill_payment("ELEC01", "A1001", 12345, reference=fields["BR"])
    assert paid.response_code == "00"
    receipt = bill_fields(paid)
    assert receipt["RN"] == paid.message.rrn and receipt["NM"] == "张三"
    assert receipt["FB"] == f"{50000 - 12345:012d}"
    assert paid.message.auth_id == paid.message.rrn[-6:]
    after = await agent(cli)
    assert after["float_fen"] == 50000 - 12345
    assert after["commission_fen"] == 62  # 12345 * 50 / 10000 = 61.725, half up
    statuses = {b["reference"]: b["status"] for b in await bills_of(cli, "ELEC01")}
    assert statuses[fields["BR"]] == "paid"
    again = await terminal.bill_payment("ELEC01", "A1001", 12345, reference=fields["BR"])
    assert again.response_code == "25" and again.message.bill_data is None
    assert (await agent(cli))["float_fen"] == 50000 - 12345
    # The next inquiry answers the next open bill.
    assert bill_fields(await terminal.bill_inquiry("ELEC01", "A1001"))["PD"] == "202611"
    await assert_ledger_clean(cli)


async def test_an_exact_biller_refuses_another_amount_with_13_and_moves_nothing(terminal, cli):
    reference = (await bills_of(cli, "ELEC01", "A1001"))[0]["reference"]
    assert (await terminal.bill_payment("ELEC01", "A1001", 12000, reference=reference)).response_code == "13"
    assert (await agent(cli))["float_fen"] == 50000


async def test_a_biller_without_exact_takes_any_amount_and_marks_the_bill_paid(terminal, cli):
    reference = (await bills_of(cli, "WATER1"))[0]["reference"]
    response = await terminal.bill_payment("WATER1", "W1", 1, reference=reference)
    assert response.response_code == "00"
    assert (await bills_of(cli, "WATER1"))[0]["status"] == "paid"
    assert (await agent(cli))["commission_fen"] == 30  # fixed commission, never from the float
    assert (await agent(cli))["float_fen"] == 50000 - 1


@pytest.mark.parametrize("biller, account, reference, code", [
    ("NOPE01", "A1001", "X", "12"),          # unknown biller
    ("ELEC01", "A1001", None, "30"),         # postpaid without BR
    ("ELEC01", "A1001", "NOTTHEBILL", "25"),  # BR of no open bill
    ("ELEC01", "A9999", None, "25"),         # inquiry of an account with no open bill
    ("PRE01", "M9999", None, "25"),          # unregistered meter
    ("PRE01", "M0001", "WRONGBR", "25"),     # prepaid BR present but not the inquiry's
])
async def test_bill_checks_answer_their_codes_and_move_nothing(terminal, cli, biller, account, reference, code):
    if account == "A9999":
        response = await terminal.bill_inquiry(biller, account)
    else:
        response = await terminal.bill_payment(biller, account, 12345, reference=reference)
    assert response.response_code == code
    assert response.message.bill_data is None
    assert response.message.mac is not None  # all of these come after the MAC check
    assert (await agent(cli))["float_fen"] == 50000


async def test_the_float_runs_dry_exactly_at_the_boundary(terminal, cli):
    assert (await terminal.bill_payment("PRE01", "M0001", 30000)).response_code == "00"
    assert (await terminal.bill_payment("PRE01", "M0001", 20000)).response_code == "00"  # exactly what is left
    assert (await agent(cli))["float_fen"] == 0
    short = await terminal.bill_payment("PRE01", "M0001", 1)
    assert short.response_code == "51" and short.message.bill_data is None
    assert (await agent(cli))["float_fen"] == 0
    await cli("agent", "topup", "AG01", "0.01")
    assert (await terminal.bill_payment("PRE01", "M0001", 1)).response_code == "00"
    await assert_ledger_clean(cli)


async def test_a_reversal_that_overtakes_its_bill_payment_makes_the_late_payment_25(terminal, cli):
    stan = terminal.next_stan()
    late = build_request("0200", processing_code="500000", amount="000000001000", stan=stan,
                         terminal_id=terminal.tid, merchant_id=terminal.mid, currency="156",
                         txn_data="41000001000", bill_data=tlv.encode({tlv.BILLER: "PRE01", tlv.ACCOUNT: "M0001"}))
    assert (await terminal.reverse(late)).response_code == "00"
    payment = await terminal.bill_payment("PRE01", "M0001", 1000, stan=stan)
    assert payment.response_code == "25" and payment.message.bill_data is None
    assert (await agent(cli))["float_fen"] == 50000
    assert (await cli("token", "show", "M0001", "--json")).json["tokens"] == []
    await assert_ledger_clean(cli)


async def test_thirty_concurrent_cash_payments_never_overdraw_a_small_float(gateway, world, billers, cli):
    await cli("agent", "add", "SMALL", "--name", "Small shop")
    await cli("merchant", "add", "MERCHANT0000009", "--name", "Small", "--agent", "SMALL")
    await cli("terminal", "add", "TERM0009", "--merchant", "MERCHANT0000009", "--tmk", world.tmk.hex())
    await cli("agent", "topup", "SMALL", "105")
    first = terminal_for(gateway, world)
    first.tid, first.mid = "TERM0009", "MERCHANT0000009"
    await first.sign_on()
    terminals = []
    for _ in range(30):
        t = terminal_for(gateway, world)
        t.tid, t.mid, t.keys = "TERM0009", "MERCHANT0000009", first.keys
        terminals.append(t)
    stans = [f"{i:06d}" for i in range(100, 130)]
    responses = await asyncio.gather(*(t.bill_payment("PRE01", "M0001", 1000, stan=s)
                                       for t, s in zip(terminals, stans)))
    codes = [r.response_code for r in responses]
    assert codes.count("00") == 10 and codes.count("51") == 20
    small = (await cli("agent", "show", "SMALL", "--json")).json
    assert small["float_fen"] == 500
    assert small["commission_fen"] == 10 * 10  # 1% of 10.00 each
    tokens = (await cli("token", "show", "M0001", "--json")).json["tokens"]
    assert len(tokens) == 10
    await asyncio.gather(*(t.close() for t in terminals + [first]))
    await assert_ledger_clean(cli)


async def test_prepaid_payment_issues_a_20_digit_token_recorded_against_the_meter(terminal, cli):
    inquiry = bill_fields(await terminal.bill_inquiry("PRE01", "M0001"))
    assert set(inquiry) == {"BL", "AC", "NM", "BR"} and inquiry["NM"] == "王五"
    response = await terminal.bill_payment("PRE01", "M0001", 5000, reference=inquiry["BR"])
    assert response.response_code == "00"
    token = bill_fields(response)["TK"]
    assert len(token) == 20 and token.isdigit()
    shown = (await cli("token", "show", "M0001", "--json")).json
    assert shown == {"meter": "M0001", "tokens": [
        {"token": token, "amount_fen": 5000, "receipt": response.message.rrn, "status": "valid"}]}
    assert (await agent(cli))["commission_fen"] == 50


async def test_prepaid_tokens_are_unique_across_a_thousand_payments(gateway, world, billers, cli):
    await cli("agent", "topup", "AG01", "100000")
    base = terminal_for(gateway, world)
    await base.sign_on()
    lanes = []
    for _ in range(10):
        t = terminal_for(gateway, world)
        t.keys = base.keys
        lanes.append(t)

    async def pay(lane: int):
        tokens = []
        for i in range(100):
            r = await lanes[lane].bill_payment("PRE01", "M0001", 100, stan=f"{lane * 100 + i + 1:06d}")
            assert r.response_code == "00"
            tokens.append(bill_fields(r)["TK"])
        return tokens

    tokens = [tk for lane in await asyncio.gather(*(pay(n) for n in range(10))) for tk in lane]
    assert len(tokens) == 1000 and len(set(tokens)) == 1000
    assert all(len(tk) == 20 and tk.isdigit() for tk in tokens)
    assert len((await cli("token", "show", "M0001", "--json")).json["tokens"]) == 1000
    await asyncio.gather(*(t.close() for t in lanes + [base]))


async def test_a_card_pays_a_bill_and_the_agent_still_earns_the_commission(terminal, cli):
    await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "200")
    reference = (await bills_of(cli, "ELEC01", "A1001"))[0]["reference"]
    response = await terminal.bill_payment("ELEC01", "A1001", 12345, reference=reference, pan=PAN, pin=PIN)
    assert response.response_code == "00"
    assert "FB" not in bill_fields(response)
    assert (await cli("card", "show", PAN, "--json")).json["balance_fen"] == 20000 - 12345
    after = await agent(cli)
    assert after["float_fen"] == 50000 and after["commission_fen"] == 62
    wrong_pin = await terminal.bill_payment("WATER1", "W1", 100, reference="x", pan=PAN, pin="000000")
    assert wrong_pin.response_code == "55"


async def test_bill_payments_need_the_bill_permit_and_an_active_agent(terminal, cli, world):
    await cli("terminal", "set", world.tid, "--permit", "purchase")
    assert (await terminal.bill_inquiry("PRE01", "M0001")).response_code == "58"
    await cli("terminal", "set", world.tid, "--permit", "purchase,bill")
    await cli("agent", "freeze", "AG01")
    assert (await terminal.bill_payment("PRE01", "M0001", 100)).response_code == "58"
    assert (await agent(cli))["float_fen"] == 50000


async def test_reversal_restores_float_commission_and_bill_and_voids_the_token(terminal, cli):
    reference = (await bills_of(cli, "ELEC01", "A1001"))[0]["reference"]
    assert (await terminal.bill_payment("ELEC01", "A1001", 12345, reference=reference)).response_code == "00"
    original = terminal.last_request
    prepaid = await terminal.bill_payment("PRE01", "M0001", 700)
    prepaid_request = terminal.last_request
    assert (await terminal.reverse(original)).response_code == "00"
    assert (await terminal.reverse(prepaid_request)).response_code == "00"
    assert (await terminal.reverse(original)).response_code == "00"  # a repeat moves nothing
    after = await agent(cli)
    assert after["float_fen"] == 50000 and after["commission_fen"] == 0
    assert {b["reference"]: b["status"] for b in await bills_of(cli, "ELEC01")}[reference] == "open"
    token = bill_fields(prepaid)["TK"]
    assert (await cli("token", "show", "M0001", "--json")).json["tokens"] == [
        {"token": token, "amount_fen": 700, "receipt": prepaid.message.rrn, "status": "void"}]
    # The reopened bill can be paid again.
    assert (await terminal.bill_payment("ELEC01", "A1001", 12345, reference=reference)).response_code == "00"
    await assert_ledger_clean(cli)


# -- a biller over HTTP -------------------------------------------------------------


class FakeUtility(BaseHTTPRequestHandler):
    """A utility's billing system: one account, answers slowly or fails on demand."""

    delay_s = 0.0
    fail = False
    payments: dict[str, dict] = {}
    cancelled: list[str] = []

    def _reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        time.sleep(self.delay_s)
        if self.fail:
            return self._reply(500)
        if "account=H1" not in self.path:
            return self._reply(404)
        self._reply(200, {"name": "赵六", "reference": "HREF1", "amount_fen": 8800, "period": "202611"})

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(self.delay_s)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/cancel"):
            FakeUtility.cancelled.append(self.path.split("/")[2])
            return self._reply(200)
        if self.fail:
            return self._reply(503)
        if body["reference"] != "HREF1":
            return self._reply(404)
        FakeUtility.payments[body["receipt"]] = body
        self._reply(200, {"name": "赵六"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def utility():
    FakeUtility.delay_s, FakeUtility.fail = 0.0, False
    FakeUtility.payments, FakeUtility.cancelled = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeUtility)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def until_cancelled(receipts: list[str], within_s: float = 10.0) -> None:
    """The gateway's forwarder delivers cancels after the commit: wait for exactly these."""
    deadline = time.monotonic() + within_s
    while FakeUtility.cancelled != receipts and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert FakeUtility.cancelled == receipts


@pytest.fixture
async def http_terminal(db_url, tmp_path, cli, world, utility):
    await cli("biller", "add", "HTTP01", "--name", "Remote Utility", "--connector", "http", "--url", utility,
              "--commission-bp", "100")
    await cli("agent", "topup", "AG01", "500")
    settings = make_settings(db_url, tmp_path, biller_timeout_s=0.5, saf_poll_interval_s=0.05)
    async with running_gateway(settings) as gw:
        t = terminal_for(gw, world)
        await t.sign_on()
        yield t
        await t.close()


async def test_an_http_biller_answers_inquiry_and_payment(http_terminal, cli):
    inquiry = await http_terminal.bill_inquiry("HTTP01", "H1")
    assert inquiry.response_code == "00" and bill_fields(inquiry)["NM"] == "赵六"
    assert inquiry.message.amount == "000000008800"
    paid = await http_terminal.bill_payment("HTTP01", "H1", 8800, reference="HREF1")
    assert paid.response_code == "00"
    assert FakeUtility.payments[paid.message.rrn]["amount_fen"] == 8800
    assert (await agent(cli))["float_fen"] == 50000 - 8800
    assert (await http_terminal.bill_inquiry("HTTP01", "NOBODY")).response_code == "25"


async def test_an_http_biller_that_times_out_gets_91_and_nothing_moves(http_terminal, cli):
    FakeUtility.delay_s = 1.0
    assert (await http_terminal.bill_inquiry("HTTP01", "H1")).response_code == "91"
    assert (await http_terminal.bill_payment("HTTP01", "H1", 8800, reference="HREF1")).response_code == "91"
    assert (await agent(cli))["float_fen"] == 50000
    await assert_ledger_clean(cli)


async def test_an_http_biller_error_gets_91_and_nothing_moves(http_terminal, cli):
    FakeUtility.fail = True
    assert (await http_terminal.bill_payment("HTTP01", "H1", 8800, reference="HREF1")).response_code == "91"
    assert (await agent(cli))["float_fen"] == 50000


async def test_a_payment_the_float_cannot_cover_is_cancelled_at_the_http_biller(http_terminal, cli):
    response = await http_terminal.bill_payment("HTTP01", "H1", 60000, reference="HREF1")
    assert response.response_code == "51"
    await until_cancelled([next(iter(FakeUtility.payments))])  # through the outbox, queued with the decline


async def test_reversing_an_http_bill_payment_cancels_it_at_the_biller(http_terminal, cli):
    paid = await http_terminal.bill_payment("HTTP01", "H1", 8800, reference="HREF1")
    assert (await http_terminal.reverse(http_terminal.last_request)).response_code == "00"
    await until_cancelled([paid.message.rrn])  # through the outbox, queued with the reversal
    assert (await agent(cli))["float_fen"] == 50000


async def test_the_simulator_pays_a_bill_in_cash_and_reverses_it_from_the_command_line(terminal, cli, world):
    import contextlib
    import io

    from sim.cli import main as sim_main

    common = ["--port", str(terminal.port), "--tid", world.tid, "--mid", world.mid, "--tmk", world.tmk.hex()]

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = sim_main(list(argv))
        return code, out.getvalue()

    code, out = await asyncio.to_thread(run, "bill-pay", *common, "--stan", "000500", "--biller", "PRE01",
                                        "--account", "M0001", "--amount", "12.34", "--json")
    assert code == 0, out
    assert len(json.loads(out)["bill"]["TK"]) == 20
    assert (await agent(cli))["float_fen"] == 50000 - 1234
    code, out = await asyncio.to_thread(run, "reverse", *common, "--stan", "000600", "--orig-stan", "000500",
                                        "--amount", "12.34", "--processing-code", "500000", "--txn-type", "41",
                                        "--biller", "PRE01", "--account", "M0001", "--json")
    assert code == 0, out
    assert (await agent(cli))["float_fen"] == 50000

"""The agent's counter end to end over TCP with real PostgreSQL (WIRE.md 9.7, 9.9;
CLI.md "Vouchers and the biller link"): voucher sales drawn on the float with
the commission, their PIN kept hashed and their stored answer encrypted,
redemption once, reversal before and after it, and the bill history."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from protocol import tlv
from sim import counter
from sim.terminal import bill_fields
from tests.conftest import make_settings
from tests.e2e.helpers import terminal_for

FACE_FEN = 5000


@pytest.fixture
async def counter_world(cli, world):
    for argv in (
        ("biller", "add", "PRE01", "--name", "Prepaid Power", "--prepaid", "--commission-bp", "100"),
        ("biller", "add", "ELEC01", "--name", "City Electricity", "--commission-bp", "50"),
        ("meter", "add", "PRE01", "M0001", "--name", "王五"),
        ("biller", "set", "PRE01", "--voucher-values", "50,100"),
        ("bill", "add", "ELEC01", "A1001", "--name", "张三", "--amount", "123.45", "--period", "202610"),
        ("bill", "add", "ELEC01", "A1001", "--name", "张三", "--amount", "67.89", "--period", "202611"),
        ("agent", "topup", "AG01", "500"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


@pytest.fixture
async def terminal(gateway, world, counter_world):
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()


async def agent(cli) -> dict:
    return (await cli("agent", "show", "AG01", "--json")).json


async def sell(terminal, amount_fen: int = FACE_FEN) -> dict[str, str]:
    response = await counter.voucher_sale(terminal, "PRE01", amount_fen)
    assert response.response_code == "00", response.response_code
    return bill_fields(response)


async def test_a_sale_draws_the_float_pays_the_commission_and_answers_serial_and_pin(terminal, cli, db):
    response = await counter.voucher_sale(terminal, "PRE01", FACE_FEN)
    assert response.response_code == "00"
    fields = bill_fields(response)
    assert list(fields) == ["BL", "RN", "FB", "VS", "VP"]  # section 5's order, then VS, VP (9.9)
    assert fields["BL"] == "PRE01" and fields["RN"] == response.message.rrn
    assert response.message.auth_id == response.message.rrn[-6:]
    assert len(fields["VS"]) == 12 and fields["VS"].isdigit()
    assert len(fields["VP"]) == 16 and fields["VP"].isdigit()
    assert fields["FB"] == f"{50000 - 5000:012d}"  # 50 yuan out of the float; 1% commission to the agent
    shown = await agent(cli)
    assert shown["float_fen"] == 45000 and shown["commission_fen"] == 50
    # Never clear: the PIN is a keyed hash, the stored answer holds it under the LMK.
    row = await db.fetchrow("SELECT pin_hash, status FROM vouchers WHERE serial = $1", fields["VS"])
    assert row["status"] == "valid" and fields["VP"].encode() not in row["pin_hash"]
    stored = await db.fetchval("SELECT response::text FROM gw_transactions WHERE rrn = $1", fields["RN"])
    assert fields["VP"] not in stored and fields["VS"] in stored
    voucher = (await cli("voucher", "show", fields["VS"], "--json")).json
    assert voucher == {"serial": fields["VS"], "biller": "PRE01", "amount_fen": 5000, "status": "valid",
                       "sold_at": voucher["sold_at"], "tid": "TERM0001", "receipt": fields["RN"], "meter": None,
                       "token": None}
    assert (await cli("ledger", "check", "--json")).json["ok"]


async def test_a_repeat_gets_the_same_serial_and_pin_byte_for_byte(terminal, cli):
    first = await counter.voucher_sale(terminal, "PRE01", FACE_FEN, stan="000777")
    again = await counter.voucher_sale(terminal, "PRE01", FACE_FEN, stan="000777")
    assert again.message.bill_data == first.message.bill_data
    assert (await agent(cli))["float_fen"] == 45000  # once


async def test_face_values_biller_kind_and_permit_decide_13_12_and_58(terminal, cli, world):
    assert (await counter.voucher_sale(terminal, "PRE01", 4999)).response_code == "13"
    assert (await counter.voucher_sale(terminal, "ELEC01", 5000)).response_code == "12"  # not prepaid
    assert (await counter.voucher_sale(terminal, "NOPE", 5000)).response_code == "12"
    assert (await cli("biller", "add", "PRE02", "--name", "No faces", "--prepaid")).code == 0
    assert (await counter.voucher_sale(terminal, "PRE02", 5000)).response_code == "12"  # no face values
    assert (await cli("terminal", "set", world.tid, "--permit", "purchase,bill")).code == 0
    assert (await counter.voucher_sale(terminal, "PRE01", 5000)).response_code == "58"
    assert (await agent(cli))["float_fen"] == 50000


async def test_a_float_short_of_the_face_value_gets_51(terminal, cli):
    await sell(terminal, 10000)
    await sell(terminal, 10000)
    await sell(terminal, 10000)
    await sell(terminal, 10000)
    assert (await counter.voucher_sale(terminal, "PRE01", 10000)).response_code == "00"  # the float now 0
    assert (await counter.voucher_sale(terminal, "PRE01", 10000)).response_code == "51"


async def test_redeemed_once_for_a_token_then_refused_as_cli_md_says(terminal, cli):
    fields = await sell(terminal)
    serial, pin = fields["VS"], fields["VP"]
    redeemed = await cli("voucher", "redeem", serial, "--pin", pin, "--meter", "M0001", "--json")
    assert redeemed.code == 0, redeemed.stderr
    token = redeemed.json["token"]
    assert len(token) == 20 and token.isdigit()
    assert redeemed.json == {"token": token, "amount_fen": 5000, "meter": "M0001"}
    # The same serial, PIN and meter again: the same token, exit 0.
    again = await cli("voucher", "redeem", serial, "--pin", pin, "--meter", "M0001", "--json")
    assert again.code == 0 and again.json["token"] == token
    # Another meter, or a wrong PIN, on a redeemed voucher: not valid.
    other = await cli("voucher", "redeem", serial, "--pin", pin, "--meter", "M0002")
    assert other.code == 2 and "redeemed" in other.stderr.splitlines()[-1]
    shown = (await cli("voucher", "show", serial, "--json")).json
    assert shown["status"] == "redeemed" and shown["token"] == token and shown["meter"] == "M0001"
    tokens = (await cli("token", "show", "M0001", "--json")).json
    assert token in str(tokens)
    unknown = await cli("voucher", "redeem", "000000000000", "--pin", pin, "--meter", "M0001")
    assert unknown.code == 2 and "unknown voucher" in unknown.stderr


async def test_five_wrong_pins_in_a_row_block_the_voucher_and_unblock_restarts(terminal, cli, db):
    fields = await sell(terminal)
    serial = fields["VS"]
    for n in range(1, 6):
        wrong = await cli("voucher", "redeem", serial, "--pin", "0" * 16, "--meter", "M0001")
        assert wrong.code == 2 and "wrong PIN" in wrong.stderr  # counted though the command failed
        assert await db.fetchval("SELECT pin_tries FROM vouchers WHERE serial = $1", serial) == n
    assert (await cli("voucher", "show", serial, "--json")).json["status"] == "blocked"
    right = await cli("voucher", "redeem", serial, "--pin", fields["VP"], "--meter", "M0001")
    assert right.code == 2 and "blocked" in right.stderr
    assert (await cli("voucher", "unblock", serial)).code == 0
    assert (await cli("voucher", "unblock", serial)).code == 0  # idempotent
    events = (await cli("audit", "list", "--entity", f"voucher:{serial}", "--json")).json["events"]
    assert [e["action"] for e in events] == ["voucher.redeem"] * 5 + ["voucher.unblock"]
    assert all("pin" not in e["after"] for e in events)
    assert (await cli("voucher", "redeem", serial, "--pin", fields["VP"], "--meter", "M0001")).code == 0


async def test_an_unknown_meter_is_refused_after_the_pin(terminal, cli):
    fields = await sell(terminal)
    refused = await cli("voucher", "redeem", fields["VS"], "--pin", fields["VP"], "--meter", "M9999")
    assert refused.code == 2 and "unknown meter" in refused.stderr
    assert (await cli("voucher", "show", fields["VS"], "--json")).json["status"] == "valid"


async def test_a_voucher_past_voucher_days_max_is_expired(terminal, cli, db_url, tmp_path):
    fields = await sell(terminal)
    from gateway.cli.main import main as cli_main  # the CLI under a clock a year and a day ahead

    later = make_settings(db_url, tmp_path, voucher_days_max=365, clock_offset_s=365 * 86400.0)
    code = await asyncio.to_thread(cli_main, ["voucher", "redeem", fields["VS"], "--pin", fields["VP"],
                                              "--meter", "M0001"], later)
    assert code == 2
    code = await asyncio.to_thread(cli_main, ["voucher", "show", fields["VS"], "--json"], later)
    assert code == 0
    just_in = make_settings(db_url, tmp_path, voucher_days_max=366, clock_offset_s=365 * 86400.0)
    assert await asyncio.to_thread(cli_main, ["voucher", "redeem", fields["VS"], "--pin", fields["VP"],
                                              "--meter", "M0001"], just_in) == 0


async def test_a_reversal_voids_an_unredeemed_voucher_and_gives_back_float_and_commission(terminal, cli):
    response = await counter.voucher_sale(terminal, "PRE01", FACE_FEN)
    fields = bill_fields(response)
    original = terminal.last_request
    assert (await terminal.reverse(original)).response_code == "00"
    shown = await agent(cli)
    assert shown["float_fen"] == 50000 and shown["commission_fen"] == 0
    assert (await cli("voucher", "show", fields["VS"], "--json")).json["status"] == "void"
    refused = await cli("voucher", "redeem", fields["VS"], "--pin", fields["VP"], "--meter", "M0001")
    assert refused.code == 2 and "void" in refused.stderr
    assert (await cli("ledger", "check", "--json")).json["ok"]
    await sell(terminal)  # a standing sale beside the reversed one
    await assert_daily_report_checks(cli)


async def test_a_reversal_after_redemption_moves_nothing_and_is_an_exception(terminal, cli, db):
    response = await counter.voucher_sale(terminal, "PRE01", FACE_FEN)
    fields = bill_fields(response)
    original = terminal.last_request
    assert (await cli("voucher", "redeem", fields["VS"], "--pin", fields["VP"], "--meter", "M0001")).code == 0
    before = await agent(cli)
    assert (await terminal.reverse(original)).response_code == "00"
    assert await agent(cli) == before
    assert (await cli("voucher", "show", fields["VS"], "--json")).json["status"] == "redeemed"
    exception = await db.fetchval("SELECT exception FROM gw_transactions WHERE mti_class = '0400'")
    assert exception == "reversal_of_redeemed_voucher"
    await assert_daily_report_checks(cli)


async def assert_daily_report_checks(cli):
    """The daily report's own ledger check counts voucher sales and their reversals."""
    report = await cli("report", "daily", "--json")
    assert report.code == 0, report.stderr
    assert report.json["ledger_check"]["ok"], report.json["ledger_check"]


async def test_ten_concurrent_redemptions_give_one_token(terminal, settings, db_url):
    from gateway.keys import SoftHsm
    from gateway.services import vouchers

    fields = await sell(terminal)
    hsm = SoftHsm(bytes.fromhex(settings.lmk.get_secret_value()))
    conns = [await asyncpg.connect(db_url) for _ in range(10)]
    try:
        async def redeem(conn, meter):
            try:
                return await vouchers.redeem_voucher(conn, "test", hsm, settings, fields["VS"], fields["VP"], meter)
            except vouchers.VoucherRefused as refused:
                return refused.status
        assert (await asyncio.gather(*(redeem(c, "M0001") for c in conns))).count(None) == 0
        results = await asyncio.gather(*(redeem(c, "M0001") for c in conns))
        assert len({r["token"] for r in results}) == 1
        tokens = await conns[0].fetchval("SELECT count(*) FROM tokens WHERE meter = 'M0001'")
        assert tokens == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_ten_concurrent_redemptions_to_different_meters_one_wins(terminal, cli, settings, db_url):
    from gateway.keys import SoftHsm
    from gateway.services import vouchers

    for n in range(2, 11):
        assert (await cli("meter", "add", "PRE01", f"M{n:04d}", "--name", "x")).code == 0
    fields = await sell(terminal)
    hsm = SoftHsm(bytes.fromhex(settings.lmk.get_secret_value()))
    conns = [await asyncpg.connect(db_url) for _ in range(10)]
    try:
        async def redeem(conn, meter):
            try:
                return await vouchers.redeem_voucher(conn, "test", hsm, settings, fields["VS"], fields["VP"], meter)
            except vouchers.VoucherRefused as refused:
                return refused.status
        results = await asyncio.gather(*(redeem(c, f"M{n + 1:04d}") for n, c in enumerate(conns)))
        won = [r for r in results if isinstance(r, dict)]
        assert len(won) == 1 and sorted(r for r in results if not isinstance(r, dict)) == [409] * 9
        assert await conns[0].fetchval("SELECT count(*) FROM tokens") == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_settlement_counts_voucher_sales_as_debits(terminal):
    await sell(terminal)
    await sell(terminal, 10000)
    settled = await terminal.settle(15000, 2)
    assert settled.response_code == "00"
    assert settled.message.settlement_totals == "000000015000002000000000000000" + "1"


async def test_bill_history_postpaid_newest_first_with_the_bills_amounts(terminal, cli):
    fields = bill_fields(await terminal.bill_inquiry("ELEC01", "A1001"))
    assert (await terminal.bill_payment("ELEC01", "A1001", 10000, reference=fields["BR"])).response_code == "00"
    response = await counter.bill_history(terminal, "ELEC01", "A1001")
    assert response.response_code == "00"
    history = bill_fields(response)
    assert list(history) == ["BL", "AC", "NM", "HS"] and history["NM"] == "张三"
    # Known bytes: the newer bill open, the older one paid (its amount, not what was paid).
    assert history["HS"] == "202611000000006789OP" "202610000000012345PD"
    assert b"HS040202611000000006789OP202610000000012345PD" in response.message.raw


async def test_bill_history_prepaid_one_entry_per_standing_payment_and_hs000(terminal, cli):
    empty = await counter.bill_history(terminal, "PRE01", "M0001")
    assert empty.response_code == "00" and bill_fields(empty)["HS"] == ""
    assert b"HS000" in empty.message.raw
    assert (await terminal.bill_payment("PRE01", "M0001", 1000)).response_code == "00"
    assert (await terminal.bill_payment("PRE01", "M0001", 2000)).response_code == "00"
    assert (await terminal.reverse(terminal.last_request)).response_code == "00"  # left out
    entries = counter.history_entries(bill_fields(await counter.bill_history(terminal, "PRE01", "M0001"))["HS"])
    assert [(e["amount_fen"], e["status"]) for e in entries] == [(1000, "paid")]
    assert (await counter.bill_history(terminal, "PRE01", "M4040")).response_code == "25"
    assert (await counter.bill_history(terminal, "ELEC01", "NOBODY")).response_code == "25"
    assert (await counter.bill_history(terminal, "NOPE", "A1")).response_code == "12"


async def test_the_receipts_print_serial_pin_and_history(terminal):
    response = await counter.voucher_sale(terminal, "PRE01", FACE_FEN)
    fields = bill_fields(response)
    printed = counter.voucher_receipt(response, FACE_FEN)
    pin = fields[tlv.VOUCHER_PIN]
    assert " ".join(pin[i:i + 4] for i in range(0, 16, 4)) in printed
    assert "CNY 50.00" in printed and fields[tlv.RECEIPT] in printed
    slip = counter.history_receipt(await counter.bill_history(terminal, "ELEC01", "A1001"))
    assert "2026-11  CNY        67.89  open" in slip


async def test_posgw_sim_voucher_prints_the_receipt_with_serial_and_pin(terminal, gateway, world, capsys):
    from sim.cli import main as sim_main

    argv = ["--port", str(gateway.server.port), "--tid", world.tid, "--mid", world.mid, "--tmk", world.tmk.hex(),
            "--biller", "PRE01"]
    code = await asyncio.to_thread(sim_main, ["voucher", *argv, "--amount", "50", "--stan", "000101"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "SERIAL" in printed and "PIN" in printed and "CNY 50.00" in printed
    code = await asyncio.to_thread(sim_main, ["bill-history", *argv, "--account", "M0001", "--stan", "000102"])
    assert code == 0 and "(no entries)" in capsys.readouterr().out

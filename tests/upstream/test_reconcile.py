"""Daily reconciliation (对账): real bill payments through the gateway against
the biller simulator, compared with a utility's file and with the simulator's
own book (GET /payments), through ``posgw biller reconcile``."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.domain.validate import InvalidInput
from gateway.upstream import outbox, reconcile
from gateway.upstream.billers import BillerPayment
from sim.terminal import bill_fields
from tests.e2e.helpers import terminal_for
from tests.upstream.conftest import BILLER


def test_compare_sorts_each_receipt_into_its_kind():
    theirs = [BillerPayment("R1", "A", 100, "paid"), BillerPayment("R2", "A", 250, "paid"),
              BillerPayment("R4", "A", 400, "cancelled"), BillerPayment("X1", "B", 70, "paid"),
              BillerPayment("X2", "C", 80, "cancelled"), BillerPayment("R6", "Z", 120, "paid")]
    ours = [reconcile.GatewayPayment("R1", "A", 100, True), reconcile.GatewayPayment("R2", "A", 200, True),
            reconcile.GatewayPayment("R3", "A", 300, True), reconcile.GatewayPayment("R4", "A", 400, False),
            reconcile.GatewayPayment("R5", "A", 50, False), reconcile.GatewayPayment("R6", "Y", 120, True)]
    result = reconcile.compare(theirs, ours)
    assert result["matched"] == 3  # R1; R4 cancelled there, reversed here; X2 cancelled, never ours
    assert result["biller_only"] == [{"receipt": "X1", "account": "B", "amount_fen": 70}]
    assert result["gateway_only"] == [{"receipt": "R3", "account": "A", "amount_fen": 300}]
    assert result["amount_differs"] == [
        {"receipt": "R2", "biller_fen": 250, "gateway_fen": 200, "biller_account": "A", "gateway_account": "A"},
        {"receipt": "R6", "biller_fen": 120, "gateway_fen": 120, "biller_account": "Z", "gateway_account": "Y"}]
    assert (result["biller_total_fen"], result["gateway_total_fen"]) == (100 + 250 + 70 + 120, 100 + 200 + 300 + 120)
    assert [row["receipt"] for row in result["rows"]] == ["R1", "R2", "R4", "X1", "X2", "R6", "R3"]  # R5: nowhere
    assert not reconcile.all_match(result)


@pytest.mark.parametrize("text, message", [
    ("receipt,account,amount\nR1,A,1\n", "header"),
    ("receipt,account,amount_fen,status\nR1,A,1.50,paid\n", "line 2: amount_fen"),
    ("receipt,account,amount_fen,status\nR1,A,150,refunded\n", "line 2: status"),
    ("receipt,account,amount_fen,status\nR1,A,150,paid\nR1,A,150,paid\n", "line 3: receipt R1 appears twice"),
    ("receipt,account,amount_fen,status\nR1,A,150\n", "line 2: 3 fields"),
])
def test_a_malformed_biller_file_is_refused_naming_its_line(text, message):
    with pytest.raises(InvalidInput, match=message):
        reconcile.parse_biller_file(text)


def test_a_biller_file_may_have_a_bom_blank_lines_and_spaces():
    text = "\ufeffreceipt,account,amount_fen,status\r\n R1 , A ,150, paid\r\n\r\n"
    assert reconcile.parse_biller_file(text) == [BillerPayment("R1", "A", 150, "paid")]


@pytest.fixture
async def day_of_payments(gateway, world, cli, http_biller, biller_sim, db):
    """Six cash payments to SIM01 through the gateway; the fourth and fifth reversed (the gateway's
    forwarder cancels them at the simulator, through the outbox). Returns (receipts, today)."""
    assert (await cli("agent", "topup", "AG01", "500")).code == 0
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    receipts = []
    for amount in (1000, 2000, 3000, 4000, 500, 1200):
        paid = await t.bill_payment(BILLER, "M0001", amount)
        assert paid.response_code == "00", paid.response_code
        assert len(bill_fields(paid)["TK"]) == 20  # the simulator's token
        receipts.append(paid.message.rrn)
        if amount in (4000, 500):
            assert (await t.reverse(t.last_request)).response_code == "00"
    await t.close()
    deadline = time.monotonic() + 10
    while await db.fetchval("SELECT count(*) FROM biller_outbox WHERE status = 'pending'") and \
            time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert biller_sim.paid_receipts() == {receipts[i] for i in (0, 1, 2, 5)}
    return receipts, biller_sim.today()


def write_file(tmp_path, rows) -> str:
    path = tmp_path / "biller.csv"
    path.write_text("receipt,account,amount_fen,status\n" + "".join(f"{','.join(map(str, r))}\n" for r in rows))
    return str(path)


async def test_a_file_with_each_kind_of_difference_gives_exactly_those_rows_and_exit_1(day_of_payments, cli,
                                                                                        tmp_path):
    (r1, r2, r3, r4, r5, r6), today = day_of_payments
    path = write_file(tmp_path, [
        (r1, "M0001", 1000, "paid"),       # matched
        (r2, "M0001", 2500, "paid"),       # amount differs
        # r3 absent: only here
        (r4, "M0001", 4000, "cancelled"),  # reversed here, cancelled there: matched
        ("900000000001", "M0002", 700, "paid"),       # only at the biller
        ("900000000002", "M0003", 800, "cancelled"),  # cancelled there, never ours: matched
        (r5, "M0001", 500, "paid"),        # reversed here, still paid there: only at the biller
        (r6, "M0009", 1200, "paid"),       # another account
    ])
    result = await cli("biller", "reconcile", BILLER, "--date", today, "--file", path, "--json")
    assert result.code == 1, result.stderr
    assert "2 only at the biller, 1 only here, 2 differ" in result.stderr
    assert result.json == {
        "biller": BILLER, "date": today, "timezone": "Asia/Shanghai", "matched": 3,
        "biller_only": [{"receipt": "900000000001", "account": "M0002", "amount_fen": 700},
                        {"receipt": r5, "account": "M0001", "amount_fen": 500}],
        "gateway_only": [{"receipt": r3, "account": "M0001", "amount_fen": 3000}],
        "amount_differs": [
            {"receipt": r2, "biller_fen": 2500, "gateway_fen": 2000, "biller_account": "M0001",
             "gateway_account": "M0001"},
            {"receipt": r6, "biller_fen": 1200, "gateway_fen": 1200, "biller_account": "M0009",
             "gateway_account": "M0001"}],
        "biller_total_fen": 1000 + 2500 + 700 + 500 + 1200,
        "gateway_total_fen": 1000 + 2000 + 3000 + 1200,
    }
    csv_out = await cli("biller", "reconcile", BILLER, "--date", today, "--file", path, "--csv")
    assert csv_out.code == 1
    lines = csv_out.stdout.splitlines()
    assert lines[0] == ",".join(reconcile.CSV_COLUMNS)
    assert lines[1:] == [
        f"matched,{r1},paid,M0001,1000,standing,M0001,1000",
        f"amount_differs,{r2},paid,M0001,2500,standing,M0001,2000",
        f"matched,{r4},cancelled,M0001,4000,reversed,M0001,4000",
        "biller_only,900000000001,paid,M0002,700,,,",
        "matched,900000000002,cancelled,M0003,800,,,",
        f"biller_only,{r5},paid,M0001,500,reversed,M0001,500",
        f"amount_differs,{r6},paid,M0009,1200,standing,M0001,1200",
        f"gateway_only,{r3},,,,standing,M0001,3000"]


async def test_a_matching_file_exits_0(day_of_payments, cli, tmp_path):
    (r1, r2, r3, r4, r5, r6), today = day_of_payments
    path = write_file(tmp_path, [(r1, "M0001", 1000, "paid"), (r2, "M0001", 2000, "paid"),
                                 (r3, "M0001", 3000, "paid"), (r4, "M0001", 4000, "cancelled"),
                                 (r5, "M0001", 500, "cancelled"), (r6, "M0001", 1200, "paid")])
    result = await cli("biller", "reconcile", BILLER, "--date", today, "--file", path, "--json")
    assert result.code == 0, result.stderr
    assert result.json["matched"] == 6
    assert result.json["biller_total_fen"] == result.json["gateway_total_fen"] == 7200
    remittance = (await cli("biller", "remittance", BILLER, "--date", today, "--json")).json
    assert remittance["total_fen"] == 7200  # the remittance and the reconciliation agree
    other_day = await cli("biller", "reconcile", BILLER, "--date", "2020-01-01", "--file", path, "--json")
    assert other_day.code == 1 and other_day.json["gateway_total_fen"] == 0


async def test_against_the_simulators_book_then_orphans_cancelled_once_through_the_outbox(
        day_of_payments, cli, db, biller_sim, forwarders):
    (r1, *_), today = day_of_payments
    result = await cli("biller", "reconcile", BILLER, "--date", today, "--json")
    assert result.code == 0, result.stderr
    assert result.json["matched"] == 6 and result.json["biller_total_fen"] == 7200

    biller_sim.add_payment("900000000003", "M0004", 650)  # the biller holds a payment we never took
    biller_sim.book[r1].amount_fen = 1001
    result = await cli("biller", "reconcile", BILLER, "--date", today, "--cancel-orphans", "--json")
    assert result.code == 1
    assert result.json["biller_only"] == [{"receipt": "900000000003", "account": "M0004", "amount_fen": 650}]
    assert [d["receipt"] for d in result.json["amount_differs"]] == [r1]
    assert result.json["cancels_queued"] == ["900000000003"]
    again = await cli("biller", "reconcile", BILLER, "--date", today, "--cancel-orphans", "--json")
    assert again.code == 1 and again.json["cancels_queued"] == []  # once
    assert [(m.kind, m.receipt) for m in await outbox.list_messages(db)] == [("cancel", "900000000003")]
    audit = (await cli("audit", "list", "--json")).json["events"]
    assert [e["entity"] for e in audit if e["action"] == "saf.enqueue"] == [f"saf:{BILLER}/cancel/900000000003"]

    forwarder = await forwarders.make()
    assert await forwarder.run_once() == 1
    biller_sim.book[r1].amount_fen = 1000
    settled = await cli("biller", "reconcile", BILLER, "--date", today, "--json")
    assert settled.code == 0, settled.stdout
    assert settled.json["matched"] == 7  # the orphan, cancelled there, matches our absence


async def test_reconcile_refuses_an_unknown_biller_and_a_builtin_without_a_file(cli, world):
    assert (await cli("biller", "add", "LOCAL1", "--name", "Local")).code == 0
    unknown = await cli("biller", "reconcile", "NOPE01", "--date", "2026-12-07")
    assert unknown.code == 2 and "unknown biller" in unknown.stderr
    builtin = await cli("biller", "reconcile", "LOCAL1", "--date", "2026-12-07")
    assert builtin.code == 2 and "--file" in builtin.stderr
    both = await cli("biller", "reconcile", "LOCAL1", "--date", "2026-12-07", "--json", "--csv")
    assert both.code == 2


async def test_reconcile_against_a_biller_that_is_down_exits_1(cli, http_biller, biller_sim):
    await biller_sim.go_down()
    result = await cli("biller", "reconcile", BILLER, "--date", "2026-12-07")
    assert result.code == 1 and "could not ask biller SIM01" in result.stderr

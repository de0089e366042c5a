"""`posgw report daily` through the CLI against real PostgreSQL, over a day of
real transactions sent over TCP: per type and response code, per agent, per
merchant, the day's exceptions, and the check against the ledger."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta

import pytest

from gateway.domain.demo import demo_pan
from gateway.reports import views as reports
from sim.terminal import Terminal
from tests.e2e.helpers import terminal_for

PAN, PAN2, PIN = demo_pan(31), demo_pan(32), "135790"
FEE_MID, FEE_TID, FEE_AGENT, MDR_BP = "MERCHANT0000002", "TERM0002", "AG02", 60
COMMISSION_BP = 100


def fee(amount_fen: int) -> int:
    return (amount_fen * MDR_BP + 5_000) // 10_000


def commission(amount_fen: int) -> int:
    return (amount_fen * COMMISSION_BP + 5_000) // 10_000


async def ok_json(cli, *argv):
    result = await cli(*argv, "--json")
    assert result.code == 0, (argv, result.stdout, result.stderr)
    return result.json


@pytest.fixture
async def registered(cli, world):
    for argv in (
        ("agent", "add", FEE_AGENT, "--name", "Second Agent"),
        ("merchant", "add", FEE_MID, "--name", "Fee Shop", "--agent", FEE_AGENT, "--mdr-bp", str(MDR_BP)),
        ("terminal", "add", FEE_TID, "--merchant", FEE_MID, "--tmk", world.tmk.hex()),
        ("biller", "add", "P1", "--name", "Prepaid Power", "--prepaid", "--commission-bp", str(COMMISSION_BP)),
        ("meter", "add", "P1", "M0001", "--name", "Meter one"),
        ("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "1000"),
        ("card", "issue", PAN2, "--pin", PIN, "--expiry", "3012", "--balance", "100"),
        ("agent", "topup", world.agent, "500"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


@pytest.fixture
async def terminals(gateway, world, registered):
    shop = terminal_for(gateway, world)  # TERM0001: AG01's counter, no discount
    fee_shop = Terminal("127.0.0.1", gateway.server.port, FEE_TID, FEE_MID, world.tmk)
    for t in (shop, fee_shop):
        assert (await t.sign_on()).response_code == "00"
    yield shop, fee_shop
    for t in (shop, fee_shop):
        await t.close()


async def approved(response):
    assert response.response_code == "00", response.response_code
    return response


def void_ref(response, terminal):
    m = response.message
    return dict(original_rrn=m.rrn, original_batch=terminal.batch, original_stan=m.stan, original_date=m.local_date)


@pytest.fixture
async def day(terminals, today):
    """Every kind of financial transaction, on two merchants (one with a discount rate)."""
    shop, fee_shop = terminals
    # Fee shop: a purchase that stands; one voided; one reversed; one declined 51;
    # one voided, the void reversed (it stands again).
    await approved(await fee_shop.purchase(PAN, PIN, 2345))
    voided = await approved(await fee_shop.purchase(PAN, PIN, 10000))
    await approved(await fee_shop.void(PAN, PIN, 10000, **void_ref(voided, fee_shop)))
    await approved(await fee_shop.purchase(PAN, PIN, 5000))
    await approved(await fee_shop.reverse(fee_shop.last_request))
    assert (await fee_shop.purchase(PAN, PIN, 999999)).response_code == "51"
    again = await approved(await fee_shop.purchase(PAN, PIN, 3000))
    await approved(await fee_shop.void(PAN, PIN, 3000, **void_ref(again, fee_shop)))
    await approved(await fee_shop.reverse(fee_shop.last_request))
    # The exception: a void's reversal the card can no longer cover.
    big = await approved(await fee_shop.purchase(PAN2, PIN, 9000))
    await approved(await fee_shop.void(PAN2, PIN, 9000, **void_ref(big, fee_shop)))
    uncovered_void = fee_shop.last_request
    await approved(await fee_shop.purchase(PAN2, PIN, 5000))
    await approved(await fee_shop.reverse(uncovered_void))
    # The agent's counter: a purchase, a balance inquiry, bills in cash (one
    # reversed) and by card, a bill inquiry, and the batch settled.
    await approved(await shop.purchase(PAN, PIN, 1000))
    await approved(await shop.balance(PAN, PIN))
    await approved(await shop.bill_payment("P1", "M0001", 10000))
    await approved(await shop.bill_payment("P1", "M0001", 2345))
    await approved(await shop.reverse(shop.last_request))
    await approved(await shop.bill_payment("P1", "M0001", 4000, pan=PAN, pin=PIN))
    await approved(await shop.bill_inquiry("P1", "M0001"))
    await approved(await shop.settle(1000 + 10000 + 4000, 3))
    return today


BY_TYPE = [
    {"kind": "balance", "response_code": "00", "count": 1, "amount_fen": 0},
    {"kind": "bill_inquiry", "response_code": "00", "count": 1, "amount_fen": 0},
    {"kind": "bill_payment", "response_code": "00", "count": 3, "amount_fen": 10000 + 2345 + 4000},
    {"kind": "purchase", "response_code": "00", "count": 7,
     "amount_fen": 2345 + 10000 + 5000 + 3000 + 9000 + 5000 + 1000},
    {"kind": "purchase", "response_code": "51", "count": 1, "amount_fen": 999999},
    {"kind": "reversal", "response_code": "00", "count": 4, "amount_fen": 5000 + 3000 + 9000 + 2345},
    {"kind": "settlement", "response_code": "00", "count": 1, "amount_fen": 0},
    {"kind": "void", "response_code": "00", "count": 3, "amount_fen": 10000 + 3000 + 9000},
]


async def test_daily_report_counts_each_type_agent_and_merchant_and_matches_the_ledger(cli, world, day, db, settings):
    report = await ok_json(cli, "report", "daily", "--date", day.isoformat())
    assert report["date"] == day.isoformat() and report["timezone"] == settings.timezone
    assert report["by_type"] == BY_TYPE

    standing_fee = fee(2345) + fee(3000) + fee(5000)
    assert report["merchants"] == [
        {"mid": world.mid, "purchases_count": 1, "purchases_fen": 1000, "returns_count": 0, "returns_fen": 0,
         "fees_fen": 0, "net_fen": 1000},
        {"mid": FEE_MID, "purchases_count": 6, "purchases_fen": 2345 + 10000 + 5000 + 3000 + 9000 + 5000,
         # void 10000, reversal 5000, void 3000, its reversal gives 3000 back, void 9000 (its
         # reversal moved nothing)
         "returns_count": 5, "returns_fen": 10000 + 5000 + 3000 - 3000 + 9000,
         "fees_fen": standing_fee, "net_fen": 2345 + 3000 + 5000 - standing_fee},
    ]
    for merchant in report["merchants"]:
        assert merchant["purchases_fen"] - merchant["returns_fen"] - merchant["fees_fen"] == merchant["net_fen"]
        shown = await ok_json(cli, "merchant", "show", merchant["mid"])
        assert shown["balance_fen"] == merchant["net_fen"]  # every movement of these accounts is today's
    fee_income = await db.fetchval(
        "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = 'system:fee_income'")
    assert fee_income == sum(m["fees_fen"] for m in report["merchants"]) == standing_fee

    # AG02 (the fee shop's agent) collected nothing, earned nothing, was not topped up: not listed.
    earned = commission(10000) + commission(4000)
    assert report["agents"] == [
        {"agent": world.agent, "collections_count": 2, "collections_fen": 10000 + 2345, "reversals_count": 1,
         "reversals_fen": 2345, "commission_fen": earned, "topups_fen": 50000,
         "float_movement_fen": 50000 - 10000},
    ]
    statement = await ok_json(cli, "agent", "statement", world.agent, "--date", day.isoformat())
    assert report["agents"][0]["float_movement_fen"] == statement["closing_float_fen"] - statement["opening_float_fen"]
    assert report["agents"][0]["commission_fen"] == statement["commission_fen"]

    [exception] = [dict(e) for e in report["exceptions"]]
    assert datetime.fromisoformat(exception.pop("time")).date() == day
    assert exception.pop("rrn") and exception.pop("original_rrn")
    assert exception.pop("stan")
    assert exception == {"tid": FEE_TID, "batch": 1, "kind": "reversal", "exception": "void_reversal_not_covered",
                         "amount_fen": 9000, "original_kind": "void", "pan_masked": PAN2[:6] + "******" + PAN2[-4:]}

    moved = (2345 + 10000 + 5000 + 3000 + 9000 + 5000 + 1000  # approved purchases
             + 10000 + 3000 + 9000  # voids
             + 10000 + commission(10000) + 2345 + commission(2345) + 4000 + commission(4000)  # bill payments
             + 5000 + 3000 + 2345 + commission(2345))  # reversals that undid a posting
    assert report["ledger_check"] == {
        "ok": True, "ledger_movement_fen": moved, "report_movement_fen": moved, "difference_fen": 0,
        "ledger_postings_count": 7 + 3 + 3 + 3, "report_postings_count": 16,
        "external_fen": 50000 + 100000 + 10000, "problems": []}  # the top-up and the two cards' loads

    # Today is the default; --csv prints the per-type table.
    assert await ok_json(cli, "report", "daily") == report
    result = await cli("report", "daily", "--date", day.isoformat(), "--csv")
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.stdout.splitlines()[0] == "kind,response_code,count,amount_fen"
    assert rows == [{k: str(v) for k, v in row.items()} for row in BY_TYPE]
    result = await cli("report", "daily", "--date", day.isoformat())  # readable text
    assert result.code == 0 and "ledger_check:" in result.stdout


async def test_a_day_without_activity_gives_an_empty_report_that_checks(cli, day):
    for other in (day - timedelta(days=1), day + timedelta(days=1), date(2020, 1, 1)):
        report = await ok_json(cli, "report", "daily", "--date", other.isoformat())
        assert (report["by_type"], report["agents"], report["merchants"], report["exceptions"]) == ([], [], [], [])
        check = report["ledger_check"]
        assert check["ok"] is True
        assert check["ledger_movement_fen"] == check["report_movement_fen"] == check["external_fen"] == 0
    result = await cli("report", "daily", "--date", "2020-01-01", "--csv")
    assert result.code == 0 and result.stdout.splitlines() == [",".join(reports.DAILY_BY_TYPE_COLUMNS)]


async def test_money_moved_without_a_transaction_fails_the_check_with_exit_1(cli, db, day):
    """A transfer no transaction made (here written straight into the ledger): exit 1,
    the report still printed, naming the difference."""
    posting = await db.fetchval(
        "INSERT INTO ledger_postings (idempotency_key, content_md5, result) VALUES ('stray', '', 'ok') RETURNING id")
    await db.execute(
        """INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code)
           SELECT $1, (SELECT id FROM ledger_accounts WHERE code = 'system:fee_income'), account_id, 777,
                  'adjustment'
             FROM merchants WHERE mid = $2""", posting, FEE_MID)
    result = await cli("report", "daily", "--date", day.isoformat(), "--json")
    assert result.code == 1
    check = result.json["ledger_check"]
    assert check["ok"] is False and check["difference_fen"] == 777
    assert check["ledger_postings_count"] == check["report_postings_count"] + 1
    assert len(check["problems"]) == 2
    assert result.stderr.strip().splitlines()[-1].startswith("posgw: problem: daily ledger check:")
    result = await cli("report", "daily", "--date", day.isoformat(), "--csv")
    assert result.code == 1 and result.stdout.splitlines()[0] == "kind,response_code,count,amount_fen"


async def test_a_transaction_whose_amount_disagrees_with_its_posting_fails_the_check(cli, db, day):
    changed = await db.execute(
        "UPDATE gw_transactions SET amount_fen = 1001 WHERE kind = 'purchase' AND amount_fen = 1000")
    assert changed == "UPDATE 1"
    result = await cli("report", "daily", "--date", day.isoformat(), "--json")
    assert result.code == 1
    check = result.json["ledger_check"]
    assert (check["ok"], check["difference_fen"]) == (False, -1)
    assert check["ledger_postings_count"] == check["report_postings_count"]


async def test_the_report_day_is_the_local_day_of_the_timezone_setting(cli, db, terminals, settings):
    """Purchases moved (with their postings) to just before, at, and just after
    local midnights: the day is [00:00, 24:00) local."""
    shop, _ = terminals
    the_day = date(2026, 3, 1)
    start, end = reports.day_bounds(the_day, settings.tz)
    micro = timedelta(microseconds=1)
    for amount, at in ((100, start - micro), (200, start), (300, end - micro), (400, end)):
        response = await approved(await shop.purchase(PAN, PIN, amount))
        key = f"{shop.tid}:{shop.batch}:{response.message.stan}:0200"
        assert await db.execute("UPDATE gw_transactions SET created_at = $1 WHERE tid = $2 AND stan = $3",
                                at, shop.tid, response.message.stan) == "UPDATE 1"
        assert await db.execute(
            """UPDATE ledger_transfers SET created_at = $1
                WHERE posting_id = (SELECT id FROM ledger_postings WHERE idempotency_key = $2)""", at, key) \
            == "UPDATE 1"
    report = await ok_json(cli, "report", "daily", "--date", the_day.isoformat())
    assert report["by_type"] == [{"kind": "purchase", "response_code": "00", "count": 2, "amount_fen": 500}]
    assert report["merchants"][0]["net_fen"] == 500
    assert (report["ledger_check"]["ok"], report["ledger_check"]["ledger_movement_fen"]) == (True, 500)
    after = await ok_json(cli, "report", "daily", "--date", (the_day + timedelta(days=1)).isoformat())
    assert after["by_type"] == [{"kind": "purchase", "response_code": "00", "count": 1, "amount_fen": 400}]


async def test_report_refuses_a_bad_date_and_json_with_csv(cli, world):
    for argv in (("report", "daily", "--date", "2026-02-30"),
                 ("report", "daily", "--date", "20260201", "--json"),
                 ("report", "daily", "--json", "--csv")):
        result = await cli(*argv)
        assert result.code == 2, argv
        assert result.stdout == ""
        assert result.stderr.strip().splitlines()[-1].startswith("posgw: error:")

"""Operator reports through the CLI against real PostgreSQL, with the money moved
by real bill payments over TCP: `agent statement`, `biller remittance`, and the
`posgw_agents_float_below_threshold` gauge on /metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import urllib.request
from datetime import date, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.demo import demo_pan
from gateway.reports import views as reports
from tests.e2e.helpers import terminal_for

PAN, PIN = demo_pan(21), "135790"
COMMISSION_BP = 100


@pytest.fixture
async def billers(cli, world):
    for argv in (
        ("biller", "add", "P1", "--name", "Prepaid Power", "--prepaid", "--commission-bp", str(COMMISSION_BP)),
        ("meter", "add", "P1", "M0001", "--name", "Meter one"),
        ("meter", "add", "P1", "M0002", "--name", "Meter two"),
        ("biller", "add", "P2", "--name", "Other Power", "--prepaid"),
        ("meter", "add", "P2", "N0001", "--name", "Elsewhere"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


@pytest.fixture
async def terminal(gateway, world, billers):
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()


def commission(amount_fen: int) -> int:
    return (amount_fen * COMMISSION_BP + 5_000) // 10_000


async def ok_json(cli, *argv):
    result = await cli(*argv, "--json")
    assert result.code == 0, (argv, result.stderr)
    return result.json


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


@pytest.fixture
async def day_of_payments(cli, world, terminal, today):
    """Top-up 500, three cash payments, the second reversed, one card payment
    and one payment to another biller: the receipts by name."""
    assert (await cli("agent", "topup", world.agent, "500")).code == 0
    assert (await cli("card", "issue", PAN, "--pin", PIN, "--expiry", "3012", "--balance", "100")).code == 0
    receipts = {}
    for name, amount, meter in (("first", 10000, "M0001"), ("second", 2345, "M0002"), ("third", 7000, "M0001")):
        response = await terminal.bill_payment("P1", meter, amount)
        assert response.response_code == "00", name
        receipts[name] = response.message.rrn
        if name == "second":
            second_request = terminal.last_request
    assert (await terminal.reverse(second_request)).response_code == "00"
    response = await terminal.bill_payment("P1", "M0002", 4000, pan=PAN, pin=PIN)
    assert response.response_code == "00"
    receipts["card"] = response.message.rrn
    response = await terminal.bill_payment("P2", "N0001", 500)
    assert response.response_code == "00"
    receipts["other"] = response.message.rrn
    return receipts


# -- agent statement -------------------------------------------------------------


async def test_statement_shows_each_float_movement_with_receipts_and_balances_to_the_ledger(
        cli, world, day_of_payments, today, settings):
    receipts = day_of_payments
    statement = await ok_json(cli, "agent", "statement", world.agent, "--date", today.isoformat())
    agent = await ok_json(cli, "agent", "show", world.agent)

    assert statement["agent"] == world.agent and statement["date"] == today.isoformat()
    movements = statement["movements"]
    assert [m["kind"] for m in movements] == [
        "topup", "collection", "collection", "collection", "reversal", "bill_commission", "collection"]
    assert [m["amount_fen"] for m in movements] == [50000, -10000, -2345, -7000, 2345, 0, -500]
    assert [m["commission_fen"] for m in movements] == [
        0, commission(10000), commission(2345), commission(7000), -commission(2345), commission(4000), 0]
    assert [m["receipt"] for m in movements] == [
        None, receipts["first"], receipts["second"], receipts["third"], receipts["second"], receipts["card"],
        receipts["other"]]
    assert [m["biller"] for m in movements] == [None, "P1", "P1", "P1", "P1", "P1", "P2"]
    assert [m["account"] for m in movements] == [None, "M0001", "M0002", "M0001", "M0002", "M0002", "N0001"]
    assert [m["tid"] for m in movements] == [None] + [world.tid] * 6

    assert statement["opening_float_fen"] == 0
    assert statement["opening_float_fen"] + sum(m["amount_fen"] for m in movements) == statement["closing_float_fen"]
    assert statement["closing_float_fen"] == agent["float_fen"] == 50000 - 10000 - 7000 - 500
    earned = commission(10000) + commission(7000) + commission(4000)
    assert statement["commission_fen"] == agent["commission_fen"] == earned
    assert statement["commission_fen"] == sum(m["commission_fen"] for m in movements)
    assert (statement["collections_fen"], statement["collections_count"]) == (10000 + 2345 + 7000 + 500, 4)
    assert (statement["reversals_fen"], statement["reversals_count"]) == (2345, 1)
    assert statement["topups_fen"] == 50000

    times = [datetime.fromisoformat(m["time"]) for m in movements]
    assert times == sorted(times)
    assert all(t.utcoffset() == today_offset(settings, today) and t.date() == today for t in times)

    # The default date is today in the gateway's timezone.
    assert await ok_json(cli, "agent", "statement", world.agent) == statement


def today_offset(settings, day: date) -> timedelta:
    return datetime.combine(day, datetime.min.time(), tzinfo=settings.tz).utcoffset()


async def test_statement_csv_has_a_header_and_one_row_per_movement(cli, world, day_of_payments, today):
    result = await cli("agent", "statement", world.agent, "--date", today.isoformat(), "--csv")
    assert result.code == 0, result.stderr
    header, rows = csv_rows(result.stdout)
    assert header == ["time", "kind", "amount_fen", "receipt", "biller", "account", "tid", "commission_fen"]
    statement = await ok_json(cli, "agent", "statement", world.agent, "--date", today.isoformat())
    assert len(rows) == len(statement["movements"]) == 7
    for row, movement in zip(rows, statement["movements"], strict=True):
        assert row == {k: "" if v is None else str(v) for k, v in movement.items()}


async def test_a_day_without_activity_gives_an_empty_statement_whose_opening_is_its_closing(
        cli, world, day_of_payments, today):
    closing_today = (await ok_json(cli, "agent", "statement", world.agent, "--date", today.isoformat()))[
        "closing_float_fen"]
    for day, balance in ((today - timedelta(days=1), 0), (today + timedelta(days=1), closing_today)):
        statement = await ok_json(cli, "agent", "statement", world.agent, "--date", day.isoformat())
        assert statement["movements"] == []
        assert statement["opening_float_fen"] == statement["closing_float_fen"] == balance
        assert statement["commission_fen"] == statement["collections_fen"] == statement["topups_fen"] == 0
        assert statement["collections_count"] == 0
    result = await cli("agent", "statement", world.agent, "--date", "2020-01-01", "--csv")
    assert result.code == 0 and result.stdout.splitlines() == [",".join(reports.STATEMENT_COLUMNS)]


async def test_the_statement_day_is_the_local_day_of_the_timezone_setting(cli, db, world, settings):
    """Top-ups moved to just before, at, and just after local midnights: [00:00, 24:00) local."""
    day = date(2026, 3, 1)
    start, end = reports.day_bounds(day, settings.tz)
    micro = timedelta(microseconds=1)
    for yuan, at in ((1, start - micro), (2, start), (3, end - micro), (4, end)):
        assert (await cli("agent", "topup", world.agent, str(yuan))).code == 0
        moved = await db.execute(
            """UPDATE ledger_transfers SET created_at = $1
                WHERE posting_id = (SELECT max(id) FROM ledger_postings WHERE idempotency_key LIKE 'topup:%')""", at)
        assert moved == "UPDATE 1"
    statement = await ok_json(cli, "agent", "statement", world.agent, "--date", day.isoformat())
    assert statement["opening_float_fen"] == 100
    assert [(m["kind"], m["amount_fen"]) for m in statement["movements"]] == [("topup", 200), ("topup", 300)]
    assert statement["closing_float_fen"] == 600
    assert statement["movements"][0]["time"] == start.isoformat()
    after = await ok_json(cli, "agent", "statement", world.agent, "--date", (day + timedelta(days=1)).isoformat())
    assert after["opening_float_fen"] == 600 and after["closing_float_fen"] == 1000


async def test_statement_refuses_an_unknown_agent_a_bad_date_and_json_with_csv(cli, world):
    for argv in (("agent", "statement", "NOBODY", "--json"),
                 ("agent", "statement", "bad code!", "--json"),
                 ("agent", "statement", world.agent, "--date", "2026-02-30"),
                 ("agent", "statement", world.agent, "--date", "20260201"),
                 ("agent", "statement", world.agent, "--json", "--csv")):
        result = await cli(*argv)
        assert result.code == 2, argv
        assert result.stdout == ""
        assert result.stderr.strip().splitlines()[-1].startswith("posgw: error:")


# -- biller remittance ---------------------------------------------------------------


async def test_remittance_lists_the_standing_payments_and_matches_the_biller_account(
        cli, db, world, day_of_payments, today):
    receipts = day_of_payments
    remittance = await ok_json(cli, "biller", "remittance", "P1", "--date", today.isoformat())
    assert remittance["biller"] == "P1" and remittance["date"] == today.isoformat()
    payments = remittance["payments"]
    assert [p["receipt"] for p in payments] == [receipts["first"], receipts["third"], receipts["card"]]
    assert receipts["second"] not in {p["receipt"] for p in payments}  # reversed
    assert [(p["account"], p["amount_fen"], p["paid_in_cash"], p["tid"], p["agent"]) for p in payments] == [
        ("M0001", 10000, True, world.tid, world.agent), ("M0001", 7000, True, world.tid, world.agent),
        ("M0002", 4000, False, world.tid, world.agent)]
    assert all(datetime.fromisoformat(p["time"]).date() == today for p in payments)
    assert remittance["count"] == 3
    assert remittance["total_fen"] == sum(p["amount_fen"] for p in payments) == 21000
    assert remittance["commission_fen"] == commission(10000) + commission(7000) + commission(4000)

    biller_balance = await db.fetchval(
        "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE code = 'biller:P1'")
    assert remittance["total_fen"] == biller_balance + remittance["commission_fen"]

    other = await ok_json(cli, "biller", "remittance", "P2", "--date", today.isoformat())
    assert [p["receipt"] for p in other["payments"]] == [receipts["other"]]
    assert other["total_fen"] == 500 and other["commission_fen"] == 0

    result = await cli("biller", "remittance", "P1", "--date", today.isoformat(), "--csv")
    assert result.code == 0, result.stderr
    header, rows = csv_rows(result.stdout)
    assert header == ["receipt", "account", "amount_fen", "time", "tid", "agent", "paid_in_cash", "commission_fen"]
    assert [(r["receipt"], r["amount_fen"], r["paid_in_cash"]) for r in rows] == [
        (receipts["first"], "10000", "true"), (receipts["third"], "7000", "true"), (receipts["card"], "4000", "false")]


async def test_remittance_of_a_day_without_payments_is_empty(cli, billers, today):
    remittance = await ok_json(cli, "biller", "remittance", "P1", "--date", today.isoformat())
    assert (remittance["payments"], remittance["count"], remittance["total_fen"], remittance["commission_fen"]) == (
        [], 0, 0, 0)
    result = await cli("biller", "remittance", "P1", "--date", today.isoformat(), "--csv")
    assert result.code == 0 and result.stdout.splitlines() == [",".join(reports.REMITTANCE_COLUMNS)]


async def test_remittance_day_is_the_local_day(cli, db, world, terminal, settings):
    assert (await cli("agent", "topup", world.agent, "500")).code == 0
    day = date(2026, 3, 1)
    start, end = reports.day_bounds(day, settings.tz)
    micro = timedelta(microseconds=1)
    placed = {}
    for at in (start - micro, start, end - micro, end):
        response = await terminal.bill_payment("P1", "M0001", 1000)
        assert response.response_code == "00"
        await db.execute("UPDATE gw_transactions SET created_at = $1 WHERE receipt = $2", at, response.message.rrn)
        placed[at] = response.message.rrn
    remittance = await ok_json(cli, "biller", "remittance", "P1", "--date", day.isoformat())
    assert [p["receipt"] for p in remittance["payments"]] == [placed[start], placed[end - micro]]
    assert remittance["payments"][0]["time"] == start.isoformat()


async def test_remittance_refuses_an_unknown_biller_and_a_bad_date(cli, billers):
    for argv in (("biller", "remittance", "NOPE", "--date", "2026-01-01", "--json"),
                 ("biller", "remittance", "P1", "--date", "01/02/2026", "--json"),
                 ("biller", "remittance", "P1", "--date", "2026-01-01", "--json", "--csv")):
        result = await cli(*argv)
        assert result.code == 2, argv
        assert result.stdout == ""
        assert result.stderr.strip().splitlines()[-1].startswith("posgw: error:")


# -- the low-float gauge -----------------------------------------------------------------


async def scrape(gateway) -> float:
    def get() -> str:
        url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return response.read().decode()

    families = {f.name: f for f in text_string_to_metric_families(await asyncio.to_thread(get))}
    [sample] = families["posgw_agents_float_below_threshold"].samples
    return sample.value


async def test_gauge_counts_agents_whose_float_is_below_the_threshold(gateway, cli, world, settings):
    assert settings.float_low_threshold_fen == 10000
    assert await scrape(gateway) == 1  # AG01 has no float
    assert (await cli("agent", "add", "AG02", "--name", "Second")).code == 0
    assert await scrape(gateway) == 2
    assert (await cli("agent", "topup", world.agent, "200")).code == 0
    assert await scrape(gateway) == 1
    assert (await cli("agent", "topup", "AG02", "100")).code == 0  # exactly the threshold is not below it
    assert await scrape(gateway) == 0


async def test_gauge_keeps_its_value_and_the_scrape_succeeds_when_the_query_fails(gateway, world, monkeypatch):
    assert await scrape(gateway) == 1

    async def failing(*args, **kwargs):
        raise OSError("database gone")

    monkeypatch.setattr(reports, "agents_float_below", failing)
    assert await scrape(gateway) == 1

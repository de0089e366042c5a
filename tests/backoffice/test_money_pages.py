"""The back office's billers and bills, store-and-forward, payouts and the agent
network's earnings, over HTTP: what each page shows (data made with the CLI and
services, bills paid through the simulator against a real gateway, purchases
recorded through the engine's own SQL and shared by a real agent run), the SAF
retry through the audited service, and the agent's confinement to its subtree."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta

import httpx
import pytest

from gateway.backoffice import money_queries
from gateway.backoffice.app import create_app
from gateway.backoffice.network_pages import period
from gateway.domain.policies import set_policy
from gateway.domain.validate import InvalidInput
from gateway.jobs import agent_run, payouts
from gateway.keys import SoftHsm
from gateway.upstream import outbox
from sim.terminal import bill_fields
from tests.backoffice.conftest import BASE_URL, Browser
from tests.conftest import TEST_LMK
from tests.e2e.helpers import terminal_for
from tests.jobs.agent_world import DAY, Network, at
from tests.jobs.payout_world import Book, account_number, mid


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def table(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert found, f"no table {table_id}"
    return found.group(1)


# -- billers and bills --------------------------------------------------------------------------


@pytest.fixture
async def bills(cli, web_world):
    for argv in (
        ("biller", "add", "WATER1", "--name", "City Water", "--exact", "--commission-bp", "50"),
        ("bill", "add", "WATER1", "A1001", "--name", "Zhang", "--amount", "123.45", "--period", "202610"),
        ("bill", "add", "WATER1", "A1001", "--name", "Zhang", "--amount", "67.89", "--period", "202611"),
        ("bill", "add", "WATER1", "B2002", "--name", "Li", "--amount", "50", "--period", "202611"),
        ("agent", "topup", "AG01", "500"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)


async def test_the_billers_list_shows_code_name_kind_and_commission(web_world, bills, browse):
    page = (await (await browse("auditor")).get("/billers")).text
    rows = table(page, "billers")
    assert re.search(r'<a href="/billers/WATER1">WATER1</a></td><td>City Water</td><td>no</td><td>yes</td>\s*'
                     r'<td class="num">50</td><td class="num">0.00</td><td>builtin</td>\s*<td class="num">3</td>', rows)
    assert re.search(r'<a href="/billers/EPOWER">EPOWER</a></td><td>Electric Power</td><td>no</td><td>no</td>', rows)
    # EPOWER's pending message (the web world's) is counted and links to /saf
    assert '<a href="/saf?biller=EPOWER">1</a>' in rows


async def test_a_bill_paid_through_the_simulator_shows_paid_in_the_remittance_and_the_csv(
        web_world, world, bills, gateway, browse, settings):
    terminal = terminal_for(gateway, world)  # AG01's TERM0001
    try:
        assert (await terminal.sign_on()).response_code == "00"
        fields = bill_fields(await terminal.bill_inquiry("WATER1", "A1001"))
        paid = await terminal.bill_payment("WATER1", "A1001", 12345, reference=fields["BR"])
        assert paid.response_code == "00"
    finally:
        await terminal.close()
    operator = await browse("operator")
    page = (await operator.get("/billers/WATER1")).text
    assert 'id="remittance-count">1<' in page and 'id="remittance-total">¥123.45<' in page
    assert f"<code>{bill_fields(paid)['RN']}</code>" in table(page, "remittance")
    assert "/reports/remittance.csv?biller=WATER1&amp;date=" + settings.today().isoformat() in page
    # the bills: all three, then filtered by status and by account, and the CSV of the filter
    assert table(page, "bills").count("<tr><td>") == 3
    open_only = (await operator.get("/billers/WATER1", params={"status": "open"})).text
    assert table(open_only, "bills").count("<tr><td>") == 2 and "123.45" not in table(open_only, "bills")
    rows = csv_rows((await operator.get("/billers/WATER1/bills.csv", params={"status": "paid"})).text)
    assert [(r["account"], r["period"], r["amount_fen"], r["status"]) for r in rows] == [
        ("A1001", "202610", "12345", "paid")]
    assert rows[0]["paid_at"].startswith(settings.today().isoformat())
    by_account = csv_rows((await operator.get("/billers/WATER1/bills.csv", params={"account": "B2002"})).text)
    assert [(r["name"], r["amount_fen"], r["status"]) for r in by_account] == [("Li", "5000", "open")]
    # another day's remittance is empty
    yesterday = (settings.today() - timedelta(days=1)).isoformat()
    assert 'id="remittance-count">0<' in (await operator.get("/billers/WATER1", params={"date": yesterday})).text


async def test_an_unknown_biller_is_404_and_a_bad_filter_400(web_world, browse):
    auditor = await browse("auditor")
    assert (await auditor.get("/billers/NOSUCH")).status_code == 404
    assert (await auditor.get("/billers/EPOWER", params={"status": "lost"})).status_code == 400
    assert (await auditor.get("/billers/EPOWER/bills.csv", params={"account": "a b"})).status_code == 400
    assert (await auditor.get("/billers/EPOWER", params={"date": "2026-13-01"})).status_code == 400


# -- store and forward --------------------------------------------------------------------------


async def test_the_outbox_lists_pending_by_default_and_all_on_request(web_world, browse, db):
    done = await outbox.enqueue(db, "EPOWER", "notice", "RCPT00000002")
    await db.execute("UPDATE biller_outbox SET status = 'done', done_at = now(), attempts = 1 WHERE id = $1", done)
    auditor = await browse("auditor")
    pending = (await auditor.get("/saf")).text
    assert f'id="saf-{web_world.saf_id}"' in pending and f'id="saf-{done}"' not in pending
    assert 'id="saf-pending">1<' in pending
    assert "/retry\"" not in pending  # an auditor changes nothing: no retry button
    everything = (await auditor.get("/saf", params={"which": "all"})).text
    ids = [int(i) for i in re.findall(r'<tr id="saf-(\d+)">', everything)]
    assert ids == [done, web_world.saf_id]  # newest first
    assert (await auditor.get("/saf", params={"biller": "OTHER"})).text.count('<tr id="saf-') == 0
    assert (await auditor.get("/saf", params={"which": "some"})).status_code == 400


async def test_the_outbox_read_is_bounded_newest_first_with_the_total(web_world, db, settings):
    ids = [await outbox.enqueue(db, "EPOWER", "notice", f"RCPT0000001{n}") for n in range(3)]
    await db.execute("UPDATE biller_outbox SET status = 'done', done_at = now() WHERE id = $1", ids[0])
    every, total = await money_queries.outbox_messages(db, "EPOWER", include_done=True, tz=settings.tz, limit=2)
    assert ([m["id"] for m in every], total) == ([ids[2], ids[1]], 4)
    pending, total = await money_queries.outbox_messages(db, None, include_done=False, tz=settings.tz, limit=2)
    assert ([m["id"] for m in pending], total) == ([web_world.saf_id, ids[1]], 3)  # oldest first
    assert set(pending[0]) == {"id", "biller", "kind", "receipt", "status", "attempts", "last_error", "created_at",
                               "next_attempt_at"}  # posgw saf list's keys
    assert pending[0]["created_at"].endswith("+08:00")  # local time (Asia/Shanghai)


async def test_an_operator_retries_a_pending_message_audited_and_a_done_one_is_refused(web_world, browse, db,
                                                                                       cli):
    before = await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id)
    operator = await browse("operator")
    page = (await operator.get("/saf")).text
    assert f'action="/saf/{web_world.saf_id}/retry"' in page
    response = await operator.post(f"/saf/{web_world.saf_id}/retry", {"back": "/billers/EPOWER"})
    assert (response.status_code, response.headers["location"]) == (303, "/billers/EPOWER")
    after = await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id)
    assert after < before  # due now, where it was due in an hour
    events = (await cli("audit", "list", "--entity", f"saf:{web_world.saf_id}", "--json")).json["events"]
    assert [(e["actor"], e["action"]) for e in events] == [("web:operator", "saf.retry")]
    # a redirect elsewhere is never followed
    response = await operator.post(f"/saf/{web_world.saf_id}/retry", {"back": "//evil.example/saf"})
    assert response.headers["location"] == "/saf"

    await db.execute("UPDATE biller_outbox SET status = 'done', done_at = now() WHERE id = $1", web_world.saf_id)
    refused = await operator.post(f"/saf/{web_world.saf_id}/retry")
    assert refused.status_code == 400
    assert f"outbox message {web_world.saf_id} is done: the biller has acknowledged it" in refused.text
    assert (await operator.post("/saf/999999/retry")).status_code == 400
    events = (await cli("audit", "list", "--entity", f"saf:{web_world.saf_id}", "--json")).json["events"]
    assert len(events) == 2  # the two retries that changed something; the refused one wrote nothing


async def test_a_retry_without_the_csrf_token_is_refused_and_changes_nothing(web_world, browse, db):
    before = await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id)
    admin = await browse("admin")
    response = await admin.post(f"/saf/{web_world.saf_id}/retry", csrf=False)
    assert response.status_code == 403 and "CSRF" in response.text
    response = await admin.client.post(f"/saf/{web_world.saf_id}/retry", data={"csrf": "forged"})
    assert response.status_code == 403
    assert await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id) == before


async def test_the_dashboard_counts_the_pending_saf_messages(web_world, browse, db):
    admin = await browse("admin")
    assert re.search(r'id="saf-pending"><a href="/saf">1</a>', (await admin.get("/dashboard/figures")).text)
    await outbox.enqueue(db, "EPOWER", "notice", "RCPT00000003")
    assert re.search(r'id="saf-pending"><a href="/saf">2</a>', (await admin.get("/dashboard/figures")).text)


# -- payouts ------------------------------------------------------------------------------------


async def test_payouts_of_a_day_by_status_with_the_summary_and_csv_bank_accounts_masked(web_world, browse, db,
                                                                                        settings):
    day = settings.today()  # run as if tomorrow (Book.run): the balances are today's
    book = Book(db, SoftHsm(bytes.fromhex(TEST_LMK)), settings, day)
    for n, balance_fen in ((11, 50_000), (12, 7_000), (13, 90_000)):
        await book.merchant(n, balance_fen)
    run = await book.run()
    assert run["count"] == 3
    ids = {row["beneficiary"]: row["id"] for row in (await payouts.list_payouts(db, day))["payouts"]}
    confirmed = await payouts.confirm_payouts(
        db, f"payout_id,status,reason\n{ids[mid(11)]},paid,\n{ids[mid(12)]},returned,AC04\n".encode())
    assert (confirmed["paid"], confirmed["returned"]) == (1, 1)

    operator = await browse("operator")
    page = (await operator.get("/payouts", params={"date": day.isoformat()})).text
    assert 'id="payouts-paid">1 · ¥500.00<' in page and 'id="payouts-returned">1 · ¥70.00<' in page
    assert 'id="payouts-pending">1 · ¥900.00<' in page
    for n in (11, 12, 13):
        assert account_number(n) not in page and f"*{account_number(n)[-4:]}" in page
    rows = csv_rows((await operator.get("/payouts.csv", params={"date": day.isoformat()})).text)
    assert [(r["beneficiary"], r["amount_fen"], r["status"], r["bank_account_masked"], r["reason"]) for r in rows] == [
        (mid(11), "50000", "paid", "*1001", ""), (mid(12), "7000", "returned", "*2001", "AC04"),
        (mid(13), "90000", "pending", "*3001", "")]
    returned = csv_rows((await operator.get("/payouts.csv", params={"date": day.isoformat(),
                                                                   "status": "returned"})).text)
    assert [r["beneficiary"] for r in returned] == [mid(12)]
    assert set(rows[0]) == {"id", "date", "beneficiary_kind", "beneficiary", "amount_fen", "status",
                            "bank_account_masked", "reason"}  # no clear bank account column
    default = (await operator.get("/payouts")).text  # yesterday's (T+1): none
    assert 'id="payouts-pending">0 · ¥0.00<' in default and "No payout." in default
    every = (await operator.get("/payouts", params={"date": "all"})).text
    assert table(every, "payouts").count("<tr><td") == 3 and 'id="payout-summary"' not in every
    assert (await operator.get("/payouts", params={"status": "lost"})).status_code == 400


async def test_the_web_decides_today_by_the_clock_offset(web_world, settings, web_settings, web_pool, db):
    """``clock_offset_s`` moves the web's "today" as it moves the gateway's (Settings.today()): a day ahead,
    the payouts page's default day (yesterday) is the real today, and so is the biller page's remittance."""
    book = Book(db, SoftHsm(bytes.fromhex(TEST_LMK)), settings, settings.today())
    await book.merchant(21, 12_300)
    assert (await book.run())["count"] == 1
    ahead = settings.model_copy(update={"clock_offset_s": 86_400.0})
    app = create_app(ahead, web_settings, web_pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        browser = Browser(client)
        assert (await browser.log_in("auditor")).status_code == 303
        page = (await browser.get("/payouts")).text
        assert 'id="payouts-pending">1 · ¥123.00<' in page and settings.today().isoformat() in page
        biller = (await browser.get("/billers/EPOWER")).text
        assert ahead.today() != settings.today() and f"Remittance of {ahead.today().isoformat()}" in biller


# -- the agent network --------------------------------------------------------------------------


@pytest.fixture
async def shared(web_world, cli, db, settings) -> Network:
    """AG01 (cost 30 bp) above AG02 (cost 40 bp), whose MERCHANT0000004 (MDR 60 bp) sold ¥10,000 on DAY;
    the agent run of DAY shares the discount: AG02 20 bp (¥20.00), AG01 10 bp (¥10.00)."""
    net = Network(cli, db)
    await net.funded_card()
    await net.merchant("MERCHANT0000004", "AG02", 60, "TERM0004")
    for code, cost_bp in (("AG01", 30), ("AG02", 40)):
        await set_policy(db, code, {"cost_bp": cost_bp}, DAY - timedelta(days=1), "cli:ops")
    await net.purchase("TERM0004", 1_000_000, at(DAY))
    await agent_run.run(db, DAY, settings.tz, now=settings.now())
    return net


async def test_an_agents_earnings_rows_totals_policy_and_log(shared, browse):
    auditor = await browse("auditor")
    page = (await auditor.get("/agents/AG01/earnings", params={"from": "2026-11-01", "to": "2026-11-30"})).text
    assert 'id="earnings-net">¥10.00<' in page
    assert 'id="team-volume">¥10,000.00<' in page and 'id="direct-volume">¥0.00<' in page
    rows = table(page, "earnings-rows")
    assert re.search(r"<td>2026-11-02</td><td>share</td><td><a href=\"/terminals/TERM0004\">TERM0004</a></td>"
                     r"<td>MERCHANT0000004</td><td class=\"num\">10,000.00</td><td class=\"num\">10.00</td>", rows)
    # the policy in force today and the price-change log (who set it, from which day)
    assert re.search(r'<td class="num">30</td><td class="num">100</td>', table(page, "policy"))
    log = table(page, "policy-log")
    assert "<td>2026-11-01</td>" in log and "<td>cli:ops</td>" in log
    csv_text = (await auditor.get("/agents/AG02/earnings.csv", params={"from": "2026-11-01",
                                                                     "to": "2026-11-30"})).text
    assert csv_rows(csv_text) == [{"date": "2026-11-02", "source": "share", "tid": "TERM0004",
                                   "mid": "MERCHANT0000004", "volume_fen": "1000000", "amount_fen": "2000"}]
    # another period: nothing
    october = (await auditor.get("/agents/AG01/earnings", params={"from": "2026-10-01", "to": "2026-10-31"})).text
    assert 'id="earnings-net">¥0.00<' in october and "No earnings in this period" in october


async def test_an_agent_user_reads_its_own_and_its_subtrees_earnings_only(shared, browse):
    agent1 = await browse("agent1")  # AG01, above AG02
    for code in ("AG01", "AG02"):
        assert (await agent1.get(f"/agents/{code}/earnings")).status_code == 200, code
        assert (await agent1.get(f"/agents/{code}/earnings.csv")).status_code == 200, code
    assert "/agents/AG01/earnings" in (await agent1.get("/portal")).text
    agent3 = await browse("agent3")  # AG03, another tree
    for path in ("/agents/AG01/earnings", "/agents/AG02/earnings.csv", "/agents/NOSUCH/earnings"):
        assert (await agent3.get(path, params={"from": "2026-11-01", "to": "2026-11-30"})).status_code == 403, path
    assert (await agent3.get("/agents/AG03/earnings")).status_code == 200
    assert (await (await browse("auditor")).get("/agents/NOSUCH/earnings")).status_code == 404


async def test_terminal_counts_by_owner_in_the_agents_subtree(shared, browse, db):
    await db.execute("UPDATE terminals SET activated_at = now() WHERE tid = 'TERM0004'")
    page = (await (await browse("agent1")).get("/agents/AG01/earnings")).text
    counts = re.findall(r'<a href="/agents/(\w+)/earnings">\w+</a></td><td class="num">(\d+)</td>'
                        r'<td class="num">(\d+)</td><td class="num">(\d+)</td>', table(page, "terminal-counts"))
    assert counts == [("AG01", "1", "1", "0"), ("AG02", "0", "1", "1")]  # STOCK001 in AG01's stock; nothing of AG03's
    assert [row["owner"] for row in await money_queries.terminal_counts(db, None)] == ["AG01", "AG02", "AG03"]


def test_the_earnings_period_defaults_to_this_month_and_is_checked():
    now = date(2026, 12, 8)
    assert period({}, now) == (date(2026, 12, 1), now)
    assert period({"from": "2026-11-01", "to": "2026-11-30"}, now) == (date(2026, 11, 1), date(2026, 11, 30))
    for bad in ({"from": "2026-11-30", "to": "2026-11-01"}, {"from": "2025-01-01", "to": "2026-11-30"},
                {"from": "tomorrow"}):
        with pytest.raises(InvalidInput):
            period(bad, now)

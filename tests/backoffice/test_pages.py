"""What the back office's pages show, over HTTP: the dashboard's figures, merchants,
cards (masked), a transaction's story, batches, risk events, the daily report
with its chart and CSVs, the remittance CSV."""

from __future__ import annotations

import csv
import io
import re

from gateway.backoffice.app import yuan
from gateway.backoffice.pages import bar_chart
from tests.backoffice.conftest import add_purchase


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_yuan_formats_fen_with_two_decimals_and_the_sign():
    assert [yuan(v) for v in (0, 5, 1234, -1205, 123456789, None)] == [
        "0.00", "0.05", "12.34", "-12.05", "1,234,567.89", ""]


def test_the_chart_scales_the_tallest_bar_to_the_full_height():
    chart = bar_chart([{"hour": h, "count": h % 3, "amount_fen": 100 * (h % 3)} for h in range(24)])
    heights = [bar["height"] for bar in chart["bars"]]
    assert max(heights) == chart["height"] and heights[:3] == [0, 80, 160]
    assert all(bar["y"] + bar["height"] == chart["height"] for bar in chart["bars"])
    assert bar_chart([{"hour": 0, "count": 0, "amount_fen": 0}])["bars"][0]["height"] == 0


async def test_the_dashboard_counts_today_by_code(web_world, browse, db):
    await db.execute("""UPDATE gw_transactions SET response_code = '51', status = 'declined'
                         WHERE tid = 'TERM0003'""")
    page = (await (await browse("operator")).get("/dashboard")).text
    assert re.search(r'id="approvals">1<', page) and re.search(r'id="declines">1<', page)
    assert "¥15.00" in page  # the approved amount
    assert 'id="floats-low">3<' in page  # every float is 0, below the default threshold
    figures = (await (await browse("auditor")).get("/dashboard/figures")).text
    assert figures.startswith('<div id="figures" hx-get="/dashboard/figures" hx-trigger="every 1s"')


async def test_merchants_list_and_freeze_through_the_service(web_world, browse, cli):
    operator = await browse("operator")
    rows = csv_rows((await operator.get("/merchants.csv")).text)
    assert [(r["mid"], r["agent"], r["terminals"]) for r in rows] == [
        ("MERCHANT0000001", "AG01", "1"), ("MERCHANT0000002", "AG02", "1"), ("MERCHANT0000003", "AG03", "1")]
    assert [r["mid"] for r in csv_rows((await operator.get("/merchants.csv", params={"q": "sub"})).text)] == [
        "MERCHANT0000002"]
    assert (await operator.post("/merchants/MERCHANT0000003/status", {"status": "frozen"})).status_code == 303
    assert (await cli("merchant", "show", "MERCHANT0000003", "--json")).json["status"] == "frozen"
    events = (await cli("audit", "list", "--entity", "merchant:MERCHANT0000003", "--json")).json["events"]
    assert [(e["actor"], e["action"]) for e in events][-1] == ("web:operator", "merchant.freeze")
    agent = await browse("agent1")
    assert [r["mid"] for r in csv_rows((await agent.get("/merchants.csv")).text)] == [
        "MERCHANT0000001", "MERCHANT0000002"]


async def test_cards_are_shown_masked_and_found_by_their_last_four(web_world, browse):
    auditor = await browse("auditor")
    page = (await auditor.get("/cards")).text
    assert "622202******1111" in page and "622202******3333" in page
    page = (await auditor.get("/cards", params={"last4": "3333"})).text
    assert "622202******3333" in page and "622202******1111" not in page


async def test_a_transactions_story_has_its_original_and_what_undid_it(web_world, browse, db):
    purchase = web_world.txn_ids["TERM0002"]
    void = await db.fetchval(
        """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, content_hash, response, response_code,
                                        status, amount_fen, rrn, local_date, original_id)
           VALUES ('TERM0002', 1, '000104', '02', 'void', 'x', '{}', '00', 'approved', 1500, '000000000104', '1208',
                   $1) RETURNING id""", purchase)
    await db.execute("UPDATE gw_transactions SET status = 'voided' WHERE id = $1", purchase)
    for viewer in ("auditor", "agent1"):
        browser = await browse(viewer)
        for shown in (purchase, void):  # the same story from either end
            page = (await browser.get(f"/transactions/{shown}")).text
            rows = re.findall(r"<td>(purchase|void)</td>", page)
            assert rows == ["purchase", "void"], (viewer, shown)
            assert "622202******1111" in page and "010101" in page and f'href="/transactions/{purchase}">#' in page
    agent = await browse("agent1")
    assert (await agent.get(f"/transactions/{web_world.txn_ids['TERM0003']}")).status_code == 403
    assert (await agent.get("/transactions/999999")).status_code == 403
    assert (await (await browse("auditor")).get("/transactions/999999")).status_code == 404


async def test_an_agent_searching_transactions_sees_only_its_subtree(web_world, browse):
    agent = await browse("agent1")
    rows = csv_rows((await agent.get("/transactions.csv")).text)
    assert [(r["tid"], r["pan_masked"], r["amount_fen"]) for r in rows] == [("TERM0002", "622202******1111", "1500")]
    assert csv_rows((await agent.get("/transactions.csv", params={"tid": "TERM0003"})).text) == []


async def test_batches_and_risk_events(web_world, browse, db):
    await db.execute(
        """INSERT INTO gw_batches (tid, batch, debit_fen, debit_count, credit_fen, credit_count, terminal_totals,
                                   balanced)
           VALUES ('TERM0001', 1, 1000, 1, 0, 0, '000000001200001000000000000000', false),
                  ('TERM0002', 1, 500, 1, 0, 0, '000000000500001000000000000000', true)""")
    await db.execute("""INSERT INTO risk_events (tid, rule, response_code, risk_values)
                        VALUES ('TERM0003', 'txn_amount_max_fen', '61', '{"amount_fen": 99999}')""")
    auditor = await browse("auditor")
    batches = (await auditor.get("/batches", params={"unbalanced": "1"})).text
    assert "TERM0001" in batches and "TERM0002" not in batches and "2.00" in batches  # 12.00 - 10.00
    assert "TERM0002" in (await auditor.get("/batches")).text
    risk = (await auditor.get("/risk")).text
    assert "txn_amount_max_fen" in risk and "99999" in risk
    assert "txn_amount_max_fen" not in (await auditor.get("/risk", params={"tid": "TERM0001"})).text
    dashboard = (await auditor.get("/dashboard")).text
    assert re.search(r'href="/risk">1<', dashboard) and re.search(r'href="/batches\?unbalanced=1">1<', dashboard)


async def test_the_daily_report_page_its_chart_and_csvs(web_world, browse, db, settings):
    auditor = await browse("auditor")
    page = (await auditor.get("/reports/daily")).text
    assert '<svg class="chart" id="hourly"' in page and page.count("<rect ") == 24
    assert "Ledger check" in page
    by_type = csv_rows((await auditor.get("/reports/daily.csv")).text)
    assert [(r["kind"], r["response_code"], r["count"], r["amount_fen"]) for r in by_type] == [
        ("purchase", "00", "2", "4800")]
    merchants = (await auditor.get("/reports/daily.csv", params={"part": "merchants"})).text
    assert merchants.splitlines()[0] == "mid,purchases_count,purchases_fen,returns_count,returns_fen,fees_fen,net_fen"
    assert (await auditor.get("/reports/daily.csv", params={"part": "secrets"})).status_code == 400
    old = csv_rows((await auditor.get("/reports/daily.csv", params={"date": "2000-01-01"})).text)
    assert old == []
    remittance = await auditor.get("/reports/remittance.csv", params={"biller": "EPOWER"})
    assert remittance.text.splitlines() == ["receipt,account,amount_fen,time,tid,agent,paid_in_cash,commission_fen"]
    assert (await auditor.get("/reports/remittance.csv", params={"biller": "NOPE"})).status_code == 400


async def test_the_agent_portal_shows_its_merchants_volume_and_top_ups(web_world, browse, cli, db):
    await add_purchase(db, "TERM0001", "000201", "622202******2222", 700)
    assert (await cli("agent", "topup", "AG01", "88")).code == 0
    portal = (await (await browse("agent1")).get("/portal")).text
    assert re.search(r"MERCHANT0000001</td><td>Test Shop</td><td>AG01</td><td>active</td>"
                     r'<td class="num">1</td><td class="num">7.00</td>', portal)
    assert 'id="float">¥88.00<' in portal and "88.00</td>" in portal
    assert "MERCHANT0000003" not in portal and "Other Agent" not in portal


async def test_a_terminals_settings_and_limits_change_through_the_services(web_world, browse, cli):
    operator = await browse("operator")
    response = await operator.post("/terminals/TERM0001/settings", {"permit": ["purchase", "bill"], "mac": "x9.19",
                                                                      "location": "31.23,121.47", "radius_km": "3"})
    assert response.status_code == 303
    shown = (await cli("terminal", "show", "TERM0001", "--json")).json
    assert (shown["permit"], shown["mac"], shown["location"], shown["radius_km"]) == (
        ["purchase", "bill"], "x9.19", "31.23,121.47", 3.0)
    assert (await operator.post("/terminals/TERM0001/limits", {"txn_amount_max_fen": "500000",
                                                               "card_daily_count_max": ""})).status_code == 303
    limits = (await cli("terminal", "limits", "TERM0001", "--json")).json["limits"]
    assert limits["txn_amount_max_fen"] == 500000 and limits["location_radius_km"] == 3
    page = (await operator.get("/terminals/TERM0001")).text
    assert re.search(r"<td>txn_amount_max_fen</td><td class=\"num\">500000</td><td class=\"num\">500000</td>", page)
    events = (await cli("audit", "list", "--entity", "terminal:TERM0001", "--json")).json["events"]
    assert [(e["actor"], e["action"]) for e in events][1:] == [("web:operator", "terminal.set"),
                                                              ("web:operator", "terminal.limits")]
    for bad in ({"permit": [], "mac": "x9.19"}, {"permit": ["purchase"], "mac": "md5"},
                {"permit": ["purchase"], "mac": "x9.19", "location": "north"},
                {"permit": ["purchase"], "mac": "x9.19", "radius_km": "far"}):
        assert (await operator.post("/terminals/TERM0001/settings", bad)).status_code == 400, bad
    assert (await operator.post("/terminals/TERM0001/limits", {"txn_amount_max_fen": "-1"})).status_code == 400
    assert (await operator.post("/terminals/TERM0001/limits", {"spike_factor": "1e9"})).status_code == 400
    assert len((await cli("audit", "list", "--entity", "terminal:TERM0001", "--json")).json["events"]) == 3


async def test_the_map_places_the_terminals_with_a_location(web_world, browse, cli):
    await cli("terminal", "set", "TERM0001", "--location", "31.20,121.40")
    await cli("terminal", "set", "TERM0003", "--location", "31.30,121.60")
    await cli("terminal", "freeze", "TERM0003")
    page = (await (await browse("auditor")).get("/map")).text
    assert page.count("<circle ") == 2 and "2 without a location" in page  # TERM0003, and STOCK001 in stock
    assert re.search(r'<circle cx="30.0" cy="[0-9.]+" r="6" fill="#0b5cad">', page)  # the westmost at the margin
    assert 'fill="#b42318"' in page  # the frozen one in red
    agent_map = (await (await browse("agent1")).get("/map")).text
    assert agent_map.count("<circle ") == 1 and "TERM0003" not in agent_map


async def test_a_terminal_in_stock_is_listed_with_its_owner_and_only_inside_its_subtree(web_world, browse):
    """STOCK001 (no merchant, in AG01's stock): listed as in stock with AG01 for staff and for AG01's agent
    user, its page says so; AG03's agent user neither sees it listed nor opens it (403)."""
    for user in ("operator", "agent1"):
        client = await browse(user)
        listing = (await client.get("/terminals")).text
        assert re.search(r'<a href="/terminals/STOCK001">STOCK001</a></td><td>in stock</td><td></td><td>AG01</td>',
                         listing), user
        page = await client.get("/terminals/STOCK001")
        assert page.status_code == 200 and "none: in stock" in page.text
    other = await browse("agent3")
    assert "STOCK001" not in (await other.get("/terminals")).text
    assert (await other.get("/terminals/STOCK001")).status_code == 403

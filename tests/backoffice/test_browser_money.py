"""The billers, store-and-forward, payouts and earnings pages in a real browser
(Playwright driving Debian's Chromium, as tests/backoffice/test_browser.py), the
app served by uvicorn on a real socket: an operator walks from the menu to a
biller and its bills, retries an outbox message with the button, reads a day's
payouts (masked) and downloads their CSV; an agent opens its earnings from its
portal. Screenshots land in tests/backoffice/artifacts/."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backoffice.app import create_app
from gateway.keys import SoftHsm
from tests.backoffice.test_browser import chromium, open_as, serving, shot  # noqa: F401 (chromium: a fixture)
from tests.conftest import TEST_LMK
from tests.jobs.payout_world import Book, account_number, mid

pytestmark = pytest.mark.needs_tools("chromium")


@pytest.fixture
async def money_site(settings, web_settings, web_pool, web_world, cli, db) -> AsyncIterator[str]:
    """The web world with a biller's bills and today's payouts (run as if tomorrow), served."""
    for argv in (
        ("biller", "add", "WATER1", "--name", "City Water", "--exact", "--commission-bp", "50"),
        ("bill", "add", "WATER1", "A1001", "--name", "Zhang", "--amount", "123.45", "--period", "202610"),
        ("bill", "add", "WATER1", "B2002", "--name", "Li", "--amount", "50", "--period", "202611"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)
    book = Book(db, SoftHsm(bytes.fromhex(TEST_LMK)), settings, settings.today())
    for n, balance_fen in ((31, 42_000), (32, 8_800)):
        await book.merchant(n, balance_fen)
    assert (await book.run())["count"] == 2
    async with serving(create_app(settings, web_settings, web_pool)) as url:
        yield url


async def test_an_operator_opens_billers_retries_a_saf_message_and_reads_payouts(money_site, web_world, settings, db,
                                                                                 cli, chromium):  # noqa: F811
    site = money_site
    page = await open_as(chromium, site, "operator")
    await page.click("header nav a[href='/billers']")
    await page.wait_for_url(f"{site}/billers")
    assert "City Water" in await page.inner_text("#billers")
    await shot(page, "billers")
    await page.click("#billers a[href='/billers/WATER1']")
    await page.wait_for_url(f"{site}/billers/WATER1")
    assert (await page.inner_text("#bills")).count("open") == 2
    await page.select_option("select[name=status]", "open")
    await page.fill("input[name=account]", "B2002")
    await page.click("form.filters button[type=submit] >> nth=0")
    await page.wait_for_url(f"{site}/billers/WATER1?status=open&account=B2002*")
    bills = await page.inner_text("#bills")
    assert "B2002" in bills and "A1001" not in bills
    await shot(page, "biller")

    before = await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id)
    await page.click("header nav a[href='/saf']")
    await page.wait_for_url(f"{site}/saf")
    assert await page.inner_text("#saf-pending") == "1"
    await page.click(f"#saf-{web_world.saf_id} button.retry")
    await page.wait_for_url(f"{site}/saf?biller=&which=pending")
    assert await db.fetchval("SELECT next_attempt_at FROM biller_outbox WHERE id = $1", web_world.saf_id) < before
    await shot(page, "saf")
    events = (await cli("audit", "list", "--actor", "web:operator", "--json")).json["events"]
    assert [(e["action"], e["entity"]) for e in events] == [("saf.retry", f"saf:{web_world.saf_id}")]

    day = settings.today().isoformat()
    await page.goto(f"/payouts?date={day}")
    assert await page.inner_text("#payouts-pending") == "2 · ¥508.00"
    listed = await page.inner_text("#payouts")
    for n in (31, 32):
        assert f"*{account_number(n)[-4:]}" in listed and account_number(n) not in await page.content()
    await shot(page, "payouts")
    async with page.expect_download() as info:
        await page.click("#payouts-csv")
    rows = list(csv.DictReader(io.StringIO(Path(await (await info.value).path()).read_text())))
    assert [(r["beneficiary"], r["amount_fen"], r["status"]) for r in rows] == [
        (mid(31), "42000", "pending"), (mid(32), "8800", "pending")]
    await page.context.close()


async def test_an_agent_opens_its_earnings_from_its_portal(chromium, money_site):  # noqa: F811 (the fixture)
    page = await open_as(chromium, money_site, "agent1")
    await page.click("#earnings-link")
    await page.wait_for_url(f"{money_site}/agents/AG01/earnings")
    assert "AG02" in await page.inner_text("#terminal-counts") and "AG03" not in await page.inner_text(
        "#terminal-counts")
    await shot(page, "earnings")
    response = await page.goto("/agents/AG03/earnings")
    assert response.status == 403
    await page.context.close()

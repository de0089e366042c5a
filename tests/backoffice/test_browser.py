"""The back office in a real browser: Playwright driving Debian's Chromium
(never a browser of Playwright's own download) against ``posgw web``'s app served
by uvicorn on a real socket, beside a real gateway on the same database, with
purchases made by the terminal simulator. One browser for the module; a fresh
context (cookies) per user.

Screenshots of the main pages are kept under tests/backoffice/artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import async_playwright
from playwright.async_api import expect as playwright_expect

from deploy.cluster import find_tool
from gateway.backoffice.app import create_app
from gateway.services import users
from tests.backoffice.conftest import PASSWORD
from tests.e2e.helpers import CARD_PAN, CARD_PIN, terminal_for

pytestmark = pytest.mark.needs_tools("chromium")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--no-first-run", "--disable-domain-reliability",
                 "--metrics-recording-only", "--disable-client-side-phishing-detection"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator:
    if find_tool("chromium") is None:  # needs_tools has skipped (or failed) each test already
        pytest.skip("chromium not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=find_tool("chromium") or CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[str]:
    """The app served by uvicorn on 127.0.0.1 (a free port) in this event loop; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def site(settings, web_settings, web_pool, web_world, gateway) -> AsyncIterator[str]:
    """The back office, reading the test gateway's /metrics for the dashboard."""
    web = web_settings.model_copy(update={
        "gateway_metrics_urls": [f"http://127.0.0.1:{gateway.metrics_port}/metrics"], "gateway_metrics_interval_s": 0})
    async with serving(create_app(settings, web, web_pool)) as url:
        yield url


@pytest.fixture
async def card(cli, world) -> str:
    result = await cli("card", "issue", CARD_PAN, "--pin", CARD_PIN, "--expiry", "3012", "--balance", "100")
    assert result.code == 0, result.stderr
    return CARD_PAN


@pytest.fixture
async def terminal(gateway, world, card):
    t = terminal_for(gateway, world)
    assert (await t.sign_on()).response_code == "00"
    yield t
    await t.close()


async def open_as(chromium, site: str, name: str, code: str = ""):
    """A new browser context (its own cookies) logged in as ``name`` through the login form."""
    context = await chromium.new_context(base_url=site, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await log_in(page, name, PASSWORD, code)
    return page


async def log_in(page, name: str, password: str, code: str = ""):
    await page.goto("/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    if code:
        await page.fill("input[name=code]", code)
    await page.click("button[type=submit]")


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_operator_sees_a_purchase_freezes_a_terminal_tops_up_and_downloads_csv(chromium, site, terminal,
                                                                                   cli):
    page = await open_as(chromium, site, "operator")
    assert page.url == f"{site}/dashboard"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["__Host-posgw_session"]  # Secure over plain http: Chromium holds 127.0.0.1 secure
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert await page.inner_text("#approvals") == "2"  # the web world's two purchases

    assert (await terminal.purchase(CARD_PAN, CARD_PIN, 2550)).response_code == "00"
    # htmx polls the figures (the CSP forbids eval, so wait with a locator, not a JavaScript predicate)
    await playwright_expect(page.locator("#approvals")).to_have_text("3", timeout=TIMEOUT_MS)
    assert "purchase" in await page.inner_text("#by-code")
    assert await page.inner_text("#gateways-up") == "1/1"
    await playwright_expect(page.locator("#p99")).to_have_text(re.compile(r"^(≤|>) [0-9.]+ ms$"), timeout=TIMEOUT_MS)
    await shot(page, "dashboard")

    await page.goto("/terminals/TERM0001")
    assert await page.inner_text("#terminal-status") == "active"
    await page.click("#freeze")
    await page.wait_for_url(f"{site}/terminals/TERM0001")
    assert await page.inner_text("#terminal-status") == "frozen"
    assert (await terminal.purchase(CARD_PAN, CARD_PIN, 100)).response_code == "58"
    await page.reload()
    await shot(page, "terminal")
    assert "58" in await page.inner_text("table.transactions")

    await page.goto("/agents/AG01")
    await page.fill("#topup-amount", "500")
    await page.click("#topup")
    await page.wait_for_url(f"{site}/agents/AG01")
    assert await page.inner_text("#float") == "¥500.00"
    assert (await cli("agent", "show", "AG01", "--json")).json["float_fen"] == 50000

    await page.goto("/terminals?status=frozen")
    async with page.expect_download() as info:
        await page.click("#terminals-csv")
    download = await info.value
    rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
    assert [(r["tid"], r["agent"], r["status"]) for r in rows] == [("TERM0001", "AG01", "frozen")]
    await page.goto("/reports/daily")
    assert await page.locator("#hourly rect").count() == 24
    await shot(page, "daily-report")
    await page.goto("/transactions?tid=TERM0001")
    await page.click("table.transactions tbody tr:last-child a")  # the oldest: the approved purchase
    assert "purchase" in await page.inner_text("#story")
    await shot(page, "story")
    events = (await cli("audit", "list", "--actor", "web:operator", "--json")).json["events"]
    assert [e["action"] for e in events] == ["terminal.freeze", "agent.topup"]
    await page.context.close()


async def test_an_agent_sees_its_portal_no_full_pan_and_403_on_another_agents_page(chromium, site, terminal):
    assert (await terminal.purchase(CARD_PAN, CARD_PIN, 1234)).response_code == "00"
    page = await open_as(chromium, site, "agent1")
    assert page.url == f"{site}/portal"
    assert "MERCHANT0000001" in await page.inner_text("#merchants")
    assert "12.34" in await page.inner_text("#merchants")
    await shot(page, "portal")

    for path in ("/agents/AG03", "/terminals/TERM0003", "/dashboard", "/users"):
        response = await page.goto(path)
        assert response.status == 403, path
    response = await page.goto("/transactions")
    assert response.status == 200
    content = await page.content()
    masked = CARD_PAN[:6] + "*" * (len(CARD_PAN) - 10) + CARD_PAN[-4:]
    assert masked in content and CARD_PAN not in content
    await page.goto("/portal")
    async with page.expect_download() as info:
        await page.click("#statement")
    rows = list(csv.reader(io.StringIO(Path(await (await info.value).path()).read_text())))
    assert rows[0][:3] == ["time", "kind", "amount_fen"]
    await page.context.close()


async def test_a_post_without_csrf_is_refused_in_the_browser(chromium, site, cli):
    page = await open_as(chromium, site, "operator")
    response = await page.request.post(f"{site}/terminals/TERM0002/status", form={"status": "frozen"})
    assert response.status == 403  # the session cookie went along; the token did not
    assert (await cli("terminal", "show", "TERM0002", "--json")).json["status"] == "active"
    await page.context.close()


async def test_a_locked_out_user_and_a_totp_login(chromium, site, cli, db, web_settings):
    context = await chromium.new_context(base_url=site)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    for _ in range(web_settings.login_failures_max):
        await log_in(page, "auditor", "not the password")
    await log_in(page, "auditor", PASSWORD)
    assert "locked" in await page.inner_text("[role=alert]")
    assert page.url == f"{site}/login"
    await shot(page, "locked")

    assert (await cli("user", "totp", "admin")).code == 0
    secret = bytes(await db.fetchval("SELECT totp_secret FROM web_users WHERE name = 'admin'"))
    await log_in(page, "admin", PASSWORD)
    assert page.url == f"{site}/login"
    await log_in(page, "admin", PASSWORD, users.totp(secret, time.time()))
    assert page.url == f"{site}/dashboard"
    await context.close()

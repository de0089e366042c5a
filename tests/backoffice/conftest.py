"""Fixtures of the back office tests: a world of two agent trees, a user of each
role, and the back office's ASGI app over the test database.

The world: AG01 (the ``world`` fixture's agent, with MERCHANT0000001 and
TERM0001) and its sub-agent AG02 (MERCHANT0000002, TERM0002); AG03, another
top-level agent (MERCHANT0000003, TERM0003). STOCK001 is in AG01's stock. Users: admin, operator, auditor,
agent1 (agent AG01) and agent3 (agent AG03), each with the password ``PASSWORD``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.backoffice.app import create_app
from gateway.backoffice.settings import WebSettings
from gateway.services import users
from gateway.upstream import outbox
from tests.conftest import TEST_TMK

PASSWORD = "correct horse battery"
USERS = {"admin": ("admin", None), "operator": ("operator", None), "auditor": ("auditor", None),
         "agent1": ("agent", "AG01"), "agent3": ("agent", "AG03")}
ROLE_USER = {"admin": "admin", "operator": "operator", "auditor": "auditor", "agent": "agent1"}
BASE_URL = "https://testserver"  # https: the session cookie is Secure, and httpx keeps Secure cookies to https only
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run this directory's tests that use an in-process gateway after all the others.

    The gateway's Prometheus counters are process-global, and
    tests/deploy/test_dashboard.py waits for the sign-on counter of a process in
    which no terminal has signed on yet (``== 1``); this directory sorts before
    tests/deploy, and its browser and dashboard tests sign terminals on."""
    here = Path(__file__).resolve().parent
    ours = [item for item in items
            if here in Path(str(item.path)).resolve().parents and "gateway" in getattr(item, "fixturenames", ())]
    if ours:
        chosen = set(map(id, ours))
        items[:] = [item for item in items if id(item) not in chosen] + ours


@dataclass
class WebWorld:
    tids: dict[str, str]  # agent code -> its terminal
    mids: dict[str, str]
    txn_ids: dict[str, int]  # terminal -> the id of its one approved purchase
    saf_id: int = 0  # a pending store-and-forward message of EPOWER


async def add_purchase(db: asyncpg.Connection, tid: str, stan: str, pan_masked: str, amount_fen: int) -> int:
    """A card (known only masked) and an approved purchase at the terminal, as the engine records them."""
    account = await db.fetchval("INSERT INTO ledger_accounts (kind, code) VALUES ('card', $1) RETURNING id",
                                f"card:test:{stan}")
    card = await db.fetchval(
        """INSERT INTO cards (pan_hash, pan_lmk, pan_masked, pvv, expiry, account_id)
           VALUES ($1, '\\x02', $2, '\\x03', '3012', $3) RETURNING id""", stan.encode(), pan_masked, account)
    return await db.fetchval(
        """INSERT INTO gw_transactions (tid, batch, stan, mti_class, kind, content_hash, response, response_code,
                                        status, amount_fen, card_id, rrn, local_date)
           VALUES ($1, 1, $2, '02', 'purchase', 'x', '{"auth_id": "010101"}', '00', 'approved', $3, $4, $5, '1208')
           RETURNING id""", tid, stan, amount_fen, card, f"000000{stan}")


@pytest.fixture
async def web_world(cli, world, db: asyncpg.Connection) -> WebWorld:
    for argv in (
        ("agent", "add", "AG02", "--name", "Sub Agent", "--parent", "AG01"),
        ("merchant", "add", "MERCHANT0000002", "--name", "Sub Shop", "--agent", "AG02"),
        ("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000002", "--tmk", TEST_TMK.hex()),
        ("agent", "add", "AG03", "--name", "Other Agent"),
        ("merchant", "add", "MERCHANT0000003", "--name", "Other Shop", "--agent", "AG03"),
        ("terminal", "add", "TERM0003", "--merchant", "MERCHANT0000003", "--tmk", TEST_TMK.hex()),
        ("terminal", "add", "STOCK001", "--agent", "AG01", "--tmk", TEST_TMK.hex()),  # in stock, no merchant
        ("biller", "add", "EPOWER", "--name", "Electric Power"),
    ):
        result = await cli(*argv)
        assert result.code == 0, result.stderr
    password_hash = await users.hash_password(PASSWORD)  # hashed once: argon2 is slow on purpose
    await db.executemany("INSERT INTO web_users (name, role, agent_code, password_hash) VALUES ($1, $2, $3, $4)",
                         [(name, role, agent, password_hash) for name, (role, agent) in USERS.items()])
    txn_ids = {"TERM0002": await add_purchase(db, "TERM0002", "000102", "622202******1111", 1500),
               "TERM0003": await add_purchase(db, "TERM0003", "000103", "622202******3333", 3300)}
    saf_id = await outbox.enqueue(db, "EPOWER", "cancel", "RCPT00000001", {"reason": "test"}, delay_s=3600)
    return WebWorld({"AG01": "TERM0001", "AG02": "TERM0002", "AG03": "TERM0003"},
                    {"AG01": "MERCHANT0000001", "AG02": "MERCHANT0000002", "AG03": "MERCHANT0000003"}, txn_ids, saf_id)


@pytest.fixture
def web_settings() -> WebSettings:
    # no gateway's /metrics unless a test names one (the default port may be another process's)
    return WebSettings(login_failures_max=3, lockout_s=600, login_attempts_per_minute=1000, dashboard_poll_s=1,
                       gateway_metrics_urls=[], dashboard_cache_s=0)


@pytest.fixture
async def web_pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def web_app(settings, web_settings, web_pool):
    return create_app(settings, web_settings, web_pool)


class Browser:
    """An httpx client on the app, keeping cookies like a browser, and the page's CSRF token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf: str | None = None

    async def get(self, path: str, **kwargs) -> httpx.Response:
        response = await self.client.get(path, **kwargs)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True, **kwargs) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data["csrf"] = self.csrf or ""
        return await self.client.post(path, data=data, **kwargs)

    async def log_in(self, name: str, password: str = PASSWORD, code: str = "") -> httpx.Response:
        await self.get("/login")
        return await self.post("/login", {"name": name, "password": password, "code": code})


@pytest.fixture
async def browse(web_app) -> AsyncIterator:
    """``await browse()``: a new, logged-out browser; ``await browse("admin")``: logged in as admin."""
    clients: list[httpx.AsyncClient] = []

    async def open_browser(name: str | None = None) -> Browser:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=web_app), base_url=BASE_URL)
        clients.append(client)
        browser = Browser(client)
        if name is not None:
            response = await browser.log_in(name)
            assert response.status_code == 303, response.text
            await browser.get("/")  # a page, for its CSRF token
            await browser.get(response.headers["location"], follow_redirects=True)
        return browser

    yield open_browser
    for client in clients:
        await client.aclose()

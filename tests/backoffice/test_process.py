"""``posgw web`` as a real process (as ``make run`` starts it): the demo admin and
its password printed once, /healthz, a login over a real socket; and the
filters' inputs as properties (whatever a person types: a filter or a 400,
never a crash)."""

from __future__ import annotations

import asyncio
import re
import urllib.parse

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backoffice import queries
from gateway.domain.validate import InvalidInput
from tests.backoffice.conftest import add_purchase
from tests.e2e.test_processes import BIN, env_for, free_port


async def start_web(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "posgw"), "--actor", "test:make-run", "web", "--demo-admin", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def stop(process: asyncio.subprocess.Process) -> int:
    process.terminate()
    return await asyncio.wait_for(process.wait(), 15)


async def healthy(client: httpx.AsyncClient) -> None:
    for _ in range(150):
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("posgw web never answered /healthz")


@pytest.mark.slow
async def test_posgw_web_prints_the_demo_admin_password_once_and_lets_it_log_in(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    port = free_port()
    web = await start_web(env, port)
    try:
        first = (await asyncio.wait_for(web.stdout.readline(), 30)).decode()
        password = re.fullmatch(r"back office: user admin, password (\S+) \(shown this once\)\n", first).group(1)
        assert (await asyncio.wait_for(web.stdout.readline(), 30)).decode() == (
            f"back office: open http://127.0.0.1:{port}/\n")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await healthy(client)
            form = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            # httpx keeps Secure cookies for https only: the login form's cookie is sent by hand, as a browser would
            login_cookie = form.headers["set-cookie"].split(";")[0]
            response = await client.post("/login", content=urllib.parse.urlencode(
                {"csrf": csrf, "name": "admin", "password": password}),
                headers={"cookie": login_cookie, "content-type": "application/x-www-form-urlencoded"})
            assert response.status_code == 303, response.text
            session_cookie = response.headers["set-cookie"].split(";")[0]
            assert session_cookie.startswith("__Host-posgw_session=")
            page = await client.get("/dashboard", headers={"cookie": session_cookie})
            assert page.status_code == 200 and "Approvals" in page.text
            assert 'posgw_web_logins_total{result="ok"} 1.0' in (await client.get("/metrics")).text
    finally:
        assert await stop(web) == 0
    web = await start_web(env, port)  # again: the admin exists, no password is printed
    try:
        assert (await asyncio.wait_for(web.stdout.readline(), 30)).decode().startswith("back office: open ")
    finally:
        await stop(web)


# -- the filters' inputs as properties ------------------------------------------------------------

ANY_TEXT = st.one_of(st.none(), st.text(max_size=40), st.from_regex(r"\d{0,14}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"tid": ANY_TEXT, "rrn": ANY_TEXT, "stan": ANY_TEXT, "date": ANY_TEXT,
                              "last4": ANY_TEXT}))
def test_any_transaction_filter_input_is_a_filter_or_invalid_input(params):
    try:
        where = queries.TransactionFilter.parse(params)
    except InvalidInput:
        return
    assert where.rrn is None or (len(where.rrn) == 12 and where.rrn.isdigit())
    assert where.stan is None or (len(where.stan) == 6 and where.stan.isdigit())
    assert where.last4 is None or (len(where.last4) == 4 and where.last4.isdigit())
    assert where.tid is None or (len(where.tid) <= 8 and where.tid.isascii() and where.tid.isprintable())
    assert queries.TransactionFilter.parse(dict(urllib.parse.parse_qsl(where.query_string()))) == where


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"q": ANY_TEXT, "status": ANY_TEXT, "agent": ANY_TEXT}))
def test_any_terminal_filter_input_is_a_filter_or_invalid_input(params):
    try:
        where = queries.TerminalFilter.parse(params)
    except InvalidInput:
        return
    assert where.status in (None, "active", "frozen")
    assert where.q is None or (0 < len(where.q) <= 15 and " " not in where.q)


@pytest.mark.parametrize("query, rows", [
    ({}, 3), ({"last4": "0072"}, 1), ({"last4": "0000"}, 0), ({"stan": "000009"}, 1), ({"stan": "000001"}, 0),
    ({"tid": "TERM0003"}, 1), ({"tid": "TERM0001", "last4": "1111"}, 0), ({"date": "2000-01-01"}, 0),
    ({"rrn": "000000000009"}, 1), ({"rrn": "1" * 12}, 0)])
async def test_transaction_filters_narrow_the_rows(web_world, browse, db, query, rows):
    await add_purchase(db, "TERM0001", "000009", "622202******0072", 100)
    auditor = await browse("auditor")
    response = await auditor.get("/transactions.csv", params=query)
    assert response.status_code == 200
    assert len(response.text.splitlines()) == 1 + rows


@pytest.mark.parametrize("query", [{"rrn": "12"}, {"stan": "abcdef"}, {"date": "2026-13-01"}, {"last4": "12345"},
                                   {"tid": "x" * 9}, {"status": "melted"}])
async def test_bad_filter_input_is_400(web_world, browse, query):
    auditor = await browse("auditor")
    path = "/terminals" if "status" in query else "/transactions"
    assert (await auditor.get(path, params=query)).status_code == 400

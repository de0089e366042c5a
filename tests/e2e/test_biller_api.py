"""The biller API served by ``posgw web`` (CLI.md "The back office"): a utility
redeems a voucher with its bearer key; every status of CLI.md, and ten
concurrent redemptions of one voucher giving one token."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from gateway.backoffice.app import create_app
from gateway.backoffice.settings import WebSettings
from sim import counter
from sim.terminal import bill_fields
from tests.e2e.helpers import terminal_for

URL = "/api/biller/v1/vouchers/redeem"


@pytest.fixture
async def api(settings, db_url, cli, world):
    for argv in (
        ("biller", "add", "PRE01", "--name", "Prepaid Power", "--prepaid", "--commission-bp", "100"),
        ("biller", "add", "PRE02", "--name", "Other Power", "--prepaid"),
        ("meter", "add", "PRE01", "M0001", "--name", "王五"),
        ("meter", "add", "PRE02", "N0001", "--name", "赵六"),
        ("biller", "set", "PRE01", "--voucher-values", "50"),
        ("agent", "topup", "AG01", "500"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.stderr)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=12)
    app = create_app(settings, WebSettings(), pool)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")
    yield client
    await client.aclose()
    await pool.close()


@pytest.fixture
async def voucher(gateway, world, api) -> dict[str, str]:
    terminal = terminal_for(gateway, world)
    try:
        assert (await terminal.sign_on()).response_code == "00"
        response = await counter.voucher_sale(terminal, "PRE01", 5000)
        assert response.response_code == "00"
        return bill_fields(response)
    finally:
        await terminal.close()


async def api_key(cli, code: str) -> str:
    issued = await cli("biller", "apikey", code, "--json")
    assert issued.code == 0, issued.stderr
    return issued.json["api_key"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_the_api_answers_each_status_of_cli_md(api, voucher, cli, db):
    key = await api_key(cli, "PRE01")
    body = {"serial": voucher["VS"], "pin": voucher["VP"], "meter": "M0001"}
    assert (await api.post(URL, json=body)).status_code == 401
    unauthorised = await api.post(URL, json=body, headers=bearer("not-a-key"))
    assert unauthorised.status_code == 401 and unauthorised.json() == {"error": "bad API key"}
    # The key is kept hashed, never as printed.
    assert key not in str(await db.fetch("SELECT * FROM billers"))
    assert (await api.post(URL, json={"serial": voucher["VS"]}, headers=bearer(key))).status_code == 400
    unknown = await api.post(URL, json=body | {"serial": "000000000000"}, headers=bearer(key))
    assert unknown.status_code == 404 and "unknown voucher" in unknown.json()["error"]
    wrong = await api.post(URL, json=body | {"pin": "1" * 16}, headers=bearer(key))
    assert wrong.status_code == 422 and "wrong PIN" in wrong.json()["error"]
    meter = await api.post(URL, json=body | {"meter": "N0001"}, headers=bearer(key))  # another biller's meter
    assert meter.status_code == 404 and "unknown meter" in meter.json()["error"]
    other_biller = await api.post(URL, json=body, headers=bearer(await api_key(cli, "PRE02")))
    assert other_biller.status_code == 404  # a voucher of another biller is unknown to it
    redeemed = await api.post(URL, json=body, headers=bearer(key))
    assert redeemed.status_code == 200, redeemed.text
    token = redeemed.json()["token"]
    assert redeemed.json() == {"token": token, "amount_fen": 5000, "meter": "M0001"}
    again = await api.post(URL, json=body, headers=bearer(key))
    assert again.status_code == 200 and again.json()["token"] == token
    not_valid = await api.post(URL, json=body | {"meter": "M0002"}, headers=bearer(key))
    assert not_valid.status_code == 409 and not_valid.json() == {"error": f"voucher {voucher['VS']} is redeemed"}


async def test_a_new_key_retires_the_old_one(api, voucher, cli):
    old = await api_key(cli, "PRE01")
    new = await api_key(cli, "PRE01")
    body = {"serial": voucher["VS"], "pin": voucher["VP"], "meter": "M0001"}
    assert (await api.post(URL, json=body, headers=bearer(old))).status_code == 401
    assert (await api.post(URL, json=body, headers=bearer(new))).status_code == 200
    events = (await cli("audit", "list", "--entity", "biller:PRE01", "--json")).json["events"]
    assert [e["action"] for e in events] == ["biller.add", "biller.set"]  # API keys are never audited


async def test_the_fifth_wrong_pin_is_422_then_409(api, voucher, cli):
    key = await api_key(cli, "PRE01")
    body = {"serial": voucher["VS"], "pin": "2" * 16, "meter": "M0001"}
    statuses = [(await api.post(URL, json=body, headers=bearer(key))).status_code for _ in range(6)]
    assert statuses == [422] * 5 + [409]
    right = await api.post(URL, json=body | {"pin": voucher["VP"]}, headers=bearer(key))
    assert right.status_code == 409 and "blocked" in right.json()["error"]


async def test_ten_concurrent_redemptions_over_the_api_give_one_token(api, voucher, cli, db):
    key = await api_key(cli, "PRE01")
    for n in range(2, 11):
        assert (await cli("meter", "add", "PRE01", f"M{n:04d}", "--name", "x")).code == 0
    bodies = [{"serial": voucher["VS"], "pin": voucher["VP"], "meter": f"M{n:04d}"} for n in range(1, 11)]
    answers = await asyncio.gather(*(api.post(URL, json=body, headers=bearer(key)) for body in bodies))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 9
    assert await db.fetchval("SELECT count(*) FROM tokens") == 1
    winner = next(body for body, answer in zip(bodies, answers, strict=True) if answer.status_code == 200)
    token = next(a.json()["token"] for a in answers if a.status_code == 200)
    same = await asyncio.gather(*(api.post(URL, json=winner, headers=bearer(key)) for _ in range(10)))
    assert {a.status_code for a in same} == {200} and {a.json()["token"] for a in same} == {token}

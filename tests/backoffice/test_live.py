"""The dashboard's figures from the gateways' /metrics: parsing, the p99 bucket of
what happened between two readings, and a real gateway's purchases seen as
throughput and latency."""

from __future__ import annotations

import asyncio
import math
import re

import httpx

from gateway.backoffice.app import create_app
from gateway.backoffice.live import GatewayFigures, Shared, p99_bound_s, p99_text, parse
from tests.backoffice.conftest import BASE_URL, PASSWORD, Browser, add_purchase
from tests.e2e.helpers import CARD_PAN, CARD_PIN, terminal_for

METRICS = """# HELP posgw_requests_total Requests answered
# TYPE posgw_requests_total counter
posgw_requests_total{mti="0200",kind="purchase",response_code="00"} 7.0
posgw_requests_total{mti="0200",kind="balance",response_code="00"} 3.0
# HELP posgw_request_latency_seconds Time from a whole frame to its response bytes
# TYPE posgw_request_latency_seconds histogram
posgw_request_latency_seconds_bucket{kind="purchase",le="0.001"} 1.0
posgw_request_latency_seconds_bucket{kind="purchase",le="0.005"} 6.0
posgw_request_latency_seconds_bucket{kind="purchase",le="+Inf"} 7.0
posgw_request_latency_seconds_count{kind="purchase"} 7.0
posgw_request_latency_seconds_sum{kind="purchase"} 0.02
posgw_request_latency_seconds_bucket{kind="balance",le="0.001"} 3.0
posgw_request_latency_seconds_bucket{kind="balance",le="0.005"} 3.0
posgw_request_latency_seconds_bucket{kind="balance",le="+Inf"} 3.0
posgw_request_latency_seconds_count{kind="balance"} 3.0
posgw_request_latency_seconds_sum{kind="balance"} 0.001
"""


def test_a_reading_sums_requests_and_buckets_over_labels():
    reading = parse(METRICS, 12.5)
    assert reading.requests == 10.0
    assert reading.buckets == {0.001: 4.0, 0.005: 9.0, math.inf: 10.0}


def test_the_p99_is_the_bucket_of_what_happened_between_two_readings():
    before = {0.001: 4.0, 0.005: 9.0, math.inf: 10.0}
    assert p99_bound_s(before, {0.001: 104.0, 0.005: 209.0, math.inf: 210.0}) == 0.005  # 100 fast, 100 slower
    assert p99_bound_s(before, {0.001: 104.0, 0.005: 108.0, math.inf: 110.0}) == 0.001  # 99 of 100 fast
    assert p99_bound_s(before, {0.001: 4.0, 0.005: 9.0, math.inf: 12.0}) == math.inf
    assert p99_bound_s(before, before) is None
    assert p99_text(0.005, before) == "≤ 5 ms" and p99_text(math.inf, before) == "> 5 ms"


async def test_an_unreachable_gateway_is_down_and_adds_nothing():
    figures = GatewayFigures(["http://127.0.0.1:9/metrics"], interval_s=0, timeout_s=0.5)
    assert await figures.figures() == {"gateways": 1, "up": 0, "throughput_per_s": None, "p99": None}


async def test_the_dashboard_shows_a_real_gateways_throughput_and_p99(web_world, gateway, world, cli, settings,
                                                                      web_settings, web_pool):
    assert (await cli("card", "issue", CARD_PAN, "--pin", CARD_PIN, "--expiry", "3012", "--balance", "100")).code == 0
    web = web_settings.model_copy(update={
        "gateway_metrics_urls": [f"http://127.0.0.1:{gateway.metrics_port}/metrics", "http://127.0.0.1:9/metrics"],
        "gateway_metrics_interval_s": 0})
    app = create_app(settings, web, web_pool)
    terminal = terminal_for(gateway, world)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        browser = Browser(client)
        assert (await browser.log_in("operator", PASSWORD)).status_code == 303
        first = (await client.get("/dashboard/figures")).text
        assert 'id="gateways-up">1/2<' in first and 'id="throughput">…<' in first
        assert (await terminal.sign_on()).response_code == "00"
        for _ in range(5):
            assert (await terminal.purchase(CARD_PAN, CARD_PIN, 100)).response_code == "00"
        await asyncio.sleep(0.2)
        second = (await client.get("/dashboard/figures")).text
    await terminal.close()
    throughput = float(re.search(r'id="throughput">([0-9.]+)/s<', second).group(1))
    assert throughput > 0
    assert re.search(r'id="p99">(≤|&gt;) [0-9.]+ ms<', second)


async def test_shared_figures_are_computed_once_per_interval_and_again_when_the_day_turns():
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    shared = Shared(interval_s=60)
    assert [await shared.get("2026-12-08", compute) for _ in range(20)] == [1] * 20
    assert await shared.get("2026-12-09", compute) == 2
    always = Shared(interval_s=0)
    assert [await always.get("d", compute) for _ in range(3)] == [3, 4, 5]


async def test_twenty_viewers_of_the_dashboard_cost_the_database_one_read(web_world, settings, web_settings,
                                                                           web_pool, db):
    app = create_app(settings, web_settings.model_copy(update={"dashboard_cache_s": 60}), web_pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        browser = Browser(client)
        assert (await browser.log_in("auditor", PASSWORD)).status_code == 303
        first = (await client.get("/dashboard/figures")).text
        await add_purchase(db, "TERM0001", "000301", "622202******4444", 100)
        pages = await asyncio.gather(*(client.get("/dashboard/figures") for _ in range(20)))
    assert all(page.text == first for page in pages)  # the same figures, not read again
    assert 'id="approvals">2<' in first

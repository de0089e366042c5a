"""The HTTP connector against the biller simulator on a real socket: kept
connections, a connection limit, timeouts that hold no thread, the answers'
meanings, idempotence by receipt, and the simulator's faults."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import date

import httpx
import pytest

from gateway.upstream.billers import (
    AmountNotAccepted,
    Biller,
    BillerUnavailable,
    BillNotFound,
    Connectors,
    HttpConnector,
    PaymentOrder,
)
from sim.biller import BillerSimulator


def biller_at(url: str | None, code: str = "SIM01", prepaid: bool = True) -> Biller:
    return Biller(code, "Simulated", prepaid, False, 0, 0, "http", url, 1)


@pytest.fixture
async def connector():
    http = HttpConnector(socket_timeout_s=2.0, connections_max=4)
    yield http
    await http.close()


async def test_sequential_calls_share_one_kept_connection(biller_sim, connector):
    biller = biller_at(biller_sim.url)
    for n in range(20):
        await connector.pay(biller, PaymentOrder("M1", None, 100 + n, f"{n:012d}"))
        await connector.inquire(biller, "M1")
    assert biller_sim.connections == 1
    assert biller_sim.requests == {"pay": 20, "inquire": 20}


async def test_concurrent_calls_open_no_more_connections_than_the_limit(biller_sim, connector):
    biller_sim.faults.delay_s = 0.05
    biller = biller_at(biller_sim.url)
    await asyncio.gather(*(connector.pay(biller, PaymentOrder("M1", None, 100, f"{n:012d}")) for n in range(40)))
    assert biller_sim.connections == 4  # connections_max, each reused for ten calls
    assert len(biller_sim.paid_receipts()) == 40


async def test_each_biller_has_its_own_client(connector):
    first, second = BillerSimulator(), BillerSimulator()
    await first.start()
    await second.start()
    try:
        await connector.inquire(biller_at(first.url, "ONE"), "A")
        await connector.inquire(biller_at(second.url, "TWO"), "A")
        await connector.inquire(biller_at(first.url, "ONE"), "B")
        assert (first.connections, second.connections) == (1, 1)
        assert connector.client(biller_at(first.url, "ONE")) is not connector.client(biller_at(second.url, "TWO"))
    finally:
        await first.stop()
        await second.stop()


async def test_a_timed_out_call_holds_no_thread_and_is_91(biller_sim):
    biller_sim.faults.delay_s = 3.0
    connectors = Connectors(None, timeout_s=0.3, connections_max=50)  # type: ignore[arg-type]  # no builtin calls
    biller = biller_at(biller_sim.url)
    threads_before = threading.active_count()
    started = time.monotonic()
    calls = [asyncio.create_task(connectors.call(connectors[biller].pay(
        biller, PaymentOrder("M1", None, 100, f"{n:012d}")))) for n in range(30)]
    await asyncio.sleep(0.1)
    threads_during = threading.active_count()
    results = await asyncio.gather(*calls, return_exceptions=True)
    elapsed_s = time.monotonic() - started
    assert all(isinstance(r, BillerUnavailable) for r in results), results
    assert elapsed_s < 3.0  # all 30 gave up at their time limit, together (one after another: 9 s)
    assert threads_during == threads_before  # no thread per call
    assert threading.active_count() == threads_before
    await connectors.close()


@pytest.mark.parametrize("status, error", [(404, BillNotFound), (422, AmountNotAccepted)])
async def test_answers_map_to_the_connector_errors(status, error):
    sim = BillerSimulator(exact=True, bills={"A1": 5000})
    await sim.start()
    http = HttpConnector(2.0)
    try:
        biller = biller_at(sim.url, prepaid=False)
        assert (await http.inquire(biller, "A1")).amount_fen == 5000
        with pytest.raises(error):
            if status == 404:
                await http.pay(biller, PaymentOrder("NOBODY", None, 5000, "000000000001"))
            else:
                await http.pay(biller, PaymentOrder("A1", "RA1", 4999, "000000000001"))
        assert sim.book == {}
    finally:
        await http.close()
        await sim.stop()


async def test_a_repeated_pay_answers_as_the_first_and_a_cancel_bars_a_late_pay(biller_sim, connector):
    biller = biller_at(biller_sim.url)
    first = await connector.pay(biller, PaymentOrder("M1", None, 2500, "000000000007"))
    again = await connector.pay(biller, PaymentOrder("M1", None, 2500, "000000000007"))
    assert first == again and len(first.token) == 20
    assert biller_sim.state()["paid_fen"] == 2500
    await connector.cancel(biller, "000000000007")
    await connector.cancel(biller, "000000000007")  # idempotent
    await connector.cancel(biller, "000000000008")  # never paid: barred
    with pytest.raises(BillerUnavailable, match="409"):
        await connector.pay(biller, PaymentOrder("M1", None, 100, "000000000008"))
    book = await connector.payments(biller, date.fromisoformat(biller_sim.today()))
    assert [(p.receipt, p.amount_fen, p.status) for p in book] == [("000000000007", 2500, "cancelled")]


async def test_a_pay_that_fails_after_the_accept_is_unavailable_yet_booked_at_the_biller(biller_sim, connector):
    biller_sim.faults.fail_after_accept = 1
    biller = biller_at(biller_sim.url)
    with pytest.raises(BillerUnavailable):
        await connector.pay(biller, PaymentOrder("M1", None, 900, "000000000009"))
    assert biller_sim.paid_receipts() == {"000000000009"}  # what the outbox's cancel is for
    biller_sim.faults.drop = 1
    with pytest.raises(BillerUnavailable):
        await connector.pay(biller, PaymentOrder("M1", None, 900, "000000000010"))
    assert biller_sim.paid_receipts() == {"000000000009"}  # dropped before it was read: nothing booked


async def test_a_biller_down_for_a_while_comes_back_by_itself(biller_sim, connector):
    biller = biller_at(biller_sim.url)
    await connector.inquire(biller, "M1")
    await biller_sim.go_down(1.0)
    with pytest.raises(BillerUnavailable):  # the kept connection was dropped under the call
        await connector.inquire(biller, "M1")
    with pytest.raises(BillerUnavailable, match="ConnectError"):  # the port is closed
        await connector.inquire(biller, "M1")
    await asyncio.sleep(1.5)
    assert (await connector.inquire(biller, "M1")).name == "Customer M1"


async def test_the_control_endpoint_sets_faults_at_run_time(biller_sim):
    async with httpx.AsyncClient(base_url=biller_sim.url) as client:
        state = (await client.post("/control", json={"delay_s": 0.2, "drop": 2, "payments": [
            {"receipt": "000000000099", "account": "M9", "amount_fen": 300}]})).json()
        assert state["faults"] == {"delay_s": 0.2, "drop": 2, "fail_after_accept": 0, "down_s": 0.0}
        assert biller_sim.paid_receipts() == {"000000000099"}
        assert (await client.post("/control", json={"nonsense": 1})).status_code == 400
        await client.post("/control", json={"down_s": 0.5})
    await asyncio.sleep(0.1)
    assert biller_sim.down
    await asyncio.sleep(1.0)
    assert not biller_sim.down


async def test_the_simulator_runs_as_a_program(tmp_path):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sim.biller", "--port", "0", "--prepaid",
                                                stdout=asyncio.subprocess.PIPE)
    try:
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        http = HttpConnector(2.0)
        accepted = await http.pay(biller_at(line["listening"]), PaymentOrder("M1", None, 100, "000000000001"))
        assert len(accepted.token) == 20
        await http.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0

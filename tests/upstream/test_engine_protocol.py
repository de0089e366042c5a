"""The calls the engine is to make around a bill payment (gateway.upstream.outbox's
"intent before the call"), played here step by step over real PostgreSQL and the
biller simulator: after each path, every payment the biller accepted either
stands here or has a cancel the biller acknowledged."""

from __future__ import annotations

import asyncio

import pytest

from gateway.upstream import outbox
from gateway.upstream.billers import Biller, BillerUnavailable, HttpConnector, PaymentOrder
from tests.upstream.conftest import BILLER

IN_FLIGHT_S = 1.5  # the armed cancel's delay: longer than a payment may take (the engine: request_timeout_s)


@pytest.fixture
async def connector():
    http = HttpConnector(socket_timeout_s=1.0)
    yield http
    await http.close()


async def pay_with_intent(db, connector, biller_sim, receipt: str, amount_fen: int):
    """Step 1 (its own transaction, committed before the call): the intent. Step 2: the call."""
    async with db.transaction():
        await outbox.arm_cancel(db, BILLER, receipt, after_s=IN_FLIGHT_S)
    biller = Biller(BILLER, "Simulated", True, False, 0, 0, "http", biller_sim.url, 1)
    return await connector.pay(biller, PaymentOrder("M0001", None, amount_fen, receipt))


async def test_a_payment_that_stands_disarms_its_cancel_with_the_money(db, http_biller, biller_sim, connector,
                                                                       forwarders):
    await pay_with_intent(db, connector, biller_sim, "000000000101", 1000)
    async with db.transaction():  # the money's transaction (gw_finish) disarms in the same commit
        assert await outbox.disarm_cancel(db, BILLER, "000000000101")
    await asyncio.sleep(IN_FLIGHT_S)
    assert await (await forwarders.make()).run_once() == 0
    assert biller_sim.paid_receipts() == {"000000000101"}
    # Its reversal, later: the cancel is queued in the reversal's transaction and delivered.
    async with db.transaction():
        await outbox.enqueue(db, BILLER, "cancel", "000000000101", {"reason": "reversed"})
    assert await (await forwarders.make()).run_once() == 1
    assert biller_sim.paid_receipts() == set()


async def test_a_pay_that_times_out_after_the_biller_accepted_is_cancelled_there(db, http_biller, biller_sim,
                                                                                 connector, forwarders):
    biller_sim.faults.fail_after_accept = 1
    with pytest.raises(BillerUnavailable):
        await pay_with_intent(db, connector, biller_sim, "000000000102", 2000)
    assert biller_sim.paid_receipts() == {"000000000102"}
    async with db.transaction():  # the 91 is recorded; the armed cancel becomes due now
        await outbox.enqueue(db, BILLER, "cancel", "000000000102", {"reason": "outcome_unknown"})
    assert await (await forwarders.make()).run_once() == 1
    assert biller_sim.paid_receipts() == set()
    # The terminal's reversal of the 91 queues the same cancel: already done, nothing is sent again.
    await outbox.enqueue(db, BILLER, "cancel", "000000000102")
    assert await (await forwarders.make()).run_once() == 0
    assert biller_sim.calls[("cancel", "000000000102")] == 1


async def test_a_gateway_killed_between_the_accept_and_the_commit_leaves_a_cancel_that_goes(db, http_biller,
                                                                                           biller_sim, connector,
                                                                                           forwarders):
    await pay_with_intent(db, connector, biller_sim, "000000000103", 3000)
    # ... killed here: no money, no disarm. Another gateway's forwarder, once the payment's time is up:
    forwarder = await forwarders.make()
    assert await forwarder.run_once() == 0  # not before
    await asyncio.sleep(IN_FLIGHT_S)
    assert await forwarder.run_once() == 1
    assert biller_sim.paid_receipts() == set()
    async with db.transaction():  # a commit that comes too late finds its cancel gone and must not stand
        assert not await outbox.disarm_cancel(db, BILLER, "000000000103")


async def test_a_payment_declined_after_the_accept_has_its_cancel_sent_at_once(db, http_biller, biller_sim,
                                                                                connector, forwarders):
    await pay_with_intent(db, connector, biller_sim, "000000000104", 4000)
    async with db.transaction():  # 51: the decline is recorded with its cancel due now
        await outbox.enqueue(db, BILLER, "cancel", "000000000104", {"reason": "declined_51"})
    assert await (await forwarders.make()).run_once() == 1
    assert biller_sim.paid_receipts() == set()
    assert [m.status for m in await outbox.list_messages(db, include_done=True)] == ["done"]

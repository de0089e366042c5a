"""The biller outbox over real PostgreSQL and the forwarder against the biller
simulator on a real socket: queued with the money, sent until acknowledged,
once at a time across gateways, with a capped backoff, surviving restarts."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import structlog
from prometheus_client import REGISTRY

from gateway.settings import Settings
from gateway.upstream import outbox
from gateway.upstream.outbox import ForwarderSettings, backoff_s
from tests.upstream.conftest import BILLER

RECEIPTS = [f"{n:012d}" for n in range(100001, 100041)]


async def wait_until_done(pool, count: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT count(*) FROM biller_outbox WHERE status = 'done'") == count:
            return
        await asyncio.sleep(0.05)
    rows = await pool.fetch("SELECT id, status, attempts, last_error FROM biller_outbox ORDER BY id")
    raise AssertionError(f"not all {count} messages done in {timeout_s} s: {[dict(r) for r in rows]}")


def cancels_at_biller(sim) -> dict[str, int]:
    return {receipt: count for (op, receipt), count in sim.calls.items() if op == "cancel"}


@pytest.mark.parametrize("attempts, expected_s", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 256.0), (10, 300.0),
                                                  (11, 300.0), (10_000, 300.0)])
def test_backoff_doubles_from_the_base_and_is_capped(attempts, expected_s):
    assert backoff_s(attempts, 1.0, 300.0) == expected_s


async def test_enqueue_commits_with_its_transaction_or_not_at_all_and_is_idempotent(db, http_biller):
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await outbox.enqueue(db, BILLER, "cancel", "000000000001")
            raise RuntimeError("the money did not move")
    assert await db.fetchval("SELECT count(*) FROM biller_outbox") == 0
    async with db.transaction():
        first = await outbox.enqueue(db, BILLER, "cancel", "000000000001", {"reason": "reversed"})
    again = await outbox.enqueue(db, BILLER, "cancel", "000000000001")
    notice = await outbox.enqueue(db, BILLER, "notice", "000000000001")
    assert again == first and notice != first
    messages = await outbox.list_messages(db)
    assert [(m.id, m.kind, m.receipt, m.status, m.attempts, m.payload) for m in messages] == [
        (first, "cancel", "000000000001", "pending", 0, {"reason": "reversed"}),
        (notice, "notice", "000000000001", "pending", 0, {})]
    with pytest.raises(ValueError):
        await outbox.enqueue(db, BILLER, "refund", "000000000001")


async def test_queuing_an_armed_cancel_again_makes_it_due_now(db, http_biller):
    armed = await outbox.arm_cancel(db, BILLER, "000000000002", after_s=600)
    delay = await db.fetchval("SELECT extract(epoch FROM next_attempt_at - clock_timestamp()) FROM biller_outbox")
    assert 590 < delay <= 600
    assert await outbox.enqueue(db, BILLER, "cancel", "000000000002") == armed
    assert await db.fetchval("SELECT next_attempt_at <= clock_timestamp() FROM biller_outbox WHERE id = $1", armed)


async def test_a_payment_that_stands_disarms_its_cancel_unless_a_forwarder_took_it(db, pool, http_biller,
                                                                                   biller_sim, forwarders):
    await outbox.arm_cancel(db, BILLER, "000000000003", after_s=600)
    async with db.transaction():
        assert await outbox.disarm_cancel(db, BILLER, "000000000003") is True
    assert await outbox.list_messages(db, include_done=True) == []
    # Armed, then due (the payment's time ran out): a forwarder sends it, and the late commit must not stand.
    await outbox.arm_cancel(db, BILLER, "000000000004", after_s=0)
    forwarder = await forwarders.make()
    assert await forwarder.run_once() == 1
    async with db.transaction():
        assert await outbox.disarm_cancel(db, BILLER, "000000000004") is False
    assert cancels_at_biller(biller_sim) == {"000000000004": 1}
    assert "000000000004" in biller_sim.barred  # a pay still in flight would now be refused


async def test_the_biller_down_while_cancels_are_queued_gets_each_once_when_back(db, pool, http_biller, biller_sim,
                                                                                 forwarders):
    for receipt in RECEIPTS[:10]:
        biller_sim.add_payment(receipt, "M0001", 1000)
    await biller_sim.go_down()
    for receipt in RECEIPTS[:10]:
        await outbox.enqueue(db, BILLER, "cancel", receipt, {"reason": "reversed"})
    forwarder = await forwarders.make()
    forwarder.start()
    deadline = time.monotonic() + 10
    while await db.fetchval("SELECT min(attempts) FROM biller_outbox") < 3:  # several attempts while it is down
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    failed = await outbox.list_messages(db)
    assert len(failed) == 10 and all(m.status == "pending" and "ConnectError" in m.last_error for m in failed)
    assert biller_sim.calls == {}  # nothing reached it
    await biller_sim.come_up()
    await wait_until_done(db, 10)
    assert cancels_at_biller(biller_sim) == {receipt: 1 for receipt in RECEIPTS[:10]}
    assert biller_sim.paid_receipts() == set()
    assert await outbox.list_messages(db) == []  # saf list: nothing pending
    done = await outbox.list_messages(db, include_done=True)
    # Each was claimed 3 times at least while it was down (the third may have connected once it was back).
    assert all(m.status == "done" and m.attempts >= 3 for m in done)


async def test_two_forwarders_with_their_own_pools_send_each_message_once(db, http_biller, biller_sim, forwarders):
    for receipt in RECEIPTS:
        biller_sim.add_payment(receipt, "M0001", 500)
        await outbox.enqueue(db, BILLER, "cancel", receipt)
    biller_sim.faults.delay_s = 0.02  # sends overlap the other forwarder's claims
    settings = ForwarderSettings(poll_interval_s=0.01, batch_max=4, backoff_base_s=0.05, backoff_max_s=0.2,
                                 lease_s=3.0)
    first, second = await forwarders.make(settings), await forwarders.make(settings)
    first.start()
    second.start()
    await wait_until_done(db, len(RECEIPTS))
    assert cancels_at_biller(biller_sim) == {receipt: 1 for receipt in RECEIPTS}
    assert await db.fetchval("SELECT sum(attempts) FROM biller_outbox") == len(RECEIPTS)
    assert biller_sim.connections <= 2 * settings.batch_max  # kept connections, not one per message


async def test_two_gateway_processes_share_one_outbox(db, db_url, http_biller, biller_sim, tmp_path):
    """Two real processes, each a forwarder over the same database."""
    for receipt in RECEIPTS[:20]:
        biller_sim.add_payment(receipt, "M0001", 500)
        await outbox.enqueue(db, BILLER, "cancel", receipt)
    biller_sim.faults.delay_s = 0.02
    script = (
        "import asyncio, sys, asyncpg\n"
        "from gateway.upstream.billers import Connectors\n"
        "from gateway.upstream.outbox import Forwarder, ForwarderSettings\n"
        "async def main():\n"
        "    pool = await asyncpg.create_pool(sys.argv[1], min_size=1, max_size=2)\n"
        "    connectors = Connectors(pool, 2.0)\n"
        "    f = Forwarder(pool, connectors, ForwarderSettings(poll_interval_s=0.01, batch_max=3, lease_s=5.0))\n"
        "    for _ in range(400):\n"
        "        await f.run_once()\n"
        "        if not await pool.fetchval(\"SELECT count(*) FROM biller_outbox WHERE status = 'pending'\"):\n"
        "            break\n"
        "        await asyncio.sleep(0.01)\n"
        "    await connectors.close(); await pool.close()\n"
        "asyncio.run(main())\n")
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", script, db_url) for _ in range(2)]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60)
    assert codes == [0, 0]
    await wait_until_done(db, 20, timeout_s=1)
    assert cancels_at_biller(biller_sim) == {receipt: 1 for receipt in RECEIPTS[:20]}


async def test_backoff_grows_after_each_failed_attempt_and_is_capped(db, http_biller, biller_sim, forwarders):
    await biller_sim.go_down()
    message_id = await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[0])
    forwarder = await forwarders.make(ForwarderSettings(backoff_base_s=0.5, backoff_max_s=2.0, lease_s=3.0))
    waits = []
    for _ in range(5):
        await outbox.retry(db, message_id)
        assert await forwarder.run_once() == 1
        waits.append(await db.fetchval(
            "SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8 FROM biller_outbox"))
    expected = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(want - 0.45 < got <= want for got, want in zip(waits, expected, strict=True)), waits
    message = await outbox.get_message(db, message_id)
    assert message.attempts == 5 and message.status == "pending"
    assert await forwarder.run_once() == 0  # not due yet


async def test_a_restarted_forwarder_resumes_what_the_killed_one_left(db, http_biller, biller_sim, forwarders):
    for receipt in RECEIPTS[:3]:
        biller_sim.add_payment(receipt, "M0001", 700)
        await outbox.enqueue(db, BILLER, "cancel", receipt)
    biller_sim.faults.delay_s = 5.0  # the first forwarder dies in the middle of its sends
    lease = ForwarderSettings(poll_interval_s=0.05, backoff_base_s=0.05, backoff_max_s=0.2, lease_s=3.0)
    first = await forwarders.make(lease, timeout_s=10.0)
    killed = asyncio.create_task(first.run_once())
    await asyncio.sleep(0.3)
    killed.cancel()  # as a SIGKILL would: no result recorded
    with pytest.raises(asyncio.CancelledError):
        await killed
    claimed = await outbox.list_messages(db)
    assert [m.attempts for m in claimed] == [1, 1, 1]
    biller_sim.faults.delay_s = 0.0
    second = await forwarders.make(lease)
    assert await second.run_once() == 0  # still leased to the dead one
    second.start()
    await wait_until_done(db, 3)
    assert [m.attempts for m in await outbox.list_messages(db, include_done=True)] == [2, 2, 2]
    assert biller_sim.paid_receipts() == set()  # the biller cancelled each once, though asked twice


async def test_a_notice_waits_for_nothing_but_a_later_cancel_waits_for_the_notice(db, http_biller, biller_sim,
                                                                                 forwarders):
    biller_sim.add_payment(RECEIPTS[0], "M0001", 900)
    await outbox.enqueue(db, BILLER, "notice", RECEIPTS[0], {"amount_fen": 900})
    await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[0])
    biller_sim.faults.drop = 1  # the notice's first attempt is lost
    forwarder = await forwarders.make()
    assert await forwarder.run_once() == 1  # only the notice: the cancel waits behind it
    assert biller_sim.calls == {}
    await outbox.retry(db, (await outbox.list_messages(db))[0].id)
    assert await forwarder.run_once() == 1
    assert await forwarder.run_once() == 1
    assert list(biller_sim.calls) == [("confirm", RECEIPTS[0]), ("cancel", RECEIPTS[0])]
    assert biller_sim.book[RECEIPTS[0]].confirmed and biller_sim.paid_receipts() == set()


async def test_the_gauges_show_depth_and_age_and_an_old_message_raises_a_security_alert(db, http_biller, biller_sim,
                                                                                        forwarders, monkeypatch):
    await biller_sim.go_down()
    await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[0])
    await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[1])
    await db.execute("UPDATE biller_outbox SET created_at = clock_timestamp() - interval '2 hours' WHERE receipt = $1",
                     RECEIPTS[0])
    depth = await outbox.refresh_gauges(db)
    assert depth.pending == 2 and 7199 < depth.oldest_age_s < 7300
    assert REGISTRY.get_sample_value("posgw_saf_pending_messages") == 2
    assert 7199 < REGISTRY.get_sample_value("posgw_saf_oldest_pending_age_seconds") < 7300
    forwarder = await forwarders.make()
    with structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(outbox, "log", structlog.get_logger("posgw.saf"))  # a logger bound while capturing
        assert await forwarder.run_once() == 2
    alerts = [e for e in logs if e["event"] == "security_alert"]
    assert len(alerts) == 1
    assert alerts[0]["alert"] == "saf_message_overdue" and alerts[0]["receipt"] == RECEIPTS[0]
    await biller_sim.come_up()
    await outbox.retry(db, (await outbox.list_messages(db))[0].id)
    await outbox.retry(db, (await outbox.list_messages(db))[1].id)
    assert await forwarder.run_once() == 2
    assert (await outbox.refresh_gauges(db)).pending == 0
    assert REGISTRY.get_sample_value("posgw_saf_oldest_pending_age_seconds") == 0


async def test_saf_list_and_retry_on_the_command_line(cli, db, http_biller, biller_sim, forwarders):
    first = await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[0])
    second = await outbox.enqueue(db, BILLER, "cancel", RECEIPTS[1], delay_s=600)
    biller_sim.add_payment(RECEIPTS[0], "M0001", 100)
    forwarder = await forwarders.make()
    assert await forwarder.run_once() == 1  # the first is due, the second in ten minutes
    listed = await cli("saf", "list", "--json")
    assert listed.code == 0
    messages = listed.json["messages"]
    assert [m["id"] for m in messages] == [second]
    assert set(messages[0]) == {"id", "biller", "kind", "receipt", "status", "attempts", "last_error", "created_at",
                                "next_attempt_at"}
    assert messages[0] | {"created_at": None, "next_attempt_at": None} == {
        "id": second, "biller": BILLER, "kind": "cancel", "receipt": RECEIPTS[1], "status": "pending",
        "attempts": 0, "last_error": None, "created_at": None, "next_attempt_at": None}
    everything = (await cli("saf", "list", "--all", "--json")).json["messages"]
    assert [(m["id"], m["status"]) for m in everything] == [(first, "done"), (second, "pending")]
    assert (await cli("saf", "list", "--biller", "OTHER1", "--json")).json == {"messages": []}

    retried = await cli("saf", "retry", str(second), "--json")
    assert retried.code == 0 and retried.json["id"] == second
    assert await forwarder.run_once() == 1
    done = await cli("saf", "retry", str(first))
    assert done.code == 2 and "done" in done.stderr
    unknown = await cli("saf", "retry", "999999")
    assert unknown.code == 2 and "no outbox message" in unknown.stderr
    audit = (await cli("audit", "list", "--json")).json["events"]
    assert [(e["action"], e["entity"]) for e in audit if e["action"].startswith("saf.")] == [
        ("saf.retry", f"saf:{second}")]


def test_the_forwarders_settings_come_from_the_gateways():
    settings = Settings(saf_poll_interval_s=2.0, saf_batch_max=8, saf_backoff_base_s=0.5, saf_backoff_max_s=60.0,
                        saf_age_alert_s=600.0, biller_timeout_s=4.0)
    assert ForwarderSettings.from_settings(settings) == ForwarderSettings(
        poll_interval_s=2.0, batch_max=8, backoff_base_s=0.5, backoff_max_s=60.0, age_alert_s=600.0, lease_s=9.0)
    assert ForwarderSettings.from_settings(Settings()).backoff_max_s == 300.0

"""The biller link end to end (issue 23, the engine's side): real PostgreSQL, real
sockets, the HTTP biller simulator (sim/biller.py), terminals and gateways as
in production. Every payment the biller accepted either has its money in our
ledger or a cancel the biller acknowledged; the gateway's forwarder sends what
the outbox holds, once per receipt, from any number of gateways."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from bench.procs import free_port
from gateway.acquiring.operations import BillPayment, BillRecord, Stamp, TxnKey
from gateway.acquiring.outcomes import Outcome
from gateway.domain.bills import biller_notifies
from gateway.domain.vocabulary import Kind
from gateway.server.app import Gateway
from gateway.upstream import outbox
from ledger.postings import Transfer
from sim.biller import BillerSimulator
from sim.terminal import Terminal, bill_fields
from tests.conftest import TEST_LMK, make_settings, running_gateway
from tests.e2e.helpers import terminal_for

BIN = Path(sys.executable).parent
NO_ANSWER = (ConnectionError, TimeoutError, OSError)
BILLER = "SIM01"
METER = "M0001"
OPENING_FLOAT_FEN = 1_000_000  # 10 000 yuan
FAST_SAF = {"saf_poll_interval_s": 0.05, "saf_backoff_base_s": 0.05, "saf_backoff_max_s": 0.3,
            "biller_timeout_s": 1.0, "request_timeout_s": 3.0}


@pytest.fixture
async def biller_sim() -> AsyncIterator[BillerSimulator]:
    sim = BillerSimulator(prepaid=True)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def link(cli, world, biller_sim) -> str:
    """SIM01, a prepaid biller over HTTP at the simulator (1% commission), and the agent's float topped up."""
    for argv in (("biller", "add", BILLER, "--name", "Simulated Power", "--prepaid", "--connector", "http",
                  "--url", biller_sim.url, "--commission-bp", "100"),
                 ("agent", "topup", "AG01", str(OPENING_FLOAT_FEN // 100))):
        result = await cli(*argv)
        assert result.code == 0, result.stderr
    return BILLER


@pytest.fixture
def fast_settings(db_url, tmp_path):
    return make_settings(db_url, tmp_path, **FAST_SAF)


@pytest.fixture
async def gw(link, fast_settings) -> AsyncIterator[Gateway]:
    async with running_gateway(fast_settings) as gateway:
        yield gateway


@pytest.fixture
async def term(gw, world) -> AsyncIterator[Terminal]:
    terminal = terminal_for(gw, world)
    assert (await terminal.sign_on()).response_code == "00"
    yield terminal
    await terminal.close()


async def float_fen(cli) -> int:
    return (await cli("agent", "show", "AG01", "--json")).json["float_fen"]


async def until(predicate: Callable[[], object], within_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


async def pending_messages(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM biller_outbox WHERE status = 'pending'")
    finally:
        await conn.close()


async def outbox_empty(db_url: str) -> bool:
    return await pending_messages(db_url) == 0


async def remittance_fen(cli, day: str) -> int:
    result = await cli("biller", "remittance", BILLER, "--date", day, "--json")
    assert result.code == 0, result.stderr
    return result.json["total_fen"]


async def assert_ledger_clean(cli) -> None:
    result = await cli("ledger", "check", "--json")
    assert result.code == 0 and result.json["ok"], result.stdout


def biller_paid_fen(sim: BillerSimulator) -> int:
    return sum(p.amount_fen for p in sim.book.values() if p.status == "paid")


# -- the biller down while reversals arrive ---------------------------------------------------------------


async def test_the_biller_down_while_reversals_arrive_gets_each_cancel_once_it_is_back(term, cli, biller_sim,
                                                                                      db_url):
    paid = []
    for amount in (1000, 2000, 3000, 4000, 5000):
        response = await term.bill_payment(BILLER, METER, amount)
        assert response.response_code == "00" and len(bill_fields(response)["TK"]) == 20
        paid.append((response.message.rrn, term.last_request, amount))
    assert await pending_messages(db_url) == 0  # each armed cancel was taken back with its money

    await biller_sim.go_down()
    reversed_receipts = set()
    for receipt, request, _amount in paid[1::2] + paid[:1]:  # the 2nd, 4th and 1st
        assert (await term.reverse(request)).response_code == "00"  # answered at once, the biller down or not
        reversed_receipts.add(receipt)
    assert await float_fen(cli) == OPENING_FLOAT_FEN - 3000 - 5000  # the money is back already
    await asyncio.sleep(0.5)  # the forwarder tries, and fails, while the biller is down
    conn = await asyncpg.connect(db_url)
    try:
        waiting = await conn.fetch("SELECT receipt, attempts, last_error FROM biller_outbox WHERE status = 'pending'")
    finally:
        await conn.close()
    assert {row["receipt"] for row in waiting} == reversed_receipts
    assert all(row["attempts"] >= 1 and row["last_error"] for row in waiting), waiting
    assert biller_sim.paid_receipts() == {receipt for receipt, _, _ in paid}  # still paid there

    await biller_sim.come_up()
    await until(lambda: biller_sim.paid_receipts() == {paid[2][0], paid[4][0]}, what="the cancels delivered")
    await until(lambda: outbox_empty(db_url), what="the outbox emptied")
    await asyncio.sleep(0.3)  # any resend would come now
    assert {receipt: biller_sim.calls[("cancel", receipt)] for receipt in reversed_receipts} == \
        dict.fromkeys(reversed_receipts, 1)  # exactly once per receipt at the biller
    assert sum(count for (op, _), count in biller_sim.calls.items() if op == "cancel") == 3

    today = biller_sim.today()
    assert await remittance_fen(cli, today) == biller_paid_fen(biller_sim) == 3000 + 5000
    reconciled = await cli("biller", "reconcile", BILLER, "--date", today, "--json")
    assert reconciled.code == 0, reconciled.stdout
    assert reconciled.json["matched"] == 5 and reconciled.json["biller_total_fen"] == 8000
    await assert_ledger_clean(cli)


# -- a pay whose answer is lost after the biller accepted ---------------------------------------------------


@pytest.mark.parametrize("fault", ["slow", "dropped"])
async def test_a_pay_that_times_out_after_the_accept_is_cancelled_and_its_reversal_gets_00(term, cli, biller_sim,
                                                                                          db_url, fault):
    if fault == "slow":
        biller_sim.faults.delay_s = 1.5  # past biller_timeout_s (1 s): it books the payment after we gave up
    else:
        biller_sim.faults.fail_after_accept = 1  # booked, then the connection closed without an answer
    response = await term.bill_payment(BILLER, METER, 4321)
    assert response.response_code == "91"
    original = term.last_request
    assert await float_fen(cli) == OPENING_FLOAT_FEN
    await until(lambda: len(biller_sim.book) == 1, what="the biller booked the pay")
    (receipt,) = biller_sim.book
    biller_sim.faults.delay_s = 0.0
    await until(lambda: biller_sim.book[receipt].status == "cancelled", what="the cancel delivered")
    await until(lambda: outbox_empty(db_url), what="the cancel acknowledged")

    repeat = await term.send(original)  # the terminal's repeat: the same answer, nothing asked again
    assert repeat.response_code == "91"
    assert biller_sim.calls[("pay", receipt)] == 1
    assert (await term.reverse(original)).response_code == "00"
    assert await float_fen(cli) == OPENING_FLOAT_FEN  # nothing moved in our ledger
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT status, response_code, posting_key FROM gw_transactions WHERE receipt = $1",
                                  receipt)
        message = await conn.fetchrow("SELECT status, payload FROM biller_outbox WHERE receipt = $1", receipt)
    finally:
        await conn.close()
    assert (row["status"], row["response_code"], row["posting_key"]) == ("declined", "91", None)
    assert message["status"] == "done" and '"biller_unavailable"' in message["payload"]
    assert await remittance_fen(cli, biller_sim.today()) == biller_paid_fen(biller_sim) == 0
    await assert_ledger_clean(cli)


async def test_a_payment_the_float_cannot_cover_is_cancelled_through_the_outbox(term, cli, biller_sim, db_url):
    response = await term.bill_payment(BILLER, METER, OPENING_FLOAT_FEN + 100)
    assert response.response_code == "51"
    (receipt,) = biller_sim.book
    await until(lambda: biller_sim.book[receipt].status == "cancelled", what="the cancel delivered")
    await until(lambda: outbox_empty(db_url))
    assert biller_sim.calls[("cancel", receipt)] == 1


async def test_a_biller_with_notify_gets_a_notice_of_each_payment_that_stands(cli, world, biller_sim, db_url,
                                                                                fast_settings):
    added = await cli("biller", "add", BILLER, "--name", "Simulated Power", "--prepaid", "--connector", "http",
                      "--url", biller_sim.url, "--notify", "--json")
    assert added.code == 0 and added.json["notify"] is True, added.stderr
    assert (await cli("agent", "topup", "AG01", "100")).code == 0
    async with running_gateway(fast_settings) as gateway:
        assert await biller_notifies(gateway.services.pool, BILLER)
        t = terminal_for(gateway, world)
        await t.sign_on()
        stands = await t.bill_payment(BILLER, METER, 1500)
        declined = await t.bill_payment(BILLER, METER, 20_000)  # 51: a cancel, no notice
        assert (stands.response_code, declined.response_code) == ("00", "51")
        await until(lambda: outbox_empty(db_url), what="the notice and the cancel sent")
        await t.close()
    assert biller_sim.book[stands.message.rrn].confirmed and biller_sim.book[stands.message.rrn].status == "paid"
    assert biller_sim.book[declined.message.rrn].status == "cancelled"
    assert biller_sim.calls[("confirm", stands.message.rrn)] == 1
    assert ("confirm", declined.message.rrn) not in biller_sim.calls


# -- two gateways sharing one outbox ------------------------------------------------------------------------


async def test_two_gateways_sharing_one_outbox_send_each_message_once(link, world, cli, biller_sim, db_url,
                                                                      tmp_path):
    settings = make_settings(db_url, tmp_path, **FAST_SAF)
    async with running_gateway(settings) as first, running_gateway(settings) as second:
        sent_by: Counter[str] = Counter()
        for name, gateway in (("first", first), ("second", second)):
            http = gateway.services.connectors.http
            original_cancel = http.cancel

            async def counted(biller, receipt, _original=original_cancel, _name=name):
                await _original(biller, receipt)
                sent_by[_name] += 1  # acknowledged (not the attempts while the biller was down)

            http.cancel = counted
        t = terminal_for(first, world)  # the outbox is the database's: whichever gateway wrote it
        assert (await t.sign_on()).response_code == "00"
        paid = []
        for i in range(24):
            response = await t.bill_payment(BILLER, METER, 100 + i)
            assert response.response_code == "00"
            paid.append((t.last_request, response.message.rrn))
        await biller_sim.go_down()
        for request, _receipt in paid:
            assert (await t.reverse(request)).response_code == "00"
        biller_sim.faults.delay_s = 0.05  # sends overlap the other gateway's claims
        await biller_sim.come_up()
        await until(lambda: not biller_sim.paid_receipts(), what="every cancel delivered")
        await until(lambda: outbox_empty(db_url))
        await asyncio.sleep(0.3)
        await t.close()
    counts = [biller_sim.calls[("cancel", receipt)] for _, receipt in paid]
    assert counts == [1] * 24, counts  # each message sent once, by one of the two
    assert sum(sent_by.values()) == 24 and len(sent_by) == 2, sent_by  # both forwarders took part
    assert await float_fen(cli) == OPENING_FLOAT_FEN


# -- the gateway SIGKILLed during cash bill payments -------------------------------------------------------


@dataclass
class Seen:
    answered: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    reversals: int = 0


async def pay_until_stopped(port: int, world, tid: str, stop: asyncio.Event, seen: Seen) -> None:
    """A terminal paying small bills in cash; no answer: its reversal, repeated until answered (00)."""
    terminal = Terminal("127.0.0.1", port, tid, world.mid, world.tmk, timeout_s=2.0)
    while terminal.keys is None:
        try:
            await terminal.sign_on()
        except NO_ANSWER:
            await asyncio.sleep(0.1)
    rng = random.Random(tid)
    while not stop.is_set():
        try:
            response = await terminal.bill_payment(BILLER, METER, rng.randint(100, 900))
            seen.answered[response.response_code] += 1
            continue
        except NO_ANSWER:
            seen.unanswered += 1
        original, deadline = terminal.last_request, time.monotonic() + 60
        while True:
            try:
                reversal = await terminal.reverse(original)
                seen.answered[f"reversal {reversal.response_code}"] += 1
                if reversal.response_code == "00":
                    seen.reversals += 1
                    break
            except NO_ANSWER:
                pass
            assert time.monotonic() < deadline, "a reversal was never answered"
            await asyncio.sleep(0.1)
    await terminal.close()


@pytest.mark.slow
async def test_the_gateway_killed_during_cash_bill_payments_leaves_no_payment_unmatched(link, world, cli,
                                                                                       biller_sim, db_url, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, POSGW_DATABASE_URL=db_url, POSGW_DATA_DIR=str(tmp_path), POSGW_LMK=TEST_LMK,
               POSGW_LOG_FORMAT="json", POSGW_RISK_ENABLED="false",
               **{f"POSGW_{name.upper()}": str(value) for name, value in FAST_SAF.items()})
    biller_sim.faults.delay_s = 0.02  # a pay takes a while: kills land between the accept and the commit

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE)
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "posgw serve exited"
            if b'"listening"' in line:
                break
        asyncio.get_running_loop().create_task(proc.stderr.read())  # drain
        return proc

    tids = [f"KILL{lane:04d}" for lane in range(3)]
    for tid in tids:
        added = await cli("terminal", "add", tid, "--merchant", world.mid, "--tmk", world.tmk.hex())
        assert added.code == 0, added.stderr
    seen, stop = Seen(), asyncio.Event()
    proc = await start()
    lanes = asyncio.gather(*(pay_until_stopped(port, world, tid, stop, seen) for tid in tids))
    kills, rng = 0, random.Random(20261207)
    try:
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
            proc = await start()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(lanes, 90)
        # The last gateway's forwarder sends what the dead ones left: the cancels queued with a
        # decline or a reversal, and those armed by payments killed in flight (due after request_timeout_s).
        await until(lambda: outbox_empty(db_url), within_s=30, what="the outbox emptied")
    finally:
        stop.set()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()

    conn = await asyncpg.connect(db_url)
    try:
        standing = {row["receipt"]: row["amount_fen"] for row in await conn.fetch(
            """SELECT receipt, amount_fen FROM gw_transactions
                WHERE kind = 'bill_payment' AND mti_class = '0200' AND status = 'approved'""")}
        recorded = await conn.fetchval("SELECT count(*) FROM gw_transactions WHERE kind = 'bill_payment' "
                                       "AND mti_class = '0200'")
        cancels = await conn.fetchval("SELECT count(*) FROM biller_outbox WHERE kind = 'cancel' AND status = 'done'")
    finally:
        await conn.close()
    held = {p.receipt: p.amount_fen for p in biller_sim.book.values() if p.status == "paid"}
    cancelled_there = [p.receipt for p in biller_sim.book.values() if p.status == "cancelled"]
    mismatches = set(held.items()) ^ set(standing.items())
    print(f"\nbiller link kill test: {len(biller_sim.book)} payments accepted by the biller, {recorded} recorded, "
          f"{len(standing)} standing, {kills} kills, {len(cancelled_there)} cancelled at the biller "
          f"({cancels} cancels acknowledged, {len(biller_sim.barred)} receipts barred before their pay), "
          f"{seen.unanswered} unanswered, {seen.reversals} reversals, answers {dict(seen.answered)}, "
          f"mismatches {len(mismatches)}")
    assert kills >= 4 and len(standing) > 30, (kills, len(standing))
    assert mismatches == set()  # every payment the biller holds has its money here, and only those
    assert all(biller_sim.book[r].status == "cancelled" for r in biller_sim.book if r not in standing)
    await assert_ledger_clean(cli)
    assert await remittance_fen(cli, biller_sim.today()) == biller_paid_fen(biller_sim) == sum(standing.values())


async def test_posgw_sim_biller_serves_the_simulator(cli, world, settings):
    """``posgw-sim biller``: the same simulator as ``python -m sim.biller``, a gateway's biller."""
    proc = await asyncio.create_subprocess_exec(str(BIN / "posgw-sim"), "biller", "--port", "0", "--prepaid",
                                                stdout=asyncio.subprocess.PIPE)
    try:
        url = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))["listening"]
        assert url.startswith("http://127.0.0.1:")
        added = await cli("biller", "add", BILLER, "--name", "Sim", "--prepaid", "--connector", "http", "--url", url)
        assert added.code == 0, added.stderr
        assert (await cli("agent", "topup", "AG01", "10")).code == 0
        async with running_gateway(settings) as gateway:
            t = terminal_for(gateway, world)
            await t.sign_on()
            paid = await t.bill_payment(BILLER, METER, 250)
            await t.close()
        assert paid.response_code == "00" and len(bill_fields(paid)["TK"]) == 20
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


# -- gw_finish's bill payment and its armed cancel, statement by statement --------------------------------


async def record_armed_payment(conn: asyncpg.Connection, world, stan: str, receipt: str, amount_fen: int,
                               **fields) -> dict:
    """gw_finish of a cash bill payment to SIM01 whose cancel was armed (as pay_bill sends it)."""
    float_id, agent_code = await conn.fetchrow(
        "SELECT float_account_id, code FROM agents WHERE code = $1", world.agent)
    biller_account = await conn.fetchval("SELECT account_id FROM billers WHERE code = $1", BILLER)
    payment = BillPayment(
        kind=Kind.BILL_PAYMENT, key=TxnKey(world.tid, 1, stan, "0200"), processing_code="500000",
        content=f"content-{stan}", amount_fen=amount_fen, card_id=None, pin=None,
        stamp=Stamp(receipt, "120000", "1207"), transfers=(Transfer(float_id, biller_account, amount_fen,
                                                                    "bill_payment"),),
        bill=BillRecord(biller_code=BILLER, account=METER, receipt=receipt, commission_fen=0, agent_code=agent_code,
                        float_account_id=float_id, cancel_armed=True),
        approval={"bill_tlv": {"BL": BILLER, "AC": METER}}, **fields)
    return json.loads(await conn.fetchval("SELECT gw_finish($1::jsonb)::text", json.dumps(payment.as_json())))


async def test_a_cancel_a_forwarder_has_claimed_is_not_taken_back_and_nothing_posts(link, world, cli, db):
    await outbox.arm_cancel(db, BILLER, "000000000701", after_s=60)
    await outbox.arm_cancel(db, BILLER, "000000000702", after_s=60)
    await db.execute("UPDATE biller_outbox SET attempts = 1 WHERE receipt = '000000000701'")  # a forwarder's claim
    claimed = await record_armed_payment(db, world, "000701", "000000000701", 700)
    assert claimed["response"]["outcome"] == "biller_unavailable"  # 91: the money does not move
    stands = await record_armed_payment(db, world, "000702", "000000000702", 800)
    assert stands["response"]["outcome"] == "approved"
    assert await float_fen(cli) == OPENING_FLOAT_FEN - 800
    rows = {r["receipt"]: (r["attempts"], r["status"]) for r in await db.fetch(
        "SELECT receipt, attempts, status FROM biller_outbox")}
    assert rows == {"000000000701": (1, "pending")}  # the claimed cancel goes on; the other was taken back
    repeat = await record_armed_payment(db, world, "000701", "000000000701", 700)
    assert repeat["status"] == "repeat" and repeat["response"]["outcome"] == "biller_unavailable"


async def test_an_unknown_outcome_and_a_51_make_the_armed_cancel_due_in_their_own_transaction(link, world, cli, db):
    await outbox.arm_cancel(db, BILLER, "000000000711", after_s=60)
    await outbox.arm_cancel(db, BILLER, "000000000712", after_s=60)
    unknown = await record_armed_payment(db, world, "000711", "000000000711", 500,
                                         biller_outcome=Outcome.BILLER_UNAVAILABLE)
    short = await record_armed_payment(db, world, "000712", "000000000712", OPENING_FLOAT_FEN + 1)
    assert (unknown["response"]["outcome"], short["response"]["outcome"]) == ("biller_unavailable",
                                                                              "insufficient_funds")
    rows = {r["receipt"]: (r["due"], r["payload"]) for r in await db.fetch(
        """SELECT receipt, next_attempt_at <= clock_timestamp() AS due, payload::text FROM biller_outbox""")}
    assert rows == {"000000000711": (True, '{"reason": "biller_unavailable"}'),
                    "000000000712": (True, '{"reason": "insufficient_funds"}')}
    assert await float_fen(cli) == OPENING_FLOAT_FEN
    assert await db.fetchval("SELECT count(*) FROM ledger_transfers") == 1  # the top-up alone

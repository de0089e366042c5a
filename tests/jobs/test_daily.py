"""The daily runs of ``posgw serve`` (gateway/jobs/daily.py): each due day's agent run,
then its payout run, once across gateways, catching up every day not run; in-process
at a chosen time, and with two real ``posgw serve`` processes on a shifted clock
(``POSGW_CLOCK_OFFSET_S``), one of them killed and the next start catching up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from bench.procs import free_ports
from gateway.db.pool import create_pool
from gateway.jobs import daily
from gateway.settings import Settings
from tests.jobs.agent_world import DAY, Network, at

BIN = Path(sys.executable).parent


async def purchase(net: Network, tid: str, amount_fen: int, day: date) -> None:
    """An approved purchase of ``day``, its ledger transfers dated then too (what a payout run reads)."""
    recorded = await net.purchase(tid, amount_fen, at(day))
    await net.db.execute(
        """UPDATE ledger_transfers SET created_at = $2
            WHERE posting_id = (SELECT id FROM ledger_postings WHERE idempotency_key = $1)""",
        f"{tid}:1:{recorded.stan}:0200", at(day))


@pytest.fixture
async def world(network, cli):
    """A merchant at 60 bp under B (51 bp) under A (49 bp), policies from the day before DAY, bank details set."""
    await network.agent("A", cost_bp=49)
    await network.agent("B", "A", cost_bp=51)
    await network.merchant("MERCHANT0000001", "B", 60, "TERM0001")
    result = await cli("merchant", "set", "MERCHANT0000001", "--bank-account", "6222000011112222",
                       "--bank-name", "ICBC", "--account-name", "Shop One")
    assert result.code == 0, result.stderr
    return network


# DAY's sales (1,000,000 fen at 60 bp) less the terminal's deposit (押金, charged from the merchant's
# balance in the run of the day of its first purchase, CLI.md "Deposits and fees": the default 9,900).
FIRST_PAYOUT_FEN = 994_000 - Settings().deposit_fen


async def days_run(db: asyncpg.Connection) -> dict[str, list]:
    return {"agent": [(r["day"], r["n"]) for r in await db.fetch(
                "SELECT day, count(*) AS n FROM agent_runs WHERE final GROUP BY day ORDER BY day")],
            "payouts": [r["payout_date"] for r in await db.fetch(
                "SELECT payout_date FROM payout_runs ORDER BY payout_date")],
            "paid": [(r["payout_date"], r["amount_fen"]) for r in await db.fetch(
                "SELECT payout_date, amount_fen FROM payouts ORDER BY id")]}


async def profit(db: asyncpg.Connection, code: str) -> int:
    return await db.fetchval(
        """SELECT a.credits_posted - a.debits_posted FROM agent_accounts x
             JOIN ledger_accounts a ON a.id = x.profit_account_id WHERE x.agent_code = $1""", code)


def noon(days_after: int, settings: Settings) -> datetime:
    """Local noon of DAY + ``days_after``."""
    return datetime.combine(DAY + timedelta(days=days_after), datetime.min.time().replace(hour=12), settings.tz)


async def test_a_turn_runs_each_due_day_then_its_payouts_once_and_later_turns_catch_up(db, settings, world):
    await purchase(world, "TERM0001", 1_000_000, DAY)
    pool = await create_pool(settings)
    try:
        assert daily.last_due_day(noon(1, settings), settings) == DAY
        just_after = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), settings.tz) + timedelta(minutes=1)
        assert daily.last_due_day(just_after, settings) == DAY - timedelta(days=1)  # DAY within its grace
        turns = await asyncio.gather(*(daily.run_due(pool, settings, now=noon(1, settings)) for _ in range(3)))
        ran = [turn for turn in turns if turn]
        assert len(ran) == 1 and [d["date"] for d in ran[0]] == [(DAY - timedelta(days=1)).isoformat(),
                                                                  DAY.isoformat()]
        assert ran[0][1]["agent"]["shares_fen"] == 1100 and ran[0][1]["payouts"]["total_fen"] == FIRST_PAYOUT_FEN
        assert await daily.run_due(pool, settings, now=noon(1, settings) + timedelta(hours=1)) == []
        await purchase(world, "TERM0001", 500_000, DAY + timedelta(days=2))
        later = await daily.run_due(pool, settings, now=noon(4, settings))
        assert [d["date"] for d in later] == [(DAY + timedelta(days=n)).isoformat() for n in (1, 2, 3)]
    finally:
        await pool.close()
    state = await days_run(db)
    assert state["agent"] == [(DAY + timedelta(days=n), 1) for n in range(-1, 4)]
    assert state["payouts"] == [DAY + timedelta(days=n) for n in range(-1, 4)]
    assert state["paid"] == [(DAY, FIRST_PAYOUT_FEN), (DAY + timedelta(days=2), 497_000)]
    assert (await profit(db, "B"), await profit(db, "A")) == (900 + 450, 200 + 100)
    actors = await db.fetch("SELECT DISTINCT actor, action FROM audit_events WHERE action IN ('agent.run', 'payout.run')")
    assert {(r["actor"], r["action"]) for r in actors} == {("system:scheduler", "agent.run"),
                                                            ("system:scheduler", "payout.run")}


@contextlib.asynccontextmanager
async def serving(settings: Settings, clock: datetime) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``posgw serve`` process whose clock reads ``clock`` now (``POSGW_CLOCK_OFFSET_S``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSGW_")}
    env |= {"POSGW_DATABASE_URL": settings.database_url, "POSGW_DATA_DIR": str(settings.data_dir),
            "POSGW_LMK": settings.lmk.get_secret_value(), "POSGW_LOG_FORMAT": "json",
            "POSGW_CLOCK_OFFSET_S": str((clock - datetime.now(UTC)).total_seconds())}
    port, metrics_port = free_ports(2)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        env=env, stderr=asyncio.subprocess.PIPE)
    try:
        while True:  # until it listens
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "posgw serve ended before listening"
            with contextlib.suppress(ValueError):
                if json.loads(line).get("event") == "listening":
                    break
        drain = asyncio.create_task(proc.stderr.read())  # keep its pipe from filling
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(NameError):
            drain.cancel()


async def wait_for_payout_run(db: asyncpg.Connection, day: date, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not await db.fetchval("SELECT EXISTS (SELECT 1 FROM payout_runs WHERE payout_date = $1)", day):
            await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_two_serve_processes_run_each_day_once_and_a_restart_after_a_kill_catches_up(db, settings, world):
    await purchase(world, "TERM0001", 1_000_000, DAY)
    async with serving(settings, noon(3, settings)) as first, serving(settings, noon(3, settings)):
        await wait_for_payout_run(db, DAY + timedelta(days=2))
        first.send_signal(signal.SIGKILL)  # a crash; the other stops cleanly
        await first.wait()
    state = await days_run(db)
    assert state["agent"] == [(DAY + timedelta(days=n), 1) for n in range(-1, 3)]
    assert state["payouts"] == [DAY + timedelta(days=n) for n in range(-1, 3)]
    assert state["paid"] == [(DAY, FIRST_PAYOUT_FEN)]
    assert (await profit(db, "B"), await profit(db, "A")) == (900, 200)

    await purchase(world, "TERM0001", 500_000, DAY + timedelta(days=3))   # while no gateway runs: the next start catches up
    async with serving(settings, noon(6, settings)):
        await wait_for_payout_run(db, DAY + timedelta(days=5))
    state = await days_run(db)
    assert state["agent"] == [(DAY + timedelta(days=n), 1) for n in range(-1, 6)]
    assert state["payouts"] == [DAY + timedelta(days=n) for n in range(-1, 6)]
    assert state["paid"] == [(DAY, FIRST_PAYOUT_FEN), (DAY + timedelta(days=3), 497_000)]
    assert (await profit(db, "B"), await profit(db, "A")) == (900 + 450, 200 + 100)
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'payout.run'") == 7

"""A primary and a synchronous standby under load, failed over by pg_auto_failover
(deploy/pgpair.py): machines lost while terminals buy.

Terminals behave as real ones (tests/e2e/test_crash.py's ``drive``): an
unanswered purchase is reversed until the reversal is answered. Afterwards the
ledger checks clean on the surviving node, every purchase a terminal saw
approved is there, nothing was applied twice, and each card's balance is its
opening balance less exactly what its terminal saw approved.

Each run goes through an outcome unknown on purpose: just before the primary's
PostgreSQL is killed its WAL sender is stopped (SIGSTOP), so the commits then
in flight wait for the standby and are cut off unanswered; the terminals
reverse them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from deploy.cluster import http_get
from deploy.pgpair import NODE_NAMES, PairConfig, PgPair
from gateway.db.migrate import migrate
from gateway.db.pool import HostByHost
from sim.terminal import Terminal
from tests.conftest import TEST_TMK, make_settings, running_gateway
from tests.e2e.test_crash import PIN, Book, assert_no_fen_lost_or_doubled, cli_runner, drive, register_world
from tests.gateway.test_pool_hosts import frozen_host  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.needs_tools("pg_autoctl")]

RESUME_WITHIN_S = 60.0
HEALTH_POLL_S = 0.1
NO_ANSWER = (ConnectionError, TimeoutError, OSError)
# What the engine must change (gateway/acquiring: the lead's, after the merge);
# docs/reliability.md, "A stored answer sent before the standby has it".
@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[PgPair]:
    """One pair for the module (it takes seconds to build): the tests run in
    file order, the one that kills the primary last; each has a database of its own."""
    run_dir = Path(tempfile.mkdtemp(prefix="posgw-pair-"))
    pgpair = PgPair(PairConfig(run_dir))
    await asyncio.to_thread(pgpair.start)
    try:
        yield pgpair
    finally:
        await asyncio.to_thread(pgpair.stop, immediate=True)
        shutil.rmtree(run_dir, ignore_errors=True)


async def checked_on_the_primary(pair: PgPair, dbname: str, lanes, book: Book, tmp_path: Path) -> None:
    """The ledger checks of test_crash, on the node that is primary now, named alone: the
    CLI connects with asyncpg's own multi-host connect, which returned a broken connection
    (InternalClientError) while the old primary was coming back as a standby."""
    primary = pair.primary_index()
    assert primary is not None
    url = pair.node_url(primary, dbname)
    await assert_no_fen_lost_or_doubled(url, lanes, book, cli_runner(make_settings(url, tmp_path)))


async def migrated(pair: PgPair, dbname: str) -> str:
    """A new database on the pair, migrated; its URL (both nodes, read-write)."""
    await asyncio.to_thread(pair.wait_states, {NODE_NAMES[0]: "primary", NODE_NAMES[1]: "secondary"}, 30)
    await asyncio.to_thread(pair.psql, pair.config.node_ports[0], f"CREATE DATABASE {dbname}")
    url = pair.url(dbname)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@dataclass
class HealthLog:
    """/healthz as a load balancer sees it: (seconds since the start, status) at each change."""

    started: float = field(default_factory=time.monotonic)
    changes: list[tuple[float, int]] = field(default_factory=list)

    def seen(self, status: int) -> None:
        if not self.changes or self.changes[-1][1] != status:
            self.changes.append((time.monotonic() - self.started, status))

    def first(self, status: int, after_s: float = 0.0) -> float | None:
        return next((at for at, seen in self.changes if seen == status and at >= after_s), None)


async def watch_health(metrics_port: int, log: HealthLog, stop: asyncio.Event) -> None:
    url = f"http://127.0.0.1:{metrics_port}/healthz"
    while not stop.is_set():
        status, _ = await asyncio.to_thread(http_get, url, 3.0)
        log.seen(status)
        await asyncio.sleep(HEALTH_POLL_S)


async def until(predicate, timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Wait until ``predicate()`` is true; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


async def until_async(predicate, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Wait until the coroutine ``predicate()`` returns true."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        await asyncio.sleep(poll_s)


async def test_a_frozen_first_host_costs_its_own_timeout_and_the_primary_serves(pair, frozen_host):  # noqa: F811
    hosts = ",".join([frozen_host] + [f"127.0.0.1:{port}" for port in pair.config.node_ports])
    url = f"postgresql://{pair.db_user}@{hosts}/posgw?target_session_attrs=read-write&connect_timeout=0.5"
    connect = HostByHost(url)
    started = time.monotonic()
    conn = await connect()
    elapsed_s = time.monotonic() - started
    try:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await conn.close()
    assert 0.5 <= elapsed_s < 2.0, elapsed_s  # the frozen host's 0.5 s, then node1 at once
    assert connect.preferred == 1 + pair.primary_index()
    started = time.monotonic()
    await (await connect()).close()  # the host that served last is tried first
    assert time.monotonic() - started < 0.5


async def test_the_standby_lost_under_load_commits_go_on_asynchronously_and_it_comes_back_in_sync(pair, tmp_path):
    """The durability policy of a pair (pg_auto_failover's with two nodes): while the
    standby is away the primary goes on alone (``wait_primary``, no synchronous
    standby named) rather than refusing every payment; the monitor's state says so
    (the alert). Commits in flight wait until the monitor decides, then complete."""
    url = await migrated(pair, "posgw_standby_lost")
    settings = make_settings(url, tmp_path, db_pool_min=2, db_pool_max=8)
    lanes = await register_world(cli_runner(settings))

    book, stop = Book(), asyncio.Event()
    async with running_gateway(settings) as gateway:
        driver = asyncio.create_task(drive(gateway.server.port, lanes, stop, book))
        await until(lambda: len(book.approved) >= 40, 30, "approvals before the standby is lost")
        approved_at_kill = len(book.approved)
        await asyncio.to_thread(pair.kill_node, 1)
        alone_s = await until(lambda: pair.states().get(NODE_NAMES[0]) == ("wait_primary", "wait_primary"), 30,
                              "the primary alone (wait_primary)", 0.2)
        assert pair.synchronous_standby_names(0) == ""  # asynchronous now
        resumed_s = await until(lambda: len(book.approved) > approved_at_kill + 40, 30, "commits going on alone")
        # the standby comes back, catches up, and is synchronous again
        await asyncio.to_thread(pair.start_node, 1)
        await asyncio.to_thread(pair.wait_states, {NODE_NAMES[0]: "primary", NODE_NAMES[1]: "secondary"}, 60)
        assert pair.synchronous_standby_names(0) == "ANY 1 (pgautofailover_standby_2)"
        approved_in_sync = len(book.approved)
        await until(lambda: len(book.approved) > approved_in_sync + 20, 30, "commits in sync again")
        stop.set()
        await asyncio.wait_for(driver, 90)

    await checked_on_the_primary(pair, "posgw_standby_lost", lanes, book, tmp_path)
    print(f"\nstandby lost: the primary alone (wait_primary, asynchronous) after {alone_s:.1f} s; approvals again "
          f"{alone_s + resumed_s:.1f} s after the loss; {len(book.approved)} approvals, "
          f"{book.codes.get('96', 0)} answered 96, {book.unanswered} unanswered and reversed")


async def test_an_approval_is_never_answered_before_the_standby_has_it_even_past_the_command_timeout(
        pair, tmp_path):
    """The standby hears nothing (its WAL sender stopped) for longer than the
    gateway's command timeout, under load: each approval the terminals see must
    be on the standby, since the primary could be lost the next moment. (A COMMIT
    cancelled while it waits for the standby stays committed on the primary
    alone; any later read of it there must not be taken for a durable outcome.)"""
    url = await migrated(pair, "posgw_commit_cancelled")
    settings = make_settings(url, tmp_path, db_pool_min=2, db_pool_max=8, db_command_timeout_s=1.0)
    lanes = await register_world(cli_runner(settings))
    primary, standby = 0, 1
    standby_url = pair.node_url(standby, "posgw_commit_cancelled")

    book, stop = Book(), asyncio.Event()
    async with running_gateway(settings) as gateway:
        driver = asyncio.create_task(drive(gateway.server.port, lanes, stop, book))
        await until(lambda: len(book.approved) >= 40, 30, "approvals before the standby goes deaf")
        stopped = pair.wal_sender_pids(primary)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.5)  # commits wait for the standby past the 1 s command timeout
            conn = await asyncpg.connect(standby_url)
            try:
                # all the standby has received is replayed: what it has is what a failover would keep
                await until_async(lambda: conn.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"), 10, "the standby's replay")
                on_standby = {(r["tid"], r["stan"]) for r in await conn.fetch(
                    "SELECT tid, stan FROM gw_transactions WHERE mti_class = '0200' AND status = 'approved'")}
            finally:
                await conn.close()
            seen = set(book.approved)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        stop.set()
        await asyncio.wait_for(driver, 90)

    await checked_on_the_primary(pair, "posgw_commit_cancelled", lanes, book, tmp_path)  # consistent there
    print(f"\ncommand timeout while the standby is deaf: {len(seen)} approvals seen, "
          f"{len(seen - on_standby)} of them not on the standby; codes {book.codes}, {book.unanswered} unanswered")
    assert seen <= on_standby, f"answered 00 but only on the primary: {sorted(seen - on_standby)}"


async def test_a_repeat_is_not_answered_00_from_a_commit_the_standby_does_not_have(pair, tmp_path):
    """A purchase whose COMMIT waits for a deaf standby past the command timeout
    is cancelled by the client: committed on the primary alone, and (rightly) not
    answered. The terminal repeats it (WIRE.md 8): an answer 00 now would be an
    approval that a failover loses."""
    url = await migrated(pair, "posgw_repeat_unreplicated")
    settings = make_settings(url, tmp_path, db_pool_min=1, db_pool_max=4, db_command_timeout_s=1.0)
    lanes = await register_world(cli_runner(settings))
    tid, pan = lanes[0]
    async with running_gateway(settings) as gateway:
        terminal = Terminal("127.0.0.1", gateway.server.port, tid, "MERCHANT0000001", TEST_TMK, timeout_s=5.0)
        assert (await terminal.sign_on()).response_code == "00"
        assert (await terminal.purchase(pan, PIN, 10)).response_code == "00"  # in sync: on both
        stopped = pair.wal_sender_pids(0)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            stan = terminal.next_stan()
            with pytest.raises(NO_ANSWER):  # its COMMIT waits, the command timeout cancels it: no answer
                await terminal.purchase(pan, PIN, 20, stan=stan)
            try:
                repeat_code = (await terminal.send(terminal.last_request)).response_code
            except NO_ANSWER:
                repeat_code = None
            conn = await asyncpg.connect(pair.node_url(1, "posgw_repeat_unreplicated"))
            try:
                await until_async(lambda: conn.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"), 10, "the standby's replay")
                on_standby = await conn.fetchval(
                    "SELECT status FROM gw_transactions WHERE tid = $1 AND stan = $2 AND mti_class = '0200'",
                    tid, stan)
            finally:
                await conn.close()
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        await terminal.close()
    print(f"\nrepeat while the standby is deaf: answered {repeat_code}, on the standby: {on_standby}")
    assert repeat_code != "00" or on_standby == "approved", "answered 00 from the primary alone"


async def test_the_primary_lost_under_load_the_standby_takes_over_and_no_approval_is_lost(pair, tmp_path):
    url = await migrated(pair, "posgw_failover")
    settings = make_settings(url, tmp_path, db_pool_min=2, db_pool_max=8)
    lanes = await register_world(cli_runner(settings))
    primary = pair.primary_index()
    assert primary == 0 and pair.synchronous_standby_names(0) == "ANY 1 (pgautofailover_standby_2)"

    book, stop, health = Book(), asyncio.Event(), HealthLog()
    async with running_gateway(settings) as gateway:
        watcher = asyncio.create_task(watch_health(gateway.metrics_port, health, stop))
        driver = asyncio.create_task(drive(gateway.server.port, lanes, stop, book))
        await until(lambda: len(book.approved) >= 40, 30, "approvals before the failover")
        # an outcome unknown, every run: the commits in flight wait for a standby that hears nothing
        stopped = pair.wal_sender_pids(primary)
        assert stopped, "no WAL sender on the primary"
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(0.3)
        approved_at_kill = len(book.approved)
        killed_at = time.monotonic() - health.started
        await asyncio.to_thread(pair.kill_postgres, primary)  # SIGKILL: the postmaster and the stopped WAL sender
        promoted_s = await until(lambda: pair.primary_index() == 1, RESUME_WITHIN_S, "the standby promoted", 0.2)
        resumed_s = await until(lambda: len(book.approved) > approved_at_kill + 20, RESUME_WITHIN_S,
                                "the gateway resumed")
        await until(lambda: health.first(200, killed_at + 0.1) is not None, 10, "/healthz 200 again")
        # (pg_autoctl then brings the old primary back as the new one's standby, rewound:
        # about 20 s here, not waited for in the suite; docs/reliability.md)
        stop.set()
        await asyncio.wait_for(driver, 90)
        await watcher

    first_503, back_200 = health.first(503, killed_at), health.first(200, killed_at + 0.1)
    assert first_503 is not None and back_200 is not None, health.changes
    assert book.unanswered >= 1, book  # the forced outcome unknown, reversed by the terminals
    await checked_on_the_primary(pair, "posgw_failover", lanes, book, tmp_path)
    print(f"\nfailover: no primary for {back_200 - killed_at:.1f} s (/healthz 503 from +{first_503 - killed_at:.1f} s"
          f" to +{back_200 - killed_at:.1f} s; the monitor promoted {NODE_NAMES[1]} after {promoted_s:.1f} s; "
          f"approvals again within {promoted_s + resumed_s:.1f} s); {len(book.approved)} approvals, "
          f"{book.codes.get('96', 0)} answered 96, {book.unanswered} unanswered and reversed "
          f"({book.reversals} reversals answered 00); lost 0, applied twice 0")

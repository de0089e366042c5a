"""Crash consistency: the gateway killed (SIGKILL) at random moments under load,
and PostgreSQL restarted under load. Terminals behave as real ones: no answer
means a reversal, repeated until answered. Afterwards the ledger checks clean,
and every card's balance is its opening balance less exactly the purchases the
terminals saw approved: no fen lost or moved twice."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from bench.procs import free_port
from gateway.cli.main import main as cli_main
from gateway.db.migrate import migrate
from gateway.domain.demo import demo_pan
from sim.terminal import Terminal
from tests.conftest import TEST_LMK, TEST_TMK, make_settings, running_gateway

BIN = Path(sys.executable).parent
TERMINALS = 4
OPENING_FEN = 100_000
PIN = "808080"
NO_ANSWER = (ConnectionError, TimeoutError, OSError)


@dataclass
class Book:
    """What the terminals saw."""

    approved: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)  # (tid, stan) -> (pan, fen)
    unanswered: int = 0
    reversals: int = 0
    codes: dict[str, int] = field(default_factory=dict)  # every answer: purchases and reversals


def cli_runner(settings):
    """``posgw ARGS`` in a thread against ``settings``: the parsed JSON with --json; exit 0 asserted."""

    async def cli_run(*argv: str):
        def call():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli_main(list(argv), settings)
            assert code == 0, argv
            return json.loads(out.getvalue()) if "--json" in argv else None

        return await asyncio.to_thread(call)

    return cli_run


async def register_world(cli_run) -> list[tuple[str, str]]:
    await cli_run("agent", "add", "AG01", "--name", "Agent")
    await cli_run("merchant", "add", "MERCHANT0000001", "--name", "Shop", "--agent", "AG01")
    lanes = []
    for i in range(TERMINALS):
        tid, pan = f"CRSH{i:04d}", demo_pan(100 + i)
        await cli_run("terminal", "add", tid, "--merchant", "MERCHANT0000001", "--tmk", TEST_TMK.hex())
        await cli_run("card", "issue", pan, "--pin", PIN, "--expiry", "3012", "--balance", str(OPENING_FEN // 100))
        lanes.append((tid, pan))
    return lanes


async def reverse_until_answered(terminal: Terminal, original, deadline: float, book: Book) -> None:
    while True:
        try:
            response = await terminal.reverse(original)
            book.codes[response.response_code] = book.codes.get(response.response_code, 0) + 1
            if response.response_code == "00":
                book.reversals += 1
                return
        except NO_ANSWER:
            pass
        assert time.monotonic() < deadline, "a reversal was never answered"
        await asyncio.sleep(0.1)


async def drive(port: int, lanes: list[tuple[str, str]], stop: asyncio.Event, book: Book) -> None:
    async def lane(tid: str, pan: str) -> None:
        terminal = Terminal("127.0.0.1", port, tid, "MERCHANT0000001", TEST_TMK, timeout_s=2.0)
        while terminal.keys is None:
            try:
                await terminal.sign_on()
            except NO_ANSWER:
                await asyncio.sleep(0.1)
        rng = random.Random(tid)
        while not stop.is_set():
            stan, amount = terminal.next_stan(), rng.randint(1, 50)
            try:
                response = await terminal.purchase(pan, PIN, amount, stan=stan)
            except NO_ANSWER:
                book.unanswered += 1
                await reverse_until_answered(terminal, terminal.last_request, time.monotonic() + 60, book)
                continue
            code = response.response_code
            book.codes[code] = book.codes.get(code, 0) + 1
            if code == "00":
                book.approved[(tid, stan)] = (pan, amount)
            elif code == "96":
                await asyncio.sleep(0.05)  # the database is away: answered 96, nothing moved
        await terminal.close()

    await asyncio.gather(*(lane(tid, pan) for tid, pan in lanes))


async def assert_no_fen_lost_or_doubled(url: str, lanes: list[tuple[str, str]], book: Book, cli_run) -> None:
    check = await cli_run("ledger", "check", "--json")
    assert check["ok"], check
    for _tid, pan in lanes:
        spent = sum(amount for (card, amount) in book.approved.values() if card == pan)
        shown = await cli_run("card", "show", pan, "--json")
        assert shown["balance_fen"] == OPENING_FEN - spent, (pan, shown, spent)
    conn = await asyncpg.connect(url)
    try:
        statuses = {(r["tid"], r["stan"]): r["status"] for r in await conn.fetch(
            "SELECT tid, stan, status FROM gw_transactions WHERE mti_class = '0200' AND response_code = '00'")}
        for key in book.approved:
            assert statuses.get(key) == "approved", (key, statuses.get(key))
        doubled = await conn.fetch(
            "SELECT posting_id FROM ledger_transfers GROUP BY posting_id HAVING count(*) > 1")
        assert doubled == []  # a purchase posts one transfer (no merchant discount here), never two
    finally:
        await conn.close()


@pytest.mark.slow
async def test_the_gateway_killed_at_random_moments_loses_and_doubles_nothing(db_url, tmp_path):
    cli_run = cli_runner(make_settings(db_url, tmp_path))

    lanes = await register_world(cli_run)
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, POSGW_DATABASE_URL=db_url, POSGW_DATA_DIR=str(tmp_path), POSGW_LMK=TEST_LMK,
               POSGW_LOG_FORMAT="json", POSGW_RISK_ENABLED="false")

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE)
        while True:  # the line that says it listens
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "posgw serve exited"
            if b'"listening"' in line:
                break
        asyncio.get_running_loop().create_task(proc.stderr.read())  # drain
        return proc

    book, stop = Book(), asyncio.Event()
    proc = await start()
    driver = asyncio.create_task(drive(port, lanes, stop, book))
    kills = 0
    rng = random.Random(20261124)
    try:
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
            proc = await start()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(driver, 120)
    finally:
        stop.set()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    assert kills == 4 and len(book.approved) > 50, book
    await assert_no_fen_lost_or_doubled(db_url, lanes, book, cli_run)
    print(f"gateway killed {kills} times: {len(book.approved)} approvals, {book.unanswered} unanswered, "
          f"{book.reversals} reversals answered, codes {book.codes}")


@pytest.mark.slow
async def test_postgresql_restarted_under_load_loses_and_doubles_nothing(tmp_path):
    from pgserver._commands import pg_ctl

    from gateway.db.pool import embedded_server

    server = await asyncio.to_thread(embedded_server, tmp_path / "own-pg")
    pgdata, user, url = server.pgdata, server.system_user, server.get_uri()
    socket_dir = server.get_postmaster_info().socket_dir
    settings = make_settings(url, tmp_path)
    cli_run = cli_runner(settings)

    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        lanes = await register_world(cli_run)
        book, stop = Book(), asyncio.Event()
        async with running_gateway(settings) as gateway:
            driver = asyncio.create_task(drive(gateway.server.port, lanes, stop, book))
            await asyncio.sleep(1.0)
            before = len(book.approved)
            await asyncio.to_thread(pg_ctl, ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
            await asyncio.sleep(1.0)
            assert book.codes.get("96", 0) > 0  # answered 96 while it is down (purchases or reversals)
            await asyncio.to_thread(pg_ctl, ["-w", "-o", f'-h "" -k {socket_dir}', "-l", str(server.log), "start"],
                                    pgdata=pgdata, user=user)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.wait_for(driver, 120)
            assert len(book.approved) > before  # it recovered by itself
        await assert_no_fen_lost_or_doubled(url, lanes, book, cli_run)
        print(f"PostgreSQL restarted: {len(book.approved)} approvals, {book.unanswered} unanswered, "
              f"{book.reversals} reversals answered, codes {book.codes}")
    finally:
        try:
            await asyncio.to_thread(pg_ctl, ["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)
        except Exception:
            pass

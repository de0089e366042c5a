"""Crash consistency of version 2 (issue 21): the gateway SIGKILLed at random
moments during a mix of pre-authorizations, completions, cancels, purchases
and refunds. Terminals behave as real ones: no answer means a reversal,
repeated until answered. Afterwards the ledger checks clean, and every card's
balance and available balance are its opening balance less exactly what the
terminals saw approved (purchases and completions, less refunds, less the
holds of the pre-authorizations they still believe open)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

from bench.procs import free_port
from protocol.messages import Message
from sim.terminal import Terminal
from tests.conftest import TEST_LMK, TEST_TMK, make_settings
from tests.e2e.test_crash import BIN, NO_ANSWER, OPENING_FEN, PIN, cli_runner, register_world
from tests.e2e.test_preauth import cancel, card_request, completion, preauth
from tests.e2e.test_refunds import refund_request


@dataclass
class Card:
    """What one lane's terminal saw approved on its card."""

    pan: str
    spent_fen: int = 0  # purchases and completions, less refunds
    held: dict[str, tuple[Message, int]] = field(default_factory=dict)  # open pre-authorizations by auth code
    refundable: list[tuple[Message, int]] = field(default_factory=list)  # purchases and what is left of them
    approvals: int = 0


async def exchange(terminal: Terminal, request: Message) -> Message | None:
    """The answer, or None after a reversal of it answered 00 (it did not happen)."""
    try:
        return (await terminal.send(request)).message
    except NO_ANSWER:
        pass
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await terminal.reverse(request)).response_code == "00":
                return None
        except NO_ANSWER:
            pass
        assert time.monotonic() < deadline, "a reversal was never answered"
        await asyncio.sleep(0.1)


async def step(terminal: Terminal, card: Card, rng: random.Random) -> None:
    roll = rng.random()
    pan = card.pan
    if roll < 0.3 or (roll < 0.6 and not card.held):
        amount = rng.randint(50, 100)
        answer = await exchange(terminal, preauth(terminal, amount, pan=pan, pin=PIN))
        if answer is not None and answer.response_code == "00":
            card.held[answer.auth_id] = (answer, amount)
    elif roll < 0.6:
        code = rng.choice(sorted(card.held))
        original, amount = card.held[code]
        final = amount + rng.randint(0, amount * 15 // 100)
        answer = await exchange(terminal, completion(terminal, final, original, pan=pan, pin=PIN))
        if answer is not None and answer.response_code == "00":
            del card.held[code]
            card.spent_fen += final
            card.approvals += 1
    elif roll < 0.7 and card.held:
        code = rng.choice(sorted(card.held))
        original, amount = card.held[code]
        answer = await exchange(terminal, cancel(terminal, amount, original, pan=pan))
        if answer is not None and answer.response_code == "00":
            del card.held[code]
    elif roll < 0.85 or not card.refundable:
        amount = rng.randint(1, 50)
        answer = await exchange(terminal, card_request(terminal, "0200", "000000", "22", amount, pin=PIN, pan=pan,
                                                       condition_code="00"))
        if answer is not None and answer.response_code == "00":
            card.spent_fen += amount
            card.refundable.append((answer, amount))
            card.approvals += 1
    else:
        n = rng.randrange(len(card.refundable))
        original, left = card.refundable[n]
        amount = rng.randint(1, left)
        answer = await exchange(terminal, refund_request(terminal, amount, original, pan=pan))
        if answer is not None and answer.response_code == "00":
            card.spent_fen -= amount
            card.approvals += 1
            if left == amount:
                card.refundable.pop(n)
            else:
                card.refundable[n] = (original, left - amount)


async def lane(port: int, tid: str, card: Card, stop: asyncio.Event) -> None:
    """One terminal's mix until ``stop``, then every pre-authorization it believes open cancelled."""
    terminal = Terminal("127.0.0.1", port, tid, "MERCHANT0000001", TEST_TMK, timeout_s=2.0)
    rng = random.Random(tid)

    async def signed_on() -> None:
        while terminal.keys is None:
            try:
                await terminal.sign_on()
            except NO_ANSWER:
                await asyncio.sleep(0.1)

    await signed_on()
    while not stop.is_set():
        await step(terminal, card, rng)
    while card.held:
        code = sorted(card.held)[0]
        original, amount = card.held[code]
        answer = await exchange(terminal, cancel(terminal, amount, original, pan=card.pan))
        if answer is not None and answer.response_code in ("00", "25"):
            del card.held[code]
    await terminal.close()


@pytest.mark.slow
async def test_the_gateway_killed_during_preauths_completions_and_refunds_loses_and_doubles_nothing(
        db_url, tmp_path):
    cli_run = cli_runner(make_settings(db_url, tmp_path))
    lanes = await register_world(cli_run)
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, POSGW_DATABASE_URL=db_url, POSGW_DATA_DIR=str(tmp_path), POSGW_LMK=TEST_LMK,
               POSGW_LOG_FORMAT="json", POSGW_RISK_ENABLED="false")

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE)
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "posgw serve exited"
            if b'"listening"' in line:
                break
        asyncio.get_running_loop().create_task(proc.stderr.read())
        return proc

    cards = {tid: Card(pan) for tid, pan in lanes}
    stop = asyncio.Event()
    proc = await start()
    driver = asyncio.gather(*(lane(port, tid, cards[tid], stop) for tid in cards))
    rng = random.Random(20261207)
    try:
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await start()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(driver, 180)
    finally:
        stop.set()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()

    check = await cli_run("ledger", "check", "--json")
    assert check["ok"], check
    assert sum(card.approvals for card in cards.values()) > 20
    for card in cards.values():
        shown = await cli_run("card", "show", card.pan, "--json")
        assert (shown["balance_fen"], shown["available_fen"], shown["holds_fen"]) == (
            OPENING_FEN - card.spent_fen, OPENING_FEN - card.spent_fen, 0), (card.pan, shown)
    print(f"gateway killed 4 times: {sum(card.approvals for card in cards.values())} money approvals, "
          f"spent {[card.spent_fen for card in cards.values()]}")

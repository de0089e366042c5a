"""Nothing left in doubt after a load run: the reversals still owed sent at its end until
answered (bounded by --timeout), and ``--check`` comparing the money the simulator saw
approved with the ledger. Known numbers first, then an in-test host, then a real
gateway killed under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from bench.procs import free_port
from protocol.crypto import cup_ecb_mac
from protocol.framing import encode_frame, parse_frame_body
from protocol.messages import decode_message
from sim import cli as sim_cli
from sim.load.check import CheckError, OperatorCli, check_report, check_text, compare, payers_of
from sim.load.cli import exit_code, summary
from sim.load.faults import Faults
from sim.load.loops import LoadRun, run_load
from sim.load.money import CARD, FLOAT, MoneySeen
from sim.load.options import LoadOptions, UsageError
from sim.load.stats import Stats, build_report
from sim.load.terminals import LoadTerminal, make_terminals
from sim.load.world import World
from sim.terminal import WorkingKeys, build_request
from tests.conftest import TEST_LMK
from tests.sim.test_load import DEMO_JSON

BIN = Path(sys.executable).parent
MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN_1, PAN_2 = "6222020000000015", "6222020000000023"
WORLD = {**DEMO_JSON, "merchants": [{"mid": "898100000000001", "agent": "DEMO"}]}


# -- the comparison, with known numbers ----------------------------------------------------------


def test_the_ledger_must_be_the_opening_less_what_was_seen_approved():
    seen = MoneySeen()
    seen.approved((CARD, PAN_1), 150)
    seen.approved((CARD, PAN_1), 25)
    seen.approved((FLOAT, "DEMO"), 1_000)
    opening = {(CARD, PAN_1): 10_000, (CARD, PAN_2): 500, (FLOAT, "DEMO"): 2_000_000}
    exact = {(CARD, PAN_1): 9_825, (CARD, PAN_2): 500, (FLOAT, "DEMO"): 1_999_000}
    assert compare(opening, seen, exact) == []
    check = check_report(opening, seen, exact)
    assert check == {"ok": True, "cards": 2, "agents": 1, "approved_fen": {"cards": 175, "floats": 1_000},
                     "differences": [], "in_doubt": []}
    assert check_text(check) == ["check: 2 cards and 1 agent floats exact (approved: cards 1.75, floats 10.00 yuan)"]

    one_fen_short = exact | {(CARD, PAN_2): 499}
    check = check_report(opening, seen, one_fen_short)
    assert check["ok"] is False
    assert check["differences"] == [{"payer": "card 622202*0023", "opening_fen": 500, "approved_fen": 0,
                                     "expected_fen": 500, "ledger_fen": 499, "difference_fen": -1}]
    text = "\n".join(check_text(check))
    assert "card 622202*0023: opening 5.00, approved 0.00, expected 5.00, ledger 4.99 (difference -0.01)" in text
    assert PAN_2 not in text


def test_a_request_in_doubt_fails_the_check_even_when_the_balances_agree():
    seen = MoneySeen()
    seen.doubt((CARD, PAN_1), 42, "drop", None)
    opening = closing = {(CARD, PAN_1): 10_000}
    check = check_report(opening, seen, closing)
    assert check["ok"] is False and check["differences"] == []
    assert check["in_doubt"] == [{"payer": "card 622202*0015", "amount_fen": 42, "cause": "drop",
                                  "reversal_answer": None}]
    assert check_text(check) == [
        "check: FAILED over 1 cards and 0 agent floats: 0 differences, 1 requests in doubt",
        "  in doubt: card 622202*0015, 0.42 yuan after drop: its reversal was never answered"]
    assert exit_code({"check": check}) == 1
    assert exit_code({"check": None}) == 0


def test_the_check_covers_the_cards_of_the_terminals_and_their_agents_floats():
    world = World.from_json(WORLD)
    assert {t.agent for t in world.terminals} == {"DEMO"}
    options = LoadOptions(mix={"purchase": 1, "bill-pay": 1})
    terminals = make_terminals(world, options, 2)
    assert payers_of(terminals, options.mix) == [
        (CARD, "6222020000000015"), (CARD, "6222020000000031"), (CARD, "6222020000000056"),
        (CARD, "6222020000000023"), (CARD, "6222020000000049"), (FLOAT, "DEMO")]
    assert payers_of(terminals, {"balance": 1}) == []
    no_merchants = make_terminals(World.from_json(DEMO_JSON), options, 2)
    with pytest.raises(UsageError, match="agent of terminal DEMO0001"):
        payers_of(no_merchants, options.mix)
    assert payers_of(no_merchants, {"purchase": 1})[0] == (CARD, "6222020000000015")


def test_the_text_report_ends_with_the_check():
    stats = Stats({"purchase": 1})
    report = build_report(stats, mode="closed", connect="persistent", terminals=1, duration_s=1.0,
                          mix={"purchase": 1}, faults={}, rate=None,
                          signon={"terminals": 1, "signed_on": 1, "failed": 0, "failures": {}}).to_dict()
    seen = MoneySeen()
    report["check"] = check_report({(CARD, PAN_1): 100}, seen, {(CARD, PAN_1): 100})
    assert summary(report).splitlines()[-1] == ("check: 1 cards and 0 agent floats exact (approved: cards 0.00, "
                                                "floats 0.00 yuan)")
    report["reversals"] |= {"sent": 3, "answered": 2, "attempts": 9, "unanswered": 1, "owed": 2, "slots_held": 5,
                            "end_of_run": {"owed": 1, "sent": 4, "answered": 0, "left": 1, "seconds": 3.0}}
    lines = summary(report).splitlines()
    assert "reversals: 3 sent, 2 answered in 9 attempts, 1 unanswered; 2 owed for a while (5 slots held)" in lines
    assert "owed at the end of the run: 1 reversals, 4 sent, 0 answered, 1 left, in 3.0 s" in lines
    report["check"] = {"ok": False, "error": "card 622202*0015: `card show` exited 1: unknown card 622202*0015"}
    assert summary(report).splitlines()[-1] == ("check: not done: card 622202*0015: `card show` exited 1: "
                                                "unknown card 622202*0015")
    assert exit_code(report) == 1


def test_load_check_exits_2_when_the_opening_balances_cannot_be_read(tmp_path, capsys, unused_tcp_port):
    world = tmp_path / "world.json"
    world.write_text(json.dumps(WORLD))
    argv = ["load", "--world", str(world), "--port", str(unused_tcp_port), "--quiet", "--check"]
    assert sim_cli.main([*argv, "--check-command", "/bin/false"]) == 2
    err = capsys.readouterr().err
    assert "posgw-sim load: error: --check: opening balances: card 622202*0015: `card show` exited 1" in err
    assert PAN_1 not in err
    assert sim_cli.main([*argv, "--check-command", str(tmp_path / "no-posgw")]) == 2
    assert "cannot run" in capsys.readouterr().err
    assert sim_cli.main([*argv, "--mix", "bill-pay=1", "--check-command", "/bin/false"]) == 2
    assert "agent DEMO float: `agent show` exited 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_cli.main([*argv, "--check-command", ""])


async def test_the_operator_cli_reads_balances_and_names_an_unknown_card_masked(issued_card, db_url,
                                                                                tmp_path):
    reader = OperatorCli([str(BIN / "posgw")], env=_env(db_url, tmp_path))
    pan = issued_card
    assert await reader.read([(CARD, pan), (FLOAT, "AG01"), (CARD, pan)]) == {(CARD, pan): 12_345,
                                                                              (FLOAT, "AG01"): 0}
    with pytest.raises(CheckError, match=r"^card 622202\*0015: `card show` exited 2: posgw: error: unknown card "
                                         r"622202\*{6}0015$"):
        await reader.read([(CARD, PAN_1)])


# -- the reversals owed at the end of a run, against an in-test host -----------------------------


def _reversal_host(codes: list[str]):
    """A host answering each 0400 with the next of ``codes`` (the last one for ever), without a MAC,
    and each 0200 with a 0210 00 MAC'd under ``MAK``; the MTIs it saw, with the answers' codes."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                frame = parse_frame_body(await reader.readexactly(length))
                request = decode_message(frame.message)
                reversals = sum(1 for entry in seen if entry.startswith("0400"))
                code = codes[min(reversals, len(codes) - 1)] if request.mti == "0400" else "00"
                seen.append(f"{request.mti} {code}")
                answer = build_request(f"{request.mti[:2]}{int(request.mti[2]) + 1}0", pan=request.pan,
                                       processing_code=request.processing_code, amount=request.amount,
                                       stan=request.stan, terminal_id=request.terminal_id,
                                       merchant_id=request.merchant_id, currency=request.currency,
                                       txn_data=request.txn_data, response_code=code)
                raw = answer.encode() if request.mti == "0400" else answer.encode_with_mac(partial(cup_ecb_mac, MAK))
                writer.write(encode_frame(frame.tpdu.swapped(), frame.header, raw))
        writer.close()

    return serve, seen


async def _owed_purchase(port: int, timeout_s: float = 0.5) -> tuple[Faults, MoneySeen, LoadTerminal]:
    """A purchase of 0.37 yuan by the world's second card (the first template taken) sent nowhere
    (nobody listens on ``port``): its reversal is owed."""
    options = LoadOptions(port=port, mix={"purchase": 1}, timeout_s=timeout_s)
    terminal = make_terminals(World.from_json(WORLD), options, 1)[0]
    terminal.terminal.keys = WorkingKeys(pik=MAK, mak=MAK, tdk=None)
    terminal._mac_of = partial(cup_ecb_mac, MAK)
    _, message = terminal.template("purchase").build(1234, 37, terminal.mac_of)
    stats, money = Stats(options.mix), MoneySeen()
    faults = Faults(stats, options, random.Random(1), money)
    await faults.reverse(terminal, message, "drop", reason="98")
    assert len(terminal.owed) == 1 and stats.reversals["sent"] == stats.reversals["owed"] == 1
    assert stats.reversals["answered"] == 0 and stats.reversals["attempts"] == 5  # REVERSAL_TRIES, all refused
    return faults, money, terminal


async def test_a_reversal_owed_when_the_host_was_away_is_sent_at_the_end_until_answered():
    port = free_port()
    faults, money, terminal = await _owed_purchase(port)
    serve, answers = _reversal_host(["96", "96", "00"])  # back, but the database is away at first
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        await faults.settle_owed([terminal], 5.0)
    finally:
        server.close()
        await server.wait_closed()
    reversals = faults.stats.reversals
    assert answers == ["0400 96", "0400 96", "0400 00"]
    assert reversals["end_of_run"] | {"seconds": 0} == {"owed": 1, "sent": 3, "answered": 1, "left": 0,
                                                          "seconds": 0}
    assert reversals["answered_96"] == 2 and reversals["by_code"] == {"00": 1}
    assert reversals["answered"] == 1 and reversals["unanswered"] == 0
    assert terminal.owed == [] and money.in_doubt == [] and faults.stats.error_total == 0


async def test_a_reversal_never_answered_is_left_after_the_timeout_and_in_doubt():
    port = free_port()
    faults, money, terminal = await _owed_purchase(port)
    serve, answers = _reversal_host(["96"])
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    started = time.monotonic()
    try:
        await faults.settle_owed([terminal], 0.8)
    finally:
        server.close()
        await server.wait_closed()
    assert 0.7 <= time.monotonic() - started < 2.0  # bounded by the time given
    assert set(answers) == {"0400 96"}
    end = faults.stats.reversals["end_of_run"]
    assert end["owed"] == 1 and end["answered"] == 0 and end["left"] == 1 and end["sent"] == len(answers) >= 2
    assert faults.stats.reversals["unanswered"] == 1 and faults.stats.errors["reversals_unanswered"] == 1
    assert [d.to_dict() for d in money.in_doubt] == [
        {"payer": "card 622202*0023", "amount_fen": 37, "cause": "drop", "reversal_answer": None}]


async def test_a_terminal_that_owes_a_reversal_sends_it_before_its_next_request():
    port = free_port()
    _, money, terminal = await _owed_purchase(port)
    serve, seen = _reversal_host(["96", "00"])
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    runner = LoadRun([terminal], terminal.options, money)
    try:
        await runner.one(terminal, None)  # the reversal first: 96, so no request yet
        assert seen == ["0400 96"] and runner.stats.requests == 0 and len(terminal.owed) == 1
        await runner.one(terminal, None)  # the reversal answered, then the purchase
        assert seen == ["0400 96", "0400 00", "0200 00"]
    finally:
        terminal.close()
        server.close()
        await server.wait_closed()
    reversals = runner.stats.reversals
    assert (reversals["answered"], reversals["answered_96"], reversals["by_code"]) == (1, 1, {"00": 1})
    assert reversals["slots_held"] == 1 and runner.stats.slots == 2
    assert terminal.owed == [] and runner.stats.requests == runner.stats.approved == 1
    assert runner.stats.error_total == 0 and money.in_doubt == []
    assert sum(money.approved_fen.values()) in range(1, 11)  # the purchase's amount, 0.01 to 0.10


# -- a real gateway --------------------------------------------------------------------------------


@pytest.fixture
async def issued_card(cli, world) -> str:
    """The ``world`` of tests/conftest.py and a card of 123.45 yuan: its PAN."""
    pan = "6222020000000114"
    result = await cli("card", "issue", pan, "--pin", "123456", "--expiry", "3012", "--balance", "123.45")
    assert result.code == 0, result.stderr
    return pan


def _env(db_url: str, data_dir: Path) -> dict[str, str]:
    return dict(os.environ, POSGW_DATABASE_URL=db_url, POSGW_DATA_DIR=str(data_dir), POSGW_LMK=TEST_LMK,
                POSGW_LOG_FORMAT="json", POSGW_RISK_ENABLED="false")


async def _demo_world(cli, tmp_path: Path) -> Path:
    result = await cli("demo", "--terminals", "4", "--cards", "4", "--json")
    assert result.code == 0, result.stderr
    path = tmp_path / "world.json"
    path.write_text(result.stdout)
    return path


class _WrongOpening:
    """A real reader whose first answer (the opening) is off by ``off_fen`` for one payer."""

    def __init__(self, reader: OperatorCli, payer: tuple[str, str], off_fen: int) -> None:
        self.reader, self.payer, self.off_fen, self.reads = reader, payer, off_fen, 0

    async def read(self, payers):
        balances = await self.reader.read(payers)
        if self.reads == 0:
            balances[self.payer] += self.off_fen
        self.reads += 1
        return balances


@pytest.mark.slow
async def test_a_wrong_opening_balance_fails_the_check(gateway, cli, db_url, tmp_path):
    world = World.from_json(json.loads((await _demo_world(cli, tmp_path)).read_text()))
    reader = OperatorCli([str(BIN / "posgw")], env=_env(db_url, tmp_path))
    options = LoadOptions(port=gateway.server.port, duration_s=1.5, mix={"purchase": 70, "bill-pay": 30}, seed=3)

    exact = (await run_load(world, options, check=reader)).to_dict()
    assert exact["check"]["ok"] is True, exact["check"]
    assert exact["check"]["cards"] == 4 and exact["check"]["agents"] == 1
    assert exact["check"]["approved_fen"]["cards"] > 0 and exact["check"]["approved_fen"]["floats"] > 0
    assert exit_code(exact) == 0

    card = (CARD, world.cards[1].pan)
    wrong = (await run_load(world, options, check=_WrongOpening(reader, card, 100))).to_dict()
    check = wrong["check"]
    assert check["ok"] is False and check["in_doubt"] == []
    assert [(d["payer"], d["difference_fen"]) for d in check["differences"]] == [("card 622202*0023", -100)]
    assert exit_code(wrong) == 1
    assert world.cards[1].pan not in json.dumps(wrong) + "\n".join(check_text(check))


async def _start_gateway(env: dict[str, str], port: int, metrics_port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "posgw"), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
        str(metrics_port), env=env, stderr=asyncio.subprocess.PIPE)
    while True:  # the line that says it listens
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, "posgw serve exited"
        if b'"listening"' in line:
            break
    asyncio.get_running_loop().create_task(process.stderr.read())  # drain
    return process


async def _transactions(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM gw_transactions")
    finally:
        await conn.close()


@pytest.mark.slow
async def test_a_run_with_drops_and_the_gateway_killed_ends_with_nothing_in_doubt(cli, db_url, tmp_path):
    world = await _demo_world(cli, tmp_path)
    env = _env(db_url, tmp_path)
    port, metrics_port = free_port(), free_port()
    gateway = await _start_gateway(env, port, metrics_port)
    load = await asyncio.create_subprocess_exec(
        str(BIN / "posgw-sim"), "load", "--world", str(world), "--port", str(port), "--duration", "8",
        "--mix", "purchase=60,balance=10,bill-pay=30", "--faults", "drop=3", "--timeout", "3", "--seed", "11",
        "--check", "--json", "--quiet", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while await _transactions(db_url) < 50:  # the run is under way
            assert time.monotonic() < deadline and load.returncode is None
            await asyncio.sleep(0.1)
        gateway.send_signal(signal.SIGKILL)
        await gateway.wait()
        await asyncio.sleep(0.5)  # away for a while: terminals find nobody there
        gateway = await _start_gateway(env, port, metrics_port)
        out, err = await asyncio.wait_for(load.communicate(), 90)
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()
        gateway.send_signal(signal.SIGTERM)
        await gateway.wait()
    assert load.returncode == 0, err.decode()
    report = json.loads(out)
    errors = report["errors"]
    assert errors["disconnects"] + errors["connect_failures"] + errors["timeouts"] > 0, errors  # the kill was felt
    assert report["faults"]["drop"]["injected"] > 0
    reversals = report["reversals"]
    assert reversals["sent"] >= report["faults"]["drop"]["reversals_needed"] > 0
    assert reversals["unanswered"] == 0 and reversals["end_of_run"]["left"] == 0
    assert reversals["answered"] == reversals["sent"] and reversals["by_code"] == {"00": reversals["sent"]}
    check = report["check"]
    assert check["ok"] is True, check
    assert check["cards"] == 4 and check["agents"] == 1 and check["approved_fen"]["cards"] > 0
    result = await cli("ledger", "check", "--json")
    assert result.code == 0 and result.json["ok"] is True
    print(f"killed once: {report['approved']} approved, reversals {reversals}, errors "
          f"{ {k: v for k, v in errors.items() if v} }")

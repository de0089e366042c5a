"""``posgw agent set`` and ``posgw agent withdraw`` through the command line, and a withdrawal's way
through ``payout run|file|confirm`` with the bank simulator (CLI.md "Agent network", "Money out";
Rules: Withdrawals, Payouts)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.cli.main import main as cli_main
from gateway.jobs import agent_run
from gateway.upstream import bank_files
from ledger.accounts import FEE_INCOME_ACCOUNT_CODE, account_id
from ledger.postings import PostResult, Transfer, post
from sim import bank
from tests.cli.conftest import stored_audit_text
from tests.conftest import CliResult

ACCOUNT = "6217000012345678"  # shown as *5678
NEW_ACCOUNT = "6217000087654321"  # shown as *4321
BANK_FLAGS = ("--bank-name", "Agricultural Bank", "--account-name", "Agent One")


@pytest.fixture
async def outputs(cli):
    """Run ``posgw`` and keep every line printed (to prove no account number is among them)."""
    printed: list[str] = []

    async def run(*argv: str):
        result = await cli(*argv)
        printed.extend([result.stdout, result.stderr])
        return result

    run.printed = printed  # type: ignore[attr-defined]
    return run


@pytest.fixture
def cli_at(settings):
    """``cli``, its clock shifted by an offset (the setting ``clock_offset_s``, CLI.md Time)."""

    def at(offset: timedelta):
        shifted = settings.model_copy(update={"clock_offset_s": int(offset.total_seconds())})

        async def run(*argv: str) -> CliResult:
            def call() -> CliResult:
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = cli_main(list(argv), shifted)
                return CliResult(code, out.getvalue(), err.getvalue())
            return await asyncio.to_thread(call)
        return run
    return at


async def fund(db, code: str, amount_fen: int) -> None:
    """Profit for the agent, as the agent run credits it (from the house's fee income)."""
    await agent_run.ensure_agent_accounts(db)
    profit = await db.fetchval("SELECT profit_account_id FROM agent_accounts WHERE agent_code = $1", code)
    fee = await account_id(db, FEE_INCOME_ACCOUNT_CODE)
    assert await post(db, f"test:fund:{code}", [Transfer(fee, profit, amount_fen, "agent_share")]) is PostResult.OK


async def profit_fen(db, code: str) -> int:
    return await db.fetchval(
        """SELECT l.credits_posted - l.debits_posted FROM agent_accounts a
             JOIN ledger_accounts l ON l.id = a.profit_account_id WHERE a.agent_code = $1""", code)


async def test_agent_set_shows_the_account_masked_and_is_audited_once(outputs, world, trail, db):
    result = await outputs("agent", "set", world.agent, "--bank-account", ACCOUNT, *BANK_FLAGS, "--json")
    assert result.code == 0, result.stderr
    assert result.json["code"] == world.agent
    assert (result.json["bank_account_masked"], result.json["bank_name"], result.json["account_name"]) == (
        "*5678", "Agricultural Bank", "Agent One")
    shown = (await outputs("agent", "show", world.agent, "--json")).json
    assert (shown["bank_account_masked"], shown["bank_name"], "profit_fen" in shown) == ("*5678", "Agricultural Bank", True)
    assert (await outputs("agent", "set", world.agent, "--bank-account", ACCOUNT, *BANK_FLAGS)).code == 0
    records = [r for r in await trail() if r["action"] == "agent.set"]
    assert len(records) == 1  # the same details again change nothing
    assert records[0]["entity"] == f"agent:{world.agent}"
    assert records[0]["after"]["bank_account_masked"] == "*5678" and records[0]["after"]["bank_version"] == 1
    stored = await db.fetchval("SELECT bank_account_lmk FROM bank_details WHERE beneficiary_kind = 'agent'")
    assert ACCOUNT.encode() not in bytes(stored)
    assert ACCOUNT not in await stored_audit_text(db)
    assert not any(ACCOUNT in text for text in outputs.printed)


@pytest.mark.parametrize(("argv", "message"), [
    (("--bank-account", "12ab"), "go together"),
    (("--bank-account", "12ab", *BANK_FLAGS), "8 to 30 digits"),
    ((), "nothing to set"),
])
async def test_bad_agent_bank_details_exit_2(outputs, world, argv, message):
    result = await outputs("agent", "set", world.agent, *argv)
    assert result.code == 2 and message in result.stderr


async def test_the_worked_example_withdrawal_and_its_audit_record(outputs, world, db, trail):
    await fund(db, world.agent, 150_000)
    await outputs("agent", "set", world.agent, "--bank-account", ACCOUNT, *BANK_FLAGS)
    result = await outputs("agent", "withdraw", world.agent, "1000.00", "--json")
    assert result.code == 0, result.stderr
    assert {key: result.json[key] for key in ("gross_fen", "tax_fen", "fee_fen", "net_fen")} == {
        "gross_fen": 100_000, "tax_fen": 8_000, "fee_fen": 300, "net_fen": 91_700}
    assert isinstance(result.json["payout_id"], int)
    assert await profit_fen(db, world.agent) == 50_000
    listed = (await outputs("payout", "list", "--status", "pending", "--json")).json["payouts"]
    assert [(p["id"], p["beneficiary_kind"], p["amount_fen"], p["date"]) for p in listed] == [
        (result.json["payout_id"], "agent", 91_700, None)]
    [record] = [r for r in await trail() if r["action"] == "agent.withdraw"]
    assert (record["entity"], record["before"], record["after"]["gross_fen"]) == (
        f"agent:{world.agent}", {"profit_fen": 150_000}, 100_000)
    assert (await outputs("ledger", "check")).code == 0


@pytest.mark.parametrize("problem", ["below the minimum", "no bank details", "frozen"])
async def test_a_refused_withdrawal_exits_2_and_moves_nothing(outputs, world, db, problem):
    await fund(db, world.agent, 150_000)
    if problem != "no bank details":
        await outputs("agent", "set", world.agent, "--bank-account", ACCOUNT, *BANK_FLAGS)
    if problem == "frozen":
        assert (await outputs("agent", "freeze", world.agent)).code == 0
    amount = "99.99" if problem == "below the minimum" else "1000"
    result = await outputs("agent", "withdraw", world.agent, amount, "--json")
    assert result.code == 2
    assert {"below the minimum": "at least 100.00", "no bank details": "no bank details",
            "frozen": "frozen"}[problem] in result.stderr
    assert await profit_fen(db, world.agent) == 150_000
    assert await db.fetchval("SELECT count(*) FROM payouts") == 0


async def test_a_withdrawal_paid_by_the_next_run_returned_then_paid_again_after_agent_set(
        outputs, cli_at, world, db, yesterday, tmp_path: Path):
    await fund(db, world.agent, 150_000)
    await outputs("agent", "set", world.agent, "--bank-account", ACCOUNT, *BANK_FLAGS)
    first = (await outputs("agent", "withdraw", world.agent, "1000", "--json")).json

    # The run of yesterday runs yesterday's agent run first (none was final), then sends the withdrawal.
    assert await db.fetchval("SELECT count(*) FROM agent_runs WHERE day = $1", yesterday) == 0
    run = await outputs("payout", "run", "--date", yesterday.isoformat(), "--json")
    assert run.code == 0, run.stderr
    assert (run.json["count"], run.json["total_fen"]) == (1, 91_700)
    assert await db.fetchval("SELECT count(*) FROM agent_runs WHERE day = $1 AND final", yesterday) == 1
    assert (await outputs("payout", "run", "--date", yesterday.isoformat(), "--json")).json == run.json
    assert await db.fetchval("SELECT count(*) FROM agent_runs WHERE day = $1", yesterday) == 1  # not run again
    pain001 = tmp_path / "payouts.xml"
    made = await outputs("payout", "file", "--date", yesterday.isoformat(), "--format", "pain001",
                         "--out", str(pain001), "--json")
    assert made.code == 0, made.stderr
    bank_files.validate(pain001.read_bytes(), bank_files.PAIN001_SCHEMA)

    # The bank simulator rejects the agent's account: the gross goes back to the profit balance.
    answer = tmp_path / "answer.xml"
    answer.write_bytes(bank.answer(pain001.read_bytes(), {ACCOUNT}))
    confirmed = await outputs("payout", "confirm", "--file", str(answer), "--json")
    assert confirmed.json == {"paid": 0, "returned": 1, "unchanged": 0, "conflicts": []}
    assert await profit_fen(db, world.agent) == 150_000
    again = await outputs("payout", "confirm", "--file", str(answer), "--json")
    assert (again.json["unchanged"], await profit_fen(db, world.agent)) == (1, 150_000)
    returned = (await outputs("payout", "list", "--status", "returned", "--json")).json["payouts"]
    assert [p["id"] for p in returned] == [first["payout_id"]]

    refused = await outputs("agent", "withdraw", world.agent, "1000")
    assert refused.code == 2 and "returned" in refused.stderr
    await outputs("agent", "set", world.agent, "--bank-account", NEW_ACCOUNT, *BANK_FLAGS)
    second = (await outputs("agent", "withdraw", world.agent, "1000", "--json")).json

    # Tomorrow, the run of today pays it to the new account.
    tomorrow = cli_at(timedelta(days=1))
    today = yesterday + timedelta(days=1)
    run = await tomorrow("payout", "run", "--date", today.isoformat(), "--json")
    assert (run.code, run.json["count"], run.json["total_fen"]) == (0, 1, 91_700)
    data = (await tomorrow("payout", "file", "--date", today.isoformat(), "--format", "csv")).stdout
    assert f"{second['payout_id']},agent,{world.agent},Agent One,Agricultural Bank,{NEW_ACCOUNT},91700," in data
    paid = tmp_path / "paid.csv"
    paid.write_text(f"payout_id,status,reason\n{second['payout_id']},paid,\n")
    assert (await tomorrow("payout", "confirm", "--file", str(paid), "--json")).json["paid"] == 1
    assert await profit_fen(db, world.agent) == 50_000
    assert (await outputs("ledger", "check")).code == 0
    assert not any(ACCOUNT in text or NEW_ACCOUNT in text for text in outputs.printed)

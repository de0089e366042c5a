"""Money out through the command line: ``merchant set`` (bank details), ``payout run|file|confirm|list``,
``ledger check``'s payouts rule, their JSON, exit codes and audit records (CLI.md "Money out (T+1)")."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gateway.upstream import bank_files
from sim import bank
from tests.cli.conftest import stored_audit_text

ACCOUNT = "6222021234560123"  # shown as *0123
SAME_LAST4 = "6222029999990123"  # another number that masks the same
BANK_FLAGS = ("--bank-name", "Bank of Example", "--account-name", "Test Shop Ltd")


class Outputs:
    """Every line a command printed (stdout and stderr), to prove no account number is among them."""

    def __init__(self, cli) -> None:
        self.cli = cli
        self.text: list[str] = []

    async def __call__(self, *argv: str):
        result = await self.cli(*argv)
        self.text += [result.stdout, result.stderr]
        return result


@pytest.fixture
def run(cli) -> Outputs:
    return Outputs(cli)


async def set_bank(run: Outputs, mid: str, account: str = ACCOUNT):
    return await run("merchant", "set", mid, "--bank-account", account, *BANK_FLAGS, "--json")


# -- bank details ------------------------------------------------------------------------------


async def test_merchant_set_shows_the_account_masked_and_is_audited_masked_once_per_change(run, world, trail, db):
    assert (await run("merchant", "show", world.mid, "--json")).json["bank_account_masked"] is None

    result = await set_bank(run, world.mid)
    assert result.code == 0, result.stderr
    assert (result.json["mid"], result.json["bank_account_masked"], result.json["bank_name"],
            result.json["account_name"]) == (world.mid, "*0123", "Bank of Example", "Test Shop Ltd")
    shown = (await run("merchant", "show", world.mid, "--json")).json
    assert shown["bank_account_masked"] == "*0123" and shown["balance_fen"] == 0
    assert (await set_bank(run, world.mid)).code == 0  # the same details: no change, no record
    assert (await set_bank(run, world.mid, SAME_LAST4)).code == 0  # a new number, the same mask: a change

    records = [r for r in await trail() if r["action"] == "merchant.set"]
    assert len(records) == 2
    first, second = records
    assert first["entity"] == f"merchant:{world.mid}"
    assert (first["before"]["bank_account_masked"], first["before"]["bank_version"]) == (None, None)
    assert {key: first["after"][key] for key in ("bank_account_masked", "bank_name", "account_name",
                                                  "bank_version", "status")} == {
        "bank_account_masked": "*0123", "bank_name": "Bank of Example", "account_name": "Test Shop Ltd",
        "bank_version": 1, "status": "active"}
    assert (second["before"]["bank_version"], second["after"]["bank_version"]) == (1, 2)
    assert second["before"]["bank_account_masked"] == second["after"]["bank_account_masked"] == "*0123"

    stored = await stored_audit_text(db)
    assert ACCOUNT not in stored and SAME_LAST4 not in stored
    assert not [text for text in run.text if ACCOUNT in text or SAME_LAST4 in text]


@pytest.mark.parametrize("argv, message", [
    (("merchant", "set", "MERCHANT0000009", "--bank-account", ACCOUNT, *BANK_FLAGS), "unknown merchant"),
    (("merchant", "set", "MERCHANT0000001", "--bank-account", "62220x21234560123", *BANK_FLAGS), "8 to 30 digits"),
    (("merchant", "set", "MERCHANT0000001", "--bank-account", ACCOUNT), "go together"),
    (("merchant", "set", "MERCHANT0000001"), "nothing to set"),
    (("merchant", "set", "MERCHANT0000001", "--bank-account", ACCOUNT, "--bank-name", " ", "--account-name", "x"),
     "--bank-name"),
])
async def test_bad_bank_details_exit_2_change_nothing_and_never_echo_the_number(run, world, trail, argv, message):
    records = len(await trail())
    result = await run(*argv)
    assert result.code == 2 and message in result.stderr.strip().splitlines()[-1]
    assert "62220" not in result.stderr
    assert len(await trail()) == records
    assert (await run("merchant", "show", world.mid, "--json")).json["bank_account_masked"] is None


# -- a day's payouts ---------------------------------------------------------------------------


async def test_a_days_payouts_run_file_confirm_and_list_with_their_json_and_audit(
        run, world, trail, db, credit_yesterday, yesterday, tmp_path: Path):
    """The account number is in the payout files (the bank needs it) and in no other output or record."""
    day = yesterday.isoformat()
    await set_bank(run, world.mid)
    await credit_yesterday(world.mid, 12_345)

    ran = await run("--actor", "ops:payouts", "payout", "run", "--date", day, "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json == {"date": day, "count": 1, "total_fen": 12_345, "skipped": []}
    assert (await run("merchant", "show", world.mid, "--json")).json["balance_fen"] == 0
    again = await run("payout", "run", "--date", day, "--json")
    assert (again.code, again.json) == (0, ran.json)  # a rerun: the same totals, nothing changed

    listed = (await run("payout", "list", "--date", day, "--json")).json["payouts"]
    assert len(listed) == 1
    payout = listed[0]
    assert {key: payout[key] for key in ("date", "beneficiary_kind", "beneficiary", "amount_fen", "status")} == {
        "date": day, "beneficiary_kind": "merchant", "beneficiary": world.mid, "amount_fen": 12_345,
        "status": "pending"}
    assert isinstance(payout["id"], int) and payout["bank_account_masked"] == "*0123"

    files = {}
    for file_format in ("csv", "pain001"):
        first, second = tmp_path / f"first.{file_format}", tmp_path / f"second.{file_format}"
        for out in (first, second):
            made = await run("payout", "file", "--date", day, "--format", file_format, "--out", str(out), "--json")
            assert made.code == 0, made.stderr
            assert (made.json["count"], made.json["bytes"], made.json["format"]) == (
                1, out.stat().st_size, file_format)
            assert out.stat().st_mode & 0o777 == 0o600
        assert first.read_bytes() == second.read_bytes()  # made again: byte for byte the same
        files[file_format] = first.read_bytes()
    assert files["csv"].decode().splitlines() == [
        ",".join(bank_files.CSV_COLUMNS),
        f"{payout['id']},merchant,{world.mid},Test Shop Ltd,Bank of Example,{ACCOUNT},12345,"
        f"posgw payout {day} #{payout['id']}"]
    bank_files.validate(files["pain001"], bank_files.PAIN001_SCHEMA)
    assert b">123.45</InstdAmt>" in files["pain001"]
    printed = await run.cli("payout", "file", "--date", day, "--format", "csv")  # the file itself, on stdout
    assert printed.code == 0 and printed.stdout.encode() == files["csv"]

    answer = tmp_path / "pain002-answer.xml"
    answer.write_bytes(bank.answer(files["pain001"], reject_accounts=set()))
    confirmed = await run("--actor", "bank:import", "payout", "confirm", "--file", str(answer), "--json")
    assert confirmed.code == 0, confirmed.stderr
    assert confirmed.json == {"paid": 1, "returned": 0, "unchanged": 0, "conflicts": []}
    again = await run("payout", "confirm", "--file", str(answer), "--json")
    assert (again.code, again.json) == (0, {"paid": 0, "returned": 0, "unchanged": 1, "conflicts": []})
    assert (await run("payout", "list", "--status", "paid", "--json")).json["payouts"][0]["id"] == payout["id"]
    assert (await run("payout", "list", "--status", "pending", "--json")).json == {"payouts": []}
    checked = await run("ledger", "check", "--json")
    assert (checked.code, checked.json["ok"], checked.json["problems"]) == (0, True, [])

    records = [r for r in await trail() if r["action"].startswith("payout.")]
    assert [(r["actor"], r["action"], r["entity"]) for r in records] == [
        ("ops:payouts", "payout.run", f"payout:{day}"), ("bank:import", "payout.confirm", "payout:pain002-answer.xml")]
    assert (records[0]["before"], records[0]["after"]) == (
        {}, {"date": day, "count": 1, "total_fen": 12_345, "skipped": 0})
    assert records[1]["before"] == {}
    assert {key: records[1]["after"][key] for key in ("file", "paid", "returned", "unchanged")} == {
        "file": "pain002-answer.xml", "paid": 1, "returned": 0, "unchanged": 0}
    assert len(records[1]["after"]["sha256"]) == 64
    assert ACCOUNT not in await stored_audit_text(db)
    assert not [text for text in run.text if ACCOUNT in text]


async def test_a_returned_payout_goes_back_and_waits_for_new_bank_details(
        run, world, credit_yesterday, yesterday, tmp_path: Path):
    day = yesterday.isoformat()
    await set_bank(run, world.mid)
    await credit_yesterday(world.mid, 5_000)
    assert (await run("payout", "run", "--date", day)).code == 0
    payout_id = (await run("payout", "list", "--json")).json["payouts"][0]["id"]
    answer = tmp_path / "answer.csv"
    answer.write_text(f"payout_id,status,reason\n{payout_id},returned,AC04 closed account\n")
    result = await run("payout", "confirm", "--file", str(answer), "--json")
    assert result.json == {"paid": 0, "returned": 1, "unchanged": 0, "conflicts": []}
    assert (await run("merchant", "show", world.mid, "--json")).json["balance_fen"] == 5_000
    listed = (await run("payout", "list", "--status", "returned", "--json")).json["payouts"]
    assert [(p["id"], p["status"]) for p in listed] == [(payout_id, "returned")]
    assert (await run("ledger", "check")).code == 0


# -- exit codes --------------------------------------------------------------------------------


async def test_payout_run_of_a_day_not_over_or_malformed_exits_2_and_runs_nothing(run, world, settings, trail):
    today = datetime.now(settings.tz).date().isoformat()
    result = await run("payout", "run", "--date", today)
    assert result.code == 2 and "not over" in result.stderr.strip().splitlines()[-1]
    result = await run("payout", "run", "--date", "2026-13-01")
    assert result.code == 2 and "YYYY-MM-DD" in result.stderr
    assert (await run("payout", "list", "--json")).json == {"payouts": []}
    assert not [r for r in await trail() if r["action"] == "payout.run"]


async def test_a_day_without_payouts_has_a_csv_of_its_header_and_no_pain001(run, world, yesterday, trail):
    day = yesterday.isoformat()
    ran = await run("payout", "run", "--date", day, "--json")
    assert ran.json == {"date": day, "count": 0, "total_fen": 0, "skipped": []}
    assert [r["after"] for r in await trail() if r["action"] == "payout.run"] == [
        {"date": day, "count": 0, "total_fen": 0, "skipped": 0}]  # the run happened (once), paying nobody
    csv_file = await run("payout", "file", "--date", day, "--format", "csv")
    assert (csv_file.code, csv_file.stdout) == (0, ",".join(bank_files.CSV_COLUMNS) + "\n")
    pain001 = await run("payout", "file", "--date", day, "--format", "pain001")
    assert pain001.code == 1 and pain001.stdout == "" and "no payouts" in pain001.stderr


async def test_payouts_skipped_for_no_bank_details_are_listed(run, world, credit_yesterday, yesterday):
    await credit_yesterday(world.mid, 700)
    ran = await run("payout", "run", "--date", yesterday.isoformat(), "--json")
    assert ran.json["count"] == 0
    assert ran.json["skipped"] == [{"beneficiary_kind": "merchant", "beneficiary": world.mid,
                                    "reason": "no_bank_details", "balance_fen": 700}]


async def test_a_confirmation_naming_an_unknown_payout_exits_2_and_applies_nothing(
        run, world, trail, credit_yesterday, yesterday, tmp_path: Path):
    await set_bank(run, world.mid)
    await credit_yesterday(world.mid, 2_000)
    assert (await run("payout", "run", "--date", yesterday.isoformat())).code == 0
    payout_id = (await run("payout", "list", "--json")).json["payouts"][0]["id"]
    answer = tmp_path / "answer.csv"
    answer.write_text(f"payout_id,status,reason\n{payout_id},paid,\n{payout_id + 1000},paid,\n")
    records = len(await trail())
    result = await run("payout", "confirm", "--file", str(answer), "--json")
    assert result.code == 2 and str(payout_id + 1000) in result.stderr and result.stdout == ""
    assert (await run("payout", "list", "--json")).json["payouts"][0]["status"] == "pending"
    assert len(await trail()) == records


@pytest.mark.parametrize("argv, message", [
    (("payout", "confirm", "--file", "/nonexistent/answer.csv"), "cannot read"),
    (("payout", "list", "--status", "lost"), "--status"),
    (("payout", "file", "--date", "2026-01-01", "--format", "xlsx"), "--format"),
    (("payout", "file", "--date", "2026-01-01", "--format", "csv", "--json"), "--out"),
    (("payout", "file", "--date", "2026-01-01", "--format", "csv", "--out", "/nonexistent/dir/f.csv"),
     "cannot write"),
])
async def test_bad_payout_input_exits_2(run, world, argv, message):
    result = await run(*argv)
    assert result.code == 2 and message in result.stderr.strip().splitlines()[-1]


async def test_a_confirmation_file_that_is_not_a_bank_answer_exits_2(run, world, tmp_path: Path):
    answer = tmp_path / "answer.csv"
    answer.write_text("id,state\n1,paid\n")
    result = await run("payout", "confirm", "--file", str(answer))
    assert result.code == 2 and "header" in result.stderr


async def test_ledger_check_exits_1_when_the_clearing_account_does_not_hold_the_payouts_sent(
        run, world, db, credit_yesterday, yesterday):
    await set_bank(run, world.mid)
    await credit_yesterday(world.mid, 3_000)
    assert (await run("payout", "run", "--date", yesterday.isoformat())).code == 0
    assert (await run("ledger", "check")).code == 0
    await db.execute("UPDATE payouts SET amount_fen = amount_fen + 1")  # the ledger stays balanced; the rule breaks
    checked = await run("ledger", "check", "--json")
    assert checked.code == 1 and checked.json["ok"] is False
    assert checked.json["problems"] == [
        "account system:payout_clearing holds 3000 fen, payouts made and not confirmed come to 3001 fen"]
    assert "payout_clearing" in checked.stderr


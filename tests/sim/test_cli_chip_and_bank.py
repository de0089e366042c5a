"""``posgw-sim ic-download``, ``posgw-sim signon --follow-prompts [--first-day]`` and
``posgw-sim bank``: their arguments, the chip commands against a real gateway whose
router and header digit stand in for the wiring still to come (as in
tests/gateway/test_ic_flows.py), and the bank simulator from file to file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.domain import ic
from gateway.upstream import bank_files
from gateway.upstream.bank_files import PAIN002_SCHEMA, Payer, PayoutLine, StatusLine
from sim import cli
from tests.gateway.test_ic_flows import ic_gateway  # noqa: F401 (fixture)

BIN = Path(sys.executable).parent
COMMON = ["--tid", "TERM0001", "--mid", "MERCHANT0000001", "--tmk", "0123456789ABCDEFFEDCBA9876543210"]
ACCOUNTS = ("6222021234567890123", "6222029876543210987", "6222020000111122223")


# -- arguments ---------------------------------------------------------------------------------


def test_the_chip_and_bank_commands_parse_their_options():
    parser = cli.build_parser()
    args = parser.parse_args(["ic-download", *COMMON, "--port", "9000", "--json"])
    assert (args.command, args.port, args.tid, args.json) == ("ic-download", 9000, "TERM0001", True)
    args = parser.parse_args(["signon", *COMMON, "--follow-prompts", "--first-day", "--network-code", "004"])
    assert (args.follow_prompts, args.first_day, args.network_code) == (True, True, "004")
    args = parser.parse_args(["signon", *COMMON])
    assert (args.follow_prompts, args.first_day) == (False, False)
    args = parser.parse_args(["bank", "--in", "a.xml", "--out", "b.xml", "--reject", "1,2", "--reason", "ac01"])
    assert (args.input, args.out, args.reject, args.reason) == (Path("a.xml"), Path("b.xml"), "1,2", "AC01")
    assert parser.parse_args(["bank", "--in", "a.xml"]).reason == "AC04"


@pytest.mark.parametrize("argv, error", [
    (["signon", *COMMON, "--first-day"], "--first-day goes with --follow-prompts"),
    (["ic-download", "--tid", "TERM0001", "--mid", "MERCHANT0000001"], "--tmk"),
    (["ic-download", *COMMON[:-1], "0123"], "TMK must be 32 hex digits"),
    (["bank", "--out", "b.xml"], "--in"),
    (["bank", "--in", "a.xml", "--reason", "AC-04"], "status reason code"),
])
def test_bad_usage_exits_2(argv, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err


# -- the chip commands against a gateway ------------------------------------------------------------


async def sim(*argv: str) -> int:
    """``posgw-sim ARGV`` in a thread of its own (it runs its own event loop)."""
    return await asyncio.to_thread(cli.main, list(argv))


async def test_ic_download_prints_both_lists_as_registered(ic_gateway, world, db, capsys):  # noqa: F811
    added = await ic.seed_test_lists(db)
    port = str(ic_gateway.server.port)
    assert await sim("ic-download", *COMMON, "--port", port, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == {"capk": 1, "aid": 1}
    assert report["downloads"] == {"capk": added["capk"], "aid": added["aid"]} == {"capk": 6, "aid": 4}
    registered = await ic.list_capks(db)
    assert [(c["rid"], c["index"]) for c in report["capks"]] == [(c["rid"], c["index"]) for c in registered]
    assert report["aids"] == await ic.list_aids(db)

    assert await sim("ic-download", *COMMON, "--port", port) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == "ic-download: 6 CAPKs (1 queries, 6 downloads), 4 AIDs (1 queries, 4 downloads)"
    assert len(text) == 1 + 6 + 4
    assert text[1] == ("CAPK A000000003 92  expires 20291231  1408 bits  "
                       "check sum 429C954A3859CEF91295F663C963E582ED6EB253")
    assert all(line.startswith("AID  A0000003330101") for line in text[7:])


async def test_signon_follow_prompts_on_a_first_day_then_on_a_day_with_nothing_new(ic_gateway, world, db,  # noqa: F811
                                                                                   capsys):
    await ic.seed_test_lists(db)
    port = str(ic_gateway.server.port)
    assert await sim("signon", *COMMON, "--port", port, "--follow-prompts", "--first-day", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"actions": ["signon", "capk", "aid"],
                                                   "downloaded": {"capk": 6, "aid": 4}}
    assert await sim("signon", *COMMON, "--port", port, "--follow-prompts", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"actions": ["signon"], "downloaded": {}}

    await ic.add_aid(db, *ic.parse_aid("A0000000031010"))  # a new AID: the answer prompts 5
    assert await sim("signon", *COMMON, "--port", port, "--follow-prompts") == 0
    assert capsys.readouterr().out.strip() == "signon --follow-prompts: signon then aid; downloaded 5 AIDs"


async def test_a_refused_exchange_exits_1_and_no_host_exits_2(ic_gateway, world, capsys, unused_tcp_port):  # noqa: F811
    stranger = ["--tid", "NOSUCHID", *COMMON[2:]]
    assert await sim("ic-download", *stranger, "--port", str(ic_gateway.server.port)) == 1
    assert "answered 97" in capsys.readouterr().err
    assert await sim("signon", *stranger, "--port", str(ic_gateway.server.port), "--follow-prompts") == 1
    assert "sign-on answered 97" in capsys.readouterr().err
    assert await sim("ic-download", *COMMON, "--port", str(unused_tcp_port)) == 2
    assert "posgw-sim ic-download: error:" in capsys.readouterr().err


# -- the bank simulator --------------------------------------------------------------------------------


def payout_file() -> bytes:
    """A real payout file of three payouts, as the payout run writes it (valid against its XSD)."""
    lines = [PayoutLine(101 + i, "merchant", f"M{i}", f"Shop {i}", "Bank of Example", account, 1_000 * (i + 1),
                        f"PAYOUT-{101 + i}") for i, account in enumerate(ACCOUNTS)]
    payer = Payer("posgw Ltd", "11001234567890", "102100099996")
    created = datetime(2026, 12, 8, 0, 5, 7, tzinfo=timezone(timedelta(hours=8)))
    document = bank_files.pain001(lines, payer, message_id="POSGW-PAYOUTS-20261207", created_at=created,
                                  execution_date=date(2026, 12, 8))
    bank_files.validate(document, bank_files.PAIN001_SCHEMA)
    return document


def test_bank_answers_a_payout_file_rejecting_the_accounts_it_is_told(tmp_path, capsys):
    (tmp_path / "pain001.xml").write_bytes(payout_file())
    code = cli.main(["bank", "--in", str(tmp_path / "pain001.xml"), "--out", str(tmp_path / "pain002.xml"),
                     "--reject", f"{ACCOUNTS[1]}, {ACCOUNTS[2]}", "--reason", "AC01"])
    assert code == 0
    answer = (tmp_path / "pain002.xml").read_bytes()
    bank_files.validate(answer, PAIN002_SCHEMA)
    assert bank_files.read_status_file(answer) == [
        StatusLine(101, "paid", ""), StatusLine(102, "returned", "AC01"), StatusLine(103, "returned", "AC01")]
    assert b"<GrpSts>PART</GrpSts>" in answer
    assert capsys.readouterr().out == ""  # the answer went to the file


def test_the_installed_command_writes_the_answer_to_stdout_and_refuses_what_is_no_pain001(tmp_path):
    (tmp_path / "pain001.xml").write_bytes(payout_file())
    done = subprocess.run([str(BIN / "posgw-sim"), "bank", "--in", str(tmp_path / "pain001.xml")],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert bank_files.read_status_file(done.stdout) == [
        StatusLine(101, "paid", ""), StatusLine(102, "paid", ""), StatusLine(103, "paid", "")]
    (tmp_path / "csv.xml").write_bytes(bank_files.payouts_csv([]))
    done = subprocess.run([str(BIN / "posgw-sim"), "bank", "--in", str(tmp_path / "csv.xml"), "--reject",
                           ACCOUNTS[0]], capture_output=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == b""
    assert b"posgw-sim bank: error: not well-formed XML" in done.stderr
    assert ACCOUNTS[0].encode() not in done.stderr

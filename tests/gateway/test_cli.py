"""The operator CLI contract (shared/CLI.md): JSON keys, exit codes, nothing changed on failure."""

from __future__ import annotations

import os
import stat

import pytest

from gateway.keys import LmkError, load_lmk


async def test_agent_merchant_terminal_show_print_the_documented_json_keys(cli, world):
    agent = (await cli("agent", "show", "AG01", "--json")).json
    assert agent == {"code": "AG01", "name": "Test Agent", "parent": None, "status": "active",
                     "float_fen": 0, "commission_fen": 0, "level": 1, "profit_fen": 0, "reward_fen": 0,
                     "receivable_fen": 0, "terminals": {"in_stock": 0, "bound": 1, "activated": 0},
                     "redirect": None, "bank_account_masked": None, "bank_name": None, "account_name": None}
    merchant = (await cli("merchant", "show", world.mid, "--json")).json
    assert merchant == {"mid": world.mid, "name": "Test Shop", "agent": "AG01", "status": "active",
                        "mdr_bp": 0, "balance_fen": 0, "bank_account_masked": None, "bank_name": None,
                        "account_name": None}
    terminal = (await cli("terminal", "show", world.tid, "--json")).json
    assert {k: terminal[k] for k in ("tid", "mid", "status", "permit", "mac", "signed_on", "batch", "last_seen")} == {
        "tid": world.tid, "mid": world.mid, "status": "active",
        "permit": ["purchase", "balance", "void", "bill", "refund", "preauth", "voucher"],
        "mac": "cup-ecb", "signed_on": False, "batch": 1, "last_seen": None,
    }
    listing = (await cli("terminal", "list", "--json")).json
    assert [t["tid"] for t in listing["terminals"]] == [world.tid]


async def test_sub_agent_records_its_parent(cli, world):
    assert (await cli("agent", "add", "SUB1", "--name", "Village shop", "--parent", "AG01")).code == 0
    assert (await cli("agent", "show", "SUB1", "--json")).json["parent"] == "AG01"


@pytest.mark.parametrize("argv, message", [
    (("terminal", "add", "TERM0001", "--merchant", "MERCHANT0000001", "--tmk", "00" * 16), "already exists"),
    (("terminal", "add", "TERM0002", "--merchant", "NOSUCHMERCHANT1", "--tmk", "00" * 16), "unknown merchant"),
    (("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000001", "--tmk", "XYZ"), "32 hex digits"),
    (("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000001", "--tmk", "G" * 32), "32 hex digits"),
    (("terminal", "add", "SHORT", "--merchant", "MERCHANT0000001", "--tmk", "00" * 16), "8 printable"),
    (("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000001", "--tmk", "00" * 16,
      "--permit", "purchase,teleport"), "--permit"),
    (("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000001", "--tmk", "00" * 16,
      "--mac", "md5"), "--mac"),
    (("terminal", "add", "TERM0002", "--merchant", "MERCHANT0000001", "--tmk", "00" * 16,
      "--location", "91,200"), "location"),
    (("merchant", "add", "MERCHANT0000001", "--name", "x", "--agent", "AG01"), "already exists"),
    (("merchant", "add", "MERCHANT0000002", "--name", "x", "--agent", "NOAGENT"), "unknown agent"),
    (("merchant", "add", "TOOSHORT", "--name", "x", "--agent", "AG01"), "15 printable"),
    (("merchant", "add", "MERCHANT0000002", "--name", "x", "--agent", "AG01", "--mdr-bp", "10001"), "basis points"),
    (("agent", "add", "AG01", "--name", "again"), "already exists"),
    (("agent", "add", "bad code!", "--name", "x"), "letters, digits"),
    (("agent", "add", "AG02", "--name", "x", "--parent", "NOPE"), "unknown parent"),
    (("agent", "show", "NOPE"), "unknown agent"),
    (("terminal", "freeze", "NOPE0001"), "unknown terminal"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
async def test_bad_input_exits_2_with_a_one_line_reason_and_changes_nothing(cli, world, db, argv, message):
    before = await db.fetchval(
        "SELECT (SELECT count(*) FROM terminals) + (SELECT count(*) FROM merchants)"
        " + (SELECT count(*) FROM agents) + (SELECT count(*) FROM ledger_accounts)")
    result = await cli(*argv)
    assert result.code == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert result.stdout == ""
    after = await db.fetchval(
        "SELECT (SELECT count(*) FROM terminals) + (SELECT count(*) FROM merchants)"
        " + (SELECT count(*) FROM agents) + (SELECT count(*) FROM ledger_accounts)")
    assert after == before


async def test_terminal_set_changes_permits_mac_and_location(cli, world):
    result = await cli("terminal", "set", world.tid, "--permit", "balance,purchase", "--mac", "x9.19",
                       "--location", "31.2304,121.4737", "--radius-km", "5", "--json")
    assert result.code == 0, result.stderr
    shown = result.json
    assert shown["permit"] == ["purchase", "balance"]
    assert shown["mac"] == "x9.19"
    assert shown["location"] == "31.2304,121.4737" and shown["radius_km"] == 5.0


async def test_tmk_is_stored_only_under_the_lmk(cli, world, db):
    row = await db.fetchrow("SELECT tmk_lmk, tmk_kcv FROM terminals WHERE tid = $1", world.tid)
    assert world.tmk not in bytes(row["tmk_lmk"])
    assert row["tmk_lmk"] != world.tmk
    from protocol.crypto import key_check_value
    assert bytes(row["tmk_kcv"]) == key_check_value(world.tmk)


async def test_demo_is_idempotent_and_prints_terminals_with_their_tmks(cli):
    first = await cli("demo", "--terminals", "3", "--json")
    assert first.code == 0, first.stderr
    second = await cli("demo", "--terminals", "3", "--json")
    assert first.json == second.json
    world = first.json
    assert set(world) >= {"agents", "merchants", "terminals", "cards", "billers"}
    assert [t["tid"] for t in world["terminals"]] == ["DEMO0001", "DEMO0002", "DEMO0003"]
    assert all(len(t["tmk"]) == 32 for t in world["terminals"])


async def test_db_migrate_is_idempotent(cli):
    result = await cli("db", "migrate", "--json")
    assert result.code == 0 and result.json == {"applied": []}


def test_lmk_file_is_created_0600_and_reused(tmp_path):
    key = load_lmk(None, tmp_path)
    path = tmp_path / "lmk.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_lmk(None, tmp_path) == key and len(key) == 16


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_lmk_file_readable_by_group_or_others_is_refused(tmp_path, mode):
    load_lmk(None, tmp_path)
    os.chmod(tmp_path / "lmk.key", mode)
    with pytest.raises(LmkError, match="readable by group or others"):
        load_lmk(None, tmp_path)


def test_lmk_from_the_environment_must_be_32_hex_digits(tmp_path):
    assert load_lmk("00112233445566778899AABBCCDDEEFF", tmp_path).hex() == "00112233445566778899aabbccddeeff"
    with pytest.raises(LmkError):
        load_lmk("0011", tmp_path)

"""The chip lists through the command line: ``ic capk add|list|remove``, ``ic aid add|list|remove``,
``terminal show``'s list state, ``demo``'s test lists; their JSON, exit codes and audit records
(CLI.md "Version 2 commands" and its rules)."""

from __future__ import annotations

import json

import pytest

from gateway.domain import ic
from tests.cli.conftest import stored_audit_text
from tests.protocol.test_emv import UPI_TEST_08_CHECKSUM, UPI_TEST_08_MODULUS

RID = "A000000333"
MODULUS = UPI_TEST_08_MODULUS.hex().upper()
CHECKSUM = UPI_TEST_08_CHECKSUM.hex().upper()
CAPK_08 = ("ic", "capk", "add", "--rid", RID, "--index", "08", "--modulus", MODULUS, "--exponent", "03",
           "--expiry", "20301231")
AID_DEBIT = "A000000333010101"
AID_PARAMS = "DF0101009F08020020"


async def test_a_capk_is_added_listed_and_removed_with_one_record_each_and_no_key_material(cli, trail, db):
    added = await cli("--actor", "ops:keys", *CAPK_08, "--checksum", CHECKSUM.lower(), "--json")
    assert added.code == 0, added.stderr
    assert added.json == {"rid": RID, "index": "08", "expiry": "20301231", "checksum": CHECKSUM}
    listed = await cli("ic", "capk", "list", "--json")
    assert listed.json == {"capks": [{"rid": RID, "index": "08", "expiry": "20301231"}]}
    removed = await cli("--actor", "ops:keys", "ic", "capk", "remove", RID.lower(), "08", "--json")
    assert (removed.code, removed.json) == (0, {"rid": RID, "index": "08", "removed": True})
    assert (await cli("ic", "capk", "list", "--json")).json == {"capks": []}

    records = await trail()
    assert [(r["actor"], r["action"], r["entity"]) for r in records] == [
        ("ops:keys", "ic.capk_add", f"capk:{RID}/08"), ("ops:keys", "ic.capk_remove", f"capk:{RID}/08")]
    state = {"rid": RID, "index": "08", "expiry": "20301231", "checksum": CHECKSUM}
    assert (records[0]["before"], records[0]["after"]) == ({}, state)
    assert (records[1]["before"], records[1]["after"]) == (state, {})
    modulus_part = MODULUS[20:60]  # any stretch of the key
    assert modulus_part not in (await stored_audit_text(db)).upper()
    assert not [out for out in (added, listed, removed) if modulus_part in out.stdout.upper()]


async def test_the_check_sum_is_computed_when_not_given(cli):
    added = await cli(*CAPK_08, "--json")
    assert (added.code, added.json["checksum"]) == (0, CHECKSUM)


@pytest.mark.parametrize("argv, message", [
    ((*CAPK_08, "--checksum", "00" * 20), "--checksum does not match"),
    ((*CAPK_08[:-1], "301231"), "YYYYMMDD"),
    (("ic", "capk", "add", "--rid", "A00000033G", "--index", "08", "--modulus", MODULUS, "--exponent", "03",
      "--expiry", "20301231"), "hex"),
    (("ic", "capk", "remove", RID, "09"), "unknown CAPK"),
    (("ic", "capk", "remove", RID, "8"), "hex"),
    (("ic", "aid", "add", "A0000003", "--tlv", AID_PARAMS), "AID must be"),
    (("ic", "aid", "add", AID_DEBIT, "--tlv", "DF01"), "BER-TLV"),
    (("ic", "aid", "add", AID_DEBIT, "--tlv", "9F0607A0000003330101"), "9F06"),
    (("ic", "aid", "remove", "A000000333999999"), "unknown AID"),
    (("ic", "aid", "remove", "A0Z"), "hex"),
])
async def test_bad_list_input_exits_2_and_changes_nothing(cli, trail, argv, message):
    result = await cli(*argv)
    assert result.code == 2 and message in result.stderr.strip().splitlines()[-1]
    assert await trail() == []
    assert (await cli("ic", "capk", "list", "--json")).json == {"capks": []}
    assert (await cli("ic", "aid", "list", "--json")).json == {"aids": []}


async def test_adding_an_existing_capk_or_aid_exits_2_with_no_second_record(cli, trail):
    assert (await cli(*CAPK_08)).code == 0
    assert (await cli("ic", "aid", "add", AID_DEBIT, "--tlv", AID_PARAMS)).code == 0
    again = await cli(*CAPK_08)
    assert again.code == 2 and "already exists" in again.stderr
    again = await cli("ic", "aid", "add", AID_DEBIT.lower())
    assert again.code == 2 and "already exists" in again.stderr
    assert [r["action"] for r in await trail()] == ["ic.capk_add", "ic.aid_add"]


async def test_an_aid_is_added_listed_and_removed_with_its_parameters(cli, trail):
    added = await cli("ic", "aid", "add", AID_DEBIT.lower(), "--tlv", AID_PARAMS.lower(), "--json")
    assert (added.code, added.json) == (0, {"aid": AID_DEBIT, "tlv": AID_PARAMS})
    assert (await cli("ic", "aid", "add", "A000000333010102", "--json")).json == {"aid": "A000000333010102",
                                                                                  "tlv": ""}
    assert (await cli("ic", "aid", "list", "--json")).json == {"aids": [
        {"aid": AID_DEBIT, "tlv": AID_PARAMS}, {"aid": "A000000333010102", "tlv": ""}]}
    removed = await cli("ic", "aid", "remove", AID_DEBIT, "--json")
    assert (removed.code, removed.json) == (0, {"aid": AID_DEBIT, "removed": True})
    records = await trail()
    assert [(r["action"], r["entity"], r["before"], r["after"]) for r in records] == [
        ("ic.aid_add", f"aid:{AID_DEBIT}", {}, {"aid": AID_DEBIT, "tlv": AID_PARAMS}),
        ("ic.aid_add", "aid:A000000333010102", {}, {"aid": "A000000333010102", "tlv": ""}),
        ("ic.aid_remove", f"aid:{AID_DEBIT}", {"aid": AID_DEBIT, "tlv": AID_PARAMS}, {}),
    ]


async def test_terminal_show_has_its_device_status_and_whether_its_lists_are_current(cli, world, db):
    shown = (await cli("terminal", "show", world.tid, "--json")).json
    assert (shown["tid"], shown["device_status"], shown["capk_current"], shown["aid_current"]) == (
        world.tid, None, True, True)  # empty lists: current
    assert (await cli(*CAPK_08)).code == 0
    await ic.keep_device_status(db, world.tid, {"01": "1", "04": "0"})
    shown = (await cli("terminal", "show", world.tid, "--json")).json
    assert (shown["device_status"], shown["capk_current"], shown["aid_current"]) == (
        {"01": "1", "04": "0"}, False, True)
    assert all(isinstance(value, str) for value in shown["device_status"].values())


async def test_the_demo_registers_the_published_test_lists_once_audited_as_demo(cli, trail):
    world = await cli("demo", "--json")
    assert world.code == 0, world.stderr
    published = json.loads(ic.TEST_KEYS_FILE.read_text(encoding="utf-8"))
    assert world.json["ic"] == {"capks": len(published["capks"]), "aids": len(published["aids"])}
    capks = (await cli("ic", "capk", "list", "--json")).json["capks"]
    assert [(c["rid"], c["index"]) for c in capks] == sorted((k["rid"], k["index"]) for k in published["capks"])
    assert [a["aid"] for a in (await cli("ic", "aid", "list", "--json")).json["aids"]] == sorted(
        a["aid"] for a in published["aids"])
    records = [r for r in await trail() if r["action"].startswith("ic.")]
    assert len(records) == len(published["capks"]) + len(published["aids"])
    assert {r["actor"] for r in records} == {"demo"}
    assert (await cli("demo", "--json")).json["ic"] == world.json["ic"]
    assert len([r for r in await trail() if r["action"].startswith("ic.")]) == len(records)  # added once

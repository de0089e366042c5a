"""The chip terminals' lists in PostgreSQL (gateway.domain.ic): registering with
CLI.md's exit-2 cases, versions, rounds, the header digit, device status, the demo seed."""

from __future__ import annotations

import pytest

from gateway.domain import ic
from gateway.domain.validate import InvalidInput
from protocol import emv, ic_lists
from tests.protocol.test_emv import UPI_TEST_08_CHECKSUM, UPI_TEST_08_MODULUS

RID = "A000000333"
MODULUS = UPI_TEST_08_MODULUS.hex()
CHECKSUM = UPI_TEST_08_CHECKSUM.hex()
AID_DEBIT = "A000000333010101"
AID_PARAMS = "DF0101009F08020020"


def upi_08(**overrides: str):
    args = {"rid": RID, "index": "08", "modulus": MODULUS, "exponent": "03", "expiry": "20301231"} | overrides
    return ic.parse_capk(**args)


def small_capk(index: int):
    """A CAPK with a made-up modulus (the check sum is computed): for tests of the lists."""
    return ic.parse_capk(RID, f"{index:02X}", "C1" * 16, "03", "20301231")


# -- input ---------------------------------------------------------------------------------------


def test_a_capk_check_sum_is_computed_when_not_given_and_verified_when_given():
    assert upi_08().checksum == UPI_TEST_08_CHECKSUM
    assert upi_08(checksum=CHECKSUM).checksum == UPI_TEST_08_CHECKSUM
    with pytest.raises(InvalidInput, match="--checksum does not match"):
        upi_08(checksum="00" * 20)


@pytest.mark.parametrize("overrides, reason", [
    ({"rid": "A0000003"}, "--rid"),
    ({"rid": "A00000033G"}, "hex"),
    ({"index": "0801"}, "--index"),
    ({"index": ""}, "--index"),
    ({"modulus": "B6Z"}, "hex"),
    ({"modulus": "00" + MODULUS}, "modulus"),
    ({"exponent": "02"}, "exponent"),
    ({"expiry": "301231"}, "YYYYMMDD"),
    ({"expiry": "20300230"}, "not a date"),
    ({"checksum": "EE23"}, "--checksum"),
])
def test_malformed_capk_input_is_invalid(overrides, reason):
    with pytest.raises(InvalidInput, match=reason):
        upi_08(**overrides)


def test_an_aid_takes_5_to_16_bytes_and_well_formed_parameter_tlvs():
    assert ic.parse_aid(AID_DEBIT, AID_PARAMS) == (bytes.fromhex(AID_DEBIT), bytes.fromhex(AID_PARAMS))
    assert ic.parse_aid("A000000333") == (bytes.fromhex("A000000333"), b"")
    for aid, tlv, reason in [
        ("A0000003", None, "5 to 16 bytes"), ("A0" * 17, None, "5 to 16 bytes"), ("XYZ", None, "hex"),
        (AID_DEBIT, "DF0105", "not BER-TLV"), (AID_DEBIT, "9F0605A000000333", "not 9F06"),
        (AID_DEBIT, "DF01810100", "shortest"), (AID_DEBIT, "DF02820200" + "00" * 512, "fit in 512"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            ic.parse_aid(aid, tlv)


# -- registering -------------------------------------------------------------------------------------


async def test_capks_are_added_listed_and_removed_each_change_raising_the_version(db):
    assert await ic.list_versions(db) == {"capk": 0, "aid": 0}
    await ic.add_capk(db, upi_08())
    await ic.add_capk(db, small_capk(0x03))
    assert await ic.list_capks(db) == [{"rid": RID, "index": "03", "expiry": "20301231"},
                                       {"rid": RID, "index": "08", "expiry": "20301231"}]
    assert await ic.list_versions(db) == {"capk": 2, "aid": 0}
    await ic.remove_capk(db, RID.lower(), "03")
    assert [c["index"] for c in await ic.list_capks(db)] == ["08"]
    assert await ic.list_versions(db) == {"capk": 3, "aid": 0}


async def test_a_duplicate_capk_or_removing_an_unknown_one_is_invalid_and_changes_nothing(db):
    await ic.add_capk(db, upi_08())
    with pytest.raises(InvalidInput, match="already exists"):
        await ic.add_capk(db, upi_08())
    with pytest.raises(InvalidInput, match="unknown CAPK"):
        await ic.remove_capk(db, RID, "09")
    with pytest.raises(InvalidInput, match="INDEX"):
        await ic.remove_capk(db, RID, "0809")
    assert await ic.list_versions(db) == {"capk": 1, "aid": 0}


async def test_aids_are_added_listed_and_removed(db):
    await ic.add_aid(db, *ic.parse_aid(AID_DEBIT, AID_PARAMS))
    await ic.add_aid(db, *ic.parse_aid("A0000000031010"))
    assert await ic.list_aids(db) == [{"aid": "A0000000031010", "tlv": ""},
                                      {"aid": AID_DEBIT, "tlv": AID_PARAMS}]
    with pytest.raises(InvalidInput, match="already exists"):
        await ic.add_aid(db, *ic.parse_aid(AID_DEBIT))
    await ic.remove_aid(db, "A0000000031010")
    with pytest.raises(InvalidInput, match="unknown AID"):
        await ic.remove_aid(db, "A0000000031010")
    assert await ic.list_versions(db) == {"capk": 0, "aid": 3}


async def test_at_most_99_capks(db):
    for index in range(99):
        await ic.add_capk(db, small_capk(index))
    with pytest.raises(InvalidInput, match="at most 99"):
        await ic.add_capk(db, small_capk(99))
    assert len(await ic.list_capks(db)) == 99


async def test_records_for_downloads_are_as_registered(db):
    await ic.add_capk(db, upi_08())
    await ic.add_aid(db, *ic.parse_aid(AID_DEBIT, AID_PARAMS))
    record = await ic.capk_record(db, bytes.fromhex(RID), 0x08)
    assert record == ic_lists.capk_record(upi_08())
    assert emv.decode_map(record)["DF03"] == UPI_TEST_08_CHECKSUM
    assert await ic.capk_record(db, bytes.fromhex(RID), 0x09) is None
    assert await ic.aid_record(db, bytes.fromhex(AID_DEBIT)) == bytes.fromhex("9F0608" + AID_DEBIT + AID_PARAMS)
    assert await ic.aid_record(db, bytes.fromhex("A0000000031010")) is None
    assert await ic.capk_entries(db) == [ic_lists.capk_entry(upi_08())]
    assert await ic.aid_entries(db) == [bytes.fromhex("9F0608" + AID_DEBIT)]


# -- rounds and the header digit -------------------------------------------------------------------


async def download_round(db, tid: str, which: str) -> None:
    await ic.note_query(db, tid, which, 0)
    await ic.note_end(db, tid, which)


async def test_a_terminal_that_never_queried_is_not_prompted(db, world):
    await ic.add_capk(db, upi_08())
    assert await ic.prompt_digit(db, world.tid) == "0"
    assert await ic.prompt_digit(db, "NOSUCHID") == "0"


async def test_a_list_changed_after_a_download_prompts_4_or_5_until_downloaded_again(db, world):
    tid = world.tid
    await ic.add_capk(db, upi_08())
    await ic.add_aid(db, *ic.parse_aid(AID_DEBIT))
    await download_round(db, tid, "capk")
    await download_round(db, tid, "aid")
    assert await ic.prompt_digit(db, tid) == "0"

    await ic.add_aid(db, *ic.parse_aid("A000000333010102"))
    assert await ic.prompt_digit(db, tid) == "5"
    await ic.add_capk(db, small_capk(0x0A))
    assert await ic.prompt_digit(db, tid) == "4"  # 4 before 5
    await download_round(db, tid, "capk")
    assert await ic.prompt_digit(db, tid) == "5"
    await download_round(db, tid, "aid")
    assert await ic.prompt_digit(db, tid) == "0"
    await ic.remove_capk(db, RID, "0A")  # a removal is a change too
    assert await ic.prompt_digit(db, tid) == "4"


async def test_the_end_records_the_version_at_the_rounds_first_query(db, world):
    """A change made during a round is not in what the terminal got: it stays prompted (WIRE.md 9.9)."""
    tid = world.tid
    await ic.add_capk(db, upi_08())
    await ic.note_query(db, tid, "capk", 0)
    await ic.add_capk(db, small_capk(0x0A))
    await ic.note_query(db, tid, "capk", 1)  # a later page does not start a round
    assert await ic.note_end(db, tid, "capk")
    assert await ic.prompt_digit(db, tid) == "4"
    state = await ic.list_state(db, tid)
    assert (state.capk_held, state.capk_version) == (1, 2)


async def test_a_queried_list_never_ended_prompts_and_an_end_without_a_round_records_nothing(db, world):
    tid = world.tid
    assert not await ic.note_end(db, tid, "aid")
    await ic.note_query(db, tid, "aid", 0)
    assert await ic.prompt_digit(db, tid) == "5"
    assert await ic.note_end(db, tid, "aid")
    assert await ic.prompt_digit(db, tid) == "0"
    assert not await ic.note_end(db, tid, "aid")  # the round is over


def test_the_digit_prefers_the_capk_list():
    state = ic.ListState(capk_version=3, aid_version=5, capk_queried=True, capk_held=2, aid_queried=True,
                         aid_held=4)
    assert ic.prompt_digit_from(state) == "4"
    assert ic.prompt_digit_from(ic.ListState(3, 5, True, 3, True, 4)) == "5"
    assert ic.prompt_digit_from(ic.ListState(3, 5, False, None, True, 5)) == "0"


async def test_the_prompt_columns_join_into_the_terminals_own_query(db, world):
    await ic.add_aid(db, *ic.parse_aid(AID_DEBIT))
    await ic.note_query(db, world.tid, "aid", 0)
    row = await db.fetchrow(f"SELECT t.tid, {ic.PROMPT_COLUMNS} FROM terminals t {ic.PROMPT_JOINS} WHERE t.tid = $1",
                            world.tid)
    assert ic.prompt_digit_from(ic.list_state_from_row(row)) == "5"


# -- terminal show, device status ---------------------------------------------------------------------


async def test_terminal_show_adds_device_status_and_whether_its_lists_are_current(db, world):
    tid = world.tid
    assert await ic.terminal_lists_view(db, tid) == {"device_status": None, "capk_current": True,
                                                      "aid_current": True}
    await ic.add_capk(db, upi_08())
    assert (await ic.terminal_lists_view(db, tid))["capk_current"] is False
    await download_round(db, tid, "capk")
    await ic.keep_device_status(db, tid, ic_lists.parse_status(b"011040991"))
    assert await ic.terminal_lists_view(db, tid) == {
        "device_status": {"01": "1", "04": "0", "99": "1"}, "capk_current": True, "aid_current": True}


async def test_each_status_upload_replaces_the_last_and_broken_devices_are_counted(db, world, cli):
    result = await cli("terminal", "add", "TERM0002", "--merchant", world.mid, "--tmk", world.tmk.hex())
    assert result.code == 0, result.stderr
    await ic.keep_device_status(db, world.tid, {"03": "0", "04": "0"})
    await ic.keep_device_status(db, "TERM0002", {"03": "1", "04": "0"})
    assert await ic.broken_device_counts(db) == {"reader": 1, "printer": 2}
    await ic.keep_device_status(db, world.tid, {"raw": "41"})
    assert await ic.broken_device_counts(db) == {"reader": 0, "printer": 1}
    assert (await ic.terminal_lists_view(db, world.tid))["device_status"] == {"raw": "41"}


# -- the demo seed ---------------------------------------------------------------------------------


def test_every_published_test_key_has_its_published_check_sum_and_a_source():
    capks, aids = ic.published_test_lists()
    doc = __import__("json").loads(ic.TEST_KEYS_FILE.read_text(encoding="utf-8"))
    for capk, entry in zip(capks, doc["capks"], strict=True):
        assert capk.checksum.hex().upper() == entry["checksum"]  # parse_capk verified it against SHA-1
        assert entry["source"]
    assert {(c.rid.hex().upper(), c.index) for c in capks} >= {(RID, 0x08), (RID, 0x09), (RID, 0x0A), (RID, 0x0B)}
    assert all(entry["source"] for entry in doc["aids"]) and len(aids) == len(doc["aids"]) >= 2


async def test_the_demo_seed_is_idempotent(db):
    capks, aids = ic.published_test_lists()
    assert await ic.seed_test_lists(db) == {"capk": len(capks), "aid": len(aids)}
    versions = await ic.list_versions(db)
    assert await ic.seed_test_lists(db) == {"capk": 0, "aid": 0}
    assert await ic.list_versions(db) == versions
    assert len(await ic.list_capks(db)) == len(capks)

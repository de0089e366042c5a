"""Field 62 of the chip-terminal messages (WIRE.md 9.5, 9.9), with known bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import emv, ic_lists
from protocol.ic_lists import Capk, IcListError
from tests.protocol.test_emv import UPI_TEST_08_CHECKSUM, UPI_TEST_08_MODULUS

UPI_RID = bytes.fromhex("A000000333")
UPI_08 = Capk(UPI_RID, 0x08, "20301231", UPI_TEST_08_MODULUS, b"\x03", UPI_TEST_08_CHECKSUM)
UPI_08_ENTRY = "9F0605A000000333" "9F220108" "DF05083230333031323331"


def capk_entries(count: int) -> list[bytes]:
    return [ic_lists.capk_entry(Capk(UPI_RID, i, "20301231", b"\x01", b"\x03", b"")) for i in range(count)]


def test_a_query_carries_1_and_nn():
    assert ic_lists.encode_query(0) == b"100"
    assert ic_lists.encode_query(22) == b"122"
    assert ic_lists.parse_query(b"100") == 0
    assert ic_lists.parse_query(b"144") == 44


@pytest.mark.parametrize("data", [None, b"", b"10", b"1000", b"200", b"1x1", b"\x01\x00\x00"])
def test_a_malformed_query_is_a_format_error(data):
    with pytest.raises(IcListError):
        ic_lists.parse_query(data)


def test_a_capk_entry_is_rid_index_and_expiry_in_23_bytes():
    entry = ic_lists.capk_entry(UPI_08)
    assert entry.hex().upper() == UPI_08_ENTRY
    assert len(entry) == 23


def test_an_aid_entry_is_its_9f06():
    assert ic_lists.aid_entry(bytes.fromhex("A000000333010101")).hex().upper() == "9F0608A000000333010101"


def test_a_short_list_comes_whole_with_1_and_an_exhausted_one_answers_0():
    entries = capk_entries(2)
    assert ic_lists.query_answer(entries, 0) == b"1" + entries[0] + entries[1]
    assert ic_lists.query_answer(entries, 1) == b"1" + entries[1]
    assert ic_lists.query_answer(entries, 2) == b"0"
    assert ic_lists.query_answer(entries, 7) == b"0"
    assert ic_lists.query_answer([], 0) == b"0"


def test_the_known_bytes_of_an_answer_with_one_capk():
    answer = ic_lists.query_answer([ic_lists.capk_entry(UPI_08)], 0)
    assert answer == b"1" + bytes.fromhex(UPI_08_ENTRY)
    parsed = ic_lists.parse_query_answer(answer)
    assert not parsed.more
    assert parsed.entries == [{"9F06": UPI_RID, "9F22": b"\x08", "DF05": b"20301231"}]


def test_a_list_of_50_capks_takes_three_queries_of_at_most_512_bytes():
    """22 entries of 23 bytes fit after the status byte (1 + 506 bytes); 23 would not (530)."""
    entries = capk_entries(50)
    have, answers = 0, []
    while True:
        answer = ic_lists.query_answer(entries, have)
        answers.append(answer)
        assert len(answer) <= ic_lists.FIELD_62_BYTES_MAX
        parsed = ic_lists.parse_query_answer(answer)
        have += len(parsed.entries)
        if not parsed.more:
            break
    assert [a[:1] for a in answers] == [b"2", b"2", b"1"]
    assert [len(a) for a in answers] == [1 + 22 * 23, 1 + 22 * 23, 1 + 6 * 23]
    assert answers[1] == b"2" + b"".join(entries[22:44])
    assert have == 50
    assert ic_lists.query_answer(entries, have) == b"0"


def test_a_page_that_fills_exactly_511_bytes_ends_the_list():
    # AIDs of 16 bytes make 19-byte entries: 26 of them take 494 bytes, 27 would take 513.
    entries = [ic_lists.aid_entry(bytes([0xA0, i]) + bytes(14)) for i in range(27)]
    first = ic_lists.query_answer(entries, 0)
    assert first[:1] == b"2" and len(first) == 1 + 26 * 19
    assert ic_lists.query_answer(entries, 26) == b"1" + entries[26]


def test_a_capk_download_names_rid_and_index():
    data = ic_lists.encode_capk_download(UPI_RID, 0x0B)
    assert data.hex().upper() == "9F0605A0000003339F22010B"
    assert ic_lists.parse_capk_download(data) == (UPI_RID, 0x0B)


@pytest.mark.parametrize("hex_data", ["", "9F0605A000000333", "9F22010B", "9F0604A00000039F22010B",
                                      "9F0605A0000003339F2202000B", "9F0605A000000333FF"])
def test_a_malformed_capk_download_is_a_format_error(hex_data):
    with pytest.raises(IcListError):
        ic_lists.parse_capk_download(bytes.fromhex(hex_data))


def test_an_aid_download_names_the_aid_of_5_to_16_bytes():
    assert ic_lists.parse_aid_download(bytes.fromhex("9F0608A000000333010101")) == bytes.fromhex("A000000333010101")
    for bad in ("9F0604A0000003", "9F0611" + "A0" * 17, "9F2201"):
        with pytest.raises(IcListError):
            ic_lists.parse_aid_download(bytes.fromhex(bad))


def test_a_capk_record_has_every_tag_in_wire_order_and_its_known_bytes():
    record = ic_lists.capk_record(UPI_08)
    assert [item.tag for item in emv.decode(record)] == ["9F06", "9F22", "DF05", "DF06", "DF07", "DF02", "DF04",
                                                          "DF03"]
    assert record.hex().upper() == (
        UPI_08_ENTRY + "DF060101" + "DF070101" + "DF028190" + UPI_TEST_08_MODULUS.hex().upper()
        + "DF040103" + "DF0314" + UPI_TEST_08_CHECKSUM.hex().upper())
    answer = ic_lists.download_answer(record)
    assert answer[:1] == b"1" and len(answer) == 1 + 23 + 8 + 4 + 144 + 4 + 23
    assert ic_lists.parse_capk_record(ic_lists.parse_download_answer(answer)) == UPI_08


def test_an_unknown_key_or_aid_answers_0():
    assert ic_lists.download_answer(None) == b"0"
    assert ic_lists.parse_download_answer(b"0") is None


def test_a_downloaded_record_with_a_wrong_check_sum_is_refused_by_the_terminal():
    tags = ic_lists.parse_download_answer(ic_lists.download_answer(ic_lists.capk_record(UPI_08)))
    tags["DF03"] = bytes(20)
    with pytest.raises(IcListError, match="check sum"):
        ic_lists.parse_capk_record(tags)


def test_an_aid_record_is_9f06_then_its_parameters():
    params = bytes.fromhex("DF0101009F08020020")
    record = ic_lists.aid_record(bytes.fromhex("A000000333010101"), params)
    assert record.hex().upper() == "9F0608A000000333010101DF0101009F08020020"
    assert ic_lists.aid_record_fits(bytes(16), bytes(492))
    assert not ic_lists.aid_record_fits(bytes(16), bytes(493))


@pytest.mark.parametrize("capk, problem", [
    (Capk(b"\xa0", 8, "20301231", UPI_TEST_08_MODULUS, b"\x03", UPI_TEST_08_CHECKSUM), "RID"),
    (Capk(UPI_RID, 8, "2030123", UPI_TEST_08_MODULUS, b"\x03", UPI_TEST_08_CHECKSUM), "YYYYMMDD"),
    (Capk(UPI_RID, 8, "20301331", UPI_TEST_08_MODULUS, b"\x03", UPI_TEST_08_CHECKSUM), "not a date"),
    (Capk(UPI_RID, 8, "20301231", bytes(1) + UPI_TEST_08_MODULUS, b"\x03", UPI_TEST_08_CHECKSUM), "modulus"),
    (Capk(UPI_RID, 8, "20301231", bytes([1]) * 249, b"\x03", UPI_TEST_08_CHECKSUM), "modulus"),
    (Capk(UPI_RID, 8, "20301231", UPI_TEST_08_MODULUS, b"\x05", UPI_TEST_08_CHECKSUM), "exponent"),
    (Capk(UPI_RID, 8, "20301231", UPI_TEST_08_MODULUS, b"\x03", bytes(20)), "check sum"),
    (UPI_08, None),
])
def test_what_makes_a_capk_unregistrable(capk, problem):
    found = ic_lists.capk_problem(capk)
    assert (found is None) if problem is None else (problem in found)


def test_a_status_upload_is_triples_of_tag_and_value():
    assert ic_lists.encode_status({"01": "1", "04": "0"}) == b"011040"
    assert ic_lists.parse_status(b"011021031040051") == {"01": "1", "02": "1", "03": "1", "04": "0", "05": "1"}
    assert ic_lists.parse_status(b"991") == {"99": "1"}  # unknown tags kept as sent
    assert ic_lists.parse_status(b"040041") == {"04": "1"}  # a later one wins
    assert ic_lists.parse_status(None) == {}


def test_what_does_not_parse_as_triples_is_kept_raw():
    assert ic_lists.parse_status(b"0110\xff") == {"01": "1", "raw": "30FF"}
    assert ic_lists.parse_status(b"01") == {"raw": "3031"}
    assert ic_lists.parse_status(b"AB1") == {"raw": "414231"}


def test_broken_devices_are_those_reported_0():
    assert ic_lists.broken_devices({"03": "0", "04": "0", "01": "1", "99": "0"}) == ["reader", "printer"]
    assert ic_lists.broken_devices(None) == []


# -- properties: field 62 from a terminal or a host, whatever its bytes --------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_62_parses_or_raises_only_our_error(data):
    for parse in (ic_lists.parse_query, ic_lists.parse_capk_download, ic_lists.parse_aid_download,
                  ic_lists.parse_query_answer, ic_lists.parse_download_answer):
        try:
            parse(data)
        except IcListError:
            pass
    status = ic_lists.parse_status(data)  # never refused: what does not parse is kept raw
    assert all(isinstance(value, str) for value in status.values())


@given(st.lists(st.binary(min_size=5, max_size=16), max_size=99, unique=True), st.integers(0, 99))
def test_pages_hold_what_follows_nn_in_order_within_512_bytes(aids, have):
    entries = [ic_lists.aid_entry(aid) for aid in sorted(aids)]
    answer = ic_lists.query_answer(entries, have)
    assert len(answer) <= ic_lists.FIELD_62_BYTES_MAX
    parsed = ic_lists.parse_query_answer(answer)
    got = [ic_lists.aid_entry(entry["9F06"]) for entry in parsed.entries]
    assert got == entries[have : have + len(got)]
    assert parsed.more == (have + len(got) < len(entries))

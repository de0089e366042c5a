"""Hypothesis properties of field 62's BER-TLV and lists (WIRE.md 9.5, 9.9),
beside the ``field62`` atheris target (tests/fuzz/field62.py): well-formed
objects round-trip byte for byte, any bytes raise only the protocol's errors,
and a list's answers page it whole within 512 bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import emv, ic_lists
from tests.fuzz.field62 import PARSERS, field62_target

_ONE_BYTE_TAGS = st.integers(0x01, 0xFF).filter(lambda b: b & 0x1F != 0x1F).map(lambda b: f"{b:02X}")
_TWO_BYTE_TAGS = st.tuples(st.sampled_from([0x1F, 0x5F, 0x9F, 0xBF, 0xDF, 0xFF]), st.integers(0, 0x7F)).map(
    lambda t: f"{t[0]:02X}{t[1]:02X}")
_OBJECTS = st.lists(st.tuples(st.one_of(_ONE_BYTE_TAGS, _TWO_BYTE_TAGS), st.binary(max_size=300)), max_size=6)


@given(_OBJECTS)
def test_well_formed_objects_round_trip_with_the_shortest_lengths(objects):
    encoded = emv.encode(objects)
    assert [(item.tag, item.value) for item in emv.decode(encoded)] == objects
    for _tag, value in objects:  # one byte up to 127, 81 xx up to 255, 82 xx xx above
        length = emv.length_bytes(len(value))
        assert len(length) == (1 if len(value) < 128 else 2 if len(value) < 256 else 3)


@settings(max_examples=300)
@given(st.integers(0, len(PARSERS) - 1), st.binary(max_size=600))
def test_any_field_62_raises_only_the_protocols_errors(parser, data):
    field62_target(bytes([parser]) + data)


@given(st.lists(st.binary(min_size=5, max_size=16), min_size=1, max_size=99, unique=True))
def test_an_aid_list_pages_whole_within_512_bytes(aids):
    entries = [ic_lists.aid_entry(aid) for aid in sorted(aids)]
    got, have_count, queries = [], 0, 0
    while True:
        answer = ic_lists.query_answer(entries, have_count)
        queries += 1
        assert len(answer) <= ic_lists.FIELD_62_BYTES_MAX
        read = ic_lists.parse_query_answer(answer)
        got += [entry[ic_lists.TAG_AID] for entry in read.entries]
        have_count += len(read.entries)
        if not read.more:
            break
        assert len(answer) + len(entries[have_count]) > ic_lists.FIELD_62_BYTES_MAX  # as full as it can be
    assert got == sorted(aids)
    assert ic_lists.query_answer(entries, have_count) == ic_lists.NOTHING_MORE
    assert queries >= -(-sum(map(len, entries)) // (ic_lists.FIELD_62_BYTES_MAX - 1))  # 1 status byte each

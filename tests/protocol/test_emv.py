"""BER-TLV of WIRE.md 9.5/9.9 and the CAPK check sum, with known bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import emv
from protocol.emv import EmvTlvError, Tlv

# UnionPay's test CA public key index 08 (1152 bits), as published for terminal
# certification with its check sum (gateway/domain/ic_test_keys.json names the source).
UPI_TEST_08_MODULUS = bytes.fromhex(
    "B61645EDFD5498FB246444037A0FA18C0F101EBD8EFA54573CE6E6A7FBF63ED21D66340852B0211CF5EEF6A1CD989F66"
    "AF21A8EB19DBD8DBC3706D135363A0D683D046304F5A836BC1BC632821AFE7A2F75DA3C50AC74C545A754562204137"
    "169663CFCC0B06E67E2109EBA41BC67FF20CC8AC80D7B6EE1A95465B3B2657533EA56D92D539E5064360EA4850FED2D1BF")
UPI_TEST_08_CHECKSUM = bytes.fromhex("EE23B616C95C02652AD18860E48787C079E8E85A")


@pytest.mark.parametrize("raw, objects", [
    ("9F0605A000000333", [Tlv("9F06", bytes.fromhex("A000000333"))]),
    ("9F220108", [Tlv("9F22", b"\x08")]),
    ("DF050832303330313233319F220109",
     [Tlv("DF05", b"20301231"), Tlv("9F22", b"\x09")]),
    ("5000", [Tlv("50", b"")]),
    ("DF811A039F6A04", [Tlv("DF811A", bytes.fromhex("9F6A04"))]),  # a three-byte tag
    ("0000DF060101", [Tlv("DF06", b"\x01")]),  # 00 padding skipped
], ids=["rid", "index", "two", "empty", "three-byte-tag", "padding"])
def test_known_bytes_decode_to_their_objects(raw, objects):
    assert emv.decode(bytes.fromhex(raw)) == objects


def test_lengths_take_one_byte_up_to_127_then_81_then_82():
    assert emv.encode([("DF02", bytes(127))])[:3] == bytes.fromhex("DF027F")
    assert emv.encode([("DF02", bytes(128))])[:4] == bytes.fromhex("DF028180")
    assert emv.encode([("DF02", bytes(248))])[:4] == bytes.fromhex("DF0281F8")
    assert emv.encode([("DF02", bytes(255))])[:4] == bytes.fromhex("DF0281FF")
    assert emv.encode([("DF02", bytes(256))])[:5] == bytes.fromhex("DF02820100")
    assert emv.decode(bytes.fromhex("DF02820003") + b"abc") == [Tlv("DF02", b"abc")]


def test_a_longer_length_form_than_needed_is_read():
    assert emv.decode(bytes.fromhex("9F22810108")) == [Tlv("9F22", b"\x08")]


def test_the_modulus_of_a_1152_bit_key_takes_the_81_form():
    encoded = emv.encode([("DF02", UPI_TEST_08_MODULUS)])
    assert encoded[:4] == bytes.fromhex("DF028190")
    assert emv.decode_map(encoded) == {"DF02": UPI_TEST_08_MODULUS}


def test_constructed_objects_nest():
    raw = emv.encode([("70", [("9F06", b"\xa0\x00\x00\x03\x33"), ("BF0C", [("9F4D", b"\x0b\x0a")])])])
    assert raw.hex().upper() == "70109F0605A000000333BF0C059F4D020B0A"
    (outer,) = emv.decode(raw)
    assert outer.constructed
    rid, inner = outer.children()
    assert rid == Tlv("9F06", bytes.fromhex("A000000333"))
    assert inner.children() == [Tlv("9F4D", b"\x0b\x0a")]


def test_a_primitive_object_has_no_children():
    with pytest.raises(EmvTlvError, match="primitive"):
        Tlv("9F06", b"\x01").children()


@pytest.mark.parametrize("raw, reason", [
    ("9F", "tag runs past the end"),
    ("9F06", "length missing"),
    ("9F0605A0", "runs past the end"),
    ("9F0680", "length byte 80"),
    ("9F0683000001", "length byte 83"),
    ("9F0681", "length runs past the end"),
    ("9F81818101", "longer than 4 bytes"),
    ("9F2201089F220109", "twice"),
], ids=["tag", "no-length", "short-value", "indefinite", "83", "short-long-length", "long-tag", "twice"])
def test_malformed_bytes_raise_our_error_with_a_reason(raw, reason):
    with pytest.raises(EmvTlvError, match=reason):
        emv.decode_map(bytes.fromhex(raw))


def test_the_error_names_the_byte_where_reading_failed():
    with pytest.raises(EmvTlvError) as caught:
        emv.decode(bytes.fromhex("9F220108DF0205AABB"))
    assert caught.value.position == 4


@pytest.mark.parametrize("tag", ["9F", "06XX", "0606", "9F8F", "DF81", "", "9F8181818101", "00"])
def test_a_malformed_tag_cannot_be_encoded(tag):
    with pytest.raises(EmvTlvError):
        emv.encode([(tag, b"")])


def test_a_primitive_tag_takes_bytes_only():
    with pytest.raises(EmvTlvError, match="primitive"):
        emv.encode([("9F06", [("9F22", b"\x01")])])


def test_capk_check_sum_is_the_published_one_of_a_test_key():
    """Known answer: SHA-1 over RID, index, modulus and exponent (EMV Book 2, 11.2.2)."""
    checksum = emv.capk_checksum(bytes.fromhex("A000000333"), 0x08, UPI_TEST_08_MODULUS, b"\x03")
    assert checksum == UPI_TEST_08_CHECKSUM
    assert emv.capk_checksum(bytes.fromhex("A000000333"), 0x09, UPI_TEST_08_MODULUS, b"\x03") != checksum


# -- properties ------------------------------------------------------------------------------

_first_single = st.integers(1, 0xFF).filter(lambda b: b & 0x1F != 0x1F)
_first_multi = st.integers(0, 7).map(lambda n: (n << 5) | 0x1F)
_middle = st.integers(0x80, 0xFF)
_last = st.integers(0x00, 0x7F)


@st.composite
def tags(draw) -> str:
    if draw(st.booleans()):
        return f"{draw(_first_single):02X}"
    middle = draw(st.lists(_middle, max_size=2))
    return bytes([draw(_first_multi), *middle, draw(_last)]).hex().upper()


primitive_tags = tags().filter(lambda t: not int(t[:2], 16) & 0x20)
objects = st.lists(st.tuples(primitive_tags, st.binary(max_size=300)), max_size=8)


@given(objects)
def test_encode_then_decode_gives_the_objects_back(items):
    raw = emv.encode(items)
    assert emv.decode(raw) == [Tlv(tag, value) for tag, value in items]
    assert emv.encode([(o.tag, o.value) for o in emv.decode(raw)]) == raw


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_only_our_error(data):
    try:
        decoded = emv.decode(data)
    except EmvTlvError:
        return
    for item in decoded:
        if item.constructed:
            try:
                item.children()
            except EmvTlvError:
                pass

import pytest

from protocol.framing import (
    FRAME_MIN_LENGTH,
    FrameDecoder,
    FramingError,
    Header,
    Tpdu,
    encode_frame,
    parse_frame_body,
)
from protocol.messages import Message

# A real sign-on (shared/vectors, A_0800) and an echo built by hand.
SIGN_ON = bytes.fromhex(
    "003c600003000060210000000008000020000000C00012000059313034303030363730303030303030"
    "303030303030303400110000000100300003303120"
)
ECHO = encode_frame(
    Tpdu(bytes.fromhex("6000010000")),
    Header(bytes.fromhex("603100000000")),
    Message("0820", {11: "000007", 41: "TERM0001", 42: "MERCHANT0000001", 60: "00000001301"}).encode(),
)
TWO_FRAMES = SIGN_ON + ECHO


@pytest.mark.parametrize("split", range(len(TWO_FRAMES) + 1))
def test_two_frames_split_anywhere_decode_to_the_same_two_bodies(split):
    decoder = FrameDecoder()
    frames = decoder.feed(TWO_FRAMES[:split]) + decoder.feed(TWO_FRAMES[split:])
    assert frames == [SIGN_ON[2:], ECHO[2:]]
    assert decoder.buffered == 0 and not decoder.mid_frame


def test_byte_by_byte_feeding_yields_each_frame_when_its_last_byte_arrives():
    decoder = FrameDecoder()
    completed_at = []
    for i, byte in enumerate(TWO_FRAMES):
        if decoder.feed(bytes([byte])):
            completed_at.append(i + 1)
    assert completed_at == [len(SIGN_ON), len(TWO_FRAMES)]


@pytest.mark.parametrize("length", [0, 1, FRAME_MIN_LENGTH - 1, 2049, 65535])
def test_a_length_outside_the_allowed_range_is_refused_before_reading_the_body(length):
    decoder = FrameDecoder(frame_bytes_max=2048)
    with pytest.raises(FramingError, match="outside"):
        decoder.feed(length.to_bytes(2, "big"))


def test_the_smallest_and_largest_lengths_are_accepted():
    decoder = FrameDecoder(frame_bytes_max=100)
    assert decoder.feed(FRAME_MIN_LENGTH.to_bytes(2, "big") + bytes(FRAME_MIN_LENGTH)) == [bytes(FRAME_MIN_LENGTH)]
    assert decoder.feed((100).to_bytes(2, "big") + bytes(100)) == [bytes(100)]


def test_a_tpdu_id_other_than_60_is_a_violation():
    body = bytearray(SIGN_ON[2:])
    body[0] = 0x61
    with pytest.raises(FramingError, match="TPDU ID 61"):
        parse_frame_body(bytes(body))


def test_an_mti_that_is_not_bcd_is_a_violation():
    body = bytearray(SIGN_ON[2:])
    body[11] = 0x0A
    with pytest.raises(FramingError, match="MTI"):
        parse_frame_body(bytes(body))


def test_frame_parts_are_named_and_the_response_tpdu_swaps_addresses():
    frame = parse_frame_body(SIGN_ON[2:])
    assert frame.tpdu.raw.hex() == "6000030000"
    assert (frame.tpdu.destination, frame.tpdu.source) == ("0003", "0000")
    assert frame.tpdu.swapped().raw.hex() == "6000000003"
    assert frame.header.digits == "602100000000"
    assert frame.header.application_type == "60"
    assert frame.header.processing_requirement == "0"
    assert frame.header.with_processing_requirement("3").digits == "602103000000"
    assert frame.message[:2].hex() == "0800"
    assert frame.encode() == SIGN_ON

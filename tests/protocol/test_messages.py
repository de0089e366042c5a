import pytest

from protocol import crypto
from protocol.framing import FrameDecoder, parse_frame_body
from protocol.messages import FormatError, Message, decode_message
from protocol.spec import FIELD_NUMBERS, FIELDS, SPEC, SUBFIELDS, Value
from tests.protocol.vectors import all_vectors

VECTORS = all_vectors()


def message_bytes(vector):
    if not vector.framed:
        return vector.data
    (body,) = FrameDecoder(frame_bytes_max=4096).feed(vector.data)
    return parse_frame_body(body).message


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_every_real_message_decodes_and_reencodes_to_the_same_bytes(vector):
    raw = message_bytes(vector)
    message = decode_message(raw)
    assert Message(message.mti, dict(message.fields)).encode() == raw


def test_every_framed_vector_reframes_to_the_same_bytes():
    for vector in VECTORS:
        if vector.framed:
            (body,) = FrameDecoder(frame_bytes_max=4096).feed(vector.data)
            assert parse_frame_body(body).encode() == vector.data


def test_the_ic_purchase_decodes_to_named_fields_with_unionpay_alignment():
    vector = next(v for v in VECTORS if v.name == "real_0200_ic_purchase")
    m = decode_message(message_bytes(vector))
    assert m.mti == "0200"
    assert m.pan == "6224242900000113"
    assert m.processing_code == "000000"
    assert m.amount_fen == 1
    assert m.stan == "000403"
    assert m.expiry == "2806"
    assert m.entry_mode == "071"  # left-aligned: 07 10
    assert m.card_sequence == "000"  # right-aligned: 00 00
    assert m.track2 == "6224242900000113D28062013949031013"
    assert m.terminal_id == "10000019" and m.merchant_id == "850100082410002"
    assert m.currency == "156"
    assert m.pin_block == bytes.fromhex("D1EEF419D0AE2609")
    assert m.security_control == "2600000000000000"
    assert (m.txn_type, m.batch, m.network_code) == ("22", 24, "000")
    assert len(m.icc_data) == 139 and m.icc_data.startswith(bytes.fromhex("9F2608"))
    assert m.bill_data.startswith("12208986")
    assert m.mac == b"8F651B26"


def test_odd_digit_fields_are_padded_as_unionpay_terminals_send_them():
    raw = Message("0200", {22: "021", 23: "001", 2: "4012345678909"}).encode()
    body = raw[10:]  # after MTI and bitmap: field 2, then 22, then 23
    assert body == bytes.fromhex("13 4012345678909 0".replace(" ", "")) + bytes.fromhex("0210") + bytes.fromhex("0001")


def test_the_mac_of_the_real_purchase_verifies_under_its_key():
    vector = next(v for v in VECTORS if v.name == "real_0200_with_mac")
    m = decode_message(message_bytes(vector))
    key = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")
    assert crypto.cup_ecb_mac(key, m.mac_input) == m.mac == b"B3A092AE"


def test_encode_with_mac_puts_the_mac_of_the_preceding_bytes_last():
    key = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")
    vector = next(v for v in VECTORS if v.name == "real_0200_with_mac")
    original = decode_message(message_bytes(vector))
    rebuilt = Message("0200", {k: v for k, v in original.fields.items() if k != 64})
    assert rebuilt.encode_with_mac(lambda data: crypto.cup_ecb_mac(key, data)) == original.raw


def _echo_fields():
    return {11: "000001", 41: "TERM0001", 42: "MERCHANT0000001", 60: "00000001301"}


def test_a_truncated_field_is_a_format_error_naming_field_and_position_with_earlier_fields_readable():
    raw = Message("0820", _echo_fields()).encode()
    with pytest.raises(FormatError) as info:
        decode_message(raw[:-3])
    error = info.value
    assert error.field == "60"
    assert error.position is not None and error.raw == raw[:-3]
    assert error.readable("stan") == "000001"
    assert error.readable("terminal_id") == "TERM0001"
    assert error.readable("merchant_id") == "MERCHANT0000001"


@pytest.mark.parametrize(
    "field, value, reason",
    [
        (11, "00000A", "not numeric"),
        (4, "0000000001F0", "not numeric"),
        (35, "4012345678909A2512", "track 2"),
    ],
)
def test_non_digits_in_numeric_fields_are_format_errors(field, value, reason):
    raw = Message("0200", _echo_fields() | {field: value}).encode()
    with pytest.raises(FormatError, match=reason):
        decode_message(raw)


def test_a_field_the_dialect_does_not_define_is_a_format_error():
    raw = Message("0820", _echo_fields() | {7: "1123120000"}).encode()
    with pytest.raises(FormatError, match="not used in version 1"):
        decode_message(raw)


def test_a_secondary_bitmap_is_a_format_error():
    raw = bytearray(Message("0820", _echo_fields()).encode())
    raw[2] |= 0x80  # bit 1: a secondary bitmap follows
    raw[10:10] = bytes(8)
    with pytest.raises(FormatError, match="secondary bitmap"):
        decode_message(bytes(raw))


def test_gbk_text_in_field_63_round_trips():
    m = Message("0800", _echo_fields() | {63: "张三"})
    raw = m.encode()
    assert "张三".encode("gbk") in raw
    assert decode_message(raw).operator == "张三"


def test_derived_views_of_fields_60_and_61():
    m = Message("0200", {60: "22000123000", 61: "000123000045" + "1124"})
    assert (m.txn_type, m.batch, m.network_code) == ("22", 123, "000")
    assert (m.original_batch, m.original_stan, m.original_date) == (123, "000045", "1124")


def test_every_field_and_subfield_of_the_table_reads_through_its_name():
    values = {f.number: (b"\x01" * 8 if f.value is Value.BINARY else "1" * 16) for f in FIELDS}
    message = Message("0200", dict(values))
    for f in FIELDS:
        assert getattr(message, f.name) == values[f.number] and message.has(f.name)
        assert SPEC[str(f.number)] is f.encoding
    for sub in SUBFIELDS:
        part = "1" * (sub.end - sub.start)
        assert getattr(message, sub.name) == (int(part) if sub.as_int else part)
        assert getattr(Message("0200", {FIELD_NUMBERS[sub.field]: "1" * (sub.end - 1)}), sub.name) is None

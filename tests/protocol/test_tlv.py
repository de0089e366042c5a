import pytest

from protocol import tlv
from protocol.messages import Message, decode_message


def test_lengths_count_gbk_bytes_so_chinese_names_take_two_bytes_a_character():
    text = tlv.encode({"BL": "ELEC01", "AC": "M001", "NM": "张三"})
    assert text == "BL006ELEC01AC004M001NM004张三"
    assert tlv.decode(text) == {"BL": "ELEC01", "AC": "M001", "NM": "张三"}


def test_tags_in_any_order_and_unknown_tags_are_kept_for_the_caller_to_ignore():
    assert tlv.decode("AC00212XX003abcBL003E01") == {"AC": "12", "XX": "abc", "BL": "E01"}


def test_an_empty_field_has_no_tags():
    assert tlv.decode("") == {}


@pytest.mark.parametrize("text, reason", [
    ("BL0", "truncated"),
    ("BL00", "truncated"),
    ("BLx06ELEC01", "3 digits"),
    ("BL010ELEC01", "past the end"),
    ("BL001ABL001B", "twice"),
])
def test_malformed_tlv_is_refused_with_a_reason(text, reason):
    with pytest.raises(tlv.TlvError, match=reason):
        tlv.decode(text)


def test_field_59_carries_gbk_bytes_on_the_wire():
    text = tlv.encode({"BL": "ELEC01", "NM": "李四"})
    raw = Message("0210", {59: text}).encode()
    assert "李四".encode("gbk") in raw
    assert tlv.decode(decode_message(raw).bill_data)["NM"] == "李四"

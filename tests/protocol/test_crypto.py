"""Tests for protocol.crypto: known-answer vectors, PIN block rules and key handling."""

from pathlib import Path

import pytest

from protocol.crypto import (
    PinBlockError,
    adjust_odd_parity,
    cup_ecb_mac,
    decrypt_pin,
    encrypt_pin_block,
    generate_key,
    key_check_value,
    pin_block_format0,
    pin_from_block_format0,
    tdes_decrypt,
    tdes_encrypt,
    unwrap_key,
    wrap_key,
    x99_mac,
    x919_mac,
)

VECTORS_DIR = Path(__file__).resolve().parents[3] / "shared" / "vectors"

X919_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIK = bytes.fromhex("042666B49184CF5C68DE9628D0397B36")
CUP_MAK = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")
PAN = "4012345678909"
FRAME_PREFIX_LEN = 2 + 5 + 6  # length, TPDU, header


def _odd_parity(byte: int) -> bool:
    return byte.bit_count() % 2 == 1


def _clear_block(pin_field_hex: str, pan: str) -> bytes:
    """XOR a hand-written PIN field with the format 0 PAN field."""
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return bytes(a ^ b for a, b in zip(bytes.fromhex(pin_field_hex), pan_field))


@pytest.mark.parametrize(
    ("key_hex", "message", "expected_hex"),
    [
        ("0123456789ABCDEFFEDCBA9876543210", b"Now is the time for all ", "A1C72E74EA3FA9B6"),
        ("0123456789ABCDEFFEDCBA9876543210", b"Now is the time for it", "2E2B1428CC78254F"),
        ("7CA110454A1A6E570131D9619DC1376E", b"Hello World !!!!", "F09B856213BAB83B"),
    ],
    ids=["iso9797-aligned", "iso9797-padded", "bouncycastle"],
)
def test_x919_mac_matches_published_vectors(key_hex: str, message: bytes, expected_hex: str) -> None:
    assert x919_mac(bytes.fromhex(key_hex), message) == bytes.fromhex(expected_hex)


def test_x99_mac_matches_the_fips_113_vector() -> None:
    mac = x99_mac(bytes.fromhex("0123456789ABCDEF"), b"7654321 Now is the time for ")
    assert len(mac) == 8
    assert mac[:4] == bytes.fromhex("F1D30F68")


@pytest.mark.parametrize(
    "message",
    [b"", b"x", b"12345678", b"Now is the time for it"],
    ids=["empty", "one-byte", "one-block", "padded"],
)
def test_x919_mac_with_equal_key_halves_equals_x99_mac(message: bytes) -> None:
    key = bytes.fromhex("0123456789ABCDEF")
    assert x919_mac(key + key, message) == x99_mac(key, message)


@pytest.mark.parametrize(
    ("length", "expected_hex"),
    [(8, "08D7B4FB629D0885"), (3, "08D7B4")],
)
def test_key_check_value_is_the_prefix_of_the_zero_block_encryption(length: int, expected_hex: str) -> None:
    assert key_check_value(X919_KEY, length) == bytes.fromhex(expected_hex)


def test_key_check_value_defaults_to_four_bytes() -> None:
    assert key_check_value(X919_KEY) == bytes.fromhex("08D7B4FB")


@pytest.mark.parametrize(
    ("pin", "pan", "expected_hex"),
    [
        ("1234", "4012345678909", "041274EDCBA9876F"),
        ("1234", "5544332211009966", "041277CDDEEFF669"),
    ],
)
def test_pin_block_format0_matches_published_vectors(pin: str, pan: str, expected_hex: str) -> None:
    assert pin_block_format0(pin, pan) == bytes.fromhex(expected_hex)


def test_tdes_encrypt_matches_the_x9_24_pin_block_vector() -> None:
    clear = bytes.fromhex("041274EDCBA9876F")
    encrypted = bytes.fromhex("1B9C1845EB993A7A")
    assert tdes_encrypt(PIK, clear) == encrypted
    assert tdes_decrypt(PIK, encrypted) == clear


def test_encrypt_pin_block_and_decrypt_pin_reproduce_the_x9_24_vector() -> None:
    encrypted = bytes.fromhex("1B9C1845EB993A7A")
    assert encrypt_pin_block(PIK, "1234", PAN) == encrypted
    assert decrypt_pin(PIK, encrypted, PAN) == "1234"


def test_cup_ecb_mac_matches_a_real_terminal_0200() -> None:
    framed = bytes.fromhex("".join((VECTORS_DIR / "real_0200_with_mac.hex").read_text().split()))
    message = framed[FRAME_PREFIX_LEN:]
    expected = framed[-8:]
    assert expected == b"B3A092AE"
    assert cup_ecb_mac(CUP_MAK, message[:-8]) == expected


@pytest.mark.parametrize(
    ("unpadded", "explicitly_padded"),
    [(b"", bytes(8)), (b"abc", b"abc" + bytes(5)), (b"0123456789", b"0123456789" + bytes(6))],
    ids=["empty", "short", "two-blocks"],
)
def test_cup_ecb_mac_zero_pads_to_a_block_boundary(unpadded: bytes, explicitly_padded: bytes) -> None:
    assert cup_ecb_mac(CUP_MAK, unpadded) == cup_ecb_mac(CUP_MAK, explicitly_padded)


def test_cup_ecb_mac_returns_eight_upper_case_hex_characters() -> None:
    mac = cup_ecb_mac(CUP_MAK, b"any message at all")
    assert len(mac) == 8
    assert set(mac.decode("ascii")) <= set("0123456789ABCDEF")


@pytest.mark.parametrize("pin", ["1234", "12345", "000000", "9876543210", "123456789012"])
@pytest.mark.parametrize("pan", ["4012345678909", "5544332211009966", "6222021234567890123"])
def test_pin_survives_an_encrypt_decrypt_round_trip(pin: str, pan: str) -> None:
    assert pin_from_block_format0(pin_block_format0(pin, pan), pan) == pin
    assert decrypt_pin(PIK, encrypt_pin_block(PIK, pin, pan), pan) == pin


@pytest.mark.parametrize(
    ("pin", "pan"),
    [
        ("123", PAN),
        ("1234567890123", PAN),
        ("12a4", PAN),
        ("", PAN),
        ("1234", "401234567890"),
        ("1234", "40123456789012345678"),
        ("1234", "401234567890X"),
    ],
    ids=["pin-too-short", "pin-too-long", "pin-not-digits", "pin-empty",
         "pan-too-short", "pan-too-long", "pan-not-digits"],
)
def test_pin_block_format0_rejects_invalid_pin_or_pan(pin: str, pan: str) -> None:
    with pytest.raises(ValueError):
        pin_block_format0(pin, pan)


@pytest.mark.parametrize(
    "pin_field_hex",
    [
        "141234FFFFFFFFFF",
        "03123FFFFFFFFFFF",
        "0D1234567890123F",
        "0412A4FFFFFFFFFF",
        "041234FFFFFFFFFE",
    ],
    ids=["control-nibble-not-0", "length-3", "length-13", "non-digit-pin-nibble", "fill-not-F"],
)
def test_malformed_clear_pin_block_raises_pin_block_error(pin_field_hex: str) -> None:
    block = _clear_block(pin_field_hex, PAN)
    with pytest.raises(PinBlockError):
        pin_from_block_format0(block, PAN)
    with pytest.raises(PinBlockError):
        decrypt_pin(PIK, tdes_encrypt(PIK, block), PAN)


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_pin_block_of_wrong_length_raises_pin_block_error(length: int) -> None:
    with pytest.raises(PinBlockError):
        pin_from_block_format0(bytes(length), PAN)
    with pytest.raises(PinBlockError):
        decrypt_pin(PIK, bytes(length), PAN)


def test_pin_block_error_is_a_value_error() -> None:
    assert issubclass(PinBlockError, ValueError)


@pytest.mark.parametrize("length", [8, 16, 24])
def test_generate_key_gives_random_odd_parity_keys_of_the_requested_length(length: int) -> None:
    first, second = generate_key(length), generate_key(length)
    assert len(first) == length
    assert all(_odd_parity(b) for b in first + second)
    assert first != second


def test_generate_key_defaults_to_a_double_length_key() -> None:
    key = generate_key()
    assert len(key) == 16
    assert all(_odd_parity(b) for b in key)


@pytest.mark.parametrize("length", [0, 12, 32])
def test_generate_key_rejects_unsupported_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        generate_key(length)


def test_adjust_odd_parity_fixes_every_byte_and_only_touches_the_low_bit() -> None:
    every_byte = bytes(range(256))
    adjusted = adjust_odd_parity(every_byte)
    assert all(_odd_parity(b) for b in adjusted)
    assert all((a ^ b) in (0, 1) for a, b in zip(every_byte, adjusted))
    assert adjust_odd_parity(adjusted) == adjusted


@pytest.mark.parametrize("key_length", [16, 24])
def test_wrapped_key_unwraps_to_the_original(key_length: int) -> None:
    kek, key = generate_key(16), generate_key(key_length)
    wrapped = wrap_key(kek, key)
    assert wrapped != key
    assert wrapped == tdes_encrypt(kek, key)
    assert unwrap_key(kek, wrapped) == key


@pytest.mark.parametrize("length", [8, 15, 32])
def test_wrap_and_unwrap_reject_keys_that_are_not_double_or_triple_length(length: int) -> None:
    kek = generate_key(16)
    with pytest.raises(ValueError):
        wrap_key(kek, bytes(length))
    with pytest.raises(ValueError):
        unwrap_key(kek, bytes(length))


@pytest.mark.parametrize("length", [1, 7, 9, 15])
def test_tdes_rejects_data_that_is_not_a_multiple_of_eight(length: int) -> None:
    with pytest.raises(ValueError):
        tdes_encrypt(PIK, bytes(length))
    with pytest.raises(ValueError):
        tdes_decrypt(PIK, bytes(length))


@pytest.mark.parametrize("length", [0, 7, 12, 32])
def test_tdes_rejects_keys_of_unsupported_length(length: int) -> None:
    with pytest.raises(ValueError):
        tdes_encrypt(bytes(length), bytes(8))


def test_single_length_key_equals_the_double_and_triple_length_repetition() -> None:
    key = bytes.fromhex("0123456789ABCDEF")
    data = b"Now is the time for all "
    assert tdes_encrypt(key, data) == tdes_encrypt(key + key, data)
    assert tdes_encrypt(key, data) == tdes_encrypt(key * 3, data)
    assert tdes_decrypt(key, tdes_encrypt(key, data)) == data


def test_double_length_key_equals_triple_length_k1_k2_k1() -> None:
    data = bytes(range(16))
    assert tdes_encrypt(X919_KEY, data) == tdes_encrypt(X919_KEY + X919_KEY[:8], data)


@pytest.mark.parametrize("length", [0, 9])
def test_key_check_value_rejects_lengths_outside_one_to_eight(length: int) -> None:
    with pytest.raises(ValueError):
        key_check_value(X919_KEY, length)


def test_x919_mac_rejects_keys_that_are_not_double_length() -> None:
    with pytest.raises(ValueError):
        x919_mac(bytes(8), b"data")


def test_x99_mac_rejects_keys_that_are_not_single_length() -> None:
    with pytest.raises(ValueError):
        x99_mac(X919_KEY, b"data")


def test_ciphers_give_the_known_answers_from_many_threads_at_once() -> None:
    """Each thread keeps its own ready contexts: threads never share one."""
    import concurrent.futures

    def known_answers(_: int) -> bool:
        return all(
            key_check_value(X919_KEY) == bytes.fromhex("08D7B4FB")
            and tdes_decrypt(X919_KEY, tdes_encrypt(X919_KEY, bytes(range(16)))) == bytes(range(16))
            for _ in range(500)
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(known_answers, range(16)))

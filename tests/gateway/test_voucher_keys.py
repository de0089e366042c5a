"""A voucher's PIN under the LMK (WIRE.md 9.9: stored answers holding a VP are
encrypted) and as a keyed hash (never clear)."""

from __future__ import annotations

from gateway.keys import SoftHsm
from tests.conftest import TEST_LMK

HSM = SoftHsm(bytes.fromhex(TEST_LMK))


def test_the_pin_under_the_lmk_comes_back_and_depends_on_the_serial():
    pin = "0123456789012345"
    under = HSM.encrypt_voucher_pin("000000000001", pin)
    assert len(under) == 8 and pin.encode() not in under and bytes.fromhex(pin) != under
    assert HSM.decrypt_voucher_pin("000000000001", under) == pin
    assert HSM.encrypt_voucher_pin("000000000002", pin) != under


def test_the_keyed_hash_needs_the_lmk_serial_and_pin():
    digest = HSM.voucher_pin_hash("000000000001", "0123456789012345")
    assert len(digest) == 32
    assert digest != HSM.voucher_pin_hash("000000000002", "0123456789012345")
    assert digest != HSM.voucher_pin_hash("000000000001", "0123456789012346")
    other = SoftHsm(bytes.fromhex("00" * 16))
    assert digest != other.voucher_pin_hash("000000000001", "0123456789012345")

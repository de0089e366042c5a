"""The local master key (LMK) and a software HSM over it.

Every key at rest (TMKs, working keys) is stored only encrypted under the
LMK. All key operations go through ``SoftHsm``, so that a hardware HSM can
take its place behind the same methods. Nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from protocol import crypto

LMK_FILE = "lmk.key"
KEY_BYTES = 16


class LmkError(Exception):
    """The LMK is missing, malformed or not protected."""


def parse_key_hex(text: str, what: str = "key") -> bytes:
    """A double-length key from 32 hex digits."""
    text = text.strip()
    if len(text) != 2 * KEY_BYTES:
        raise ValueError(f"{what} must be 32 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what} must be 32 hex digits") from None


def load_lmk(env_value: str | None, data_dir: Path) -> bytes:
    """The LMK from ``POSGW_LMK`` or ``<data dir>/lmk.key``, created (0600) on first use.

    A key file that group or others may read is refused.
    """
    if env_value:
        try:
            return parse_key_hex(env_value, "POSGW_LMK")
        except ValueError as exc:
            raise LmkError(str(exc)) from None
    path = data_dir / LMK_FILE
    if path.exists():
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LmkError(f"{path} is readable by group or others (mode {oct(mode & 0o777)}): chmod 600 it")
        try:
            return parse_key_hex(path.read_text(), str(path))
        except ValueError as exc:
            raise LmkError(str(exc)) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    key = crypto.generate_key(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return load_lmk(None, data_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex().upper() + "\n")
    return key


@dataclass(frozen=True, slots=True)
class IssuedKeys:
    """Working keys fresh from a sign-on."""

    under_lmk: tuple[bytes, ...]  # to store
    under_tmk: tuple[bytes, ...]  # to send to the terminal
    check_values: tuple[bytes, ...]  # 4 bytes each


class SoftHsm:
    """Key operations under the LMK, in software."""

    def __init__(self, lmk: bytes) -> None:
        if len(lmk) != KEY_BYTES:
            raise LmkError("the LMK must be a double-length key")
        self._lmk = lmk
        self._pan_hash_key = self._derive(b"posgw pan hash")
        self._pvv_key = self._derive(b"posgw pin verification")
        self._voucher_pin_key = self._derive(b"posgw voucher pin")

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self._lmk, label, hashlib.sha256).digest()

    def encrypt_key(self, clear_key: bytes) -> bytes:
        """Encrypt a clear key (e.g. a TMK being registered) under the LMK."""
        return crypto.wrap_key(self._lmk, clear_key)

    @lru_cache(maxsize=8192)
    def _clear(self, key_lmk: bytes) -> bytes:
        return crypto.unwrap_key(self._lmk, key_lmk)

    def check_value(self, key_lmk: bytes) -> bytes:
        return crypto.key_check_value(self._clear(key_lmk))

    def issue_working_keys(self, tmk_lmk: bytes, count: int) -> IssuedKeys:
        """Generate ``count`` working keys, returned under the LMK and under the TMK."""
        tmk = self._clear(tmk_lmk)
        clear = [crypto.generate_key(KEY_BYTES) for _ in range(count)]
        return IssuedKeys(
            under_lmk=tuple(crypto.wrap_key(self._lmk, key) for key in clear),
            under_tmk=tuple(crypto.wrap_key(tmk, key) for key in clear),
            check_values=tuple(crypto.key_check_value(key) for key in clear),
        )

    def mac(self, mak_lmk: bytes, algorithm: str, data: bytes) -> bytes:
        mak = self._clear(mak_lmk)
        if algorithm == "x9.19":
            return crypto.x919_mac(mak, data)
        return crypto.cup_ecb_mac(mak, data)

    def decrypt_pin(self, pik_lmk: bytes, pin_block: bytes, pan: str) -> str:
        """The clear PIN of a format 0 block (raises ``crypto.PinBlockError``)."""
        return crypto.decrypt_pin(self._clear(pik_lmk), pin_block, pan)

    # -- cards ---------------------------------------------------------------
    def pan_hash(self, pan: str) -> bytes:
        """A keyed hash of the PAN: how a card is found without storing its PAN."""
        return hmac.new(self._pan_hash_key, pan.encode(), hashlib.sha256).digest()

    def encrypt_pan(self, pan: str) -> bytes:
        """The PAN under the LMK: two length digits, the PAN, F padding to 32 digits."""
        return crypto.tdes_encrypt(self._lmk, bytes.fromhex(f"{len(pan):02d}{pan}".ljust(32, "F")))

    def decrypt_pan(self, pan_lmk: bytes) -> str:
        digits = crypto.tdes_decrypt(self._lmk, pan_lmk).hex()
        return digits[2 : 2 + int(digits[:2])]

    def pin_verification_value(self, pan: str, pin: str) -> bytes:
        return hmac.new(self._pvv_key, f"{pan}:{pin}".encode(), hashlib.sha256).digest()[:8]

    def verify_pin(self, pik_lmk: bytes, pin_block: bytes, pan: str, pvv: bytes) -> bool:
        """Whether the PIN in a format 0 block under the PIK matches the card's
        verification value (raises ``crypto.PinBlockError`` for a malformed block)."""
        pin = crypto.decrypt_pin(self._clear(pik_lmk), pin_block, pan)
        return hmac.compare_digest(self.pin_verification_value(pan, pin), pvv)

    # -- vouchers (WIRE.md 9.7, 9.9) ---------------------------------------------
    def voucher_pin_hash(self, serial: str, pin: str) -> bytes:
        """A voucher's PIN as it is kept: a keyed hash (HMAC under a key derived from the LMK) with its serial."""
        return hmac.new(self._voucher_pin_key, f"{serial}:{pin}".encode(), hashlib.sha256).digest()

    def encrypt_voucher_pin(self, serial: str, pin: str) -> bytes:
        """A voucher's 16-digit PIN under the LMK, for the sale's stored answer: its BCD
        XORed with the serial's (12 digits, F padded), one 3DES block."""
        block = bytes(a ^ b for a, b in zip(bytes.fromhex(pin), _serial_block(serial), strict=True))
        return crypto.tdes_encrypt(self._lmk, block)

    def decrypt_voucher_pin(self, serial: str, pin_lmk: bytes) -> str:
        block = crypto.tdes_decrypt(self._lmk, pin_lmk)
        return bytes(a ^ b for a, b in zip(block, _serial_block(serial), strict=True)).hex()


def _serial_block(serial: str) -> bytes:
    return bytes.fromhex(serial.ljust(16, "F"))

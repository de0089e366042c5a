"""Card-payment cryptography: 3DES, MACs, ISO 9564 PIN blocks and key handling.

This is the only module that touches TripleDES. Everything here is pure:
bytes in, bytes out, no I/O.
"""

import os
import threading
from functools import lru_cache
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "PinBlockError",
    "adjust_odd_parity",
    "cup_ecb_mac",
    "decrypt_pin",
    "encrypt_pin_block",
    "generate_key",
    "key_check_value",
    "pin_block_format0",
    "pin_from_block_format0",
    "tdes_decrypt",
    "tdes_encrypt",
    "unwrap_key",
    "wrap_key",
    "x919_mac",
    "x99_mac",
]

_BLOCK = 8
_ZERO_BLOCK = bytes(_BLOCK)
_CIPHER_CACHE_SIZE = 4096
_PIN_MIN, _PIN_MAX = 4, 12
_PAN_MIN, _PAN_MAX = 13, 19
_WRAPPABLE_KEY_LENGTHS = (16, 24)
_TDES_KEY_LENGTHS = (8, 16, 24)

# Byte -> same byte with its low (parity) bit set so the popcount is odd.
_ODD_PARITY = bytes(
    (b & 0xFE) | (0 if (b & 0xFE).bit_count() % 2 else 1) for b in range(256)
)


class PinBlockError(ValueError):
    """A PIN block that is not valid ISO 9564 format 0 (the gateway answers 99)."""


def _expand_key(key: bytes) -> bytes:
    """Return the 24-byte K1|K2|K3 form of an 8, 16 or 24-byte DES/3DES key."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 24:
        return key
    raise ValueError(f"3DES key must be 8, 16 or 24 bytes, got {len(key)}")


@lru_cache(maxsize=_CIPHER_CACHE_SIZE)
def _ecb_cipher(key: bytes) -> Cipher:
    """Cached 3DES-ECB cipher for `key` (the key schedule is built once)."""
    return Cipher(TripleDES(_expand_key(key)), modes.ECB())


@lru_cache(maxsize=_CIPHER_CACHE_SIZE)
class _EcbContexts(threading.local):
    """Each thread's ready 3DES-ECB contexts by key: ECB has no state between
    whole blocks, so one context serves every call, where making one costs
    ten times the encryption of a block. Per thread, as a context is not
    safe to share between threads; fed whole blocks only."""

    def __init__(self) -> None:
        self.encryptors: dict[bytes, Any] = {}
        self.decryptors: dict[bytes, Any] = {}


_ecb_contexts = _EcbContexts()


def _ecb(key: bytes, blocks: bytes, *, decrypt: bool = False) -> bytes:
    """3DES-ECB of whole blocks under ``key``, through this thread's context for it."""
    contexts = _ecb_contexts.decryptors if decrypt else _ecb_contexts.encryptors
    context = contexts.get(key)
    if context is None:
        if len(contexts) >= _CIPHER_CACHE_SIZE:
            contexts.clear()
        cipher = _ecb_cipher(key)
        context = contexts[key] = cipher.decryptor() if decrypt else cipher.encryptor()
    return context.update(blocks)


@lru_cache(maxsize=_CIPHER_CACHE_SIZE)
def _cbc_des_cipher(key: bytes) -> Cipher:
    """Cached single-DES CBC cipher with a zero IV, for CBC-MACs."""
    if len(key) != 8:
        raise ValueError(f"single DES key must be 8 bytes, got {len(key)}")
    return Cipher(TripleDES(key * 3), modes.CBC(_ZERO_BLOCK))


def _check_blocks(data: bytes) -> None:
    """Raise ValueError unless `data` is a whole number of 8-byte blocks."""
    if len(data) % _BLOCK:
        raise ValueError(f"data length must be a multiple of 8, got {len(data)}")


def _xor(a: bytes, b: bytes) -> bytes:
    """XOR two byte strings of equal length."""
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))


def _zero_pad(data: bytes) -> bytes:
    """ISO 9797-1 padding method 1: 0x00 up to a block boundary; empty -> one zero block."""
    if not data:
        return _ZERO_BLOCK
    return data + bytes(-len(data) % _BLOCK)


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB encrypt; key 8 (K|K|K), 16 (K1|K2|K1) or 24 bytes."""
    _check_blocks(data)
    return _ecb(key, data)


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB decrypt; inverse of tdes_encrypt."""
    _check_blocks(data)
    return _ecb(key, data, decrypt=True)


def key_check_value(key: bytes, length: int = 4) -> bytes:
    """First `length` bytes of the key encrypted over 8 zero bytes."""
    if not 1 <= length <= _BLOCK:
        raise ValueError(f"check value length must be 1..8, got {length}")
    return tdes_encrypt(key, _ZERO_BLOCK)[:length]


def cup_ecb_mac(mak: bytes, data: bytes) -> bytes:
    """UnionPay POS "ECB" MAC of `data`; returns 8 upper-case hex ASCII bytes."""
    padded = _zero_pad(data)
    folded = 0
    for offset in range(0, len(padded), _BLOCK):
        folded ^= int.from_bytes(padded[offset : offset + _BLOCK])
    hex_r = folded.to_bytes(_BLOCK).hex().upper().encode("ascii")
    e1 = _ecb(mak, hex_r[:_BLOCK])
    e2 = _ecb(mak, _xor(e1, hex_r[_BLOCK:]))
    return e2.hex().upper()[:_BLOCK].encode("ascii")


def _cbc_mac_des(key: bytes, padded: bytes) -> bytes:
    """Last block of single-DES CBC encryption of block-aligned `padded`."""
    encryptor = _cbc_des_cipher(key).encryptor()
    return (encryptor.update(padded) + encryptor.finalize())[-_BLOCK:]


def x919_mac(mak: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (ANSI X9.19), padding method 1; 16-byte key."""
    if len(mak) != 16:
        raise ValueError(f"X9.19 MAC key must be 16 bytes, got {len(mak)}")
    padded = _zero_pad(data)
    head, last = padded[:-_BLOCK], padded[-_BLOCK:]
    chain = _cbc_mac_des(mak[:8], head) if head else _ZERO_BLOCK
    # E_K(D_K'(E_K(x))) on the last chained block is exactly 3DES-EDE under K|K'.
    return tdes_encrypt(mak, _xor(chain, last))


def x99_mac(key: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 1 (ANSI X9.9), single DES, padding method 1."""
    return _cbc_mac_des(key, _zero_pad(data))


def _check_pan(pan: str) -> None:
    """Raise ValueError unless `pan` is 13..19 ASCII digits."""
    if not (_PAN_MIN <= len(pan) <= _PAN_MAX and pan.isascii() and pan.isdigit()):
        raise ValueError("PAN must be 13..19 digits")


def _pan_field(pan: str) -> bytes:
    """ISO 9564 format 0 PAN field: 0000 + 12 rightmost digits before the check digit."""
    _check_pan(pan)
    return bytes.fromhex("0000" + pan[-13:-1])


def pin_block_format0(pin: str, pan: str) -> bytes:
    """Clear ISO 9564 format 0 PIN block (8 bytes)."""
    if not (_PIN_MIN <= len(pin) <= _PIN_MAX and pin.isascii() and pin.isdigit()):
        raise ValueError("PIN must be 4..12 digits")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return _xor(pin_field, _pan_field(pan))


def pin_from_block_format0(block: bytes, pan: str) -> str:
    """Recover the PIN from a clear format 0 block; PinBlockError if malformed."""
    pan_field = _pan_field(pan)
    if len(block) != _BLOCK:
        raise PinBlockError(f"PIN block must be 8 bytes, got {len(block)}")
    nibbles = _xor(block, pan_field).hex().upper()
    if nibbles[0] != "0":
        raise PinBlockError(f"not format 0 (control nibble {nibbles[0]})")
    length = int(nibbles[1], 16)
    if not _PIN_MIN <= length <= _PIN_MAX:
        raise PinBlockError(f"PIN length {length} out of range 4..12")
    pin, fill = nibbles[2 : 2 + length], nibbles[2 + length :]
    if not pin.isdigit():
        raise PinBlockError("PIN contains a non-decimal nibble")
    if fill != "F" * len(fill):
        raise PinBlockError("PIN block fill is not all F")
    return pin


def encrypt_pin_block(pik: bytes, pin: str, pan: str) -> bytes:
    """Format 0 PIN block encrypted under the PIN key."""
    return tdes_encrypt(pik, pin_block_format0(pin, pan))


def decrypt_pin(pik: bytes, encrypted_block: bytes, pan: str) -> str:
    """Decrypt a format 0 PIN block under the PIN key and return the PIN."""
    if len(encrypted_block) != _BLOCK:
        raise PinBlockError(f"PIN block must be 8 bytes, got {len(encrypted_block)}")
    return pin_from_block_format0(tdes_decrypt(pik, encrypted_block), pan)


def adjust_odd_parity(key: bytes) -> bytes:
    """Set each byte's low bit so every byte has odd parity."""
    return key.translate(_ODD_PARITY)


def generate_key(length: int = 16) -> bytes:
    """Random DES/3DES key of 8, 16 or 24 bytes with odd parity."""
    if length not in _TDES_KEY_LENGTHS:
        raise ValueError(f"key length must be 8, 16 or 24, got {length}")
    return adjust_odd_parity(os.urandom(length))


def _check_wrappable(key: bytes) -> None:
    """Raise ValueError unless `key` is a double or triple-length key."""
    if len(key) not in _WRAPPABLE_KEY_LENGTHS:
        raise ValueError(f"wrapped key must be 16 or 24 bytes, got {len(key)}")


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """Encrypt a 16 or 24-byte working key under the key-encrypting key (3DES-ECB)."""
    _check_wrappable(key)
    return tdes_encrypt(kek, key)


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """Decrypt a working key wrapped by wrap_key."""
    _check_wrappable(wrapped)
    return tdes_decrypt(kek, wrapped)

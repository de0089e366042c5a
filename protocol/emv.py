"""EMV BER-TLV (EMV Book 3, Annex B; WIRE.md 9.5 and 9.9) and the CAPK check sum (EMV Book 2, 11.2.2). Pure.

A data object is a tag, a length and a value:

- **tag**: one byte, or, when its low five bits are all set (``xF``/``x1F``),
  more bytes, each but the last with its top bit set (``9F06``, ``DF02``,
  ``DF8117``). Bit 6 of the first byte (``0x20``) marks a constructed object,
  whose value is itself a sequence of objects.
- **length**: one byte up to 127, ``81 xx`` up to 255, ``82 xx xx`` above
  (WIRE.md 9.9). Decoding also takes a longer form than needed (``81 05``);
  encoding always writes the shortest.
- ``00`` bytes before, between or after objects carry no meaning and are
  skipped (EMV Book 3, Annex B).

Tags are written as upper-case hex strings (``"9F06"``). Anything malformed
raises ``EmvTlvError``, naming the byte where reading failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TAG_BYTES_MAX = 4
LENGTH_LONG_FORMS = {0x81: 1, 0x82: 2}  # the first length byte → how many length bytes follow
VALUE_BYTES_MAX = 0xFFFF
_CONSTRUCTED = 0x20
_MORE_TAG_BYTES = 0x1F
_PADDING = 0x00

CHECKSUM_BYTES = 20  # SHA-1


class EmvTlvError(ValueError):
    """Bytes that are not well-formed BER-TLV, or a tag or value that cannot be encoded."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason if position is None else f"{reason} at byte {position}")
        self.reason = reason
        self.position = position


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object: its tag (upper-case hex) and its value's bytes."""

    tag: str
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(int(self.tag[:2], 16) & _CONSTRUCTED)

    def children(self) -> list[Tlv]:
        """The objects inside a constructed object's value."""
        if not self.constructed:
            raise EmvTlvError(f"tag {self.tag} is primitive, it holds no objects")
        return decode(self.value)


# -- tags --------------------------------------------------------------------------------


def tag_bytes(tag: str) -> bytes:
    """A tag's bytes, checked: ``"9F06"`` → ``9F 06``."""
    try:
        raw = bytes.fromhex(tag)
    except ValueError:
        raise EmvTlvError(f"tag {tag!r} is not hex") from None
    if not 1 <= len(raw) <= TAG_BYTES_MAX:
        raise EmvTlvError(f"tag {tag!r} must be 1 to {TAG_BYTES_MAX} bytes")
    multi = raw[0] & _MORE_TAG_BYTES == _MORE_TAG_BYTES
    if not multi and len(raw) > 1:
        raise EmvTlvError(f"tag {tag!r}: its first byte says it is one byte long")
    if multi and len(raw) == 1:
        raise EmvTlvError(f"tag {tag!r}: its first byte says more bytes follow")
    for i, byte in enumerate(raw[1:], start=1):
        last = i == len(raw) - 1
        if bool(byte & 0x80) == last:
            raise EmvTlvError(f"tag {tag!r}: byte {i} has its continuation bit {'set' if last else 'clear'}")
    if raw[0] == _PADDING:
        raise EmvTlvError("tag 00 is padding, not a tag")
    return raw


def _read_tag(data: bytes, position: int) -> tuple[str, int]:
    start = position
    first = data[position]
    position += 1
    if first & _MORE_TAG_BYTES == _MORE_TAG_BYTES:
        while True:
            if position >= len(data):
                raise EmvTlvError("tag runs past the end", start)
            byte = data[position]
            position += 1
            if position - start > TAG_BYTES_MAX:
                raise EmvTlvError(f"tag longer than {TAG_BYTES_MAX} bytes", start)
            if not byte & 0x80:
                break
    return data[start:position].hex().upper(), position


# -- lengths -------------------------------------------------------------------------------


def length_bytes(length: int) -> bytes:
    """The shortest BER length: ``05``, ``81 F8``, ``82 01 00``."""
    if length < 0 or length > VALUE_BYTES_MAX:
        raise EmvTlvError(f"a value of {length} bytes cannot be encoded (0 to {VALUE_BYTES_MAX})")
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    return bytes([0x82]) + length.to_bytes(2, "big")


def _read_length(data: bytes, position: int) -> tuple[int, int]:
    if position >= len(data):
        raise EmvTlvError("length missing", position)
    first = data[position]
    if first < 0x80:
        return first, position + 1
    count = LENGTH_LONG_FORMS.get(first)
    if count is None:
        raise EmvTlvError(f"length byte {first:02X} (only 00-7F, 81 and 82 are used)", position)
    if position + 1 + count > len(data):
        raise EmvTlvError("length runs past the end", position)
    return int.from_bytes(data[position + 1 : position + 1 + count], "big"), position + 1 + count


# -- objects -------------------------------------------------------------------------------


def decode(data: bytes) -> list[Tlv]:
    """The objects of ``data`` in order (constructed ones not opened: see ``Tlv.children``)."""
    objects: list[Tlv] = []
    position = 0
    while position < len(data):
        if data[position] == _PADDING:
            position += 1
            continue
        start = position
        tag, position = _read_tag(data, position)
        length, position = _read_length(data, position)
        end = position + length
        if end > len(data):
            raise EmvTlvError(f"tag {tag}: value of {length} bytes runs past the end", start)
        objects.append(Tlv(tag, data[position:end]))
        position = end
    return objects


def decode_map(data: bytes) -> dict[str, bytes]:
    """The objects of ``data`` as ``{tag: value}``; a tag twice is malformed."""
    values: dict[str, bytes] = {}
    for item in decode(data):
        if item.tag in values:
            raise EmvTlvError(f"tag {item.tag} appears twice")
        values[item.tag] = item.value
    return values


Value = bytes | Sequence["Item"]
Item = tuple[str, Value]


def encode_one(tag: str, value: Value) -> bytes:
    """One object; a value given as a sequence of ``(tag, value)`` makes a constructed object."""
    raw_tag = tag_bytes(tag)
    constructed = bool(raw_tag[0] & _CONSTRUCTED)
    if isinstance(value, (bytes, bytearray)):
        body = bytes(value)
    elif constructed:
        body = encode(value)
    else:
        raise EmvTlvError(f"tag {tag} is primitive: its value must be bytes")
    return raw_tag + length_bytes(len(body)) + body


def encode(items: Iterable[Item] | dict[str, bytes]) -> bytes:
    """Objects in the order given: ``[("9F06", rid), ("9F22", b"\\x08")]`` or a dict."""
    pairs = items.items() if isinstance(items, dict) else items
    return b"".join(encode_one(tag, value) for tag, value in pairs)


# -- CAPK check sum -------------------------------------------------------------------------


def capk_checksum(rid: bytes, index: int, modulus: bytes, exponent: bytes) -> bytes:
    """The CA public key check sum (tag ``DF03``): SHA-1 over RID, index, modulus and
    exponent, concatenated (EMV Book 2, 11.2.2, hash algorithm indicator ``01``)."""
    return hashlib.sha1(rid + bytes([index]) + modulus + exponent).digest()

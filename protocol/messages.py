"""Typed ISO 8583 messages of the POS dialect, over pyiso8583.

Field numbers live in ``spec``'s table, and ``Message``'s attributes are made
from it; everything outside ``protocol/`` uses the names (``msg.stan``,
``msg.amount_fen``, ``msg.batch``).
Values are strings as they stand on the wire (``"000000"``, ``"0200"``),
except the binary fields 52, 55, 62 and 64, which are ``bytes``.
"""

from __future__ import annotations

from typing import Any

import iso8583

from protocol.spec import (
    BINARY_FIELDS,
    DIALECT_FIELDS,
    FIELD_NAMES,  # noqa: F401  (re-exported, as before the table: names by number)
    FIELD_NUMBERS,
    FIELDS,
    FIELDS_BY_NUMBER,
    SPEC,
    SUBFIELDS,
    Subfield,
    Value,
)

MAC_BYTES = 8
_MAC_FIELD = FIELD_NUMBERS["mac"]
_ZERO_MAC = bytes(MAC_BYTES)

# Field 53 of a request with a PIN block: PIN format 0 (ISO 9564), 3DES (WIRE.md 6).
SECURITY_CONTROL = "2600000000000000"

# Fields every response echoes when the request had them (WIRE.md section 3).
ECHOED_ALWAYS = ("stan", "terminal_id", "merchant_id")
ECHOED_WHEN_PRESENT = ("pan", "processing_code", "amount", "currency", "txn_data")


class FormatError(Exception):
    """A frame that decodes as a frame but not as a valid message: answer 30.

    ``field`` names the ISO field (``"p"`` for the bitmap), ``position`` is the
    byte offset in ``raw`` where reading failed, and ``partial`` holds the
    fields that could be read before the failure (named, as in ``Message``).
    """

    def __init__(self, reason: str, *, field: str, position: int | None, raw: bytes,
                 partial: dict[int, Any] | None = None) -> None:
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"field {field}: {reason}{where}")
        self.reason = reason
        self.field = field
        self.position = position
        self.raw = raw
        self.partial: dict[int, Any] = partial or {}

    def readable(self, name: str) -> Any:
        """A field that was read before the failure, by name, or None."""
        return self.partial.get(FIELD_NUMBERS[name])


class _Field:
    """Attribute access to one ISO field of a ``Message``."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def __get__(self, obj: Message | None, owner: type) -> Any:
        if obj is None:
            return self
        return obj.fields.get(self.number)

    def __set__(self, obj: Message, value: Any) -> None:
        if value is None:
            obj.fields.pop(self.number, None)
        else:
            obj.fields[self.number] = value


class _Subfield:
    """Attribute access to a part of a field (``Subfield``): None while the field is absent or short."""

    def __init__(self, subfield: Subfield) -> None:
        self.number = FIELD_NUMBERS[subfield.field]
        self.start, self.end, self.as_int = subfield.start, subfield.end, subfield.as_int
        self.__doc__ = f"{subfield.label}, {subfield.doc}."

    def __get__(self, obj: Message | None, owner: type) -> Any:
        if obj is None:
            return self
        data = obj.fields.get(self.number)
        if data is None or len(data) < self.end:
            return None
        part = data[self.start : self.end]
        return int(part) if self.as_int else part


class Message:
    """An ISO 8583 message: MTI and fields by number, read through names."""

    __slots__ = ("mti", "fields", "raw")

    def __init__(self, mti: str, fields: dict[int, Any] | None = None, raw: bytes = b"") -> None:
        self.mti = mti
        self.fields: dict[int, Any] = fields if fields is not None else {}
        self.raw = raw  # the bytes it was decoded from, MTI first

    def __repr__(self) -> str:
        return f"Message({self.mti!r}, fields={sorted(self.fields)})"

    def has(self, name: str) -> bool:
        return FIELD_NUMBERS[name] in self.fields

    # -- derived views ---------------------------------------------------
    @property
    def amount_fen(self) -> int | None:
        amount = self.amount
        return int(amount) if amount is not None else None

    @property
    def mac_input(self) -> bytes:
        """The bytes the MAC covers: from the MTI up to, not including, field 64."""
        if _MAC_FIELD in self.fields:
            return self.raw[:-MAC_BYTES]
        return self.raw

    # -- encoding ------------------------------------------------------------
    def encode(self) -> bytes:
        """Encode to bytes (MTI first); sets ``raw``."""
        doc: dict[str, str] = {"t": self.mti}
        for number, value in self.fields.items():
            doc[str(number)] = value.hex().upper() if number in BINARY_FIELDS else value
        try:
            encoded, _ = iso8583.encode(doc, SPEC)
        except iso8583.EncodeError as exc:
            raise ValueError(f"cannot encode field {exc.field}: {exc.msg}") from None
        self.raw = bytes(encoded)
        return self.raw

    def encode_with_mac(self, mac_of: Any) -> bytes:
        """Encode with field 64 set to ``mac_of(mac_input)``; sets ``raw`` and ``mac``."""
        self.fields[_MAC_FIELD] = _ZERO_MAC
        body = self.encode()[:-MAC_BYTES]
        mac = mac_of(body)
        self.fields[_MAC_FIELD] = mac
        self.raw = body + mac
        return self.raw


for _field in FIELDS:
    setattr(Message, _field.name, _Field(_field.number))
for _subfield in SUBFIELDS:
    setattr(Message, _subfield.name, _Subfield(_subfield))


def _typed(partial: dict[str, str]) -> dict[int, Any]:
    """pyiso8583's decoded dict → our field dict (binary fields as bytes)."""
    fields: dict[int, Any] = {}
    for key, value in partial.items():
        if not key.isdigit() or key == "1":
            continue
        number = int(key)
        if number in BINARY_FIELDS:
            fields[number] = bytes.fromhex(value)
        else:
            fields[number] = value
    return fields


def _readable(fields: dict[int, Any]) -> dict[int, Any]:
    """Of partially read fields, those that are themselves valid."""
    return {n: v for n, v in fields.items() if _field_problem(n, v) is None}


def _field_problem(number: int, value: Any) -> str | None:
    """What is wrong with a decoded value, by what the field table says it holds (None: nothing)."""
    field = FIELDS_BY_NUMBER.get(number)
    kind = None if field is None else field.value
    if kind is Value.DIGITS and not value.isdigit():
        return "not numeric"
    if kind is Value.TRACK2 and not value.replace("D", "").isdigit():
        return "not track 2 digits"
    if kind is Value.PRINTABLE and not value.isprintable():
        return "not printable"
    return None


def decode_message(raw: bytes) -> Message:
    """Decode a message (MTI first). Raises ``FormatError`` for anything bad.

    The MTI itself must already be known to be four BCD digits (framing).
    """
    try:
        decoded, _ = iso8583.decode(raw, SPEC)
    except iso8583.DecodeError as exc:
        partial = _readable(_typed({k: v for k, v in exc.doc_dec.items() if k != exc.field}))
        raise FormatError(exc.msg, field=exc.field, position=exc.pos, raw=raw, partial=partial) from None
    except KeyError:  # bit 65 of a secondary bitmap: pyiso8583 reads a third one, naming fields no spec has
        raise FormatError("secondary bitmap set", field="1", position=2, raw=raw) from None
    fields = _typed(decoded)
    if "1" in decoded:
        raise FormatError("secondary bitmap set", field="1", position=2, raw=raw,
                          partial=_readable(fields))
    for number, value in fields.items():
        problem = "not used in version 1" if number not in DIALECT_FIELDS else _field_problem(number, value)
        if problem is not None:
            raise FormatError(problem, field=str(number), position=None, raw=raw,
                              partial=_readable(fields))
    return Message(decoded["t"], fields, raw)

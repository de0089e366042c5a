"""Requests from templates and responses read fast: built to push a few thousand requests
a second from one process, requests come from prebuilt templates where only the STAN,
the amount and the MAC change, and responses are read by a small field walker (made
from the protocol's field table) instead of the full decoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from protocol.framing import Header, Tpdu, encode_frame
from protocol.messages import MAC_BYTES
from protocol.spec import FIELD_NUMBERS, FIELDS
from sim.load.money import Payer
from sim.terminal import HEADER, TPDU

_STAN_FIELD, _AMOUNT_FIELD, _CODE_FIELD, _TID_FIELD, _MAC_FIELD, _RRN_FIELD, _DATE_FIELD = (
    FIELD_NUMBERS[name] for name in ("stan", "amount", "response_code", "terminal_id", "mac", "rrn", "local_date"))


class ResponseFormatError(Exception):
    """A response frame that cannot be read as a message of the dialect."""


def _field_layout() -> dict[int, tuple[int, int, bool]]:
    """Per dialect field, from the field table: (length-prefix bytes, fixed size in bytes, length counts digits)."""
    layout = {}
    for field_ in FIELDS:
        spec = field_.encoding
        digits = spec.get("len_count") == "nibbles"
        if spec["len_type"] == 0:
            layout[field_.number] = (0, (spec["max_len"] + 1) // 2 if digits else spec["max_len"], False)
        else:
            layout[field_.number] = (spec["len_type"], 0, digits)
    return layout


_LAYOUT = _field_layout()


@lru_cache(maxsize=256)
def _bitmap_fields(bitmap: bytes) -> tuple[tuple[int, int, int, bool], ...]:
    """The fields a primary bitmap announces, in order, with their layout."""
    bits = int.from_bytes(bitmap, "big")
    if bits >> 63:
        raise ResponseFormatError("secondary bitmap set")
    fields = []
    for number in range(2, 65):
        if bits >> (64 - number) & 1:
            if number not in _LAYOUT:
                raise ResponseFormatError(f"field {number} is not in the dialect")
            fields.append((number, *_LAYOUT[number]))
    return tuple(fields)


def field_spans(message: bytes) -> dict[int, tuple[int, int]]:
    """Where each field's value lies in ``message`` (MTI first): number → (start, end).

    Raises ``ResponseFormatError`` if the message does not walk to its exact end.
    """
    if len(message) < 10:
        raise ResponseFormatError(f"message of {len(message)} bytes")
    spans: dict[int, tuple[int, int]] = {}
    position, size_total = 10, len(message)
    for number, prefix, size, digits in _bitmap_fields(message[2:10]):
        if prefix:
            count_text = message[position : position + prefix].hex()
            if len(count_text) != 2 * prefix or not count_text.isdigit():
                raise ResponseFormatError(f"field {number}: bad length prefix")
            position += prefix
            count = int(count_text)
            size = (count + 1) // 2 if digits else count
        end = position + size
        if end > size_total:
            raise ResponseFormatError(f"field {number}: runs past the end")
        spans[number] = (position, end)
        position = end
    if position != size_total:
        raise ResponseFormatError(f"{size_total - position} bytes after the last field")
    return spans


@dataclass(slots=True)
class ResponseView:
    """The few parts of a response the load generator looks at."""

    code: str | None
    stan: str | None
    terminal_id: str | None
    mac: bytes | None
    mac_input: bytes
    rrn: str | None = None
    local_date: str | None = None  # field 13, MMDD


def read_response(message: bytes) -> ResponseView:
    """Response code, STAN, TID and MAC of a response message (MTI first)."""
    spans = field_spans(message)

    def text(number: int) -> str | None:
        span = spans.get(number)
        return None if span is None else message[span[0] : span[1]].decode("ascii", "replace")

    stan_span = spans.get(_STAN_FIELD)
    mac_span = spans.get(_MAC_FIELD)
    date_span = spans.get(_DATE_FIELD)
    return ResponseView(
        code=text(_CODE_FIELD),
        stan=None if stan_span is None else message[stan_span[0] : stan_span[1]].hex(),
        terminal_id=text(_TID_FIELD),
        mac=None if mac_span is None else message[mac_span[0] :],
        mac_input=message if mac_span is None else message[: -MAC_BYTES],
        rrn=text(_RRN_FIELD),
        local_date=None if date_span is None else message[date_span[0] : date_span[1]].hex(),
    )


@dataclass(slots=True)
class RequestTemplate:
    """An encoded request whose STAN, amount and MAC are patched in place per request."""

    head: bytes  # length, TPDU, header
    message: bytes  # MTI to MAC, MAC zero
    stan_at: int
    amount_at: int  # -1: no amount
    macced: bool = True  # False: no field 64 (echo)
    payer: Payer | None = None  # whose money an approval moves (purchases, cash bill payments)

    @classmethod
    def of(cls, request: Any, tpdu: bytes = TPDU, header: bytes = HEADER, *,
           macced: bool = True, payer: Payer | None = None) -> RequestTemplate:
        message = request.encode_with_mac(lambda _: bytes(MAC_BYTES)) if macced else request.encode()
        spans = field_spans(message)
        frame = encode_frame(Tpdu(tpdu), Header(header), message)
        amount = spans.get(_AMOUNT_FIELD)
        amount_at = -1 if amount is None else amount[0]
        return cls(frame[: -len(message)], message, spans[_STAN_FIELD][0], amount_at, macced, payer)

    def build(self, stan: int, amount_fen: int, mac_of: Callable[[bytes], bytes],
              *, bad_mac: bool = False) -> tuple[bytes, bytes]:
        """(frame, message) of one request; ``bad_mac`` flips a bit of the MAC (if it has one)."""
        body = bytearray(self.message)
        at = self.stan_at
        body[at : at + 3] = bytes.fromhex(f"{stan:06d}")
        if self.amount_at >= 0:
            at = self.amount_at
            body[at : at + 6] = bytes.fromhex(f"{amount_fen:012d}")
        if not self.macced:
            message = bytes(body)
            return self.head + message, message
        mac = mac_of(bytes(body[:-MAC_BYTES]))
        if bad_mac:
            mac = bytes((mac[0] ^ 0x01,)) + mac[1:]
        body[-MAC_BYTES:] = mac
        message = bytes(body)
        return self.head + message, message

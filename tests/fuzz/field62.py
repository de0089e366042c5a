"""The ``field62`` fuzz target: field 62 of the chip-terminal messages (WIRE.md
9.5, 9.9) through every parser a gateway or a terminal runs on it.

Byte 0 of an input picks the parser (its value modulo ``len(PARSERS)``); the
rest is field 62. Each parser raises only its own error (``IcListError``, or
``EmvTlvError`` for the BER-TLV itself), never anything else, and what it
accepts holds its property:

- BER-TLV: the objects re-encode (shortest lengths) to bytes that decode to
  the same objects; a tag or a value ``encode`` refuses is a bug of ``decode``;
- a list query: ``encode_query`` of the NN read gives the same 3 bytes;
- a query's answer, a download's answer: every entry or record re-encodes and
  reads back the same;
- a CAPK or AID download: what was read, encoded as a terminal sends it, reads
  back the same;
- a status upload: never raises; every value is one digit of a 2-digit tag,
  and ``raw`` holds exactly what did not parse as triples;
- the answer the gateway builds from the entries read (``query_answer``) fits
  in 512 bytes and reads back as those entries.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import emv, ic_lists


class Field62Failure(AssertionError):
    """A property of field 62's parsing broken by an input."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise Field62Failure(what)


def check_tlv(data: bytes) -> None:
    try:
        objects = emv.decode(data)
    except emv.EmvTlvError:
        return
    try:
        encoded = emv.encode([(item.tag, item.value) for item in objects])
    except emv.EmvTlvError as exc:
        raise Field62Failure(f"decode gave what encode refuses: {exc} ({data.hex()})") from None
    _require(emv.decode(encoded) == objects, f"re-encoded TLVs decode differently: {data.hex()}")


def check_query(data: bytes) -> None:
    try:
        have_count = ic_lists.parse_query(data)
    except ic_lists.IcListError:
        return
    _require(ic_lists.encode_query(have_count) == data, f"query {data!r} does not re-encode")


def check_query_answer(data: bytes) -> None:
    try:
        answer = ic_lists.parse_query_answer(data)
    except ic_lists.IcListError:
        return
    entries = [emv.encode(entry) for entry in answer.entries]
    again = ic_lists.parse_query_answer((ic_lists.MORE_FOLLOW if answer.more else ic_lists.LIST_ENDS)
                                        + b"".join(entries)) if entries else answer
    _require(again == answer, f"query answer does not read back: {data.hex()}")
    fitting = [entry for entry in entries if len(entry) < ic_lists.FIELD_62_BYTES_MAX]
    if fitting:
        built = ic_lists.query_answer(fitting, 0)
        _require(len(built) <= ic_lists.FIELD_62_BYTES_MAX, f"an answer of {len(built)} bytes")
        read = ic_lists.parse_query_answer(built)
        taken = [emv.encode(entry) for entry in read.entries]
        _require(taken == fitting[: len(taken)] and read.more == (len(taken) < len(fitting)),
                 f"the built answer does not read back as its entries: {data.hex()}")


def check_capk_download(data: bytes) -> None:
    try:
        rid, index = ic_lists.parse_capk_download(data)
    except ic_lists.IcListError:
        return
    _require(ic_lists.parse_capk_download(ic_lists.encode_capk_download(rid, index)) == (rid, index),
             f"CAPK download does not read back: {data.hex()}")


def check_aid_download(data: bytes) -> None:
    try:
        aid = ic_lists.parse_aid_download(data)
    except ic_lists.IcListError:
        return
    _require(ic_lists.parse_aid_download(ic_lists.encode_aid_download(aid)) == aid,
             f"AID download does not read back: {data.hex()}")


def check_download_answer(data: bytes) -> None:
    try:
        record = ic_lists.parse_download_answer(data)
    except ic_lists.IcListError:
        return
    if record is None:
        _require(data == ic_lists.NOTHING_MORE, f"{data!r} read as 'unknown'")
        return
    _require(ic_lists.parse_download_answer(ic_lists.LIST_ENDS + emv.encode(record)) == record,
             f"download answer does not read back: {data.hex()}")
    try:
        ic_lists.parse_capk_record(record)
    except ic_lists.IcListError:
        pass


def check_status(data: bytes) -> None:
    status = ic_lists.parse_status(data)
    raw = status.pop(ic_lists.RAW_STATUS_KEY, None)
    for tag, value in status.items():
        _require(len(tag) == 2 and tag.isdigit() and len(value) == 1 and value.isdigit(), f"{tag}={value}")
    parsed_bytes = len(data) - (len(bytes.fromhex(raw)) if raw is not None else 0)
    _require(parsed_bytes % 3 == 0, f"status: {parsed_bytes} bytes read as triples")
    _require(raw is None or data.endswith(bytes.fromhex(raw)), "status: raw is not the rest")
    _require(raw is None or not (len(raw) >= 6 and bytes.fromhex(raw)[:3].isdigit()), "status: raw starts a triple")


PARSERS: tuple[Callable[[bytes], None], ...] = (
    check_tlv, check_query, check_query_answer, check_capk_download, check_aid_download, check_download_answer,
    check_status,
)


def field62_target(data: bytes) -> None:
    if not data:
        return
    PARSERS[data[0] % len(PARSERS)](data[1:])

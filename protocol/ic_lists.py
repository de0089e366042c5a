"""Field 62 of the chip-terminal messages of WIRE.md 9.5 and 9.9: IC key (CAPK)
and parameter (AID) list queries, downloads and ends, and the status upload. Pure.

| message | 60.3 | request 62 | answer 62 |
|---|---|---|---|
| list query (0820) | 372 CAPK, 382 AID | ASCII ``1`` + NN | ``0``, or ``1``/``2`` + entries |
| download (0800) | 370 CAPK, 380 AID | ``9F06`` (+ ``9F22`` for a CAPK) | ``1`` + the record, or ``0`` |
| download end (0800) | 371 CAPK, 381 AID | - | - |
| status upload (0820) | 362 | triples of tag n2 and value n1 | - |

The whole of field 62 is at most 512 bytes (WIRE.md 9.9): a query's answer
carries as many entries as fit, and ``2`` when more follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from protocol import emv

FIELD_62_BYTES_MAX = 512
STATUS_BYTES = 1
ENTRIES_MAX = 99  # per list; NN is two digits

# 60.3 network management codes
CAPK_DOWNLOAD, CAPK_END, CAPK_QUERY = "370", "371", "372"
AID_DOWNLOAD, AID_END, AID_QUERY = "380", "381", "382"
STATUS_UPLOAD = "362"

# the answer's first byte
NOTHING_MORE = b"0"  # query: nothing after NN; download: unknown key or AID
LIST_ENDS = b"1"  # query: the list ends with these entries; download: the record follows
MORE_FOLLOW = b"2"  # query: more follow, query again
QUERY_MARK = b"1"  # the request's first byte

# tags
TAG_AID = "9F06"  # the AID, or a CAPK's RID
TAG_CAPK_INDEX = "9F22"
TAG_CAPK_EXPIRY = "DF05"  # 8 ASCII digits YYYYMMDD
TAG_HASH_ALGORITHM = "DF06"
TAG_KEY_ALGORITHM = "DF07"
TAG_MODULUS = "DF02"
TAG_EXPONENT = "DF04"
TAG_CHECKSUM = "DF03"

RID_BYTES = 5
AID_BYTES_MIN, AID_BYTES_MAX = 5, 16
ALGORITHM_SHA1 = 1  # hash algorithm indicator
ALGORITHM_RSA = 1  # public key algorithm indicator
MODULUS_BYTES_MAX = 248  # EMV Book 2: N_CA <= 248
EXPONENTS = (b"\x03", b"\x01\x00\x01")  # EMV Book 2: 3 or 2^16 + 1

# device status upload (362)
DEVICE_TAGS = {"01": "keyboard", "02": "pin_pad", "03": "reader", "04": "printer", "05": "screen"}
DEVICE_WORKING, DEVICE_BROKEN = "1", "0"
RAW_STATUS_KEY = "raw"  # what did not parse as triples, kept as upper-case hex


class IcListError(ValueError):
    """Field 62 of a chip-terminal message is malformed (answered 30)."""


@dataclass(frozen=True, slots=True)
class Capk:
    """A certification authority public key as the operator registers it."""

    rid: bytes
    index: int
    expiry: str  # YYYYMMDD
    modulus: bytes
    exponent: bytes
    checksum: bytes
    hash_algorithm: int = ALGORITHM_SHA1
    key_algorithm: int = ALGORITHM_RSA

    @property
    def key(self) -> tuple[bytes, int]:
        return self.rid, self.index


def capk_problem(capk: Capk) -> str | None:
    """Why a CAPK cannot be registered, or None (EMV Book 2, 11.2.2; WIRE.md 9.5)."""
    if len(capk.rid) != RID_BYTES:
        return f"RID must be {RID_BYTES} bytes"
    if not 0 <= capk.index <= 0xFF:
        return "index must be one byte"
    if not (len(capk.expiry) == 8 and capk.expiry.isascii() and capk.expiry.isdigit()):
        return "expiry must be YYYYMMDD"
    try:
        date(int(capk.expiry[:4]), int(capk.expiry[4:6]), int(capk.expiry[6:]))
    except ValueError:
        return f"expiry {capk.expiry} is not a date"
    if not 1 <= len(capk.modulus) <= MODULUS_BYTES_MAX or capk.modulus[0] == 0:
        return f"modulus must be 1 to {MODULUS_BYTES_MAX} bytes without a leading zero byte"
    if capk.exponent not in EXPONENTS:
        return "exponent must be 03 or 010001"
    if capk.checksum != emv.capk_checksum(capk.rid, capk.index, capk.modulus, capk.exponent):
        return "check sum (DF03) is not the SHA-1 of RID, index, modulus and exponent"
    return None


# -- list query (372 / 382) ------------------------------------------------------------


def encode_query(have_count: int) -> bytes:
    """A query's 62: ``1`` and NN, the entries the terminal already has (``100`` to start)."""
    if not 0 <= have_count <= ENTRIES_MAX:
        raise ValueError(f"NN must be 0 to {ENTRIES_MAX}")
    return QUERY_MARK + f"{have_count:02d}".encode()


def parse_query(data: bytes | None) -> int:
    """NN from a query's 62."""
    if data is None or len(data) != 3 or data[:1] != QUERY_MARK or not data[1:].isdigit():
        raise IcListError("a list query's 62 is ASCII 1 and two digits")
    return int(data[1:])


def capk_entry(capk: Capk) -> bytes:
    """A CAPK in a query's answer: 9F06 RID, 9F22 index, DF05 expiry."""
    return emv.encode([(TAG_AID, capk.rid), (TAG_CAPK_INDEX, bytes([capk.index])),
                       (TAG_CAPK_EXPIRY, capk.expiry.encode("ascii"))])


def aid_entry(aid: bytes) -> bytes:
    """An AID in a query's answer: 9F06."""
    return emv.encode([(TAG_AID, aid)])


def query_answer(entries: Sequence[bytes], have_count: int) -> bytes:
    """A query's answer 62: the entries after the first ``have_count``, as many as fit in 512 bytes."""
    rest = entries[have_count:]
    if not rest:
        return NOTHING_MORE
    room = FIELD_62_BYTES_MAX - STATUS_BYTES
    taken: list[bytes] = []
    for entry in rest:
        if len(entry) > room:
            break
        taken.append(entry)
        room -= len(entry)
    if not taken:
        raise ValueError("an entry does not fit in field 62")
    return (LIST_ENDS if len(taken) == len(rest) else MORE_FOLLOW) + b"".join(taken)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """A query's answer as the terminal reads it."""

    more: bool  # 2: query again with NN + len(entries)
    entries: list[dict[str, bytes]]


def parse_query_answer(data: bytes | None) -> QueryAnswer:
    """The terminal's side: the entries of a query's answer 62, each ``{tag: value}``."""
    if not data or data[:1] not in (NOTHING_MORE, LIST_ENDS, MORE_FOLLOW):
        raise IcListError("a list query's answer starts with ASCII 0, 1 or 2")
    if data[:1] == NOTHING_MORE:
        if len(data) != 1:
            raise IcListError("an answer 0 carries no entries")
        return QueryAnswer(False, [])
    entries: list[dict[str, bytes]] = []
    try:
        for item in emv.decode(data[1:]):
            if item.tag == TAG_AID or not entries:
                if item.tag != TAG_AID:
                    raise IcListError(f"an entry starts with 9F06, not {item.tag}")
                entries.append({})
            entries[-1][item.tag] = item.value
    except emv.EmvTlvError as exc:
        raise IcListError(f"entries: {exc}") from None
    if not entries:
        raise IcListError("an answer 1 or 2 carries entries")
    return QueryAnswer(data[:1] == MORE_FOLLOW, entries)


# -- download (370 / 380) ------------------------------------------------------------------


def encode_capk_download(rid: bytes, index: int) -> bytes:
    return emv.encode([(TAG_AID, rid), (TAG_CAPK_INDEX, bytes([index]))])


def encode_aid_download(aid: bytes) -> bytes:
    return emv.encode([(TAG_AID, aid)])


def _download_tags(data: bytes | None) -> dict[str, bytes]:
    if not data:
        raise IcListError("a download's 62 carries 9F06")
    try:
        return emv.decode_map(data)
    except emv.EmvTlvError as exc:
        raise IcListError(f"download: {exc}") from None


def parse_capk_download(data: bytes | None) -> tuple[bytes, int]:
    """(RID, index) from a CAPK download's 62."""
    tags = _download_tags(data)
    rid, index = tags.get(TAG_AID), tags.get(TAG_CAPK_INDEX)
    if rid is None or len(rid) != RID_BYTES:
        raise IcListError("a CAPK download carries 9F06, the 5-byte RID")
    if index is None or len(index) != 1:
        raise IcListError("a CAPK download carries 9F22, the 1-byte index")
    return rid, index[0]


def parse_aid_download(data: bytes | None) -> bytes:
    """The AID from an AID download's 62."""
    aid = _download_tags(data).get(TAG_AID)
    if aid is None or not AID_BYTES_MIN <= len(aid) <= AID_BYTES_MAX:
        raise IcListError(f"an AID download carries 9F06, an AID of {AID_BYTES_MIN} to {AID_BYTES_MAX} bytes")
    return aid


def capk_record(capk: Capk) -> bytes:
    """A CAPK's whole record, in WIRE.md 9.5's order: 9F06, 9F22, DF05, DF06, DF07, DF02, DF04, DF03."""
    return emv.encode([
        (TAG_AID, capk.rid), (TAG_CAPK_INDEX, bytes([capk.index])), (TAG_CAPK_EXPIRY, capk.expiry.encode("ascii")),
        (TAG_HASH_ALGORITHM, bytes([capk.hash_algorithm])), (TAG_KEY_ALGORITHM, bytes([capk.key_algorithm])),
        (TAG_MODULUS, capk.modulus), (TAG_EXPONENT, capk.exponent), (TAG_CHECKSUM, capk.checksum),
    ])


def aid_record(aid: bytes, parameters_tlv: bytes) -> bytes:
    """An AID's whole record: 9F06 and its parameter TLVs as registered."""
    return aid_entry(aid) + parameters_tlv


def aid_record_fits(aid: bytes, parameters_tlv: bytes) -> bool:
    return STATUS_BYTES + len(aid_record(aid, parameters_tlv)) <= FIELD_62_BYTES_MAX


def download_answer(record: bytes | None) -> bytes:
    """A download's answer 62: ``1`` and the record, or ``0`` for an unknown key or AID."""
    return NOTHING_MORE if record is None else LIST_ENDS + record


def parse_download_answer(data: bytes | None) -> dict[str, bytes] | None:
    """The terminal's side: the record of a download's answer, or None for ``0``."""
    if data == NOTHING_MORE:
        return None
    if not data or data[:1] != LIST_ENDS:
        raise IcListError("a download's answer is ASCII 0, or 1 and the record")
    try:
        return emv.decode_map(data[1:])
    except emv.EmvTlvError as exc:
        raise IcListError(f"record: {exc}") from None


def parse_capk_record(tags: dict[str, bytes]) -> Capk:
    """A CAPK from its downloaded record's tags, its check sum verified."""
    try:
        index = tags[TAG_CAPK_INDEX]
        capk = Capk(rid=tags[TAG_AID], index=index[0] if len(index) == 1 else -1,
                    expiry=tags[TAG_CAPK_EXPIRY].decode("ascii", "replace"), modulus=tags[TAG_MODULUS],
                    exponent=tags[TAG_EXPONENT], checksum=tags[TAG_CHECKSUM],
                    hash_algorithm=tags[TAG_HASH_ALGORITHM][0], key_algorithm=tags[TAG_KEY_ALGORITHM][0])
    except (KeyError, IndexError) as exc:
        raise IcListError(f"a CAPK record lacks {exc}") from None
    problem = capk_problem(capk)
    if problem is not None:
        raise IcListError(problem)
    return capk


# -- status upload (362) ------------------------------------------------------------------


def encode_status(status: dict[str, str]) -> bytes:
    """A status upload's 62 from ``{tag: value}``: ``{"03": "1", "04": "0"}`` → ``031040``."""
    return "".join(f"{tag}{value}" for tag, value in status.items()).encode("ascii")


def parse_status(data: bytes | None) -> dict[str, str]:
    """A status upload's 62 as ``{tag: value}``; unknown tags kept as sent, a later one
    winning; whatever does not parse as triples of digits, from there on, under ``raw`` (hex)."""
    status: dict[str, str] = {}
    data = data or b""
    position = 0
    while position + 3 <= len(data) and data[position : position + 3].isdigit():
        text = data[position : position + 3].decode("ascii")
        status[text[:2]] = text[2]
        position += 3
    if position < len(data):
        status[RAW_STATUS_KEY] = data[position:].hex().upper()
    return status


def broken_devices(status: dict[str, str] | None) -> list[str]:
    """The names of the known devices reported not working."""
    if not status:
        return []
    return [name for tag, name in DEVICE_TAGS.items() if status.get(tag) == DEVICE_BROKEN]

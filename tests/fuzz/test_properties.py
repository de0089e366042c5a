"""Property-based tests (hypothesis) of everything a terminal's bytes go through.

- ``FrameDecoder``, in any chunking, reads exactly the frames WIRE.md 1 says
  and raises nothing but ``FramingError``; ``parse_frame_body`` refuses
  exactly what WIRE.md 8 closes on, with ``FramingError``.
- ``decode_message`` raises nothing but ``FormatError`` on any bytes, and what
  it decodes re-encodes to bytes that decode to the same fields.
- ``tlv.decode`` raises nothing but ``TlvError``.
- The same for bit flips, truncations, insertions and overwrites of the real
  vectors (``/work/shared/vectors``).
- ``Processor.handle`` over the stub (``tests/fuzz/stub.py``): random,
  mutated and perturbed requests all get a well-formed response frame with a
  proper response code, never 96 and never an exception (``check_response``).

Examples are derandomized (the same on every run) and bounded so that the
file runs in a few seconds; ``POSGW_FUZZ_SCALE=20`` runs twenty times as many.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import tlv
from protocol.framing import (
    FRAME_MIN_LENGTH,
    LENGTH_BYTES,
    PREFIX_BYTES,
    FrameDecoder,
    FramingError,
    Header,
    Tpdu,
    encode_frame,
)
from protocol.messages import Message, decode_message
from protocol.spec import BINARY_FIELDS, DIALECT_FIELDS, SPEC
from tests.fuzz import requests, stub
from tests.fuzz.fuzz_targets import (
    answer_and_check,
    check_decoded,
    check_frame_body,
    message_target,
    reference_frames,
    refused_body,
    with_right_mac,
)
from tests.protocol.vectors import all_vectors

SCALE = max(1, int(os.environ.get("POSGW_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- the real vectors, and mutations of them -----------------------------------------------

VECTORS = all_vectors()


def _body(vector) -> bytes:
    if vector.framed:
        (body,) = FrameDecoder(frame_bytes_max=65535).feed(vector.data)
        return body
    return requests.frame_body(vector.data)


VECTOR_BODIES = [_body(v) for v in VECTORS]
VECTOR_MESSAGES = [body[PREFIX_BYTES:] for body in VECTOR_BODIES]
VECTOR_STREAMS = [len(body).to_bytes(LENGTH_BYTES, "big") + body for body in VECTOR_BODIES]


@st.composite
def mutated(draw, originals: list[bytes]) -> bytes:
    """One of ``originals`` after a few bit flips, truncations, insertions, deletions or overwrites."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "overwrite", "duplicate")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "overwrite" and data:
            data[at] = draw(st.sampled_from((0x00, 0x0A, 0x7F, 0x80, 0x99, 0xFF, draw(st.integers(0, 255)))))
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


# -- frames ------------------------------------------------------------------------------------


@st.composite
def frame_streams(draw) -> bytes:
    """A TCP stream: whole frames of any content, stray bytes and odd length prefixes."""
    parts = draw(st.lists(st.one_of(
        st.binary(min_size=FRAME_MIN_LENGTH, max_size=120).map(lambda b: len(b).to_bytes(2, "big") + b),
        st.sampled_from(VECTOR_STREAMS),
        st.integers(0, 0xFFFF).map(lambda n: n.to_bytes(2, "big")),
        st.binary(max_size=24),
    ), max_size=6))
    return b"".join(parts)


def _cut(stream: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position, i = [], 0, 0
    while position < len(stream):
        size = sizes[i % len(sizes)] if sizes else len(stream)
        chunks.append(stream[position : position + size])
        position += size
        i += 1
    return chunks


def _check_decoder(stream: bytes, sizes: list[int], frame_bytes_max: int) -> None:
    expected, expect_error, _ = reference_frames(stream, frame_bytes_max)
    decoder = FrameDecoder(frame_bytes_max=frame_bytes_max)
    frames, raised = [], False
    for chunk in _cut(stream, sizes):
        try:
            frames += decoder.feed(chunk)
        except FramingError:  # anything else fails the test
            raised = True
            break
    assert raised == expect_error
    assert all(FRAME_MIN_LENGTH <= len(body) <= frame_bytes_max for body in frames)
    if raised:  # frames completed in the same feed as a bad length go with the connection
        assert frames == expected[: len(frames)]
    else:
        assert frames == expected
    for body in frames:
        check_frame_body(body)


@fuzz_settings(300)
@given(frame_streams(), st.lists(st.integers(1, 70), max_size=8),
       st.sampled_from((FRAME_MIN_LENGTH, FRAME_MIN_LENGTH + 1, 64, 300, 2048)))
def test_frame_decoder_reads_wire_md_1_in_any_chunking(stream, sizes, frame_bytes_max):
    _check_decoder(stream, sizes, frame_bytes_max)


@fuzz_settings(200)
@given(mutated(VECTOR_STREAMS), st.lists(st.integers(1, 70), max_size=8))
def test_frame_decoder_on_mutated_real_frames(stream, sizes):
    _check_decoder(stream, sizes, 2048)


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=80), st.binary(max_size=60).map(lambda b: b"\x60" + b), mutated(VECTOR_BODIES)))
def test_parse_frame_body_refuses_exactly_what_wire_md_8_closes_on(body):
    frame = check_frame_body(body)
    assert (frame is None) == refused_body(body)
    if frame is not None:
        assert frame.tpdu.raw[0] == 0x60 and frame.message[:2].hex().isdigit()
        assert encode_frame(frame.tpdu, frame.header, frame.message)[LENGTH_BYTES:] == body


# -- messages ------------------------------------------------------------------------------------

_TEXT = st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs"))
_GBK_TEXT = st.text(alphabet=st.one_of(_TEXT, st.sampled_from("张三李四王五电费水费缴纳　")), max_size=40)
# Text a hostile terminal may send where text is expected: control characters, NUL included.
_HOSTILE_TEXT = st.tuples(st.text(alphabet=_TEXT, max_size=8), st.sampled_from("\x00\x00\x01\t\n\x1b\x7f"),
                         st.text(alphabet=_TEXT, max_size=8)).map("".join)


def _value(number: int) -> st.SearchStrategy:
    """Values the spec of ``number`` can carry."""
    spec = SPEC[str(number)]
    fixed, size = spec["len_type"] == 0, spec["max_len"]
    sizes = st.just(size) if fixed else st.integers(0 if number not in (2, 32, 35, 48, 60, 61) else 1, size)
    if number in BINARY_FIELDS:
        return sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))
    if spec["data_enc"] == "b":  # BCD
        if number == 35:  # track 2: digits with a D separator
            return sizes.flatmap(lambda n: st.text(alphabet="0123456789D", min_size=n, max_size=n)).filter(
                lambda t: any(c.isdigit() for c in t))
        return sizes.flatmap(lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n))
    if spec["data_enc"] == "gbk":
        return _GBK_TEXT.filter(lambda t: len(t.encode("gbk")) <= size)
    return sizes.flatmap(lambda n: st.text(alphabet=_TEXT, min_size=n, max_size=n))


@st.composite
def messages(draw) -> Message:
    mti = draw(st.sampled_from(("0200", "0400", "0500", "0800", "0820", "0210", "0100", "9999")))
    numbers = draw(st.sets(st.sampled_from(sorted(DIALECT_FIELDS)), max_size=12))
    return Message(mti, {n: draw(_value(n)) for n in sorted(numbers)})


def _bitmaps(numbers: set[int]) -> bytes:
    """Primary, secondary and third bitmaps for field numbers 2..192, each with
    its bit 1 (or, in the second, bit 65) set when the next one follows."""
    numbers = set(numbers)
    if any(n > 128 for n in numbers):
        numbers |= {1, 65}
    elif any(n > 64 for n in numbers):
        numbers.add(1)
    top = 192 if any(n > 128 for n in numbers) else 128 if 1 in numbers else 64
    bits = sum(1 << (top - n) for n in numbers)
    return bits.to_bytes(top // 8, "big")


@st.composite
def raw_messages(draw) -> bytes:
    """An MTI, bitmaps naming any fields (up to a third bitmap), then bytes that
    are partly the dialect's encoding of those fields and partly anything."""
    mti = draw(st.one_of(st.sampled_from((b"\x02\x00", b"\x08\x00", b"\x04\x00", b"\x08\x20")),
                         st.binary(min_size=2, max_size=2)))
    numbers = draw(st.sets(st.one_of(st.sampled_from(sorted(DIALECT_FIELDS)), st.integers(2, 192)), max_size=8))
    dialect = {n: draw(_value(n)) for n in sorted(numbers) if n in DIALECT_FIELDS}
    encoded = Message("0000", dialect).encode()[10:] if dialect else b""
    tail = draw(st.one_of(st.just(encoded), st.binary(max_size=120), mutated([encoded or b"\x00"])))
    return mti + _bitmaps(numbers) + tail


@fuzz_settings(400)
@given(st.one_of(
    st.binary(max_size=300),
    raw_messages(),
    mutated(VECTOR_MESSAGES),
))
def test_decode_message_raises_only_format_errors(raw):
    message_target(raw)  # a FormatError is checked; a message re-encodes to bytes that decode the same


@fuzz_settings(150)
@given(messages())
def test_every_message_the_dialect_encodes_decodes_to_the_same_fields(message):
    raw = message.encode()
    decoded = decode_message(raw)
    assert decoded.mti == message.mti and decoded.fields == message.fields
    check_decoded(decoded, raw)


@fuzz_settings(200)
@given(messages().map(lambda m: m.encode()).flatmap(lambda raw: mutated([raw])))
def test_mutated_dialect_messages_raise_only_format_errors(raw):
    message_target(raw)  # as the fuzzer checks it


# -- field 59 -------------------------------------------------------------------------------------

_TAGS = st.sampled_from(tuple(tlv.CANONICAL_ORDER) + ("XX", "Z9"))


@st.composite
def tlv_texts(draw) -> str:
    """Tag, 3 digits, value: often right, sometimes with a lying length or a bad value."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        value = draw(st.one_of(_GBK_TEXT, st.text(max_size=12)))
        length = len(value.encode("gbk", "replace"))
        length_text = draw(st.one_of(st.just(f"{length:03d}"), st.text(max_size=4),
                                     st.integers(0, 999).map(lambda n: f"{n:03d}")))
        parts.append(draw(st.one_of(_TAGS, st.text(max_size=3))) + length_text + value)
    return "".join(parts)


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=80), tlv_texts()))
def test_tlv_decode_raises_only_tlv_errors(text):
    try:
        values = tlv.decode(text)
    except tlv.TlvError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@fuzz_settings(200)
@given(st.dictionaries(_TAGS, _GBK_TEXT, max_size=6))
def test_tlv_round_trips(values):
    assert tlv.decode(tlv.encode(values)) == values


# -- the request path ---------------------------------------------------------------------------

GATEWAY = stub.gateway()
_TPDUS = st.binary(min_size=4, max_size=4).map(lambda b: Tpdu(b"\x60" + b))
_HEADERS = st.one_of(st.just(requests.HEADER), st.binary(min_size=6, max_size=6).map(Header))


def _answer(body: bytes) -> None:
    """The gateway's answer to a frame body: none only when WIRE.md 8 says so, else
    well formed (``check_response``); a recorded request's repeat gets the same bytes."""
    answer_and_check(GATEWAY, body)


@fuzz_settings(300)
@given(_TPDUS, _HEADERS, st.one_of(st.binary(max_size=200), raw_messages()))
def test_random_messages_get_a_proper_answer(tpdu, header, message):
    _answer(tpdu.raw + header.raw + message)


@fuzz_settings(300)
@given(mutated(VECTOR_BODIES), st.booleans())
def test_mutated_real_requests_get_a_proper_answer(body, fix_mac):
    _answer(with_right_mac(body, GATEWAY.world) if fix_mac else body)


_REGISTERED = sorted(GATEWAY.world.terminals)
_TEXT_OR_HOSTILE = st.one_of(_GBK_TEXT, _HOSTILE_TEXT)
_KNOWN_BILLS = [  # bills the stub knows, and meters as long as a request's 59 can carry (the answer echoes AC)
    {tlv.BILLER: stub.BILLER_POSTPAID, tlv.ACCOUNT: stub.BILL_ACCOUNT, tlv.REFERENCE: stub.BILL_REFERENCE},
    {tlv.BILLER: stub.BILLER_POSTPAID, tlv.ACCOUNT: stub.BILL_ACCOUNT},
    {tlv.BILLER: stub.BILLER_PREPAID, tlv.ACCOUNT: stub.METER},
    {tlv.BILLER: stub.BILLER_PREPAID, tlv.ACCOUNT: stub.METER, tlv.REFERENCE: stub.METER_REFERENCE},
    {tlv.BILLER: stub.BILLER_PREPAID, tlv.ACCOUNT: stub.METER + "9" * 575},
    {tlv.BILLER: stub.BILLER_PREPAID, tlv.ACCOUNT: stub.METER + "9" * 560},
    {tlv.BILLER: stub.BILLER_POSTPAID, tlv.ACCOUNT: stub.BILL_ACCOUNT, tlv.LOCATION: "31.2304,121.4737"},
    {tlv.BILLER: stub.BILLER_PREPAID, tlv.ACCOUNT: stub.METER, tlv.LOCATION: "nan,inf"},
]
_BILLS = st.one_of(st.sampled_from(_KNOWN_BILLS), st.fixed_dictionaries(
    {
        tlv.BILLER: st.one_of(st.sampled_from((stub.BILLER_POSTPAID, stub.BILLER_PREPAID)), _TEXT_OR_HOSTILE),
        tlv.ACCOUNT: st.one_of(st.sampled_from((stub.BILL_ACCOUNT, stub.METER)), _TEXT_OR_HOSTILE),
    },
    optional={
        tlv.REFERENCE: st.one_of(st.sampled_from((stub.BILL_REFERENCE, stub.METER_REFERENCE)), _TEXT_OR_HOSTILE),
        tlv.LOCATION: st.one_of(st.just("31.2304,121.4737"), st.just("1e999,0"),
                                st.tuples(st.floats(), st.floats()).map(lambda p: f"{p[0]},{p[1]}"),
                                _TEXT_OR_HOSTILE),
        "XX": _TEXT_OR_HOSTILE,
    },
))


def _sometimes(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (hypothesis leans to 0: that is the usual case)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


@st.composite
def requests_of_every_kind(draw, *, perturbed: bool) -> bytes:
    """A request of any kind with values from the edges (amounts, PANs, PINs,
    bills, batches, currencies, hostile text in field 59), MAC'd right. With
    ``perturbed``, also from anyone, fields dropped or added, MAC'd wrong or not
    at all, and sometimes a byte or two mutated after that."""
    kind = draw(st.sampled_from(requests.KINDS))
    if perturbed and _sometimes(draw, 5):
        tid = draw(st.text(alphabet=_TEXT, min_size=8, max_size=8))
    else:
        tid = draw(st.sampled_from(_REGISTERED)) if _sometimes(draw, 3) else "TERM0001"
    if _sometimes(draw, 4):
        pan = draw(st.text(alphabet="0123456789", min_size=1, max_size=19))
    else:
        pan = draw(st.sampled_from(sorted(stub.CARD_PANS)))
    pin = draw(st.sampled_from((stub.PIN, stub.PIN, "0000", None)))
    if pin is not None and not (13 <= len(pan) <= 19):
        pin = None  # a PIN block needs a PAN of 13 to 19 digits
    message = requests.request(
        kind, tid=tid,
        mid=draw(st.text(alphabet=_TEXT, min_size=15, max_size=15)) if _sometimes(draw, 8) else None,
        stan=draw(st.text(alphabet="0123456789", min_size=6, max_size=6)),
        batch=draw(st.one_of(st.just(1), st.just(stub.SETTLED_BATCH), st.integers(0, 999_999))),
        pan=pan, pin=pin,
        amount_fen=draw(st.one_of(st.sampled_from((100, 0, 1, 12_345, 10**12 - 1)), st.integers(0, 10**12 - 1))),
        bill=draw(_BILLS) if kind.startswith("bill") else None,
        currency="156" if not _sometimes(draw, 8) else draw(st.sampled_from(("840", "ABC"))),
    )
    if perturbed and _sometimes(draw, 2):  # a field missing, or one more (of any value the spec can carry)
        for number in draw(st.sets(st.sampled_from(sorted(message.fields)), max_size=2)):
            del message.fields[number]
        for number in draw(st.sets(st.sampled_from(sorted(DIALECT_FIELDS - {64})), max_size=2)):
            message.fields[number] = draw(_value(number))
    if len(message.fields.get(59, "").encode("gbk")) > 600:
        del message.fields[59]
    if perturbed and _sometimes(draw, 3):
        raw = message.encode()  # no MAC, or the one a 0800 has: none
    elif message.mti in ("0800", "0820") and not _sometimes(draw, 4):
        raw = message.encode()
    else:
        raw = requests.with_mac(message, GATEWAY.world, mac_tid="TERMX919" if _sometimes(draw, 10) else None)
    body = requests.frame_body(raw, draw(_TPDUS), requests.HEADER)
    return draw(mutated([body])) if perturbed and _sometimes(draw, 3) else body


@fuzz_settings(300)
@given(requests_of_every_kind(perturbed=False))
def test_requests_of_every_kind_with_edge_values_get_a_proper_answer(body):
    _answer(body)


@fuzz_settings(300)
@given(requests_of_every_kind(perturbed=True))
def test_perturbed_requests_of_every_kind_get_a_proper_answer(body):
    _answer(body)


# -- and the cooperative space swept, not sampled ------------------------------------------------

_CARD_KINDS = ("balance", "purchase", "void", "bill_payment_card", "reversal")


def _sweep() -> list[tuple[str, str, dict[str, str] | None, str, str | None]]:
    cases = []
    for tid in ("TERM0001", stub.TID_X919, stub.TID_FROZEN, stub.TID_NO_KEYS, stub.TID_NO_PERMIT, "NOSUCH01"):
        for kind in requests.KINDS:
            for bill in _KNOWN_BILLS if kind.startswith("bill") else [None]:
                cards = [(pan, pin) for pan in sorted(stub.CARD_PANS) for pin in (stub.PIN, "0000", None)] \
                    if tid == "TERM0001" and kind in _CARD_KINDS else [(requests.CARD_PAN, stub.PIN)]
                cases += [(tid, kind, bill, pan, pin) for pan, pin in cards]
    return cases


def test_every_kind_for_every_terminal_card_and_bill_gets_a_proper_answer():
    """Every kind of request from every kind of terminal, with every card and PIN
    and every bill the stub knows (long meters included), MAC'd right."""
    for tid, kind, bill, pan, pin in _sweep():
        message = requests.request(kind, tid=tid, pan=pan, pin=pin, bill=bill)
        raw = message.encode() if message.mti in ("0800", "0820") else requests.with_mac(message, GATEWAY.world)
        try:
            _answer(requests.frame_body(raw))
        except AssertionError as exc:
            raise AssertionError(f"{kind} from {tid}, card {pan} PIN {pin}, bill {bill}: {exc}") from exc

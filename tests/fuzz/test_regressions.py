"""Every file of the fuzz corpus and every crash ever found, replayed through
its target (``tests/fuzz/fuzz_targets.py``): what a fuzzer once found stays
fixed. New crashes land in ``tests/fuzz/crashes/<target>/`` (``make fuzz``, or
the smoke test) and are picked up here without any change."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.codes import ResponseCode
from protocol.framing import parse_frame_body
from protocol.messages import FormatError, decode_message
from tests.fuzz import requests, stub
from tests.fuzz.fuzz_targets import CORPUS_DIR, CRASH_DIR, TARGETS, check_response, processor_target
from tests.fuzz.seeds import seed_inputs


def _files(base: Path, target: str) -> list[Path]:
    directory = base / target
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


CRASHES = [(target, path) for target in TARGETS for path in _files(CRASH_DIR, target)]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_corpus_input_passes_its_target(target):
    files = _files(CORPUS_DIR, target)
    assert files, f"no corpus for {target}: python -m tests.fuzz.seeds"
    failures = []
    for path in files:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - the point is to list every one
            failures.append(f"{path.relative_to(CORPUS_DIR)}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("target, path", CRASHES, ids=[f"{t}/{p.name}" for t, p in CRASHES])
def test_every_crash_found_stays_fixed(target, path):
    TARGETS[target](path.read_bytes())


def test_crashes_are_filed_under_a_target():
    assert CRASH_DIR.is_dir()
    for entry in CRASH_DIR.iterdir():
        assert entry.name.startswith(".") or entry.name == "README.md" or entry.name in TARGETS, entry


def test_the_corpus_holds_every_seed():
    for target, seeds in seed_inputs().items():
        for name, data in seeds.items():
            path = CORPUS_DIR / target / name
            assert path.is_file() and path.read_bytes() == data, f"{path}: run python -m tests.fuzz.seeds"


# -- the bugs the fuzzers found, spelled out ---------------------------------------------


@pytest.fixture
def gateway():
    """A stub gateway of its own (no answers stored by other tests)."""
    gw = stub.StubGateway()
    yield gw
    gw.close()


def test_a_third_bitmap_is_a_format_error_not_a_key_error(gateway):
    # Bit 1 (a secondary bitmap) and, in it, bit 65 (to pyiso8583: a third
    # bitmap, fields 129-192, which no spec defines): decode raised KeyError,
    # which escaped Processor.handle.
    raw = bytes.fromhex("0800" "8000000000000000" "8000000000000000" "1000000000000000")
    with pytest.raises(FormatError, match="secondary bitmap"):
        decode_message(raw)
    frame = parse_frame_body(requests.frame_body(raw))
    assert check_response(gateway.world, frame, gateway.handle(frame)).response_code == ResponseCode.FORMAT_ERROR


@pytest.mark.parametrize("tag", ["BL", "AC", "BR", "XX"])
def test_a_control_character_in_field_59_is_a_format_error_not_a_96(gateway, tag):
    # A NUL in BL reached PostgreSQL as the biller code of the context query
    # (before the MAC check), which refuses it: 96. In AC it failed the biller
    # connector's query: 91. Field 59 is ans text: 30.
    bill = {"BL": stub.BILLER_POSTPAID, "AC": stub.BILL_ACCOUNT} | {tag: "A\x00B"}
    message = requests.request("bill_inquiry", bill=bill)
    frame = parse_frame_body(requests.frame_body(requests.with_mac(message, gateway.world)))
    answer = check_response(gateway.world, frame, gateway.handle(frame))
    assert answer.response_code == ResponseCode.FORMAT_ERROR


def test_the_stub_approves_well_formed_requests(gateway):
    # The stub is faithful enough for the seeds to be approved: the fuzzer starts deep.
    for number, kind in enumerate(("signon", "echo", "balance", "purchase", "bill_inquiry", "settlement"),
                                  start=1):
        message = requests.request(kind, stan=f"{number:06d}")
        raw = message.encode() if message.mti in ("0800", "0820") else requests.with_mac(message, gateway.world)
        frame = parse_frame_body(requests.frame_body(raw))
        answer = check_response(gateway.world, frame, gateway.handle(frame))
        assert answer.response_code == ResponseCode.APPROVED, kind
    processor_target(b"\x01" + requests.frame_body(raw))  # through the target, as the fuzzer does

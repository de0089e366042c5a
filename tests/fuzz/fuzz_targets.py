"""Coverage-guided fuzz targets (atheris, i.e. libFuzzer) over the wire.

Each target takes one input and raises only when it finds a bug; an input it
returns from is fine, whatever the gateway answered.

- ``frame``: byte 0 picks a chunking, the rest is a TCP byte stream. Fed to
  ``FrameDecoder`` in those chunks and all at once, it must give the frames a
  direct reading of WIRE.md section 1 gives, raise nothing but
  ``FramingError`` (and that exactly when a length is out of range), and
  ``parse_frame_body`` must refuse exactly the bodies WIRE.md 8 closes on.
- ``message``: the bytes are a message, MTI first. ``decode_message`` raises
  only ``FormatError``; what it decodes re-encodes to bytes that decode to the
  same fields.
- ``processor``: byte 0 holds control bits (bit 0: put the right MAC in field
  64 if the message has one, so that the fuzzer gets past the MAC check), the
  rest is a frame body (TPDU, header, message) that ``Processor.handle``
  answers over the stub of ``tests/fuzz/stub.py``, reset for every input. A
  body that ``parse_frame_body`` refuses (short, TPDU ID not 60, MTI not BCD)
  gets no answer; any other gets a well-formed response frame
  (``check_response``): a response code of WIRE.md 7 but never 96, TPDU
  swapped, header echoed, 11/41/42 echoed, a MAC only when the request's own
  verified; never an exception. A recorded request sent again gets the same
  bytes back (WIRE.md 8, repeats).
- ``field62``: byte 0 picks a parser of the chip terminals' field 62 (WIRE.md
  9.5: BER-TLV, list query, its answer, CAPK and AID download, the download's
  answer, status upload), the rest is the field: ``tests/fuzz/field62.py``.

Run one for a while, or all in turn (``make fuzz``)::

    python -m tests.fuzz.fuzz_targets TARGET [-max_total_time=SECONDS] [libFuzzer options] [CORPUS_DIR ...]
    python -m tests.fuzz.fuzz_targets all [-max_total_time=SECONDS]

Without corpus directories a target reads the seeds in
``tests/fuzz/corpus/TARGET`` (``python -m tests.fuzz.seeds`` writes them) and
keeps what it finds in ``var/fuzz/TARGET`` (not committed); ``all`` then
merges the inputs that add coverage into ``tests/fuzz/corpus/TARGET``. A
crashing input is saved as ``tests/fuzz/crashes/TARGET/crash-<sha1>`` and the
process exits non-zero; ``tests/fuzz/test_regressions.py`` replays every file
of the corpus and crash directories through the same target functions, so a
crash kept there stays a test.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TARGET_NAMES = ("frame", "message", "processor", "field62")
_FUZZING = __name__ == "__main__" and sys.argv[1:2] != [] and sys.argv[1] in TARGET_NAMES
if _FUZZING:  # instrument the code under test as it is imported, for coverage guidance
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install -e '.[fuzz]' (Linux x86_64)")
    _instrumented = atheris.instrument_imports(include=["protocol", "gateway", "iso8583"])
else:
    _instrumented = contextlib.nullcontext()

with _instrumented:
    from gateway.acquiring.operations import TxnKey
    from gateway.acquiring.processor import response_mti
    from protocol.codes import ResponseCode
    from protocol.framing import (
        FRAME_MIN_LENGTH,
        LENGTH_BYTES,
        PREFIX_BYTES,
        TPDU_ID,
        Frame,
        FrameDecoder,
        FramingError,
        parse_frame_body,
    )
    from protocol.messages import ECHOED_ALWAYS, FormatError, Message, decode_message
    from protocol.spec import BINARY_FIELDS, DIALECT_FIELDS
    from tests.fuzz import stub
    from tests.fuzz.field62 import field62_target

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS_DIR = HERE / "corpus"
CRASH_DIR = HERE / "crashes"
WORK_DIR = ROOT / "var" / "fuzz"
FRAME_BYTES_MAX = stub.FRAME_BYTES_MAX
DEFAULT_SECONDS = 60

# Answers to requests whose MAC was not verified carry no MAC (WIRE.md 6, 8);
# a financial approval always has one.
_FINANCIAL_MTIS = ("0100", "0200", "0220", "0400", "0500")
CONTROL_FIX_MAC = 0x01


class FuzzFailure(AssertionError):
    """A property of the wire broken by an input."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise FuzzFailure(what)


# -- frame ---------------------------------------------------------------------------


def chunks_of(stream: bytes, seed: int) -> list[bytes]:
    """Split ``stream`` into chunks whose sizes cycle through a pattern chosen by ``seed``."""
    sizes = (1, 2, 3, 5, 8, 13, 21, 64, 256, 4096)
    pattern = [sizes[(seed >> shift) % len(sizes)] for shift in (0, 2, 4, 6)]
    out, position, i = [], 0, 0
    while position < len(stream):
        size = pattern[i % len(pattern)]
        out.append(stream[position : position + size])
        position += size
        i += 1
    return out


def reference_frames(stream: bytes, frame_bytes_max: int) -> tuple[list[bytes], bool, int]:
    """WIRE.md section 1 read directly: the frame bodies in ``stream``, whether a
    length out of range ends it, and how many bytes are left over."""
    frames, position = [], 0
    while len(stream) - position >= LENGTH_BYTES:
        length = int.from_bytes(stream[position : position + LENGTH_BYTES], "big")
        if not FRAME_MIN_LENGTH <= length <= frame_bytes_max:
            return frames, True, len(stream) - position
        if len(stream) - position - LENGTH_BYTES < length:
            break
        frames.append(stream[position + LENGTH_BYTES : position + LENGTH_BYTES + length])
        position += LENGTH_BYTES + length
    return frames, False, len(stream) - position


def feed_all(chunks: list[bytes], frame_bytes_max: int) -> tuple[list[bytes], bool, int]:
    """Feed chunks to a ``FrameDecoder``: frames returned, whether it raised, bytes buffered."""
    decoder = FrameDecoder(frame_bytes_max=frame_bytes_max)
    frames: list[bytes] = []
    for chunk in chunks:
        try:
            frames.extend(decoder.feed(chunk))
        except FramingError:
            return frames, True, decoder.buffered
    return frames, False, decoder.buffered


def refused_body(body: bytes) -> bool:
    """Whether WIRE.md 8 closes on this frame body without an answer."""
    return len(body) < FRAME_MIN_LENGTH or body[0] != TPDU_ID or not body[PREFIX_BYTES:PREFIX_BYTES + 2].hex().isdigit()


def check_frame_body(body: bytes) -> Frame | None:
    """``parse_frame_body`` refuses exactly the bodies WIRE.md 8 closes on, with
    ``FramingError``; what it accepts re-frames to the same bytes."""
    try:
        frame = parse_frame_body(body)
    except FramingError:
        _require(refused_body(body), f"parse_frame_body refused an answerable body {body.hex()}")
        return None
    _require(not refused_body(body), f"parse_frame_body accepted {body.hex()}")
    _require(frame.encode() == len(body).to_bytes(LENGTH_BYTES, "big") + body, "frame does not re-encode")
    return frame


def frame_target(data: bytes) -> None:
    if not data:
        return
    seed, stream = data[0], data[1:]
    frame_bytes_max = FRAME_BYTES_MAX if seed & 0x80 == 0 else FRAME_MIN_LENGTH + seed % 64
    expected, expect_error, left = reference_frames(stream, frame_bytes_max)
    chunkings = [[stream], chunks_of(stream, seed)]
    if len(stream) <= 512:
        chunkings.append([stream[i : i + 1] for i in range(len(stream))])
    for chunks in chunkings:
        frames, raised, buffered = feed_all(chunks, frame_bytes_max)
        _require(raised == expect_error, f"FrameDecoder raised={raised}, expected {expect_error}")
        for body in frames:
            _require(FRAME_MIN_LENGTH <= len(body) <= frame_bytes_max, f"frame of {len(body)} bytes returned")
        if raised:  # frames completed in the same feed as the bad length are dropped with the connection
            _require(frames == expected[: len(frames)], "frames before a framing error differ")
        else:
            _require(frames == expected, "FrameDecoder frames differ from WIRE.md 1")
            expected_buffered = left - LENGTH_BYTES if left >= LENGTH_BYTES else left  # a length read is consumed
            _require(buffered == expected_buffered, f"{buffered} bytes buffered, {expected_buffered} expected")
    for body in expected:
        check_frame_body(body)


# -- message ---------------------------------------------------------------------------


def check_decoded(message: Message, raw: bytes) -> None:
    _require(message.raw == raw, "raw is not the decoded bytes")
    _require(len(message.mti) == 4, f"MTI {message.mti!r}")
    for number, value in message.fields.items():
        _require(number in DIALECT_FIELDS, f"field {number} outside the dialect decoded")
        _require(isinstance(value, bytes if number in BINARY_FIELDS else str), f"field {number} is {type(value)}")
    # The derived views are safe on anything that decodes.
    message.amount_fen, message.txn_type, message.batch, message.network_code  # noqa: B018
    message.original_batch, message.original_stan, message.original_date, message.mac_input  # noqa: B018
    encoded = Message(message.mti, dict(message.fields)).encode()
    again = decode_message(encoded)
    _require(again.mti == message.mti and again.fields == message.fields,
             f"re-encoded message decodes differently: {raw.hex()} -> {encoded.hex()}")


def check_format_error(exc: FormatError, raw: bytes) -> None:
    _require(exc.raw == raw, "FormatError.raw is not the input")
    str(exc)
    for name in ECHOED_ALWAYS:
        exc.readable(name)
    for number, value in exc.partial.items():
        _require(isinstance(value, bytes if number in BINARY_FIELDS else str), f"partial field {number}")


def message_target(data: bytes) -> None:
    try:
        message = decode_message(data)
    except FormatError as exc:
        check_format_error(exc, data)
        return
    check_decoded(message, data)


# -- processor ---------------------------------------------------------------------------


def with_right_mac(body: bytes, world: stub.World) -> bytes:
    """The body with field 64 replaced by the MAC its terminal would compute, if it has a 64."""
    try:
        message = decode_message(body[PREFIX_BYTES:])
    except FormatError:
        return body
    if message.mac is None:
        return body
    mac = world.mac_of(message.terminal_id, message.mac_input)
    return body if mac is None else body[: len(body) - len(mac)] + mac


def check_response(world: stub.World, frame: Frame, response: bytes) -> Message:
    """The answer to ``frame`` is a well-formed response frame (WIRE.md 1, 3, 6, 8)."""
    _require(len(response) >= LENGTH_BYTES + FRAME_MIN_LENGTH, "response shorter than a frame")
    length = int.from_bytes(response[:LENGTH_BYTES], "big")
    _require(length == len(response) - LENGTH_BYTES, "response length prefix is wrong")
    _require(length <= FRAME_BYTES_MAX, f"response of {length} bytes, over frame_bytes_max")
    (body,) = FrameDecoder(frame_bytes_max=FRAME_BYTES_MAX).feed(response)
    out = parse_frame_body(body)
    _require(out.tpdu == frame.tpdu.swapped(), "TPDU not echoed swapped")
    answer = decode_message(out.message)
    _require(answer.response_code in {code.value for code in ResponseCode},
             f"response code {answer.response_code!r}")
    code = ResponseCode(answer.response_code)
    _require(code is not ResponseCode.SYSTEM_MALFUNCTION, "96 for a request the stub can serve")
    _require(out.header == frame.header.with_processing_requirement("3" if code.asks_sign_on else "0"),
             "header not echoed with the processing digit")
    _require(answer.mti == response_mti(frame.message[:2].hex()), f"response MTI {answer.mti}")
    try:
        request = decode_message(frame.message)
    except FormatError as exc:
        _require(code is ResponseCode.FORMAT_ERROR, f"undecodable request answered {code}")
        for name in ECHOED_ALWAYS:
            _require(getattr(answer, name) == exc.readable(name), f"{name} not echoed as readable")
        _require(answer.mac is None, "an undecodable request's answer carries a MAC")
        return answer
    for name in ECHOED_ALWAYS:
        _require(getattr(answer, name) == getattr(request, name), f"{name} not echoed")
    if answer.mac is not None:  # only for a request whose own MAC verified
        _require(request.mac is not None and world.mac_of(request.terminal_id, request.mac_input) == request.mac,
                 "a response MAC'd for a request whose MAC does not verify")
        _require(world.mac_of(request.terminal_id, answer.mac_input) == answer.mac, "response MAC wrong")
    elif code is ResponseCode.APPROVED and request.mti in _FINANCIAL_MTIS:
        raise FuzzFailure("a financial approval without a MAC")
    return answer


def answer_and_check(gateway: stub.StubGateway, body: bytes) -> None:
    """Hand a frame body to a fresh stub gateway (no answers stored: every input
    is judged alone): no answer only for what WIRE.md 8 closes on, else a
    well-formed one; sent again, a recorded request gets the same bytes back."""
    gateway.world.reset()
    frame = check_frame_body(body)
    if frame is None:
        return
    response = gateway.handle(frame)
    _require(response is not None, "no answer (only a request timed out while being recorded goes unanswered)")
    answer = check_response(gateway.world, frame, response)
    request = decode_message(frame.message) if answer.response_code != ResponseCode.FORMAT_ERROR else None
    if request is not None and request.mti in _FINANCIAL_MTIS and request.batch is not None \
            and TxnKey(request.terminal_id, request.batch, request.stan, request.mti) in gateway.world.stored:
        again = gateway.handle(frame)
        _require(again == response, "a repeat did not get the stored answer byte for byte (WIRE.md 8)")


def processor_target(data: bytes) -> None:
    if not data:
        return
    control, body = data[0], data[1 : 1 + FRAME_BYTES_MAX]  # a longer frame is refused by its length
    gateway = stub.gateway()
    if control & CONTROL_FIX_MAC:
        body = with_right_mac(body, gateway.world)
    answer_and_check(gateway, body)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame": frame_target,
    "message": message_target,
    "processor": processor_target,
    "field62": field62_target,
}
assert tuple(TARGETS) == TARGET_NAMES


@dataclass(frozen=True)
class RunResult:
    target: str
    returncode: int
    runs: int | None  # inputs executed, from libFuzzer's final stats
    seconds: float
    crashes: tuple[Path, ...]  # inputs saved by this run
    log: Path

    @property
    def crashed(self) -> bool:
        return self.returncode != 0 or bool(self.crashes)

    def summary(self) -> str:
        what = f"CRASH: {', '.join(str(p.relative_to(ROOT)) for p in self.crashes) or 'see log'}" \
            if self.crashed else "no crash"
        return f"{self.target}: {self.runs if self.runs is not None else '?'} inputs in {self.seconds:.0f} s, {what}"


def run_target(name: str, seconds: int, work_dir: Path, *, merge_into: Path | None = None,
               log: Path | None = None) -> RunResult:
    """Fuzz ``name`` in a child process for ``seconds`` (corpus: ``work_dir``, then the
    seeds); then, if it did not crash, merge what adds coverage into ``merge_into``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log = log or work_dir.parent / f"{name}.log"
    crash_dir = CRASH_DIR / name
    crash_dir.mkdir(parents=True, exist_ok=True)
    before = set(crash_dir.iterdir())
    command = [sys.executable, "-m", "tests.fuzz.fuzz_targets", name, f"-max_total_time={seconds}",
               str(work_dir), str(CORPUS_DIR / name)]
    started = time.monotonic()
    with log.open("wb") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 300,
                              check=False)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    found = re.findall(r"stat::number_of_executed_units: (\d+)", text) or re.findall(r"Done (\d+) runs", text)
    crashes = tuple(sorted(set(crash_dir.iterdir()) - before))
    result = RunResult(name, done.returncode, int(found[-1]) if found else None, elapsed, crashes, log)
    if merge_into is not None and not result.crashed:
        merge_into.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            subprocess.run([sys.executable, "-m", "tests.fuzz.fuzz_targets", name, "-merge=1",
                            str(merge_into), str(work_dir)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                           timeout=600, check=False)
    return result


def fuzz_all(seconds: int) -> int:
    """``make fuzz``: every target in turn; the corpus grows by what adds coverage."""
    results = []
    for name in TARGETS:
        print(f"fuzzing {name} for {seconds} s (log: {(WORK_DIR / f'{name}.log').relative_to(ROOT)})", flush=True)
        result = run_target(name, seconds, WORK_DIR / name, merge_into=CORPUS_DIR / name)
        print("  " + result.summary(), flush=True)
        if result.crashed:
            print("\n".join("  | " + line for line in result.log.read_text(errors="replace").splitlines()
                            if "Error" in line or "Exception" in line or "FuzzFailure" in line), flush=True)
        results.append(result)
    crashed = [r.target for r in results if r.crashed]
    if crashed:
        print(f"crashed: {', '.join(crashed)}; the inputs are under {CRASH_DIR.relative_to(ROOT)}/ "
              "and make test replays them", flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*TARGETS, "all"):
        print(f"usage: python -m tests.fuzz.fuzz_targets {{{','.join(TARGETS)},all}} "
              "[-max_total_time=SECONDS] [libFuzzer options] [CORPUS_DIR ...]", file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    flags = [arg for arg in rest if arg.startswith("-")]
    dirs = [arg for arg in rest if not arg.startswith("-")]
    if name == "all":
        seconds = next((int(f.split("=", 1)[1]) for f in flags if f.startswith("-max_total_time=")), DEFAULT_SECONDS)
        return fuzz_all(seconds)
    if not any(flag.startswith(("-max_total_time=", "-runs=", "-merge=")) for flag in flags):
        flags.append(f"-max_total_time={DEFAULT_SECONDS}")
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        (CRASH_DIR / name).mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={CRASH_DIR / name}/")
    if not dirs:
        work = WORK_DIR / name
        work.mkdir(parents=True, exist_ok=True)
        dirs = [str(work), str(CORPUS_DIR / name)]  # new finds go to the first
    from gateway.logs import configure

    configure("critical", "json")  # a log line per request would slow the fuzzer down
    # libFuzzer re-runs argv[0] through the shell for -merge and -fork: make it this command.
    rerun = f"{shlex.quote(sys.executable)} -m tests.fuzz.fuzz_targets {name}"
    atheris.Setup([rerun, "-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1", *flags, *dirs],
                  TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

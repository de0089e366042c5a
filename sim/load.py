"""``posgw-sim load``: a load generator of many terminals against one gateway.

Signs on N terminals of a world (the JSON ``posgw demo --json`` prints), then
drives them for a while: closed loop (each terminal sends its next request as
soon as it has the answer to the last) or open loop (requests scheduled at R/s
overall; latency counted from the scheduled time, so a slow gateway cannot hide
its queue). Every response's MAC is verified. Faults a real field brings can
be injected: a connection dropped before the answer (then the reversal, as a
terminal sends it), a repeated request, a bad MAC, garbage bytes.

Knows the protocol package and the simulator only, never the gateway. Built
to push a few thousand requests a second from one process: requests come from
prebuilt templates (PIN block computed once per terminal and card) where only
the STAN, the amount and the MAC change, and responses are read by a small
field walker instead of the full decoder.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hmac
import json
import math
import random
import signal
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from protocol import tlv
from protocol.codes import ResponseCode
from protocol.crypto import encrypt_pin_block
from protocol.framing import FrameDecoder, FramingError, Header, Tpdu, encode_frame
from protocol.messages import MAC_BYTES, FormatError, decode_message
from protocol.spec import FIELD_NUMBERS, FIELDS
from sim.terminal import (
    CURRENCY,
    ENTRY_MODE_READ,
    MAC_ALGORITHMS,
    SECURITY_CONTROL,
    KeyCheckError,
    ResponseMacError,
    Terminal,
    build_request,
)

EXIT_COMPLETED, EXIT_FAILED = 0, 2
TXN_TYPES = ("purchase", "balance", "bill-pay", "bill-inquiry", "echo")
MONEY_TYPES = frozenset({"purchase", "bill-pay"})  # what a terminal reverses when it gets no answer
AMOUNT_TYPES = MONEY_TYPES
UNMACCED_TYPES = frozenset({"echo"})  # 0820 echo (60.3 301): no MAC either way (WIRE.md 4)
FAULTS = ("drop", "repeat", "badmac", "garbage")
DEFAULT_MIX = "purchase=70,balance=10,bill-pay=20"
DEFAULT_AMOUNT = "0.01-0.10"
CONNECT_MODES = ("persistent", "per-txn")
STAN_MAX = 999_999
BATCH_MAX = 999_999
AMOUNT_FEN_MAX = 10**12 - 1
# Declines a correct terminal meets in business as usual; any other non-00 code
# on a request of the load is counted as an unexpected code (an error).
BUSINESS_DECLINES = frozenset({"51", "54", "58", "59", "61", "62", "65", "75", "91"})
REVERSAL_TRIES = 5
REVERSAL_RETRY_DELAY_S = 0.2
CONNECT_RETRY_DELAY_S = 0.1
LATE_AFTER_S = 0.010  # open loop: a request sent this long after its slot is late
GARBAGE_WAIT_S = 5.0
SIGNON_CONCURRENCY = 64
PROGRESS_INTERVAL_S = 0.25
_RESPONSE_BYTES_MAX = 0xFFFF
_TPDU = bytes.fromhex("6000010000")
_HEADER = bytes.fromhex("603100000000")
_STAN_FIELD, _AMOUNT_FIELD, _CODE_FIELD, _TID_FIELD, _MAC_FIELD = (
    FIELD_NUMBERS[name] for name in ("stan", "amount", "response_code", "terminal_id", "mac"))
_ERROR_KEYS = (
    "timeouts", "disconnects", "connect_failures", "bad_responses", "mac_failures", "unexpected_codes",
    "repeat_mismatches", "badmac_accepted", "garbage_not_closed", "reversals_unanswered", "signon_failures",
)


class UsageError(Exception):
    """Bad options or world: exit 2 before any load is sent."""


class ResponseFormatError(Exception):
    """A response frame that cannot be read as a message of the dialect."""


# -- world ------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalSpec:
    tid: str
    mid: str
    tmk: bytes
    mac_algorithm: str = "cup-ecb"


@dataclass(frozen=True)
class CardSpec:
    pan: str
    pin: str
    expiry: str | None = None


@dataclass(frozen=True)
class World:
    """Terminals, cards and a prepaid biller's meters, as ``posgw demo --json`` prints them."""

    terminals: tuple[TerminalSpec, ...]
    cards: tuple[CardSpec, ...]
    biller: str | None = None
    meters: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any, *, biller: str | None = None) -> World:
        """Read the demo JSON: ``terminals`` (tid, mid, tmk hex, optional mac_algorithm),
        ``cards`` (pan, pin, optional expiry) and ``billers`` (a prepaid one's ``meters``)."""
        if not isinstance(data, dict):
            raise UsageError("world: expected a JSON object with terminals, cards and billers")
        try:
            terminals = tuple(
                TerminalSpec(str(t["tid"]), str(t["mid"]), _tmk(str(t["tmk"])),
                             str(t.get("mac_algorithm") or "cup-ecb"))
                for t in data.get("terminals", ())
            )
            cards = tuple(CardSpec(str(c["pan"]), str(c["pin"]), c.get("expiry"))
                          for c in data.get("cards", ()))
        except (KeyError, TypeError) as exc:
            raise UsageError(f"world: a terminal or card lacks {exc}") from None
        for terminal in terminals:
            if len(terminal.tid) != 8 or len(terminal.mid) != 15:
                raise UsageError(f"world: terminal {terminal.tid!r}: TID must be 8 characters and MID 15")
            if terminal.mac_algorithm not in MAC_ALGORITHMS:
                raise UsageError(
                    f"world: terminal {terminal.tid}: unknown MAC algorithm {terminal.mac_algorithm!r}")
        for card in cards:
            if not (13 <= len(card.pan) <= 19 and card.pan.isdigit() and 4 <= len(card.pin) <= 12
                    and card.pin.isdigit()):
                raise UsageError("world: a card's PAN must be 13 to 19 digits and its PIN 4 to 12")
        chosen_biller, meters = None, ()
        for entry in data.get("billers", ()) or ():
            if not isinstance(entry, dict) or not entry.get("prepaid") or not entry.get("meters"):
                continue
            if biller is None or entry.get("code") == biller:
                chosen_biller, meters = str(entry["code"]), tuple(str(m) for m in entry["meters"])
                break
        if biller is not None and chosen_biller is None:
            raise UsageError(f"world: no prepaid biller {biller} with meters")
        return cls(terminals, cards, chosen_biller, meters)

    def cards_for(self, index: int, terminals: int) -> tuple[CardSpec, ...]:
        """The cards terminal ``index`` of ``terminals`` uses: round-robin, so that terminals
        running at once use different cards while there are enough of them."""
        if not self.cards:
            return ()
        if len(self.cards) <= terminals:
            return (self.cards[index % len(self.cards)],)
        return self.cards[index::terminals]

    def meters_for(self, index: int, terminals: int) -> tuple[str, ...]:
        if not self.meters:
            return ()
        if len(self.meters) <= terminals:
            return (self.meters[index % len(self.meters)],)
        return self.meters[index::terminals]


def _tmk(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise UsageError("world: a terminal's TMK must be 32 hex digits")
    return key


def load_world(source: str, *, biller: str | None = None) -> World:
    """The world from a file, or from stdin for ``-``."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"world: {source}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"world: {source}: not JSON ({exc})") from None
    return World.from_json(data, biller=biller)


# -- option parsing (pure) ------------------------------------------------------------


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{what}: {part!r} is not NAME=VALUE")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_mix(text: str) -> dict[str, int]:
    """``purchase=70,balance=10,bill-pay=20`` → weights by type; weights are whole numbers
    (relative, they need not add up to 100), at least one above 0."""
    mix: dict[str, int] = {}
    for name, value in _pairs(text, "mix"):
        if name not in TXN_TYPES:
            raise ValueError(f"mix: unknown type {name!r} (types: {', '.join(TXN_TYPES)})")
        if name in mix:
            raise ValueError(f"mix: {name} given twice")
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"mix: weight of {name} must be a whole number")
        mix[name] = int(value)
    if not any(mix.values()):
        raise ValueError("mix: at least one type needs a weight above 0")
    return {name: weight for name, weight in mix.items() if weight > 0}


def parse_faults(text: str) -> dict[str, float]:
    """``drop=1,repeat=1,badmac=1,garbage=1`` → percent of requests per fault (0 to 100,
    together at most 100)."""
    faults: dict[str, float] = {}
    for name, value in _pairs(text, "faults"):
        if name not in FAULTS:
            raise ValueError(f"faults: unknown fault {name!r} (faults: {', '.join(FAULTS)})")
        if name in faults:
            raise ValueError(f"faults: {name} given twice")
        try:
            percent = float(value)
        except ValueError:
            raise ValueError(f"faults: percent of {name} must be a number") from None
        if not 0 <= percent <= 100 or math.isnan(percent):
            raise ValueError(f"faults: percent of {name} must be from 0 to 100")
        faults[name] = percent
    if sum(faults.values()) > 100:
        raise ValueError("faults: the percents add up to more than 100")
    return {name: percent for name, percent in faults.items() if percent > 0}


def parse_amount(text: str) -> tuple[int, int]:
    """``0.50`` or ``0.01-0.10`` (yuan) → (min, max) in fen, each from 1 fen."""
    low, sep, high = text.partition("-")
    try:
        bounds = [Decimal(low.strip()), Decimal(high.strip()) if sep else Decimal(low.strip())]
    except InvalidOperation:
        raise ValueError("amount must be yuan, like 0.50, or a range like 0.01-0.10") from None
    fen = [int(b * 100) for b in bounds]
    if any(b * 100 != f for b, f in zip(bounds, fen)) or not 1 <= fen[0] <= fen[1] <= AMOUNT_FEN_MAX:
        raise ValueError("amount must be from 0.01 yuan, at most 2 decimals, low-high in order")
    return fen[0], fen[1]


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (0 < p <= 100) of values sorted ascending; None if empty."""
    if not sorted_values:
        return None
    if not 0 < p <= 100:
        raise ValueError("percentile must be above 0 and at most 100")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    ordered = sorted(seconds)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "p50": ms(percentile(ordered, 50)),
        "p90": ms(percentile(ordered, 90)),
        "p99": ms(percentile(ordered, 99)),
        "max": ms(ordered[-1] if ordered else None),
    }


# -- fast response reading ----------------------------------------------------------


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


def read_response(message: bytes) -> ResponseView:
    """Response code, STAN, TID and MAC of a response message (MTI first)."""
    spans = field_spans(message)

    def text(number: int) -> str | None:
        span = spans.get(number)
        return None if span is None else message[span[0] : span[1]].decode("ascii", "replace")

    stan_span = spans.get(_STAN_FIELD)
    mac_span = spans.get(_MAC_FIELD)
    return ResponseView(
        code=text(_CODE_FIELD),
        stan=None if stan_span is None else message[stan_span[0] : stan_span[1]].hex(),
        terminal_id=text(_TID_FIELD),
        mac=None if mac_span is None else message[mac_span[0] :],
        mac_input=message if mac_span is None else message[: -MAC_BYTES],
    )


# -- requests from templates ----------------------------------------------------------


@dataclass(slots=True)
class RequestTemplate:
    """An encoded request whose STAN, amount and MAC are patched in place per request."""

    head: bytes  # length, TPDU, header
    message: bytes  # MTI to MAC, MAC zero
    stan_at: int
    amount_at: int  # -1: no amount
    macced: bool = True  # False: no field 64 (echo)

    @classmethod
    def of(cls, request: Any, tpdu: bytes = _TPDU, header: bytes = _HEADER, *,
           macced: bool = True) -> RequestTemplate:
        message = request.encode_with_mac(lambda _: bytes(MAC_BYTES)) if macced else request.encode()
        spans = field_spans(message)
        frame = encode_frame(Tpdu(tpdu), Header(header), message)
        amount = spans.get(_AMOUNT_FIELD)
        amount_at = -1 if amount is None else amount[0]
        return cls(frame[: -len(message)], message, spans[_STAN_FIELD][0], amount_at, macced)

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


# -- connections ----------------------------------------------------------------------


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no response in time"))


class Connection(asyncio.Protocol):
    """One TCP connection to the gateway; answers come back in request order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(_RESPONSE_BYTES_MAX)
        self.waiters: deque[asyncio.Future[bytes]] = deque()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.unsolicited = 0  # frames nobody waited for

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, connection = await loop.create_connection(lambda: cls(loop), host, port)
        return connection

    @property
    def closed(self) -> bool:
        return self.lost.done() or self.transport is None or self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except FramingError as exc:
            self._fail(ResponseFormatError(str(exc)))
            self.abort()
            return
        waiters = self.waiters
        for body in bodies:
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(body)
                    break
            else:
                self.unsolicited += 1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the gateway closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc: Exception) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(exc)

    async def exchange(self, frame: bytes, timeout_s: float) -> bytes:
        """Send a frame, return the body (after the length) of the answer."""
        if self.closed:
            raise ConnectionError("the connection is closed")
        future = self.loop.create_future()
        self.waiters.append(future)
        self.transport.write(frame)  # type: ignore[union-attr]
        timer = self.loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def send_only(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after what is written has gone out."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# -- statistics and the report ----------------------------------------------------------


class _TypeStats:
    __slots__ = ("requests", "approved", "by_code", "latencies")

    def __init__(self) -> None:
        self.requests = 0
        self.approved = 0
        self.by_code: dict[str, int] = {}
        self.latencies = array("d")


class Stats:
    """Counters of a run, updated by every terminal, read by the progress display."""

    def __init__(self, types: Iterable[str]) -> None:
        self.requests = 0
        self.answered = 0
        self.approved = 0
        self.by_code: dict[str, int] = {}
        self.types = {name: _TypeStats() for name in types}
        self.errors = dict.fromkeys(_ERROR_KEYS, 0)
        self.error_total = 0
        self.faults: dict[str, dict[str, int]] = {
            "drop": {"injected": 0, "reversals_needed": 0},
            "repeat": {"injected": 0, "matched": 0, "mismatched": 0, "skipped": 0, "failed": 0},
            "badmac": {"injected": 0, "rejected_a0": 0, "accepted": 0, "failed": 0},
            "garbage": {"injected": 0, "closed": 0, "answered": 0, "not_closed": 0},
        }
        self.reversals: dict[str, Any] = {"sent": 0, "answered": 0, "unanswered": 0, "attempts": 0,
                                          "by_code": {}, "by_cause": {}}
        self.slots = 0  # requests and fault probes begun
        self.scheduled = 0
        self.late = 0
        self.max_lag_s = 0.0

    def error(self, key: str, count: int = 1) -> None:
        self.errors[key] += count
        self.error_total += count

    def answer(self, kind: str, code: str, latency_s: float) -> None:
        self.answered += 1
        self.by_code[code] = self.by_code.get(code, 0) + 1
        per_type = self.types[kind]
        per_type.by_code[code] = per_type.by_code.get(code, 0) + 1
        per_type.latencies.append(latency_s)
        if code == "00":
            self.approved += 1
            per_type.approved += 1
        elif code not in BUSINESS_DECLINES:
            self.error("unexpected_codes")

    def request(self, kind: str) -> None:
        self.requests += 1
        self.types[kind].requests += 1


@dataclass
class Report:
    """What a run did; ``to_dict`` is its JSON form."""

    mode: str
    connect: str
    terminals: int
    duration_s: float
    requests: int
    answered: int
    approved: int
    by_code: dict[str, int]
    by_type: dict[str, dict[str, Any]]
    throughput_rps: float
    approved_rps: float
    latency_ms: dict[str, float | None]
    errors: dict[str, int]
    faults: dict[str, Any]
    reversals: dict[str, Any]
    open_loop: dict[str, Any] | None
    mix: dict[str, int]
    signon: dict[str, Any]
    errors_total: int = field(default=0)
    warmup: dict[str, Any] | None = None  # the warm-up before the run (--warmup), counted apart

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sorted_codes(codes: dict[str, int]) -> dict[str, int]:
    return dict(sorted(codes.items()))


def build_report(stats: Stats, *, mode: str, connect: str, terminals: int, duration_s: float,
                 mix: dict[str, int], faults: dict[str, float], rate: float | None,
                 signon: dict[str, Any]) -> Report:
    """The report of a run from its counters."""
    duration = max(duration_s, 1e-9)
    all_latencies: list[float] = []
    by_type: dict[str, dict[str, Any]] = {}
    for name, per_type in stats.types.items():
        all_latencies.extend(per_type.latencies)
        by_type[name] = {"requests": per_type.requests, "approved": per_type.approved,
                         "by_code": _sorted_codes(per_type.by_code),
                         "latency_ms": latency_summary(per_type.latencies)}
    fault_report: dict[str, Any] = {}
    for name, counts in stats.faults.items():
        fault_report[name] = {"percent": faults.get(name, 0.0), **counts}
    reversals = dict(stats.reversals)
    reversals["by_code"] = _sorted_codes(reversals["by_code"])
    open_loop = None
    if mode == "open":
        open_loop = {"rate_rps": rate, "scheduled": stats.scheduled, "sent": stats.slots,
                     "late": stats.late, "dropped": max(0, stats.scheduled - stats.slots),
                     "late_after_ms": LATE_AFTER_S * 1000, "max_lag_ms": round(stats.max_lag_s * 1000, 3)}
    return Report(
        mode=mode, connect=connect, terminals=terminals, duration_s=round(duration_s, 3),
        requests=stats.requests, answered=stats.answered, approved=stats.approved,
        by_code=_sorted_codes(stats.by_code), by_type=by_type,
        throughput_rps=round(stats.requests / duration, 1), approved_rps=round(stats.approved / duration, 1),
        latency_ms=latency_summary(all_latencies), errors=dict(stats.errors), faults=fault_report,
        reversals=reversals, open_loop=open_loop, mix=dict(mix), signon=signon,
        errors_total=stats.error_total,
    )


# -- terminals under load -----------------------------------------------------------------


@dataclass
class LoadOptions:
    host: str = "127.0.0.1"
    port: int = 8583
    terminals: int | None = None  # None: every terminal of the world
    duration_s: float = 10.0
    rate: float | None = None  # None: closed loop
    mix: dict[str, int] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    connect: str = "persistent"
    faults: dict[str, float] = field(default_factory=dict)
    amount_fen: tuple[int, int] = (1, 10)
    timeout_s: float = 5.0
    stan_start: int | None = None  # None: a random start per terminal
    batch: int = 1
    seed: int | None = None
    warmup_s: float = 0.0  # the same load first for this long, reported apart (Report.warmup)


class LoadTerminal:
    """One terminal of the load: its keys, STAN counter, templates and connection."""

    def __init__(self, spec: TerminalSpec, cards: Sequence[CardSpec], meters: Sequence[str],
                 biller: str | None, options: LoadOptions, stan_start: int) -> None:
        self.spec = spec
        self.cards = tuple(cards)
        self.meters = tuple(meters)
        self.biller = biller
        self.options = options
        self.terminal = Terminal(options.host, options.port, spec.tid, spec.mid, spec.tmk,
                                 mac_algorithm=spec.mac_algorithm, batch=options.batch,
                                 timeout_s=options.timeout_s)
        self._stan = (stan_start - 2) % STAN_MAX + 1  # the STAN before the first
        self._mac_of: Callable[[bytes], bytes] | None = None
        self._templates: dict[tuple[str, int], RequestTemplate] = {}
        self._pin_blocks: dict[int, bytes] = {}
        self._turn = 0
        self.connection: Connection | None = None

    def next_stan(self) -> int:
        self._stan = self._stan % STAN_MAX + 1
        return self._stan

    async def sign_on(self) -> str:
        """Sign on (on a connection of its own, closed after); the response code."""
        try:
            response = await self.terminal.sign_on(stan=f"{self.next_stan():06d}")
        finally:
            await self.terminal.close()
        if response.response_code == "00" and self.terminal.keys is not None:
            self._mac_of = partial(MAC_ALGORITHMS[self.spec.mac_algorithm], self.terminal.keys.mak)
            self._templates.clear()
            self._pin_blocks.clear()
        return response.response_code

    @property
    def mac_of(self) -> Callable[[bytes], bytes]:
        if self._mac_of is None:
            raise RuntimeError("not signed on")
        return self._mac_of

    def _pin_block(self, index: int) -> bytes:
        block = self._pin_blocks.get(index)
        if block is None:
            assert self.terminal.keys is not None
            card = self.cards[index]
            block = self._pin_blocks[index] = encrypt_pin_block(self.terminal.keys.pik, card.pin, card.pan)
        return block

    def _pool(self, kind: str) -> Sequence[Any]:
        """What requests of ``kind`` take in turn: cards, meters, or nothing (echo)."""
        return () if kind == "echo" else self.meters if kind.startswith("bill") else self.cards

    def template(self, kind: str) -> RequestTemplate:
        """The template of the next request of ``kind``: cards and meters are taken in turn."""
        self._turn += 1
        pool = self._pool(kind)
        return self._template(kind, self._turn % len(pool) if pool else 0)

    def _template(self, kind: str, index: int) -> RequestTemplate:
        key = (kind, index)
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = RequestTemplate.of(self._request(kind, index),
                                                               macced=kind not in UNMACCED_TYPES)
        return found

    def prepare(self, kinds: Iterable[str]) -> None:
        """Encode every template the run can take for ``kinds`` now, before the clock
        starts: building one costs more than a request from it, and a short run
        would otherwise build most of them on the clock, on the CPU the gateway
        under test shares. (A sign-on during the run clears them; they are then
        built again as needed.)"""
        for kind in kinds:
            for index in range(len(self._pool(kind)) or 1):
                self._template(kind, index)

    def _request(self, kind: str, index: int) -> Any:
        common = {"stan": "000000", "terminal_id": self.spec.tid, "merchant_id": self.spec.mid,
                  "currency": CURRENCY}
        batch = f"{self.options.batch:06d}"
        if kind == "echo":
            return build_request("0820", stan="000000", terminal_id=self.spec.tid, merchant_id=self.spec.mid,
                                 txn_data=f"00{batch}301")
        if kind in ("purchase", "balance"):
            card = self.cards[index]
            card_fields = {"pan": card.pan, "expiry": card.expiry, "entry_mode": ENTRY_MODE_READ,
                           "condition_code": "00", "pin_block": self._pin_block(index),
                           "security_control": SECURITY_CONTROL}
            if kind == "purchase":
                return build_request("0200", processing_code="000000", amount="0" * 12,
                                     txn_data=f"22{batch}000", **common, **card_fields)
            return build_request("0200", processing_code="310000", txn_data=f"01{batch}000",
                                 **common, **card_fields)
        assert self.biller is not None
        bill_data = tlv.encode({tlv.BILLER: self.biller, tlv.ACCOUNT: self.meters[index]})
        if kind == "bill-pay":
            return build_request("0200", processing_code="500000", amount="0" * 12, bill_data=bill_data,
                                 txn_data=f"41{batch}000", **common)
        return build_request("0200", processing_code="380000", bill_data=bill_data,
                             txn_data=f"40{batch}000", **common)

    async def open_connection(self) -> Connection:
        """The persistent connection (opened if need be), or a new one for ``per-txn``."""
        if self.options.connect == "persistent":
            if self.connection is None or self.connection.closed:
                self.connection = await Connection.open(self.options.host, self.options.port,
                                                        self.options.timeout_s)
            return self.connection
        return await Connection.open(self.options.host, self.options.port, self.options.timeout_s)

    def done_with(self, connection: Connection, *, broken: bool = False) -> None:
        """After a transaction: close a per-txn connection; forget a broken one."""
        if broken:
            connection.abort()
            if connection is self.connection:
                self.connection = None
        elif connection is not self.connection:
            connection.close()

    def verify_mac(self, view: ResponseView) -> bool:
        assert view.mac is not None
        return hmac.compare_digest(self.mac_of(view.mac_input), view.mac)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class LoadRun:
    """Drives the signed-on terminals for the duration and counts what happens."""

    def __init__(self, terminals: list[LoadTerminal], options: LoadOptions) -> None:
        self.terminals = terminals
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = Stats(options.mix)
        self._kinds = list(options.mix)
        self._kind_bounds = list(_cumulative(options.mix.values()))
        self._fault_names = list(options.faults)
        self._fault_bounds = list(_cumulative(options.faults.values()))
        self._amount_low, self._amount_high = options.amount_fen
        self.started = 0.0
        self.ends = 0.0
        self._next_slot = 0
        self._total_slots = 0
        self.stopped = False

    def stop(self) -> None:
        """End the run early (Ctrl-C): no new requests; those in flight complete."""
        self.stopped = True
        self.ends = min(self.ends, time.perf_counter())
        self._total_slots = min(self._total_slots, self._next_slot)

    # -- choosing ----------------------------------------------------------------
    def _kind(self) -> str:
        if len(self._kinds) == 1:
            return self._kinds[0]
        return self._kinds[bisect.bisect_right(self._kind_bounds, self.rng.random() * self._kind_bounds[-1])]

    def _fault(self) -> str | None:
        if not self._fault_names:
            return None
        roll = self.rng.random() * 100
        index = bisect.bisect_right(self._fault_bounds, roll)
        return self._fault_names[index] if index < len(self._fault_names) else None

    def _amount(self) -> int:
        if self._amount_low == self._amount_high:
            return self._amount_low
        return self.rng.randint(self._amount_low, self._amount_high)

    # -- running -------------------------------------------------------------------
    async def run(self) -> float:
        """Run the load; returns the seconds from the first request to the last answer."""
        self.started = time.perf_counter()
        self.ends = self.started + self.options.duration_s
        if self.options.rate:
            self._total_slots = int(self.options.rate * self.options.duration_s)
            workers = [self._open_loop(t) for t in self.terminals]
        else:
            workers = [self._closed_loop(t) for t in self.terminals]
        await asyncio.gather(*workers)
        if self.options.rate:
            self.stats.scheduled = self._scheduled_until(time.perf_counter())
        return time.perf_counter() - self.started

    def _scheduled_until(self, now: float) -> int:
        """Slots whose time has come by ``now`` (all slots once the run is over)."""
        elapsed = min(now, self.ends) - self.started
        return min(self._total_slots, max(0, math.ceil(elapsed * (self.options.rate or 0))))

    async def _closed_loop(self, terminal: LoadTerminal) -> None:
        while time.perf_counter() < self.ends:
            await self.one(terminal, None)

    async def _open_loop(self, terminal: LoadTerminal) -> None:
        rate = self.options.rate or 1.0
        while self._next_slot < self._total_slots:
            slot = self._next_slot
            self._next_slot += 1
            scheduled = self.started + slot / rate
            now = time.perf_counter()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            else:
                lag = now - scheduled
                if lag > LATE_AFTER_S:
                    self.stats.late += 1
                if lag > self.stats.max_lag_s:
                    self.stats.max_lag_s = lag
                if now >= self.ends:  # the run is over: this slot and the rest are dropped
                    self._next_slot = self._total_slots
                    return
            await self.one(terminal, scheduled)

    async def one(self, terminal: LoadTerminal, scheduled: float | None) -> None:
        """One slot of the load: a request, possibly with a fault, or a garbage probe."""
        self.stats.slots += 1
        fault = self._fault()
        if fault == "garbage":
            await self._garbage()
            return
        kind = self._kind()
        if fault == "badmac" and kind in UNMACCED_TYPES:
            fault = None  # an echo carries no MAC to spoil
        stats, options = self.stats, self.options
        stan = terminal.next_stan()
        frame, message = terminal.template(kind).build(
            stan, self._amount() if kind in AMOUNT_TYPES else 0, terminal.mac_of, bad_mac=fault == "badmac")
        try:
            connection = await terminal.open_connection()
        except (OSError, TimeoutError):
            if fault is None or fault == "repeat":
                stats.request(kind)
            stats.error("connect_failures")
            await asyncio.sleep(CONNECT_RETRY_DELAY_S)
            return
        if fault == "drop":
            stats.faults["drop"]["injected"] += 1
            connection.send_only(frame)
            connection.close()  # before the answer could be read
            if connection is terminal.connection:
                terminal.connection = None
            if kind in MONEY_TYPES:
                stats.faults["drop"]["reversals_needed"] += 1
                await self._reverse(terminal, message, "drop", reason="98")
            return
        if fault == "badmac":
            await self._badmac(terminal, connection, frame)
            return
        stats.request(kind)
        started = scheduled if scheduled is not None else time.perf_counter()
        try:
            body = await connection.exchange(frame, options.timeout_s)
        except TimeoutError:
            await self._no_answer(terminal, connection, kind, message, "timeouts")
            return
        except ConnectionError:
            await self._no_answer(terminal, connection, kind, message, "disconnects")
            return
        except ResponseFormatError:
            await self._no_answer(terminal, connection, kind, message, "bad_responses")
            return
        latency = time.perf_counter() - started
        try:
            view = read_response(body[11:])
        except ResponseFormatError:
            await self._no_answer(terminal, connection, kind, message, "bad_responses")
            return
        if view.stan != f"{stan:06d}" or view.terminal_id != terminal.spec.tid or view.code is None:
            await self._no_answer(terminal, connection, kind, message, "bad_responses")
            return
        code = view.code
        if view.mac is not None:
            mac_ok = terminal.verify_mac(view)
        else:
            known = ResponseCode.of(code)
            mac_ok = kind in UNMACCED_TYPES or (known is not None and not known.always_macced)
        stats.answer(kind, code, latency)
        if not mac_ok:
            stats.error("mac_failures")
            terminal.done_with(connection)
            if kind in MONEY_TYPES and code == "00":
                await self._reverse(terminal, message, "mac_failure", reason="06")
            return
        if fault == "repeat":
            await self._repeat(connection, frame, body, code)
        terminal.done_with(connection)

    async def _no_answer(self, terminal: LoadTerminal, connection: Connection, kind: str, message: bytes,
                         error: str) -> None:
        """No usable answer: count it, drop the connection, and reverse what may have moved money."""
        self.stats.error(error)
        terminal.done_with(connection, broken=True)
        if kind in MONEY_TYPES:
            await self._reverse(terminal, message, error, reason="98")

    async def _reverse(self, terminal: LoadTerminal, message: bytes, cause: str, *, reason: str) -> None:
        """The 0400 of a request, on a fresh connection, repeated until answered (bounded)."""
        reversals = self.stats.reversals
        reversals["sent"] += 1
        reversals["by_cause"][cause] = reversals["by_cause"].get(cause, 0) + 1
        original = decode_message(message)
        sim = terminal.terminal
        for attempt in range(REVERSAL_TRIES):
            if attempt:
                await asyncio.sleep(REVERSAL_RETRY_DELAY_S)
            reversals["attempts"] += 1
            try:
                response = await sim.reverse(original, reason=reason)
            except ResponseMacError:
                self.stats.error("mac_failures")
                continue
            except (OSError, TimeoutError, FramingError, FormatError):
                continue
            finally:
                await sim.close()
            code = response.response_code
            reversals["answered"] += 1
            reversals["by_code"][code] = reversals["by_code"].get(code, 0) + 1
            if code != "00":
                self.stats.error("unexpected_codes")
            return
        reversals["unanswered"] += 1
        self.stats.error("reversals_unanswered")

    async def _repeat(self, connection: Connection, frame: bytes, first: bytes, code: str) -> None:
        """Send the same request again: its answer must be the first one, byte for byte."""
        counts = self.stats.faults["repeat"]
        counts["injected"] += 1
        known = ResponseCode.of(code)
        if known is not None and not known.stored:  # a repeat of it is processed afresh (WIRE.md 8)
            counts["skipped"] += 1
            return
        try:
            second = await connection.exchange(frame, self.options.timeout_s)
        except (TimeoutError, ConnectionError, ResponseFormatError) as exc:
            counts["failed"] += 1
            self.stats.error(_error_key(exc))
            connection.abort()
            return
        if second == first:
            counts["matched"] += 1
        else:
            counts["mismatched"] += 1
            self.stats.error("repeat_mismatches")

    async def _badmac(self, terminal: LoadTerminal, connection: Connection, frame: bytes) -> None:
        """A request with a wrong MAC must be answered A0 (without a MAC)."""
        counts = self.stats.faults["badmac"]
        counts["injected"] += 1
        try:
            body = await connection.exchange(frame, self.options.timeout_s)
            view = read_response(body[11:])
        except (TimeoutError, ConnectionError, ResponseFormatError) as exc:
            counts["failed"] += 1
            self.stats.error(_error_key(exc))
            terminal.done_with(connection, broken=True)
            return
        if view.code == ResponseCode.MAC_FAILED and view.mac is None:
            counts["rejected_a0"] += 1
        else:
            counts["accepted"] += 1
            self.stats.error("badmac_accepted")
        terminal.done_with(connection)

    def _garbage_bytes(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.5:  # a length no frame may have
            return bytes((rng.randint(0x09, 0xFF),)) + rng.randbytes(rng.randint(1, 62))
        length = rng.randint(21, 64)  # a whole frame, but its TPDU ID is not 60
        first = rng.choice([b for b in range(256) if b != 0x60])
        return length.to_bytes(2, "big") + bytes((first,)) + rng.randbytes(length - 1)

    async def _garbage(self) -> None:
        """Random bytes on a connection of their own: the gateway must close it unanswered."""
        counts = self.stats.faults["garbage"]
        counts["injected"] += 1
        try:
            connection = await Connection.open(self.options.host, self.options.port, self.options.timeout_s)
        except (OSError, TimeoutError):
            self.stats.error("connect_failures")
            return
        connection.send_only(self._garbage_bytes())
        try:
            async with asyncio.timeout(min(self.options.timeout_s, GARBAGE_WAIT_S)):
                await asyncio.shield(connection.lost)
        except TimeoutError:
            counts["not_closed"] += 1
            self.stats.error("garbage_not_closed")
            connection.abort()
            return
        if connection.unsolicited:
            counts["answered"] += 1
            self.stats.error("garbage_not_closed")
        else:
            counts["closed"] += 1


def _error_key(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeouts"
    if isinstance(exc, ConnectionError):
        return "disconnects"
    return "bad_responses"


def _cumulative(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


async def sign_on_all(terminals: list[LoadTerminal], *, concurrency: int = SIGNON_CONCURRENCY,
                      on_done: Callable[[], None] | None = None) -> tuple[list[LoadTerminal], dict[str, Any]]:
    """Sign every terminal on, a bounded number at once; those that made it, and a summary."""
    gate = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}

    async def one(terminal: LoadTerminal) -> bool:
        async with gate:
            try:
                code = await terminal.sign_on()
                reason = None if code == "00" else f"response {code}"
            except TimeoutError:
                reason = "timeout"
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
            except (KeyCheckError, ResponseMacError, FramingError, ValueError) as exc:
                reason = type(exc).__name__
        if reason is not None:
            failures[reason] = failures.get(reason, 0) + 1
        if on_done is not None:
            on_done()
        return reason is None

    results = await asyncio.gather(*(one(t) for t in terminals))
    signed_on = [t for t, ok in zip(terminals, results) if ok]
    return signed_on, {"terminals": len(terminals), "signed_on": len(signed_on),
                       "failed": len(terminals) - len(signed_on), "failures": failures}


def check_world(world: World, options: LoadOptions) -> int:
    """The number of terminals to use; ``UsageError`` if the world cannot carry the mix."""
    count = len(world.terminals) if options.terminals is None else options.terminals
    if count < 1:
        raise UsageError("--terminals must be at least 1")
    if count > len(world.terminals):
        raise UsageError(f"--terminals {count}: the world has {len(world.terminals)} terminals")
    if any(kind in options.mix for kind in ("purchase", "balance")) and not world.cards:
        raise UsageError("the mix has card transactions but the world has no cards")
    if any(kind in options.mix for kind in ("bill-pay", "bill-inquiry")) and not world.meters:
        raise UsageError("the mix has bill payments but the world has no prepaid biller with meters")
    return count


def make_terminals(world: World, options: LoadOptions, count: int) -> list[LoadTerminal]:
    starts = random.SystemRandom()  # not --seed: runs against one database must not reuse STANs
    return [
        LoadTerminal(spec, world.cards_for(index, count), world.meters_for(index, count), world.biller, options,
                     starts.randint(1, STAN_MAX) if options.stan_start is None else options.stan_start)
        for index, spec in enumerate(world.terminals[:count])
    ]


def _warmup_summary(report: Report) -> dict[str, Any]:
    """What the report keeps of a warm-up: its counts, latency and errors."""
    keep = ("duration_s", "requests", "answered", "approved", "by_code", "throughput_rps", "approved_rps",
            "latency_ms", "errors", "errors_total", "open_loop")
    summary = {name: getattr(report, name) for name in keep}
    summary["errors"] = {name: count for name, count in report.errors.items() if count}
    return summary


async def _drive(runner: LoadRun, progress: _Progress | None, label: str) -> float:
    """Run the load with Ctrl-C stopping it and the progress display following it; its seconds."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, runner.stop)
    ticker = None
    if progress is not None:
        ticker = asyncio.create_task(progress.follow(runner, label))
    try:
        return await runner.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


async def run_load(world: World, options: LoadOptions, *, progress: _Progress | None = None) -> Report:
    """Sign on, warm up (``options.warmup_s``), run the load, and report. ``UsageError`` if no
    terminal could sign on."""
    count = check_world(world, options)
    terminals = make_terminals(world, options, count)
    if progress is not None:
        progress.start_signon(len(terminals))
    signed_on, signon = await sign_on_all(terminals, on_done=progress.signed_on if progress else None)
    if not signed_on:
        reasons = ", ".join(f"{reason} ({n})" for reason, n in signon["failures"].items())
        raise UsageError(f"no terminal could sign on: {reasons}")
    for terminal in signed_on:
        terminal.prepare(kind for kind, weight in options.mix.items() if weight)

    def report_of(runner: LoadRun, duration: float) -> Report:
        return build_report(runner.stats, mode="open" if options.rate else "closed", connect=options.connect,
                            terminals=len(signed_on), duration_s=duration, mix=options.mix,
                            faults=options.faults, rate=options.rate, signon=signon)

    runner = LoadRun(signed_on, options)
    runner.stats.errors["signon_failures"] = signon["failed"]
    runner.stats.error_total += signon["failed"]
    warmup, duration = None, 0.0
    try:
        if options.warmup_s > 0:
            warm = LoadRun(signed_on, replace(options, duration_s=options.warmup_s))
            warmup = _warmup_summary(report_of(warm, await _drive(warm, progress, "warm-up")))
            warmup["ended_at"] = round(time.time(), 3)  # Unix time: the run's requests come after
            if warm.stopped:
                runner.stop()
        if not runner.stopped:
            duration = await _drive(runner, progress, "load")
    finally:
        for terminal in signed_on:
            terminal.close()
    await asyncio.sleep(0)  # let the closed connections go
    report = report_of(runner, duration)
    report.warmup = warmup
    return report


# -- progress display ------------------------------------------------------------------


class _Progress:
    """A rich progress bar: sign-on, then the run's elapsed time, requests, rate and errors."""

    def __init__(self, duration_s: float) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.duration_s = duration_s
        self.progress = Progress(TextColumn("[bold]{task.description:<8}"), BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[info]}"), auto_refresh=False)
        self.signon_task: Any = None
        self._signon_total = 0
        self._signon_done = 0
        self._refreshed = 0.0

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_signon(self, count: int) -> None:
        self._signon_total = count
        self.signon_task = self.progress.add_task("sign-on", total=count, info=f"0/{count} terminals")
        self.progress.refresh()

    def signed_on(self) -> None:
        self._signon_done += 1
        now = time.perf_counter()
        last = self._signon_done == self._signon_total
        if last or now - self._refreshed >= PROGRESS_INTERVAL_S:
            self._refreshed = now
            self.progress.update(self.signon_task, completed=self._signon_done,
                                 info=f"{self._signon_done}/{self._signon_total} terminals", refresh=True)

    @staticmethod
    def _info(runner: LoadRun, rate: float) -> str:
        errors = runner.stats.error_total
        colour = "red" if errors else "green"
        return f"{runner.stats.requests} requests  {rate:7.0f}/s  [{colour}]{errors} errors[/]"

    async def follow(self, runner: LoadRun, label: str = "load") -> None:
        task = self.progress.add_task(label, total=runner.options.duration_s, info=self._info(runner, 0.0))
        last_count, last_time = 0, time.perf_counter()
        try:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                now = time.perf_counter()
                count = runner.stats.requests
                rate = (count - last_count) / max(now - last_time, 1e-9)
                last_count, last_time = count, now
                self.progress.update(task, completed=min(now - runner.started, runner.options.duration_s),
                                     info=self._info(runner, rate), refresh=True)
        finally:
            elapsed = max(time.perf_counter() - runner.started, 1e-9)
            self.progress.update(task, completed=runner.options.duration_s,
                                 info=self._info(runner, runner.stats.requests / elapsed), refresh=True)


# -- command line ------------------------------------------------------------------------


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return wrapped


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not number > 0 or (isinstance(number, float) and math.isinf(number)):
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {value!r}")
        return number
    return parse


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {value!r}")
    return number


def _stan_start(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= STAN_MAX):
        raise argparse.ArgumentTypeError(f"STAN must be from 1 to {STAN_MAX}")
    return int(value)


def _batch(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) <= BATCH_MAX):
        raise argparse.ArgumentTypeError(f"batch must be a whole number from 0 to {BATCH_MAX}")
    return int(value)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``load`` subcommand, added to ``posgw-sim``'s subparsers."""
    load = commands.add_parser(
        "load", help="sign on many terminals and drive them (load test with faults)",
        description="Sign on N terminals of a world (posgw demo --json) and drive them: closed loop as fast "
                    "as each can, or open loop at --rate requests/s. Exit 0 when the run completed, 2 on bad "
                    "usage or when no terminal could sign on.")
    load.add_argument("--host", default="127.0.0.1")
    load.add_argument("--port", type=int, default=8583)
    load.add_argument("--world", required=True, metavar="FILE",
                      help="the JSON of `posgw demo --json` (terminals, cards, billers); - for stdin")
    load.add_argument("--terminals", type=_positive(int), metavar="N",
                      help="use the first N terminals (default all)")
    load.add_argument("--duration", type=_positive(float), default=10.0, metavar="S",
                      help="seconds (default 10)")
    load.add_argument("--warmup", type=_non_negative_float, default=0.0, metavar="S",
                      help="drive the same load for S seconds first, reported apart as warmup (default 0)")
    load.add_argument("--rate", type=_positive(float), metavar="R",
                      help="open loop: R requests/s overall (default: closed loop)")
    load.add_argument("--mix", type=_argument(parse_mix), default=parse_mix(DEFAULT_MIX),
                      metavar="TYPE=W,...", help=f"weights of {', '.join(TXN_TYPES)} (default {DEFAULT_MIX})")
    load.add_argument("--connect", choices=CONNECT_MODES, default="persistent",
                      help="persistent: one connection per terminal; per-txn: a new one per transaction")
    load.add_argument("--faults", type=_argument(parse_faults), default={}, metavar="FAULT=PCT,...",
                      help="percent of requests with a fault: drop, repeat, badmac, garbage")
    load.add_argument("--amount", type=_argument(parse_amount), default=parse_amount(DEFAULT_AMOUNT),
                      metavar="YUAN[-YUAN]", help=f"purchase and bill amounts, random in the range "
                                                  f"(default {DEFAULT_AMOUNT})")
    load.add_argument("--biller", metavar="CODE",
                      help="prepaid biller for bill types (default: the world's first)")
    load.add_argument("--timeout", type=_positive(float), default=5.0, metavar="S",
                      help="per response (default 5)")
    load.add_argument("--stan-start", type=_stan_start, metavar="N",
                      help="first STAN of every terminal (default: random per terminal)")
    load.add_argument("--batch", type=_batch, default=1, help="open batch (60.2) of the terminals")
    load.add_argument("--seed", type=int, help="seed of the mix, fault and amount choices")
    load.add_argument("--json", action="store_true", help="print the report as one JSON object")
    load.add_argument("--out", metavar="FILE", help="also write the report as JSON to FILE")
    load.add_argument("--quiet", action="store_true", help="no live progress display")
    return load


def options_from(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        host=args.host, port=args.port, terminals=args.terminals, duration_s=args.duration, rate=args.rate,
        mix=args.mix, connect=args.connect, faults=args.faults, amount_fen=args.amount, timeout_s=args.timeout,
        stan_start=args.stan_start, batch=args.batch, seed=args.seed, warmup_s=args.warmup,
    )


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [
        f"load: {report['mode']} loop, {report['connect']}, {report['terminals']} terminals, "
        f"{report['duration_s']:.1f} s",
        f"requests {report['requests']} ({report['throughput_rps']:.1f}/s), "
        f"approved {report['approved']} ({report['approved_rps']:.1f}/s)",
        "codes: " + (", ".join(f"{code} {n}" for code, n in report["by_code"].items()) or "none"),
        "latency ms: " + _latency_text(report["latency_ms"]),
    ]
    for kind, per_type in report["by_type"].items():
        lines.append(f"  {kind}: {per_type['requests']} requests, {per_type['approved']} approved, "
                     f"{_latency_text(per_type['latency_ms'])}")
    errors = {k: v for k, v in report["errors"].items() if v}
    lines.append("errors: " + (", ".join(f"{k} {v}" for k, v in errors.items()) or "none"))
    injected = {k: v for k, v in report["faults"].items() if v["injected"]}
    for name, counts in injected.items():
        details = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "percent")
        lines.append(f"fault {name}: {details}")
    reversals = report["reversals"]
    if reversals["sent"]:
        lines.append(f"reversals: {reversals['sent']} sent, {reversals['answered']} answered "
                     f"in {reversals['attempts']} attempts, {reversals['unanswered']} unanswered")
    warmup = report.get("warmup")
    if warmup is not None:
        lines.append(f"warm-up before the run (not counted above): {warmup['duration_s']:.1f} s, "
                     f"{warmup['requests']} requests, {warmup['approved']} approved, "
                     f"latency ms {_latency_text(warmup['latency_ms'])}, errors {warmup['errors_total']}")
    open_loop = report["open_loop"]
    if open_loop is not None:
        lines.append(f"open loop at {open_loop['rate_rps']}/s: {open_loop['scheduled']} scheduled, "
                     f"{open_loop['sent']} sent, {open_loop['late']} late, {open_loop['dropped']} dropped, "
                     f"max lag {open_loop['max_lag_ms']} ms")
    return "\n".join(lines)


def _latency_text(latency: dict[str, float | None]) -> str:
    if latency["max"] is None:
        return "no answers"
    return " ".join(f"{k} {v:.1f}" for k, v in latency.items())


def _run_async(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(args: argparse.Namespace) -> int:
    """Run ``posgw-sim load``; returns the exit code."""
    options = options_from(args)
    try:
        world = load_world(args.world, biller=args.biller)
        check_world(world, options)
    except UsageError as exc:
        print(f"posgw-sim load: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    live = not args.quiet and sys.stdout.isatty()
    try:
        if live:
            with _Progress(options.duration_s) as progress:
                report = _run_async(run_load(world, options, progress=progress))
        else:
            report = _run_async(run_load(world, options))
    except UsageError as exc:
        print(f"posgw-sim load: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    output = report.to_dict()
    text = json.dumps(output)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"posgw-sim load: error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    print(text if args.json else summary(output))
    return EXIT_COMPLETED

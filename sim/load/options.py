"""What a load run is told (``LoadOptions``): the transaction mix, the faults, the amounts;
parsed from ``posgw-sim load``'s options without I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from sim.terminal import AMOUNT_FEN_MAX

TXN_TYPES = ("purchase", "balance", "bill-pay", "bill-inquiry", "echo", "refund", "preauth")
# what a terminal reverses when it gets no answer (a refund, and every request of a preauth slot)
MONEY_TYPES = frozenset({"purchase", "bill-pay", "refund", "preauth"})
AMOUNT_TYPES = MONEY_TYPES
UNMACCED_TYPES = frozenset({"echo"})  # 0820 echo (60.3 301): no MAC either way (WIRE.md 4)
FAULTS = ("drop", "repeat", "badmac", "garbage")
DEFAULT_MIX = "purchase=70,balance=10,bill-pay=20"
DEFAULT_AMOUNT = "0.01-0.10"
CONNECT_MODES = ("persistent", "per-txn")


class UsageError(Exception):
    """Bad options or world: exit 2 before any load is sent."""


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
    if mix.get("refund") and not mix.get("purchase"):
        raise ValueError("mix: refunds need purchases of the run to refund (give purchase a weight)")
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

"""The counters of a run, and its report: answers by code and type, latency percentiles,
errors, faults, reversals."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Declines a correct terminal meets in business as usual; any other non-00 code
# on a request of the load is counted as an unexpected code (an error).
BUSINESS_DECLINES = frozenset({"51", "54", "58", "59", "61", "62", "65", "75", "91"})
LATE_AFTER_S = 0.010  # open loop: a request sent this long after its slot is late
_ERROR_KEYS = (
    "timeouts", "disconnects", "connect_failures", "bad_responses", "mac_failures", "unexpected_codes",
    "repeat_mismatches", "badmac_accepted", "garbage_not_closed", "reversals_unanswered", "signon_failures",
)


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
        # sent: reversals begun; answered: those answered (not 96), at once, later or at the end;
        # owed: those not answered at once (then sent before the terminal's next request);
        # unanswered: those left after the end of the run; end_of_run: the reversals owed when it ended;
        # slots_held: slots that sent no request, their terminal owing a reversal not answered yet.
        self.reversals: dict[str, Any] = {"sent": 0, "answered": 0, "unanswered": 0, "owed": 0, "attempts": 0,
                                          "answered_96": 0, "slots_held": 0, "by_code": {}, "by_cause": {},
                                          "end_of_run": {"owed": 0, "sent": 0, "answered": 0, "left": 0,
                                                         "seconds": 0.0}}
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
    check: dict[str, Any] | None = None  # --check: the money seen approved against the ledger

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
    reversals["end_of_run"] = dict(reversals["end_of_run"])
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

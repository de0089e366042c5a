"""The gateways' own figures for the dashboard: throughput and p99 latency, read
from each gateway's /metrics (setting ``POSGW_WEB_GATEWAY_METRICS_URLS``).

Counters only grow, so a figure is the difference between two readings: the
throughput is the answered requests (``posgw_requests_total``, all labels)
per second between them, the p99 the upper bound of the latency bucket
(``posgw_request_latency_seconds``, all kinds) that holds the 99th percentile
of the requests answered between them. Readings are shared by every viewer
and taken at most once per ``interval_s``, so twenty people on the dashboard
cost the gateways one scrape per interval. A gateway that does not answer
counts as down and adds nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

REQUESTS = "posgw_requests"  # the family name (the parser drops _total)
LATENCY = "posgw_request_latency_seconds"
BODY_BYTES_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reading:
    at_s: float
    requests: float
    buckets: dict[float, float]  # upper bound (s) -> cumulative count, summed over kinds


def parse(text: str, at_s: float) -> Reading:
    """A reading of one gateway's /metrics text."""
    requests, buckets = 0.0, {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            requests += sum(s.value for s in family.samples if s.name == "posgw_requests_total")
        elif family.name == LATENCY:
            for s in family.samples:
                if s.name == f"{LATENCY}_bucket":
                    bound = float(s.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + s.value
    return Reading(at_s, requests, buckets)


def p99_bound_s(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of what was observed between two
    readings (inf: above the last bound); None when nothing was."""
    bounds = sorted(after)
    delta = [after[b] - before.get(b, 0.0) for b in bounds]
    total = delta[-1] if delta else 0.0
    if total <= 0:
        return None
    for bound, count in zip(bounds, delta, strict=True):
        if count >= 0.99 * total:
            return bound
    return math.inf


def p99_text(bound_s: float | None, buckets: dict[float, float]) -> str | None:
    """``≤ 5 ms``, or ``> 5000 ms`` above the last finite bound; None when nothing was measured."""
    if bound_s is None:
        return None
    if math.isinf(bound_s):
        finite = [b for b in buckets if not math.isinf(b)]
        return f"> {max(finite, default=0) * 1000:g} ms"
    return f"≤ {bound_s * 1000:g} ms"


@dataclass
class GatewayFigures:
    urls: list[str]
    interval_s: float
    timeout_s: float = 2.0
    _last: dict[str, Reading] = field(default_factory=dict)
    _figures: dict[str, Any] | None = None
    _read_at_s: float = -math.inf
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _fetch(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
            return response.read(BODY_BYTES_MAX).decode()

    async def _read(self, url: str) -> Reading | None:
        try:
            text = await asyncio.to_thread(self._fetch, url)
        except (OSError, ValueError):
            return None
        return parse(text, time.monotonic())

    async def figures(self) -> dict[str, Any]:
        """``gateways``, ``up``, ``throughput_per_s`` and ``p99`` (None until two readings of a gateway)."""
        async with self._lock:
            if self._figures is not None and time.monotonic() - self._read_at_s < self.interval_s:
                return self._figures
            readings = await asyncio.gather(*(self._read(url) for url in self.urls))
            rate, measured = 0.0, False
            before_buckets: dict[float, float] = {}
            after_buckets: dict[float, float] = {}
            for url, reading in zip(self.urls, readings, strict=True):
                previous = self._last.get(url)
                if reading is None:
                    self._last.pop(url, None)
                    continue
                self._last[url] = reading
                if previous is None or reading.at_s <= previous.at_s or reading.requests < previous.requests:
                    continue  # a first reading, or the gateway restarted: no difference yet
                measured = True
                rate += (reading.requests - previous.requests) / (reading.at_s - previous.at_s)
                for bound, count in reading.buckets.items():
                    after_buckets[bound] = after_buckets.get(bound, 0.0) + count
                    before_buckets[bound] = before_buckets.get(bound, 0.0) + previous.buckets.get(bound, 0.0)
            p99 = p99_bound_s(before_buckets, after_buckets) if measured else None
            self._figures = {
                "gateways": len(self.urls),
                "up": sum(reading is not None for reading in readings),
                "throughput_per_s": round(rate, 1) if measured else None,
                "p99": p99_text(p99, after_buckets),
            }
            self._read_at_s = time.monotonic()
            return self._figures


class Shared(Generic[T]):
    """One value for every viewer, computed at most once per ``interval_s`` (and again whenever
    its key changes: the day turns): the dashboard's figures from the database, so that a crowd
    on the dashboard costs the database one set of queries per interval, not one per viewer."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._value: T | None = None
        self._key: Hashable = None
        self._at_s = -math.inf
        self._lock = asyncio.Lock()

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if self._value is None or key != self._key or time.monotonic() - self._at_s >= self.interval_s:
                self._value = await compute()
                self._key, self._at_s = key, time.monotonic()
            return self._value

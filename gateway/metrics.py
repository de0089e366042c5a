"""Prometheus metrics. Labels have bounded values: no PAN, no terminal id, no
STAN, no amount. Every label value comes from a fixed set: MTIs the router
knows (else ``other``), processing codes it routes (else ``other``, or
``none`` when absent), response codes (``protocol.codes.ResponseCode``),
transaction kinds (the router's route names), ledger operations (``OPS``),
context-cache results (hit, stale, declined), devices a chip terminal reports
broken (reader, printer).

Gauges read from the database (``*_FROM_DB``) are refreshed when /metrics is
scraped (``gateway.server.app``); a failed read keeps the last value.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# -- connections and requests (gateway.server.tcp) ------------------------------------
CONNECTIONS_OPEN = Gauge("posgw_connections_open", "Terminal connections open", multiprocess_mode="livesum")
CONNECTIONS_REFUSED = Counter("posgw_connections_refused_total", "Connections closed at once: limit reached")
CONNECTIONS_CLOSED = Counter(
    "posgw_connections_closed_total", "Connections closed by the gateway, by reason", ["reason"]
)
FRAMES_RECEIVED = Counter("posgw_frames_received_total", "Frames received")
IN_FLIGHT = Gauge("posgw_requests_in_flight", "Requests received and not yet processed",
                  multiprocess_mode="livesum")

# -- transactions (gateway.acquiring.processor, once per answered request) --------------------
REQUESTS = Counter(
    "posgw_requests_total", "Requests answered, by MTI, type and response code",
    ["mti", "kind", "response_code"],
)
REQUESTS_BY_CODE = Counter(
    "posgw_requests_by_code_total",
    "Requests answered, by MTI, processing code (other: not routed; none: absent) and response code",
    ["mti", "processing_code", "response_code"],
)
LATENCY = Histogram(
    "posgw_request_latency_seconds", "Time from a whole frame to its response bytes, by type",
    ["kind"], buckets=_LATENCY_BUCKETS_S,
)
SIGN_ONS = Counter("posgw_sign_ons_total", "Sign-on requests answered, by response code", ["response_code"])
RISK_DECLINES = Counter("posgw_risk_declines_total", "Declines by risk rule", ["rule", "response_code"])
# with ``rule`` one of the names of CLI.md "Risk limits" (a limit name, location,
# travel, spike): a fixed set, never a value that came from a request. Count
# them in ``Processor._record`` next to REQUESTS (one place per transaction).

# -- ledger (gateway.acquiring.store.finish: the gw_finish round trip) -------------------------
OPS = frozenset({"decline", "balance", "purchase", "void", "reversal", "bill_inquiry", "bill_payment",
                 "settlement"})
LEDGER_LATENCY = Histogram(
    "posgw_ledger_posting_latency_seconds",
    "Time of one gw_finish call (idempotency, checks, postings, stored response), by operation",
    ["op"], buckets=_LATENCY_BUCKETS_S,
)
CONTEXT_CACHE = Counter(
    "posgw_context_cache_total",
    "Requests checked against cached terminal and card records (gateway.acquiring.context_cache), by result: hit (checked "
    "against them), stale (a row had changed: checked again on a fresh read), declined (checked again on a fresh "
    "read, as every decline is)",
    ["result"],
)

# -- read from the database at scrape time ----------------------------------------------
AGENTS_FLOAT_BELOW_THRESHOLD = Gauge(
    "posgw_agents_float_below_threshold", "Agents whose float balance is below float_low_threshold_fen",
    multiprocess_mode="livemostrecent",
)
BATCHES_UNBALANCED = Gauge(
    "posgw_batches_unbalanced",
    "Settled batches whose terminal totals disagree with the gateway's (as `posgw batch list --unbalanced`)",
    multiprocess_mode="livemostrecent",
)


@lru_cache(maxsize=4096)
def labelled(metric: Any, **labels: str) -> Any:
    """``metric.labels(**labels)``, kept: the label values are bounded, and
    looking a child up anew costs more than counting on it, on every request."""
    return metric.labels(**labels)


def op_label(op: object) -> str:
    return op if isinstance(op, str) and op in OPS else "other"


def registry() -> CollectorRegistry:
    """What /metrics exposes: this process's metrics, or, with ``--workers N``
    (PROMETHEUS_MULTIPROC_DIR set), every worker's together."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected

TERMINALS_FROZEN_FOR_MAC = Counter(
    "posgw_terminals_frozen_for_mac_failures_total", "Terminals frozen after MAC failures in a row")
UNANSWERED = Counter(
    "posgw_requests_unanswered_total",
    "Requests not answered: failed or timed out after their outcome left for the database "
    "(the terminal reverses them)")

# -- the database behind the pool, read at scrape time (gateway.server.db_gauges) ---------------
# With --workers N these describe the worker that served the scrape (livemostrecent).
DB_PRIMARY = Gauge(
    "posgw_db_primary",
    "1: the pool reaches a primary (not in recovery); 0: it reaches a standby, or no database answered in time",
    multiprocess_mode="livemostrecent",
)
DB_STANDBYS = Gauge(
    "posgw_db_standbys", "Standbys streaming from the primary (pg_stat_replication); 0 is a value too",
    multiprocess_mode="livemostrecent",
)
DB_SYNC_STANDBYS = Gauge(
    "posgw_db_sync_standbys", "Of those, the synchronous ones (sync_state sync or quorum)",
    multiprocess_mode="livemostrecent",
)
DB_REPLICATION_LAG_BYTES = Gauge(
    "posgw_db_replication_lag_bytes",
    "WAL the standby furthest behind has still to replay (pg_current_wal_lsn - replay_lsn); NaN: no standby",
    multiprocess_mode="livemostrecent",
)
DB_REPLICATION_LAG_SECONDS = Gauge(
    "posgw_db_replication_lag_seconds",
    "Replay lag of the standby furthest behind (pg_stat_replication.replay_lag; none, once caught up and idle: 0); "
    "NaN: no standby",
    multiprocess_mode="livemostrecent",
)
DB_POOL_CONNECTIONS = Gauge(
    "posgw_db_pool_connections", "Connections open in the asyncpg pool", multiprocess_mode="livemostrecent")
DB_POOL_CONNECTIONS_IN_USE = Gauge(
    "posgw_db_pool_connections_in_use", "Pool connections acquired (open less idle); at the maximum, requests wait",
    multiprocess_mode="livemostrecent",
)
DB_POOL_CONNECTIONS_MAX = Gauge(
    "posgw_db_pool_connections_max", "The pool's max_size (db_pool_max)", multiprocess_mode="livemostrecent")
DB_POOL_ACQUIRE_SECONDS = Gauge(
    "posgw_db_pool_acquire_seconds",
    "Time the scrape waited for a pool connection, as a request would (asyncpg counts no waiters)",
    multiprocess_mode="livemostrecent",
)

# -- the biller outbox (gateway.upstream.outbox: the forwarder sets them each round) -----------------
SAF_PENDING = Gauge(
    "posgw_saf_pending_messages", "Messages to billers (cancels, notices) not yet acknowledged",
    multiprocess_mode="livemostrecent",
)
SAF_OLDEST_AGE_SECONDS = Gauge(
    "posgw_saf_oldest_pending_age_seconds",
    "Age of the oldest message to a biller not yet acknowledged; 0 when none is pending",
    multiprocess_mode="livemostrecent",
)
SAF_ATTEMPTS = Counter(
    "posgw_saf_attempts_total", "Attempts to send a message to a biller, by kind (cancel, notice) and result "
    "(acknowledged, failed)", ["kind", "result"],
)

# -- chip terminals' devices, read at scrape time (gateway.server.app) -----------------------
TERMINALS_DEVICE_BROKEN = Gauge(
    "posgw_terminals_device_broken",
    "Terminals whose last status upload (WIRE.md 9.5, 362) reports the device not working, by device "
    "(reader, printer)",
    ["device"], multiprocess_mode="livemostrecent",
)

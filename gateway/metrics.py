"""Prometheus metrics. Labels have bounded values: no PAN, no terminal id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS_OPEN = Gauge("posgw_connections_open", "Terminal connections open")
CONNECTIONS_REFUSED = Counter("posgw_connections_refused_total", "Connections closed at once: limit reached")
CONNECTIONS_CLOSED = Counter(
    "posgw_connections_closed_total", "Connections closed by the gateway, by reason", ["reason"]
)
FRAMES_RECEIVED = Counter("posgw_frames_received_total", "Frames received")
IN_FLIGHT = Gauge("posgw_requests_in_flight", "Requests being processed")
REQUESTS = Counter(
    "posgw_requests_total", "Requests answered, by MTI, type and response code",
    ["mti", "kind", "response_code"],
)
LATENCY = Histogram(
    "posgw_request_latency_seconds", "Time from a whole frame to its response bytes, by type",
    ["kind"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AGENTS_FLOAT_BELOW_THRESHOLD = Gauge(
    "posgw_agents_float_below_threshold", "Agents whose float balance is below float_low_threshold_fen",
    multiprocess_mode="livemostrecent",
)

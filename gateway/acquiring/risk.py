"""Risk controls: limits, velocity, location, spikes (CLI.md "Risk limits").

Each rule is a small function of the transaction and its history that
passes or raises ``RiskDecline``. The rules that count (daily amounts and
counts per terminal and per card, a card's burst) are enforced by
``gw_risk_check`` in the database, under row locks on the day's counters and
in the same transaction that posts, so concurrent requests on any number of
gateway instances cannot slip past them; the gateway only hands it the
effective limits. The rules here need no lock: the amount of one
transaction, where the terminal is, how fast the card travelled, and how
busy the terminal is against its own past.

Limits come from ``config/risk.toml``, overridden per merchant and then per
terminal (``posgw merchant limits``, ``posgw terminal limits``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.acquiring.outcomes import Decline, Outcome
from gateway.domain.vocabulary import Kind
from protocol import tlv

log = structlog.get_logger("posgw.risk")

LIMIT_NAMES = (
    "txn_amount_max_fen", "purchase_amount_max_fen", "bill_payment_amount_max_fen",
    "terminal_daily_amount_max_fen", "card_daily_amount_max_fen",
    "terminal_daily_count_max", "card_daily_count_max",
    "card_burst_count_max", "card_burst_window_s",
    "location_radius_km", "travel_speed_kmh_max", "travel_distance_km_min",
    "spike_factor", "spike_floor_count",
)
COUNTED_KINDS = (Kind.PURCHASE, Kind.BILL_PAYMENT, Kind.COMPLETION, Kind.VOUCHER_SALE)  # what daily limits and bursts count (9.9)
COUNTED_LIMITS = ("terminal_daily_amount_max_fen", "card_daily_amount_max_fen", "terminal_daily_count_max",
                  "card_daily_count_max", "card_burst_count_max", "card_burst_window_s")
EARTH_RADIUS_KM = 6371.0088
SPIKE_HISTORY_DAYS = 30


class RiskDecline(Decline):
    """A decline by a risk rule: the rule's name and the values that triggered it."""

    def __init__(self, outcome: Outcome, rule: str, values: dict[str, Any]) -> None:
        super().__init__(outcome, f"risk rule {rule}: {values}")
        self.rule = rule
        self.values = values


def load_defaults(config_dir: Path) -> dict[str, int]:
    path = config_dir / "risk.toml"
    values = tomllib.loads(path.read_text()) if path.exists() else {}
    unknown = sorted(set(values) - set(LIMIT_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown risk limits {', '.join(unknown)}")
    return {name: int(values.get(name, 0)) for name in LIMIT_NAMES}


def effective_limits(defaults: dict[str, int], merchant: dict[str, int] | None,
                     terminal: dict[str, int] | None) -> dict[str, int]:
    """Defaults, then the merchant's overrides, then the terminal's (which win).
    A terminal's ``--radius-km`` is its ``location_radius_km`` override."""
    return defaults | (merchant or {}) | (terminal or {})


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def parse_position(value: str) -> tuple[float, float]:
    """``LAT,LON`` in decimal degrees (field 59 tag LC)."""
    try:
        lat_text, lon_text = value.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise Decline(Outcome.FORMAT_ERROR, f"LC is not LAT,LON: {value!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or math.isnan(lat) or math.isnan(lon):
        raise Decline(Outcome.FORMAT_ERROR, f"LC out of range: {value!r}")
    return lat, lon


@dataclass(frozen=True, slots=True)
class RiskHistory:
    """What the rules need to know of the past, read with the request's context."""

    last_position: tuple[float, float] | None  # the card's last approved use
    last_seen_s_ago: float | None
    terminal_count_today: int
    terminal_count_30_days: int


def reported_position(bill_fields: dict[str, str] | None) -> tuple[float, float] | None:
    if bill_fields and bill_fields.get(tlv.LOCATION):
        return parse_position(bill_fields[tlv.LOCATION])
    return None


def check_amount(kind: Kind, amount_fen: int | None, limits: dict[str, int]) -> None:
    """One transaction's amount, by the general and the type's own limit (the stricter applies)."""
    if not amount_fen:
        return
    for name in ("txn_amount_max_fen", f"{kind}_amount_max_fen"):
        limit = limits.get(name, 0)
        if limit and amount_fen > limit:
            raise RiskDecline(Outcome.AMOUNT_LIMIT, name, {"limit": limit, "amount_fen": amount_fen})


def check_location(reported: tuple[float, float] | None, registered: tuple[float, float] | None,
                   limits: dict[str, int]) -> None:
    radius = limits.get("location_radius_km", 0)
    if reported is None or registered is None or not radius:
        return
    distance = distance_km(reported, registered)
    if distance > radius:
        raise RiskDecline(Outcome.SUSPECTED_FRAUD, "location",
                          {"distance_km": round(distance, 1), "radius_km": radius,
                           "reported": list(reported), "registered": list(registered)})


def check_travel(here: tuple[float, float] | None, history: RiskHistory, limits: dict[str, int]) -> None:
    speed_max = limits.get("travel_speed_kmh_max", 0)
    if not speed_max or here is None or history.last_position is None or history.last_seen_s_ago is None:
        return
    distance = distance_km(here, history.last_position)
    if distance < limits.get("travel_distance_km_min", 0):
        return
    hours = max(history.last_seen_s_ago, 1.0) / 3600
    speed = distance / hours
    if speed > speed_max:
        raise RiskDecline(Outcome.SUSPECTED_FRAUD, "travel",
                          {"distance_km": round(distance, 1), "minutes": round(hours * 60, 1),
                           "speed_kmh": round(speed), "limit_kmh": speed_max})


def check_spike(history: RiskHistory, limits: dict[str, int]) -> None:
    factor = limits.get("spike_factor", 0)
    if not factor:
        return
    average = history.terminal_count_30_days / SPIKE_HISTORY_DAYS
    threshold = max(limits.get("spike_floor_count", 0), factor * average)
    if history.terminal_count_today + 1 > threshold:
        log.warning("risk_alert", rule="spike", today=history.terminal_count_today,
                    daily_average=round(average, 1), threshold=threshold)
        raise RiskDecline(Outcome.SUSPECTED_FRAUD, "spike",
                          {"today_count": history.terminal_count_today, "daily_average": round(average, 2),
                           "threshold": threshold})

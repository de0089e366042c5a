"""The demo world's names (``posgw demo``): its agent, merchant, billers, and the
TIDs, TMKs and PANs derived from an index, which tests and the bench use too.
The world itself is built through the services (gateway.services.demo)."""

from __future__ import annotations

import hashlib

from gateway.domain import validate
from protocol.crypto import adjust_odd_parity

DEMO_ACTOR = "demo"
DEMO_AGENT = "DEMO"
DEMO_MERCHANT = "898100000000001"
DEMO_CARD_PIN = "123456"
DEMO_CARD_BALANCE_FEN = 1_000_000
DEMO_CARD_EXPIRY = "3012"
DEMO_FLOAT_FEN = 1_000_000
DEMO_POSTPAID, DEMO_PREPAID = "ELEC01", "PREPAID01"
DEMO_TERMINALS_MAX, DEMO_CARDS_MAX = 9999, 1_000_000


def demo_tmk(tid: str) -> bytes:
    """The demo terminals' TMKs are derived from their TIDs, so they are known."""
    return adjust_odd_parity(hashlib.sha256(f"posgw-demo-tmk:{tid}".encode()).digest()[:16])


def demo_tid(index: int) -> str:
    return f"DEMO{index:04d}"


def demo_pan(index: int) -> str:
    """16-digit Luhn-valid PANs: 622202 + 9-digit index + check digit."""
    body = f"622202{index:09d}"
    return next(body + d for d in "0123456789" if validate.luhn_valid(body + d))

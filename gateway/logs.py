"""structlog set-up: JSON lines when not on a terminal, readable otherwise.

Logs go to stderr. Nothing may log a full PAN, a PIN block, track data or
a key: callers pass masked values only (``cards.mask_pan``).
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _dumps(event: dict, **options: object) -> str:
    """structlog's JSON serializer, by orjson (several times the standard library's speed)."""
    return orjson.dumps(event, default=options.get("default")).decode()


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer(_dumps) if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

"""structlog set-up: JSON lines when not on a terminal, readable otherwise.

Logs go to stderr. Nothing may log a full PAN, a PIN block, track data or
a key: callers pass masked values only (``cards.mask_pan``).

A JSON line is written whole, newline included, in one write: the workers of
``posgw serve --workers N`` share one stderr, and a line written in two
pieces (as ``print`` writes it: the text, then the newline) could have
another worker's line land between them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    if use_json:  # orjson renders bytes, several times faster than the standard library's json
        renderer: Any = structlog.processors.JSONRenderer(orjson.dumps)
        factory: Any = structlog.BytesLoggerFactory(stream.buffer)
    else:
        renderer, factory = structlog.dev.ConsoleRenderer(), structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )

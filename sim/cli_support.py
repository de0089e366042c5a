"""What the ``posgw-sim`` commands share: argument types, and running a coroutine."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from sim.terminal import BATCH_MAX

T = TypeVar("T")


def batch_number(value: str) -> int:
    """A batch number (60.2) from the command line: 0 to ``BATCH_MAX``."""
    if not (value.isascii() and value.isdigit() and int(value) <= BATCH_MAX):
        raise argparse.ArgumentTypeError(f"batch must be a whole number from 0 to {BATCH_MAX}")
    return int(value)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on uvloop, or on asyncio's own loop where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

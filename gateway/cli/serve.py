"""``posgw serve``: the gateway, in this process or in ``--workers N`` processes sharing the ports."""

from __future__ import annotations

import argparse
import asyncio

from gateway.cli.common import Subcommands, add_command
from gateway.domain.validate import InvalidInput
from gateway.server.app import run, run_workers
from gateway.settings import Settings

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency
    uvloop = None

EXIT_OK = 0


def without_workers(argv: list[str]) -> list[str]:
    """The command line of one worker: the same, less ``--workers N``."""
    kept, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--workers":
            skip_next = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def serve(args: argparse.Namespace, settings: Settings, argv: list[str]) -> int:
    if args.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if args.workers > 1:
        return run_workers(without_workers(argv), args.workers)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(run(settings, host, port, metrics_port, reuse_port=args.reuse_port, wire_only=args.wire_only))
    return EXIT_OK


def register(groups: Subcommands) -> None:
    p = add_command(groups, "serve", None, json_flag=False, help="run the gateway")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--workers", type=int, default=1, help="gateway processes sharing the ports")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    p.add_argument("--wire-only", action="store_true",
                   help="benchmark baseline: answer sign-on and echo from memory, without the database")

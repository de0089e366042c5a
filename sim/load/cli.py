"""``posgw-sim load``'s options, its text summary and its exit codes."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.cli_support import batch_number, run_async
from sim.load.check import CheckError, OperatorCli, check_text, default_command, parse_command
from sim.load.loops import run_load
from sim.load.options import (
    CONNECT_MODES,
    DEFAULT_AMOUNT,
    DEFAULT_MIX,
    TXN_TYPES,
    LoadOptions,
    UsageError,
    parse_amount,
    parse_faults,
    parse_mix,
)
from sim.load.progress import ProgressDisplay
from sim.load.terminals import check_world
from sim.load.world import load_world
from sim.terminal import STAN_MAX

EXIT_COMPLETED, EXIT_CHECK_FAILED, EXIT_FAILED = 0, 1, 2


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return wrapped


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not number > 0 or (isinstance(number, float) and math.isinf(number)):
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {value!r}")
        return number
    return parse


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {value!r}")
    return number


def _stan_start(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= STAN_MAX):
        raise argparse.ArgumentTypeError(f"STAN must be from 1 to {STAN_MAX}")
    return int(value)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``load`` subcommand, added to ``posgw-sim``'s subparsers."""
    load = commands.add_parser(
        "load", help="sign on many terminals and drive them (load test with faults)",
        description="Sign on N terminals of a world (posgw demo --json) and drive them: closed loop as fast "
                    "as each can, or open loop at --rate requests/s. At the end, the reversals still owed are "
                    "sent until answered (for at most --timeout). Exit 0 when the run completed, 1 when "
                    "--check found a difference, 2 on bad usage or when no terminal could sign on.")
    load.add_argument("--host", default="127.0.0.1")
    load.add_argument("--port", type=int, default=8583)
    load.add_argument("--world", required=True, metavar="FILE",
                      help="the JSON of `posgw demo --json` (terminals, cards, billers); - for stdin")
    load.add_argument("--terminals", type=_positive(int), metavar="N",
                      help="use the first N terminals (default all)")
    load.add_argument("--duration", type=_positive(float), default=10.0, metavar="S",
                      help="seconds (default 10)")
    load.add_argument("--warmup", type=_non_negative_float, default=0.0, metavar="S",
                      help="drive the same load for S seconds first, reported apart as warmup (default 0)")
    load.add_argument("--rate", type=_positive(float), metavar="R",
                      help="open loop: R requests/s overall (default: closed loop)")
    load.add_argument("--mix", type=_argument(parse_mix), default=parse_mix(DEFAULT_MIX),
                      metavar="TYPE=W,...", help=f"weights of {', '.join(TXN_TYPES)} (default {DEFAULT_MIX})")
    load.add_argument("--connect", choices=CONNECT_MODES, default="persistent",
                      help="persistent: one connection per terminal; per-txn: a new one per transaction")
    load.add_argument("--faults", type=_argument(parse_faults), default={}, metavar="FAULT=PCT,...",
                      help="percent of requests with a fault: drop, repeat, badmac, garbage")
    load.add_argument("--amount", type=_argument(parse_amount), default=parse_amount(DEFAULT_AMOUNT),
                      metavar="YUAN[-YUAN]", help=f"purchase and bill amounts, random in the range "
                                                  f"(default {DEFAULT_AMOUNT})")
    load.add_argument("--biller", metavar="CODE",
                      help="prepaid biller for bill types (default: the world's first)")
    load.add_argument("--timeout", type=_positive(float), default=5.0, metavar="S",
                      help="per response, and for the reversals still owed at the end (default 5)")
    load.add_argument("--stan-start", type=_stan_start, metavar="N",
                      help="first STAN of every terminal (default: random per terminal)")
    load.add_argument("--batch", type=batch_number, default=1, help="open batch (60.2) of the terminals")
    load.add_argument("--seed", type=int, help="seed of the mix, fault and amount choices")
    load.add_argument("--json", action="store_true", help="print the report as one JSON object")
    load.add_argument("--out", metavar="FILE", help="also write the report as JSON to FILE")
    load.add_argument("--quiet", action="store_true", help="no live progress display")
    load.add_argument("--check", action="store_true",
                      help="after the run, compare each card's balance and each agent's float with its opening "
                           "value less what the simulator saw approved (read with posgw card/agent show); "
                           "exit 1 on any difference")
    load.add_argument("--check-command", type=_argument(parse_command), metavar="CMD",
                      help="the operator CLI --check runs (default: posgw beside this Python, else on the PATH)")
    return load


def options_from(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        host=args.host, port=args.port, terminals=args.terminals, duration_s=args.duration, rate=args.rate,
        mix=args.mix, connect=args.connect, faults=args.faults, amount_fen=args.amount, timeout_s=args.timeout,
        stan_start=args.stan_start, batch=args.batch, seed=args.seed, warmup_s=args.warmup,
    )


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [
        f"load: {report['mode']} loop, {report['connect']}, {report['terminals']} terminals, "
        f"{report['duration_s']:.1f} s",
        f"requests {report['requests']} ({report['throughput_rps']:.1f}/s), "
        f"approved {report['approved']} ({report['approved_rps']:.1f}/s)",
        "codes: " + (", ".join(f"{code} {n}" for code, n in report["by_code"].items()) or "none"),
        "latency ms: " + _latency_text(report["latency_ms"]),
    ]
    for kind, per_type in report["by_type"].items():
        lines.append(f"  {kind}: {per_type['requests']} requests, {per_type['approved']} approved, "
                     f"{_latency_text(per_type['latency_ms'])}")
    errors = {k: v for k, v in report["errors"].items() if v}
    lines.append("errors: " + (", ".join(f"{k} {v}" for k, v in errors.items()) or "none"))
    injected = {k: v for k, v in report["faults"].items() if v["injected"]}
    for name, counts in injected.items():
        details = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "percent")
        lines.append(f"fault {name}: {details}")
    reversals = report["reversals"]
    if reversals["sent"]:
        lines.append(f"reversals: {reversals['sent']} sent, {reversals['answered']} answered "
                     f"in {reversals['attempts']} attempts, {reversals['unanswered']} unanswered"
                     + (f"; {reversals['owed']} owed for a while ({reversals['slots_held']} slots held)"
                        if reversals["owed"] else ""))
    end = reversals["end_of_run"]
    if end["owed"]:
        lines.append(f"owed at the end of the run: {end['owed']} reversals, {end['sent']} sent, "
                     f"{end['answered']} answered, {end['left']} left, in {end['seconds']:.1f} s")
    warmup = report.get("warmup")
    if warmup is not None:
        lines.append(f"warm-up before the run (not counted above): {warmup['duration_s']:.1f} s, "
                     f"{warmup['requests']} requests, {warmup['approved']} approved, "
                     f"latency ms {_latency_text(warmup['latency_ms'])}, errors {warmup['errors_total']}")
    open_loop = report["open_loop"]
    if open_loop is not None:
        lines.append(f"open loop at {open_loop['rate_rps']}/s: {open_loop['scheduled']} scheduled, "
                     f"{open_loop['sent']} sent, {open_loop['late']} late, {open_loop['dropped']} dropped, "
                     f"max lag {open_loop['max_lag_ms']} ms")
    if report.get("check") is not None:
        lines += check_text(report["check"])
    return "\n".join(lines)


def _latency_text(latency: dict[str, float | None]) -> str:
    if latency["max"] is None:
        return "no answers"
    return " ".join(f"{k} {v:.1f}" for k, v in latency.items())


def main(args: argparse.Namespace) -> int:
    """Run ``posgw-sim load``; returns the exit code."""
    options = options_from(args)
    try:
        world = load_world(args.world, biller=args.biller)
        check_world(world, options)
        reader = OperatorCli(args.check_command or default_command()) if args.check else None
    except UsageError as exc:
        print(f"posgw-sim load: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    live = not args.quiet and sys.stdout.isatty()
    try:
        if live:
            with ProgressDisplay(options.duration_s) as progress:
                report = run_async(run_load(world, options, progress=progress, check=reader))
        else:
            report = run_async(run_load(world, options, check=reader))
    except UsageError as exc:
        print(f"posgw-sim load: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CheckError as exc:
        print(f"posgw-sim load: error: --check: opening balances: {exc}", file=sys.stderr)
        return EXIT_FAILED
    output = report.to_dict()
    text = json.dumps(output)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"posgw-sim load: error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    print(text if args.json else summary(output))
    if args.json and output["check"] is not None and not output["check"]["ok"]:
        print("\n".join(check_text(output["check"])), file=sys.stderr)  # each difference, for a person
    return exit_code(output)


def exit_code(report: dict[str, Any]) -> int:
    """0 for a completed run, 1 when its ``--check`` found a difference or something in doubt."""
    check = report.get("check")
    return EXIT_CHECK_FAILED if check is not None and not check["ok"] else EXIT_COMPLETED

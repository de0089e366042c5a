"""``posgw-sim``: drive one terminal exchange against a gateway from the shell.

Exit codes: 0 response 00; 1 another response code; 2 bad usage or input,
connection failure, timeout, or a response that fails its checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from protocol.codes import ResponseCode
from protocol.crypto import key_check_value
from protocol.framing import FramingError
from protocol.messages import FormatError
from sim.terminal import MAC_ALGORITHMS, KeyCheckError, Response, ResponseMacError, Terminal

EXIT_APPROVED, EXIT_DECLINED, EXIT_FAILED = 0, 1, 2
TID_LENGTH, MID_LENGTH, TMK_HEX_DIGITS = 8, 15, 32

# A handler runs one command on a terminal: the response, plus extra output keys.
Handler = Callable[[Terminal, argparse.Namespace], Awaitable[tuple[Response, dict[str, Any]]]]


async def _signon(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.sign_on(network_code=args.network_code)
    if response.response_code != ResponseCode.APPROVED or terminal.keys is None:
        return response, {}
    keys = {"pik": terminal.keys.pik, "mak": terminal.keys.mak, "tdk": terminal.keys.tdk}
    check_values = {name: key_check_value(key).hex().upper() for name, key in keys.items() if key is not None}
    return response, {"keys_checked": True, "key_check_values": check_values}


async def _echo(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    return await terminal.echo(), {}


COMMANDS: dict[str, Handler] = {"signon": _signon, "echo": _echo}


def _fixed_text(length: int, what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if len(value) != length or not (value.isascii() and value.isprintable()):
            raise argparse.ArgumentTypeError(f"{what} must be {length} printable ASCII characters")
        return value
    return parse


def _tmk(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(value) != TMK_HEX_DIGITS or len(key) * 2 != TMK_HEX_DIGITS:
        raise argparse.ArgumentTypeError(f"TMK must be {TMK_HEX_DIGITS} hex digits")
    return key


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per entry of ``COMMANDS``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1")
    common.add_argument("--port", type=int, default=8583)
    common.add_argument("--tid", required=True, type=_fixed_text(TID_LENGTH, "TID"))
    common.add_argument("--mid", required=True, type=_fixed_text(MID_LENGTH, "MID"))
    common.add_argument("--tmk", required=True, type=_tmk, help="terminal master key, 32 hex digits")
    common.add_argument("--mac", choices=tuple(MAC_ALGORITHMS), default="cup-ecb")
    common.add_argument("--json", action="store_true", help="print the response as one JSON object")
    parser = argparse.ArgumentParser(prog="posgw-sim", description="POS terminal simulator")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    signon = commands.add_parser("signon", parents=[common], help="sign on and check the working keys")
    signon.add_argument("--network-code", choices=("003", "004"), default="003")
    commands.add_parser("echo", parents=[common], help="echo test")
    return parser


def _summary(command: str, output: dict[str, Any], latency_s: float) -> str:
    code = output["response_code"]
    try:
        meaning = ResponseCode(code).name.lower().replace("_", " ")
    except ValueError:
        meaning = "unknown code"
    line = f"{command}: {output['mti']} response {code} ({meaning}) in {latency_s * 1000:.0f} ms"
    if "key_check_values" in output:
        checks = ", ".join(f"{name.upper()} {kcv}" for name, kcv in output["key_check_values"].items())
        line += f"\nkeys checked: {checks}"
    return line


async def _run(args: argparse.Namespace) -> int:
    terminal = Terminal(args.host, args.port, args.tid, args.mid, args.tmk, mac_algorithm=args.mac)
    try:
        response, extra = await COMMANDS[args.command](terminal, args)
    finally:
        await terminal.close()
    output = response.to_dict() | extra
    print(json.dumps(output) if args.json else _summary(args.command, output, response.latency_s))
    return EXIT_APPROVED if response.response_code == ResponseCode.APPROVED else EXIT_DECLINED


def _run_async(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``posgw-sim``; returns the exit code."""
    args = build_parser().parse_args(argv)
    where = f"{args.host}:{args.port}"
    try:
        return _run_async(_run(args))
    except TimeoutError:
        reason = f"no response from {where} in time"
    except OSError as exc:
        reason = f"{where}: {exc.strerror or exc}"
    except (KeyCheckError, ResponseMacError, FramingError, FormatError) as exc:
        reason = f"bad response from {where}: {exc}"
    print(f"posgw-sim {args.command}: error: {reason}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

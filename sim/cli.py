"""``posgw-sim``: drive one terminal exchange against a gateway from the shell; a chip
terminal's list downloads (``ic-download``, ``signon --follow-prompts``); a load
(``load``); the bank's answer to a payout file (``bank``).

Exit codes: 0 response 00; 1 another response code; 2 bad usage or input,
connection failure, timeout, or a response that fails its checks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from protocol import tlv
from protocol.codes import ResponseCode
from protocol.crypto import key_check_value
from protocol.framing import FramingError
from protocol.messages import FormatError
from sim import bank, counter, ic, load
from sim import biller as sim_biller
from sim.cli_support import batch_number, run_async
from sim.terminal import (
    AMOUNT_FEN_MAX,
    CURRENCY,
    MAC_ALGORITHMS,
    STAN_MAX,
    BalanceFormatError,
    KeyCheckError,
    Response,
    ResponseMacError,
    Terminal,
    balance_fen,
    bill_fields,
    build_request,
)

EXIT_APPROVED, EXIT_DECLINED, EXIT_FAILED = 0, 1, 2
TID_LENGTH, MID_LENGTH, TMK_HEX_DIGITS, RRN_LENGTH = 8, 15, 32, 12
PAN_DIGITS, PIN_DIGITS = (13, 19), (4, 12)
_YUAN = re.compile(r"[0-9]+(\.[0-9]{1,2})?")
_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")  # agents and billers
_BILL_ACCOUNT = re.compile(r"[A-Za-z0-9]{1,32}")
_DEGREES = r"-?[0-9]{1,3}(\.[0-9]+)?"
_LOCATION = re.compile(f"({_DEGREES}),({_DEGREES})")
BILL_REFERENCE_LENGTH = 32
TOKEN_GROUP = 4

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
    return await terminal.echo(stan=args.stan), {}


def _signed_on(transaction: Handler) -> Handler:
    """``transaction`` after a sign-on with the TMK under the STAN before ``--stan``.

    A declined sign-on is the command's response.
    """
    async def handler(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
        response = await terminal.sign_on(stan=_stan_before(args.stan))
        if response.response_code != ResponseCode.APPROVED:
            return response, {}
        return await transaction(terminal, args)
    return handler


async def _balance(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.balance(args.pan, args.pin, stan=args.stan)
    return response, {"balance_fen": balance_fen(response)}


async def _purchase(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.purchase(args.pan, args.pin, args.amount, stan=args.stan)
    return response, {"stan": args.stan, "batch": terminal.batch}


async def _void(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    original_batch = terminal.batch if args.orig_batch is None else args.orig_batch
    response = await terminal.void(
        args.pan, args.pin, args.amount, original_rrn=args.rrn, original_batch=original_batch,
        original_stan=args.orig_stan, original_date=args.orig_date, stan=args.stan,
    )
    return response, {}


async def _reverse(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    # The original 0200's fields that its 0400 repeats; its PIN is not among them.
    bill_data = None
    if args.biller:
        tags = {tlv.BILLER: args.biller, tlv.ACCOUNT: args.account}
        if args.reference:
            tags[tlv.REFERENCE] = args.reference
        bill_data = tlv.encode(tags)
    original = build_request(
        "0200", pan=args.pan, processing_code=args.processing_code, amount=f"{args.amount:012d}",
        stan=args.orig_stan, terminal_id=terminal.tid, merchant_id=terminal.mid, currency=CURRENCY,
        bill_data=bill_data, txn_data=f"{args.txn_type}{terminal.batch:06d}000",
    )
    return await terminal.reverse(original, reason=args.reason), {}


async def _settle(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.settle(args.debit_amount, args.debit_count, stan=args.stan)
    totals = response.message.settlement_totals
    extra = {"balanced": totals[30:31] == "1"} if totals and len(totals) > 30 else {}
    return response, extra


async def _bill_inquiry(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.bill_inquiry(args.biller, args.account, stan=args.stan, location=args.location)
    return response, {"bill": bill_fields(response), "amount_due_fen": response.message.amount_fen}


async def _bill_pay(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.bill_payment(
        args.biller, args.account, args.amount, reference=args.reference, pan=args.pan, pin=args.pin,
        stan=args.stan, location=args.location,
    )
    return response, {"bill": bill_fields(response)}


# A chip command runs a whole exchange (no MAC) and returns its report (what ``--json`` prints).
ChipHandler = Callable[[Terminal, argparse.Namespace], Awaitable[dict[str, Any]]]


async def _ic_download(terminal: Terminal, args: argparse.Namespace) -> dict[str, Any]:
    return ic.download_report(await ic.ic_download(terminal))


async def _signon_following_prompts(terminal: Terminal, args: argparse.Namespace) -> dict[str, Any]:
    followed = await ic.sign_on_following_prompts(terminal, network_code=args.network_code,
                                                  holding_nothing=args.first_day)
    return ic.prompts_report(followed)


CHIP_COMMANDS: dict[str, ChipHandler] = {
    "ic-download": _ic_download,
    "signon --follow-prompts": _signon_following_prompts,
}

COMMANDS: dict[str, Handler] = {
    "signon": _signon,
    "echo": _echo,
    "balance": _signed_on(_balance),
    "purchase": _signed_on(_purchase),
    "void": _signed_on(_void),
    "reverse": _signed_on(_reverse),
    "bill-inquiry": _signed_on(_bill_inquiry),
    "bill-pay": _signed_on(_bill_pay),
    "settle": _signed_on(_settle),
}


def _fixed_text(length: int, what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if len(value) != length or not (value.isascii() and value.isprintable()):
            raise argparse.ArgumentTypeError(f"{what} must be {length} printable ASCII characters")
        return value
    return parse


def _digits(what: str, shortest: int, longest: int | None = None) -> Callable[[str], str]:
    """A parser of ``what``, ASCII digits; its error never repeats the value (a PIN, a PAN)."""
    longest = shortest if longest is None else longest
    count = f"{shortest}" if longest == shortest else f"{shortest} to {longest}"

    def parse(value: str) -> str:
        if not (shortest <= len(value) <= longest and value.isascii() and value.isdigit()):
            raise argparse.ArgumentTypeError(f"{what} must be {count} digits")
        return value
    return parse


def _matching(pattern: re.Pattern[str], requirement: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not (value.isascii() and pattern.fullmatch(value)):
            raise argparse.ArgumentTypeError(requirement)
        return value
    return parse


def _reference(value: str) -> str:
    if not (1 <= len(value) <= BILL_REFERENCE_LENGTH and value.isascii() and value.isprintable()):
        raise argparse.ArgumentTypeError(
            f"bill reference must be 1 to {BILL_REFERENCE_LENGTH} printable ASCII characters")
    return value


def _location(value: str) -> str:
    """``LAT,LON`` in decimal degrees, latitude -90 to 90, longitude -180 to 180."""
    match = _LOCATION.fullmatch(value) if value.isascii() else None
    if match is None or abs(Decimal(match[1])) > 90 or abs(Decimal(match[3])) > 180:
        raise argparse.ArgumentTypeError("location must be LAT,LON in decimal degrees, like 31.2304,121.4737")
    return value


def _stan(value: str) -> str:
    if not (len(value) == 6 and value.isascii() and value.isdigit() and value != "000000"):
        raise argparse.ArgumentTypeError("STAN must be 6 digits, 000001 to 999999")
    return value


def _clock_stan() -> str:
    """A STAN from the clock, so that separate invocations do not collide."""
    return f"{int(time.time() * 10) % STAN_MAX + 1:06d}"


def _stan_before(stan: str) -> str:
    """The STAN a terminal counting up sent just before ``stan``."""
    return f"{(int(stan) - 2) % STAN_MAX + 1:06d}"


def _yuan(value: str, *, zero_allowed: bool = False) -> int:
    """An amount in yuan (``12``, ``12.3``, ``12.34``), more than zero, as fen."""
    if not (value.isascii() and _YUAN.fullmatch(value)):
        raise argparse.ArgumentTypeError("amount must be yuan with at most 2 decimals, like 12 or 12.34")
    fen = int(Decimal(value) * 100)
    if not (0 if zero_allowed else 1) <= fen <= AMOUNT_FEN_MAX:
        raise argparse.ArgumentTypeError(f"amount must be more than 0 and at most {AMOUNT_FEN_MAX} fen")
    return fen


def _yuan_or_zero(value: str) -> int:
    return _yuan(value, zero_allowed=True)


def _mmdd(value: str) -> str:
    if not (len(value) == 4 and value.isascii() and value.isdigit()
            and 1 <= int(value[:2]) <= 12 and 1 <= int(value[2:]) <= 31):
        raise argparse.ArgumentTypeError("date must be MMDD")
    return value


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
    common.add_argument("--batch", type=batch_number, default=1, help="open batch (60.2)")
    common.add_argument("--stan", type=_stan, default=_clock_stan(),
                        help="STAN of the request (default: from the clock); a sign-on first uses the one before")
    common.add_argument("--json", action="store_true", help="print the response as one JSON object")
    card = argparse.ArgumentParser(add_help=False)
    card.add_argument("--pan", required=True, type=_digits("PAN", *PAN_DIGITS))
    pin = argparse.ArgumentParser(add_help=False)
    pin.add_argument("--pin", required=True, type=_digits("PIN", *PIN_DIGITS))
    amount = argparse.ArgumentParser(add_help=False)
    amount.add_argument("--amount", required=True, type=_yuan, help="yuan, e.g. 12.34")
    parser = argparse.ArgumentParser(prog="posgw-sim", description="POS terminal simulator")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    signon = commands.add_parser("signon", parents=[common], help="sign on and check the working keys")
    signon.add_argument("--network-code", choices=("003", "004"), default="003")
    signon.add_argument("--follow-prompts", action="store_true",
                        help="then do what each answer's header digit asks (3 sign on, 4 download the CAPKs, "
                             "5 the AIDs) until it says 0")
    signon.add_argument("--first-day", action="store_true",
                        help="with --follow-prompts: a chip terminal holding no lists downloads both first")
    commands.add_parser("echo", parents=[common], help="echo test")
    commands.add_parser("balance", parents=[common, card, pin], help="sign on, then a balance inquiry")
    commands.add_parser("purchase", parents=[common, card, pin, amount], help="sign on, then a purchase")
    void = commands.add_parser("void", parents=[common, card, pin, amount],
                               help="sign on, then void a purchase")
    void.add_argument("--rrn", required=True, type=_fixed_text(RRN_LENGTH, "RRN"), help="the purchase's RRN")
    void.add_argument("--orig-stan", required=True, type=_stan, help="the purchase's STAN")
    void.add_argument("--orig-date", required=True, type=_mmdd,
                      help="field 13 (MMDD) of the purchase's 0210")
    void.add_argument("--orig-batch", type=batch_number, help="the purchase's batch (default: --batch)")
    reverse = commands.add_parser("reverse", parents=[common, amount],
                                  help="sign on, then reverse a request (no PIN)")
    reverse.add_argument("--pan", type=_digits("PAN", *PAN_DIGITS), help="the original's card (none: cash)")
    reverse.add_argument("--biller", metavar="CODE", help="a bill payment's biller (field 59 BL)",
                         type=_matching(_CODE, "biller code must be 1 to 16 letters, digits, _ or -"))
    reverse.add_argument("--account", metavar="ACC", help="a bill payment's account (59 AC)",
                         type=_matching(_BILL_ACCOUNT, "bill account must be 1 to 32 letters or digits"))
    reverse.add_argument("--reference", metavar="BR", type=_reference, help="a bill payment's BR (59)")
    reverse.add_argument("--orig-stan", required=True, type=_stan, help="the original's STAN")
    reverse.add_argument("--processing-code", type=_digits("processing code", 6), default="000000")
    reverse.add_argument("--txn-type", type=_digits("transaction type", 2), default="22",
                         help="the original's 60.1")
    reverse.add_argument("--reason", choices=("98", "06"), default="98", help="98 no response, 06 other")
    settle = commands.add_parser("settle", parents=[common], help="sign on, then settle the batch")
    settle.add_argument("--debit-amount", required=True, type=_yuan_or_zero, help="the batch's debits, yuan")
    settle.add_argument("--debit-count", required=True, type=int, help="the number of debits")
    bill = argparse.ArgumentParser(add_help=False)
    bill.add_argument("--biller", required=True, metavar="CODE",
                      type=_matching(_CODE, "biller code must be 1 to 16 letters, digits, _ or -"))
    bill.add_argument("--account", required=True, metavar="ACC", help="customer account or meter number",
                      type=_matching(_BILL_ACCOUNT, "bill account must be 1 to 32 letters or digits"))
    bill.add_argument("--location", metavar="LAT,LON", type=_location, help="terminal position (tag LC)")
    commands.add_parser("bill-inquiry", parents=[common, bill], help="sign on, then a bill inquiry")
    bill_pay = commands.add_parser("bill-pay", parents=[common, bill, amount],
                                   help="sign on, then pay a bill, in cash or by card (--pan and --pin)")
    bill_pay.add_argument("--reference", metavar="BR", type=_reference, help="the inquiry's bill reference")
    bill_pay.add_argument("--pan", type=_digits("PAN", *PAN_DIGITS), help="pay by this card (with --pin)")
    bill_pay.add_argument("--pin", type=_digits("PIN", *PIN_DIGITS))
    commands.add_parser("ic-download", parents=[common],
                        help="download the CAPK and AID lists as a chip terminal does (query, each entry, end)")
    load.add_parser(commands)
    bank.add_arguments(commands.add_parser(
        "bank", help="the bank simulator: answer a payout file (pain.001) with a pain.002",
        description="Read a pain.001 payout file and write the bank's pain.002 status report: every credit "
                    "transfer settled (ACSC) but those to the --reject account numbers (RJCT with --reason). "
                    "Exit 0, or 2 for a file that cannot be read or is no pain.001.001.09."))
    sim_biller.add_arguments(commands.add_parser("biller", help="an HTTP biller with its own book and faults"))
    counter.add_commands(commands)  # voucher, bill-history (sim.counter)
    return parser


def _yuan_text(fen: int) -> str:
    """Fen as yuan with 2 decimals, e.g. ``-123.45``."""
    yuan, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{yuan}.{cents:02d}"


def _fen_digits_text(value: str | None) -> str | None:
    """Fen digits (field 4, tag FB) as yuan; anything else as received."""
    if value is None or not (value.isascii() and value.isdigit()):
        return value
    return _yuan_text(int(value))


def _grouped(token: str | None) -> str | None:
    """A prepaid token in groups of 4 digits, as printed for keying into the meter."""
    if token is None:
        return None
    return " ".join(token[start : start + TOKEN_GROUP] for start in range(0, len(token), TOKEN_GROUP))


def _receipt(output: dict[str, Any]) -> str:
    """The bill slip a terminal prints: only the lines whose data the response has."""
    bill: dict[str, str] = output["bill"]
    lines = [
        ("Biller", bill.get(tlv.BILLER)),
        ("Account", bill.get(tlv.ACCOUNT)),
        ("Name", bill.get(tlv.NAME)),
        ("Period", bill.get(tlv.PERIOD)),
        ("Bill ref", bill.get(tlv.REFERENCE)),
        ("Amount", _fen_digits_text(output.get("amount"))),
        ("Receipt", bill.get(tlv.RECEIPT)),
        ("Token", _grouped(bill.get(tlv.TOKEN))),
        ("Float", _fen_digits_text(bill.get(tlv.FLOAT_BALANCE))),
    ]
    date, hhmmss = output.get("local_date"), output.get("local_time")
    if date is not None and hhmmss is not None:
        clock = f"{hhmmss[:2]}:{hhmmss[2:4]}:{hhmmss[4:]}"
        lines.append(("Date", f"{date} {clock}   Terminal {output['terminal_id']}"))
    printed = [f"{label:<8} {value}" for label, value in lines if value is not None]
    return "\n".join(["------ RECEIPT ------", *printed, "---------------------"])


def _summary(command: str, output: dict[str, Any], latency_s: float) -> str:
    code = output["response_code"]
    try:
        meaning = ResponseCode(code).name.lower().replace("_", " ")
    except ValueError:
        meaning = "unknown code"
    line = f"{command}: {output['mti']} response {code} ({meaning}) in {latency_s * 1000:.0f} ms"
    if output.get("balance_fen") is not None:
        line += f"\nbalance: {_yuan_text(output['balance_fen'])} yuan"
    if "batch" in output and code == ResponseCode.APPROVED:
        line += (f"\nstan {output['stan']} batch {output['batch']} rrn {output.get('rrn')}"
                 f" date {output.get('local_date')}")
    if "bill" in output and code == ResponseCode.APPROVED:
        line += f"\n{_receipt(output)}"
    if "key_check_values" in output:
        checks = ", ".join(f"{name.upper()} {kcv}" for name, kcv in output["key_check_values"].items())
        line += f"\nkeys checked: {checks}"
    return line


def _chip_summary(command: str, report: dict[str, Any]) -> str:
    """``ic-download``'s lists, or what ``signon --follow-prompts`` did, as text."""
    if "actions" in report:
        downloaded = ", ".join(f"{n} {which.upper()}s" for which, n in report["downloaded"].items()) or "nothing"
        return f"{command}: {' then '.join(report['actions'])}; downloaded {downloaded}"
    lines = [f"{command}: {len(report['capks'])} CAPKs ({report['queries'].get('capk', 0)} queries, "
             f"{report['downloads'].get('capk', 0)} downloads), {len(report['aids'])} AIDs "
             f"({report['queries'].get('aid', 0)} queries, {report['downloads'].get('aid', 0)} downloads)"]
    lines += [f"CAPK {c['rid']} {c['index']}  expires {c['expiry']}  {c['modulus_bits']} bits  "
              f"check sum {c['checksum']}" for c in report["capks"]]
    lines += [f"AID  {a['aid']}  {a['tlv']}" for a in report["aids"]]
    return "\n".join(lines)


async def _run_chip(args: argparse.Namespace, command: str) -> int:
    """A chip exchange: exit 0 when it went through, 1 when the host refused a step (not 00)."""
    terminal = Terminal(args.host, args.port, args.tid, args.mid, args.tmk, mac_algorithm=args.mac,
                        batch=args.batch)
    try:
        report = await CHIP_COMMANDS[command](terminal, args)
    except ic.IcExchangeError as exc:
        if exc.response_code is None:
            raise
        print(f"posgw-sim {command}: {exc}", file=sys.stderr)
        return EXIT_DECLINED
    finally:
        await terminal.close()
    print(json.dumps(report) if args.json else _chip_summary(command, report))
    return EXIT_APPROVED


def _chip_command(args: argparse.Namespace) -> str | None:
    """The ``CHIP_COMMANDS`` entry ``args`` name, if any."""
    if args.command == "signon" and args.follow_prompts:
        return "signon --follow-prompts"
    return args.command if args.command in CHIP_COMMANDS else None


async def _run(args: argparse.Namespace) -> int:
    chip_command = _chip_command(args)
    if chip_command is not None:
        return await _run_chip(args, chip_command)
    terminal = Terminal(args.host, args.port, args.tid, args.mid, args.tmk, mac_algorithm=args.mac,
                        batch=args.batch)
    try:
        response, extra = await COMMANDS[args.command](terminal, args)
    finally:
        await terminal.close()
    output = response.to_dict() | extra
    print(json.dumps(output) if args.json else _summary(args.command, output, response.latency_s))
    return EXIT_APPROVED if response.response_code == ResponseCode.APPROVED else EXIT_DECLINED


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``posgw-sim``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "load":
        return load.main(args)
    if args.command == "biller":
        return sim_biller.run(args)
    if args.command in counter.COMMANDS:
        return args.run(args)
    if args.command == "bank":
        return bank.run(args)
    if args.command == "signon" and args.first_day and not args.follow_prompts:
        parser.error("signon: --first-day goes with --follow-prompts")
    if args.command == "bill-pay" and (args.pan is None) != (args.pin is None):
        parser.error("bill-pay: --pan and --pin go together")
    if args.command == "reverse" and (args.biller is None) != (args.account is None):
        parser.error("reverse: --biller and --account go together")
    where = f"{args.host}:{args.port}"
    try:
        return run_async(_run(args))
    except TimeoutError:
        reason = f"no response from {where} in time"
    except OSError as exc:
        reason = f"{where}: {exc.strerror or exc}"
    except (KeyCheckError, ResponseMacError, BalanceFormatError, tlv.TlvError, FramingError,
            FormatError, ic.IcExchangeError) as exc:
        reason = f"bad response from {where}: {exc}"
    print(f"posgw-sim {args.command}: error: {reason}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

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

from protocol import ic_lists, tlv
from protocol.codes import ResponseCode
from protocol.crypto import key_check_value
from protocol.framing import FramingError
from protocol.messages import FormatError, Message, decode_message
from sim import bank, counter, ic, load
from sim import biller as sim_biller
from sim.cli_support import batch_number, run_async
from sim.journal import ADVICE_KINDS, COUNTS, Entry, Journal, JournalError, kept_request
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
AUTH_CODE_LENGTH = 6
ADVICE_TRIES = 3  # an advice sent at most this many times per command, then kept in the journal
_STATUS = re.compile(r"[0-9]{2}=[01](,[0-9]{2}=[01])*")

# A handler runs one command on a terminal: the response, plus extra output keys.
Handler = Callable[[Terminal, argparse.Namespace], Awaitable[tuple[Response, dict[str, Any]]]]


async def _signon(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.sign_on(network_code=args.network_code, stan=args.stan)
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
        response = await terminal.sign_on(stan=args.signon_stan or _stan_before(args.stan))
        if response.response_code != ResponseCode.APPROVED:
            return response, {}
        await _resend_advices(terminal, args.journal_state)
        return await transaction(terminal, args)
    return handler


async def _resend_advices(terminal: Terminal, journal: Journal) -> None:
    """The advices the journal holds unanswered, sent again (same STAN and content) before the
    command's own request, as a terminal does; those still unanswered stay."""
    for entry in journal.pending_advices():
        assert entry.request_hex is not None
        try:
            response = await terminal.send_advice(decode_message(bytes.fromhex(entry.request_hex)),
                                                  tries=ADVICE_TRIES)
        except (TimeoutError, ConnectionError):
            return
        entry.answered = True
        if response.response_code == ResponseCode.APPROVED:
            entry.rrn, entry.date = response.message.rrn, response.message.local_date
        else:  # declined after all: the terminal no longer holds it as done
            journal.entries.remove(entry)


def _record(args: argparse.Namespace, terminal: Terminal, response: Response, kind: str, pan: str,
            amount_fen: int, **details: Any) -> dict[str, Any]:
    """An approved transaction into the journal; the output's ``stan``, ``batch`` (and auth code)."""
    message = response.message
    request = terminal.last_request
    if response.response_code == ResponseCode.APPROVED and request is not None:
        args.journal_state.add(Entry(
            kind, terminal.batch, args.stan, pan, amount_fen, request.txn_type or "", rrn=message.rrn,
            date=message.local_date, request_hex=kept_request(request, advice=kind in ADVICE_KINDS), **details))
    return {"stan": args.stan, "batch": terminal.batch} | (
        {"auth_code": message.auth_id} if message.auth_id else {})


async def _advice(terminal: Terminal, args: argparse.Namespace, request: Message, kind: str,
                  **details: Any) -> tuple[Response, dict[str, Any]]:
    """An advice (0220) sent until answered, at most ``--tries`` times; still unanswered, the
    journal keeps it (sent again before the next command, counted and uploaded by ``settle``)."""
    try:
        response = await terminal.send_advice(request, tries=args.tries)
    except (TimeoutError, ConnectionError):
        journal: Journal = args.journal_state
        if journal.path is not None:
            journal.add(Entry(kind, terminal.batch, args.stan, request.pan or "", request.amount_fen or 0,
                              request.txn_type or "", answered=False,
                              request_hex=kept_request(request, advice=True), **details))
            journal.save()
        raise
    return response, _record(args, terminal, response, kind, request.pan or "", request.amount_fen or 0, **details)


async def _refund(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    request = terminal.refund_request(
        args.pan, args.amount, original_rrn=args.rrn, original_date=args.orig_date,
        original_batch=args.orig_batch or 0, original_stan=args.orig_stan or "000000", pin=args.pin,
        stan=args.stan)
    return await _advice(terminal, args, request, "refund")


async def _preauth(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.preauth(args.pan, args.pin, args.amount, stan=args.stan)
    return response, _record(args, terminal, response, "preauth", args.pan, args.amount,
                             auth_code=response.message.auth_id)


async def _preauth_cancel(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.preauth_cancel(args.pan, args.amount, auth_code=args.auth_code,
                                             original_date=args.orig_date, pin=args.pin, stan=args.stan)
    return response, _record(args, terminal, response, "cancel", args.pan, args.amount, auth_code=args.auth_code)


async def _complete(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    request = terminal.completion_request(args.pan, args.amount, auth_code=args.auth_code,
                                          original_date=args.orig_date, pin=args.pin, advice=args.advice,
                                          stan=args.stan)
    if args.advice:
        return await _advice(terminal, args, request, "completion_advice", auth_code=args.auth_code)
    response = await terminal.send(request)
    return response, _record(args, terminal, response, "completion", args.pan, args.amount,
                             auth_code=args.auth_code)


async def _complete_void(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.completion_void(
        args.pan, args.amount, original_rrn=args.rrn, original_batch=terminal.batch if args.orig_batch is None
        else args.orig_batch, original_stan=args.orig_stan, original_date=args.orig_date,
        auth_code=args.auth_code, pin=args.pin, stan=args.stan)
    return response, _record(args, terminal, response, "completion_void", args.pan, args.amount,
                             auth_code=args.auth_code, original_stan=args.orig_stan)


async def _status_upload(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    """0820 status upload (60.3 362): the devices' states (WIRE.md 9.5); no keys, no MAC."""
    status = dict(pair.split("=") for pair in args.status.split(","))
    request = build_request("0820", stan=args.stan, terminal_id=terminal.tid, merchant_id=terminal.mid,
                            txn_data=f"00{terminal.batch:06d}{ic_lists.STATUS_UPLOAD}",
                            key_data=ic_lists.encode_status(status))
    return await terminal.exchange(request, mac=False), {"status": status}


async def _balance(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.balance(args.pan, args.pin, stan=args.stan)
    return response, {"balance_fen": balance_fen(response)}


async def _purchase(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.purchase(args.pan, args.pin, args.amount, stan=args.stan)
    return response, _record(args, terminal, response, "purchase", args.pan, args.amount)


async def _void(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    original_batch = terminal.batch if args.orig_batch is None else args.orig_batch
    response = await terminal.void(
        args.pan, args.pin, args.amount, original_rrn=args.rrn, original_batch=original_batch,
        original_stan=args.orig_stan, original_date=args.orig_date, stan=args.stan,
    )
    return response, _record(args, terminal, response, "void", args.pan, args.amount, original_stan=args.orig_stan)


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
    journal: Journal = args.journal_state
    kept = journal.request_of(terminal.batch, args.orig_stan, args.txn_type)
    if kept is not None:  # the journal's copy also has the 25, 38 and 61 a version 2 reversal repeats
        original = kept
        original.amount = f"{args.amount:012d}"
    response = await terminal.reverse(original, reason=args.reason)
    if response.response_code == ResponseCode.APPROVED:
        journal.mark_reversed(terminal.batch, args.orig_stan, args.txn_type)
    return response, {}


async def _settle(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    """The 0500 with the totals given, else the journal's counted ``--count`` way; when the answer
    says out of balance, the batch upload of what the journal holds (records, advice copies, end)."""
    journal: Journal = args.journal_state
    batch = terminal.batch
    counted = journal.totals(batch, args.count)
    response = await terminal.settle(
        counted.debit_fen if args.debit_amount is None else args.debit_amount,
        counted.debit_count if args.debit_count is None else args.debit_count,
        credit_fen=counted.credit_fen if args.credit_amount is None else args.credit_amount,
        credit_count=counted.credit_count if args.credit_count is None else args.credit_count, stan=args.stan)
    totals = response.message.settlement_totals
    extra: dict[str, Any] = {"balanced": totals[30:31] == "1"} if totals and len(totals) > 30 else {}
    if response.response_code != ResponseCode.APPROVED:
        return response, extra
    if extra.get("balanced") is False:
        extra["upload"] = await _batch_upload(terminal, journal, batch)
    journal.settled(batch, terminal.batch)
    return response, extra


async def _batch_upload(terminal: Terminal, journal: Journal, batch: int) -> dict[str, Any]:
    """WIRE.md 9.4: the records, the copies of the advices, then the end with their number."""
    record_messages, advices = journal.upload(batch)
    sent = 0
    for records in record_messages:
        answer = await terminal.upload_records(batch, records)
        _upload_answered(answer, "records")
        sent += len(records)
    for advice in advices:
        assert advice.request_hex is not None
        _upload_answered(await terminal.upload_advice_copy(decode_message(bytes.fromhex(advice.request_hex))),
                         "an advice copy")
        sent += 1
    end = await terminal.upload_end(batch, sent)
    _upload_answered(end, "the end")
    received = end.message.settlement_totals
    return {"records": sent - len(advices), "advice_copies": len(advices),
            "received": int(received) if received and received.isdigit() else None}


def _upload_answered(response: Response, what: str) -> None:
    if response.response_code != ResponseCode.APPROVED:
        raise UploadError(f"batch upload: {what} answered {response.response_code}")


async def _bill_inquiry(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.bill_inquiry(args.biller, args.account, stan=args.stan, location=args.location)
    return response, {"bill": bill_fields(response), "amount_due_fen": response.message.amount_fen}


async def _bill_pay(terminal: Terminal, args: argparse.Namespace) -> tuple[Response, dict[str, Any]]:
    response = await terminal.bill_payment(
        args.biller, args.account, args.amount, reference=args.reference, pan=args.pan, pin=args.pin,
        stan=args.stan, location=args.location,
    )
    _record(args, terminal, response, "bill", args.pan or "", args.amount)
    return response, {"bill": bill_fields(response)}


class UploadError(Exception):
    """A batch upload message was not answered 00."""


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
    "refund": _signed_on(_refund),
    "preauth": _signed_on(_preauth),
    "preauth-cancel": _signed_on(_preauth_cancel),
    "complete": _signed_on(_complete),
    "complete-void": _signed_on(_complete_void),
    "status-upload": _status_upload,
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


def _count(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError("count must be a whole number")
    return int(value)


def _status(value: str) -> str:
    if not (value.isascii() and _STATUS.fullmatch(value)):
        raise argparse.ArgumentTypeError("status must be TAG=VALUE pairs like 01=1,03=0 (tags 2 digits, values 0/1)")
    return value


def _add_version_2_parsers(commands: Any, common: argparse.ArgumentParser, card: argparse.ArgumentParser,
                           pin: argparse.ArgumentParser, amount: argparse.ArgumentParser) -> None:
    """The commands of WIRE.md 9.1: refund, the pre-authorization family, the status upload."""
    optional_pin = argparse.ArgumentParser(add_help=False)
    optional_pin.add_argument("--pin", type=_digits("PIN", *PIN_DIGITS), help="the PIN (optional here)")
    tries = argparse.ArgumentParser(add_help=False)
    tries.add_argument("--tries", type=int, choices=range(1, 10), default=ADVICE_TRIES, metavar="N",
                       help=f"send the advice at most N times while unanswered (default {ADVICE_TRIES})")
    naming = argparse.ArgumentParser(add_help=False)
    naming.add_argument("--auth-code", required=True, type=_fixed_text(AUTH_CODE_LENGTH, "auth code"),
                        help="the pre-authorization's auth code (38)")
    naming.add_argument("--orig-date", required=True, type=_mmdd, help="field 13 (MMDD) of its 0110")
    refund = commands.add_parser("refund", parents=[common, card, amount, optional_pin, tries],
                                 help="sign on, then refund (0220) part or all of a purchase or completion")
    refund.add_argument("--rrn", required=True, type=_fixed_text(RRN_LENGTH, "RRN"), help="the original's RRN")
    refund.add_argument("--orig-date", required=True, type=_mmdd, help="field 13 (MMDD) of the original's answer")
    refund.add_argument("--orig-batch", type=batch_number, help="the original's batch (default: zeros)")
    refund.add_argument("--orig-stan", type=_stan, help="the original's STAN (default: zeros)")
    commands.add_parser("preauth", parents=[common, card, pin, amount],
                        help="sign on, then a pre-authorization (0100): a hold on the card")
    commands.add_parser("preauth-cancel", parents=[common, card, amount, optional_pin, naming],
                        help="sign on, then cancel a pre-authorization (its whole amount)")
    complete = commands.add_parser("complete", parents=[common, card, amount, optional_pin, naming, tries],
                                   help="sign on, then complete a pre-authorization (0200; --advice: 0220)")
    complete.add_argument("--advice", action="store_true",
                          help="a completion advice (0220, no PIN), sent again until answered")
    complete_void = commands.add_parser("complete-void", parents=[common, card, amount, optional_pin],
                                        help="sign on, then void a completion")
    complete_void.add_argument("--rrn", required=True, type=_fixed_text(RRN_LENGTH, "RRN"),
                               help="the completion's RRN")
    complete_void.add_argument("--orig-stan", required=True, type=_stan, help="the completion's STAN")
    complete_void.add_argument("--orig-date", required=True, type=_mmdd, help="field 13 (MMDD) of its 0210")
    complete_void.add_argument("--orig-batch", type=batch_number, help="the completion's batch (default: --batch)")
    complete_void.add_argument("--auth-code", required=True, type=_fixed_text(AUTH_CODE_LENGTH, "auth code"),
                               help="the pre-authorization's auth code")
    status = commands.add_parser("status-upload", parents=[common],
                                 help="upload the devices' status (0820, 362): 01 keyboard, 02 PIN pad, "
                                      "03 reader, 04 printer, 05 screen; 1 working, 0 not")
    status.add_argument("--status", required=True, type=_status, metavar="TAG=V,...",
                        help="e.g. 01=1,02=1,03=1,04=0,05=1")


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
    common.add_argument("--batch", type=batch_number, help="open batch (60.2; default: the journal's, else 1)")
    common.add_argument("--stan", type=_stan,
                        help="STAN of the request (default: the journal's next, else from the clock); a sign-on "
                             "first uses the one before")
    common.add_argument("--journal", metavar="FILE",
                        help="the terminal's batch journal: its batch, STAN and approved transactions, kept "
                             "between commands (settle counts and uploads from it); holds card numbers")
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
    settle = commands.add_parser("settle", parents=[common],
                                 help="sign on, then settle the batch; out of balance, upload it (batch upload)")
    settle.add_argument("--count", choices=COUNTS, default="gross",
                        help="how the journal's totals count a voided purchase: gross (it stays a debit, its "
                             "void a credit) or v1 (both left out)")
    settle.add_argument("--debit-amount", type=_yuan_or_zero, help="the batch's debits, yuan (default: counted)")
    settle.add_argument("--debit-count", type=_count, help="the number of debits (default: counted)")
    settle.add_argument("--credit-amount", type=_yuan_or_zero, help="the batch's credits, yuan (default: counted)")
    settle.add_argument("--credit-count", type=_count, help="the number of credits (default: counted)")
    _add_version_2_parsers(commands, common, card, pin, amount)
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
        if output.get("auth_code"):
            line += f" auth code {output['auth_code']}"
    if "bill" in output and code == ResponseCode.APPROVED:
        line += f"\n{_receipt(output)}"
    totals = output.get("settlement_totals")
    if output["mti"] == "0510" and totals and len(totals) > 30 and totals[:30].isdigit():
        line += (f"\nhost's totals: debits {_yuan_text(int(totals[:12]))} ({int(totals[12:15])}), "
                 f"credits {_yuan_text(int(totals[15:27]))} ({int(totals[27:30])})")
    if "upload" in output:
        upload = output["upload"]
        line += (f"\nout of balance: batch upload of {upload['records']} records and {upload['advice_copies']} "
                 f"advice copies, {upload['received']} received")
    elif "balanced" in output:
        line += f"\n{'balanced' if output['balanced'] else 'out of balance'}"
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
                        batch=args.batch, last_stan=int(args.stan) - 1)
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


def _resolve_terminal_state(args: argparse.Namespace) -> Journal:
    """The journal of ``--journal`` (or one in memory), and from it the batch and the STANs that
    ``--batch`` and ``--stan`` leave open: with a journal, the sign-on and the request take its
    next two STANs; without, the STAN comes from the clock."""
    journal = Journal.open(args.journal)
    if args.batch is None:
        args.batch = journal.batch
    args.signon_stan = None
    if args.stan is None and args.journal is not None:
        args.signon_stan = journal.next_stan()
        args.stan = journal.next_stan()
    elif args.stan is None:
        args.stan = _clock_stan()
    args.journal_state = journal
    return journal


async def _run(args: argparse.Namespace) -> int:
    journal = _resolve_terminal_state(args)
    chip_command = _chip_command(args)
    if chip_command is not None:
        return await _run_chip(args, chip_command)
    terminal = Terminal(args.host, args.port, args.tid, args.mid, args.tmk, mac_algorithm=args.mac,
                        batch=args.batch, last_stan=int(args.stan))
    try:
        response, extra = await COMMANDS[args.command](terminal, args)
    finally:
        await terminal.close()
        if journal.path is not None:
            journal.last_stan = max(journal.last_stan, terminal.last_stan)
            journal.batch = terminal.batch
            journal.save()
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
    if args.command == "complete" and args.pin is None and not args.advice:
        parser.error("complete: a completion request needs --pin (an --advice carries none)")
    where = f"{args.host}:{args.port}"
    try:
        return run_async(_run(args))
    except JournalError as exc:
        print(f"posgw-sim {args.command}: error: journal {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TimeoutError:
        reason = f"no response from {where} in time"
    except OSError as exc:
        reason = f"{where}: {exc.strerror or exc}"
    except (KeyCheckError, ResponseMacError, BalanceFormatError, tlv.TlvError, FramingError,
            FormatError, ic.IcExchangeError, UploadError) as exc:
        reason = f"bad response from {where}: {exc}"
    print(f"posgw-sim {args.command}: error: {reason}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

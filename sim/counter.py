"""The agent's counter at a simulated terminal (WIRE.md 9.7): a prepaid voucher
sale (充值卡) and a bill history inquiry, and the receipts a terminal prints
for them: the voucher's serial and PIN on the voucher receipt, as a terminal
prints them for the customer, who redeems the voucher with the utility.

``posgw-sim voucher`` and ``posgw-sim bill-history`` (``add_commands``)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from protocol import tlv
from sim.terminal import CURRENCY, Response, Terminal, bill_fields, build_request

VOUCHER_SALE = ("520000", "42")  # field 3, 60.1
BILL_HISTORY = ("390000", "43")
NETWORK_CODE = "000"
HISTORY_ENTRY_CHARS = 20
STATUS_NAMES = {"PD": "paid", "OP": "open"}
COMMANDS = ("voucher", "bill-history")  # what add_commands adds


def _request(terminal: Terminal, codes: tuple[str, str], bill_data: str, amount_fen: int | None = None,
             stan: str | None = None) -> Any:
    processing_code, txn_type = codes
    return build_request(
        "0200", processing_code=processing_code, stan=stan or terminal.next_stan(), terminal_id=terminal.tid,
        merchant_id=terminal.mid, currency=CURRENCY, amount=None if amount_fen is None else f"{amount_fen:012d}",
        txn_data=f"{txn_type}{terminal.batch:06d}{NETWORK_CODE}", bill_data=bill_data)


async def voucher_sale(terminal: Terminal, biller: str, amount_fen: int, *, stan: str | None = None) -> Response:
    """0200 prepaid voucher sale of a face value ``amount_fen``, paid in cash (59: BL)."""
    return await terminal.send(_request(terminal, VOUCHER_SALE, tlv.encode({tlv.BILLER: biller}), amount_fen, stan))


async def bill_history(terminal: Terminal, biller: str, account: str, *, stan: str | None = None) -> Response:
    """0200 bill history inquiry (59: BL, AC)."""
    return await terminal.send(_request(terminal, BILL_HISTORY,
                                        tlv.encode({tlv.BILLER: biller, tlv.ACCOUNT: account}), stan=stan))


def history_entries(value: str) -> list[dict[str, Any]]:
    """Tag HS as entries: ``period``, ``amount_fen``, ``status`` (``paid``/``open``)."""
    if len(value) % HISTORY_ENTRY_CHARS:
        raise ValueError(f"HS of {len(value)} characters is not entries of {HISTORY_ENTRY_CHARS}")
    return [{"period": value[i:i + 6], "amount_fen": int(value[i + 6:i + 18]),
             "status": STATUS_NAMES.get(value[i + 18:i + 20], value[i + 18:i + 20])}
            for i in range(0, len(value), HISTORY_ENTRY_CHARS)]


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _grouped(digits: str) -> str:
    return " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def voucher_receipt(response: Response, amount_fen: int) -> str:
    """The receipt a terminal prints for an approved voucher sale (the customer's copy):
    biller, face value, serial and PIN (grouped by four, as printed), receipt number."""
    message, fields = response.message, bill_fields(response)
    if message.response_code != "00":
        return f"VOUCHER SALE DECLINED  {message.response_code}"
    lines = ["充值卡 PREPAID VOUCHER", f"TERMINAL {message.terminal_id}  MERCHANT {message.merchant_id}",
             f"BILLER   {fields.get(tlv.BILLER, '')}", f"VALUE    CNY {_yuan(amount_fen)}",
             f"SERIAL   {_grouped(fields.get(tlv.VOUCHER_SERIAL, ''))}",
             f"PIN      {_grouped(fields.get(tlv.VOUCHER_PIN, ''))}",
             f"RECEIPT  {fields.get(tlv.RECEIPT, '')}  AUTH {message.auth_id or ''}",
             f"DATE     {message.local_date or ''} {message.local_time or ''}",
             "Call the utility to load this voucher onto your meter."]
    if tlv.FLOAT_BALANCE in fields:
        lines.append(f"(agent float after: CNY {_yuan(int(fields[tlv.FLOAT_BALANCE]))})")
    return "\n".join(lines)


def history_receipt(response: Response) -> str:
    """The slip a terminal prints for a bill history: the account, then one line per entry."""
    message, fields = response.message, bill_fields(response)
    if message.response_code != "00":
        return f"BILL HISTORY DECLINED  {message.response_code}"
    lines = ["BILL HISTORY", f"BILLER   {fields.get(tlv.BILLER, '')}", f"ACCOUNT  {fields.get(tlv.ACCOUNT, '')}",
             f"NAME     {fields.get(tlv.NAME, '')}"]
    entries = history_entries(fields.get(tlv.HISTORY, ""))
    lines += [f"{e['period'][:4]}-{e['period'][4:]}  CNY {_yuan(e['amount_fen']):>12}  {e['status']}"
              for e in entries] or ["(no entries)"]
    return "\n".join(lines)


# -- posgw-sim voucher / bill-history -------------------------------------------------


def _clock_stan() -> str:
    """A STAN from the clock (tenths of a second), so that runs one after another do not repeat one."""
    return f"{int(time.time() * 10) % 999_999 + 1:06d}"


def _terminal(args: argparse.Namespace) -> Terminal:
    return Terminal(args.host, args.port, args.tid, args.mid, bytes.fromhex(args.tmk), batch=args.batch)


async def _signed_on(args: argparse.Namespace) -> Terminal:
    args.stan = args.stan or _clock_stan()
    terminal = _terminal(args)
    signed = await terminal.sign_on()
    if signed.response_code != "00":
        await terminal.close()
        raise SystemExit(f"sign-on answered {signed.response_code}")
    return terminal


async def _run_voucher(args: argparse.Namespace) -> int:
    amount_fen = round(float(args.amount) * 100)
    terminal = await _signed_on(args)
    try:
        response = await voucher_sale(terminal, args.biller, amount_fen, stan=args.stan)
    finally:
        await terminal.close()
    print(voucher_receipt(response, amount_fen))
    return 0 if response.response_code == "00" else 1


async def _run_history(args: argparse.Namespace) -> int:
    terminal = await _signed_on(args)
    try:
        response = await bill_history(terminal, args.biller, args.account, stan=args.stan)
    finally:
        await terminal.close()
    print(history_receipt(response))
    return 0 if response.response_code == "00" else 1


def _terminal_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8583)
    p.add_argument("--tid", required=True)
    p.add_argument("--mid", required=True)
    p.add_argument("--tmk", required=True, help="the terminal master key, 32 hex digits")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--stan", default=None, help="the request's STAN (default: from the clock, as a terminal counts)")


def add_commands(commands: Any) -> None:
    """``voucher`` and ``bill-history``, each run by ``args.run(args)`` (an exit code)."""
    p = commands.add_parser("voucher", help="sell a prepaid voucher and print its receipt (serial and PIN)")
    _terminal_arguments(p)
    p.add_argument("--biller", required=True)
    p.add_argument("--amount", required=True, help="the face value, yuan")
    p.set_defaults(run=lambda args: asyncio.run(_run_voucher(args)))
    p = commands.add_parser("bill-history", help="ask an account's bill history and print it")
    _terminal_arguments(p)
    p.add_argument("--biller", required=True)
    p.add_argument("--account", required=True)
    p.set_defaults(run=lambda args: asyncio.run(_run_history(args)))

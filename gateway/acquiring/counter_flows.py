"""The agent's counter (WIRE.md 9.7, 9.9): prepaid voucher sales (充值卡) paid in
cash from the agent's float, and the bill history inquiry (``HS``).

A voucher's serial (12 digits) and PIN (16 digits) come from the system's
CSPRNG. The PIN is kept only as a keyed hash (``SoftHsm.voucher_pin_hash``); the
sale's stored answer, which repeats must get byte for byte, holds it under the
LMK (``voucher_pin_lmk``), and ``reveal_voucher_pin`` puts it back into the
answer's field 59 when the response is made. It is never logged."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gateway.acquiring.bill_flows import check_answer_fits, connector_call
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.operations import BillInquiry, VoucherRecord, VoucherSale
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.recording import finish, risk_check
from gateway.acquiring.steps import require
from gateway.keys import SoftHsm
from gateway.upstream.billers import Biller
from ledger.postings import Transfer
from protocol import answers, tlv

SERIAL_DIGITS = 12
PIN_DIGITS = 16
PIN_LMK = "voucher_pin_lmk"  # the stored answer's PIN, under the LMK (hex)
_CARD_FIELDS = ("pan", "track2", "pin_block")


def new_serial() -> str:
    return f"{secrets.randbelow(10**SERIAL_DIGITS):0{SERIAL_DIGITS}d}"


def new_pin() -> str:
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"


# -- voucher sale --------------------------------------------------------------------


async def check_voucher_format(txn: Transaction, svc: Services) -> None:
    """Field 59 is well-formed TLV with BL (30); a card field (2, 35, 52) in a voucher sale: 30 (9.9)."""
    request = txn.request
    require(request, "processing_code", "bill_data")
    for name in _CARD_FIELDS:
        if request.has(name):
            raise Decline(Outcome.FORMAT_ERROR, f"a voucher sale carries no {name}")
    try:
        fields = tlv.decode(request.bill_data)
    except tlv.TlvError as exc:
        raise Decline(Outcome.FORMAT_ERROR, f"field 59: {exc}") from None
    if not fields.get(tlv.BILLER):
        raise Decline(Outcome.FORMAT_ERROR, f"field 59 lacks {tlv.BILLER}")
    txn.bill_fields = fields


async def check_voucher_biller(txn: Transaction, svc: Services) -> None:
    """A biller that is not prepaid or has no face values: 12 (9.9)."""
    biller = txn.ctx.biller
    if biller is None:
        raise Decline(Outcome.BILLER_UNKNOWN, f"unknown biller {txn.bill_fields[tlv.BILLER]}")
    if not biller.prepaid or not biller.voucher_values_fen:
        raise Decline(Outcome.BILLER_UNKNOWN, f"biller {biller.code} sells no vouchers")


async def check_face_value(txn: Transaction, svc: Services) -> None:
    """Field 4 is one of the biller's voucher face values (else 13)."""
    amount = txn.request.amount_fen
    if not amount or amount not in txn.ctx.biller.voucher_values_fen:
        raise Decline(Outcome.AMOUNT_INVALID, f"{amount} fen is not a face value of {txn.ctx.biller.code}")


async def sell_voucher(txn: Transaction, svc: Services) -> None:
    """Record the sale (51 when the float is short): the float to the biller, the
    commission to the agent; the answer's 59 is BL, RN, FB, VS and VP."""
    biller, terminal, amount = txn.ctx.biller, txn.terminal_record, txn.request.amount_fen
    receipt, serial, pin = await svc.rrns.next(), new_serial(), new_pin()
    commission = biller.commission_fen(amount)
    transfers = [Transfer(terminal.agent_float_account_id, biller.account_id, amount, "voucher_sale")]
    if commission:
        transfers.append(Transfer(biller.account_id, terminal.agent_commission_account_id, commission,
                                  "voucher_commission"))
    voucher = VoucherRecord(biller_code=biller.code, receipt=receipt, commission_fen=commission,
                            agent_code=terminal.agent_code, float_account_id=terminal.agent_float_account_id,
                            serial=serial, pin_hash=svc.hsm.voucher_pin_hash(serial, pin),
                            sold_at=txn.now.isoformat(), sold_on=txn.now.date().isoformat())
    tags = {tlv.BILLER: biller.code, tlv.RECEIPT: receipt, tlv.VOUCHER_SERIAL: serial}
    approval = {"bill_tlv": tags, PIN_LMK: svc.hsm.encrypt_voucher_pin(serial, pin).hex()}
    await finish(txn, svc, VoucherSale, rrn=receipt, transfers=tuple(transfers), voucher=voucher,
                 approval=approval, risk=risk_check(txn), position=txn.position)


def reveal_voucher_pin(answer: dict[str, Any], hsm: SoftHsm) -> dict[str, Any]:
    """A recorded answer as sent: a voucher sale's PIN, kept under the LMK, back
    in its field 59 as VP (any other answer as it is)."""
    if PIN_LMK not in answer:
        return answer
    revealed = {name: value for name, value in answer.items() if name != PIN_LMK}
    tags = dict(revealed["bill_tlv"])
    serial = tags[tlv.VOUCHER_SERIAL]
    tags[tlv.VOUCHER_PIN] = hsm.decrypt_voucher_pin(serial, bytes.fromhex(answer[PIN_LMK]))
    revealed["bill_tlv"] = tags
    return revealed


# -- bill history --------------------------------------------------------------------


async def bill_history(txn: Transaction, svc: Services) -> None:
    """BL, AC, NM and HS: up to 12 entries, newest first (9.7, 9.9). A built-in
    postpaid biller: the account's bills (the bill's amount, PD or OP); a prepaid
    biller: the meter's standing payments through this gateway (the month paid,
    the amount, PD). A biller with a connector names the account (25 unknown, 91)
    and its entries are the payments made here. No entries: HS000."""
    biller, account = txn.ctx.biller, txn.bill_fields[tlv.ACCOUNT]
    name, entries = await history_entries(svc.pool, biller, account, svc.settings.tz)
    if name is None:
        info = await connector_call(svc, svc.connectors[biller].inquire(biller, account))
        name = info.name
    tags = {tlv.BILLER: biller.code, tlv.ACCOUNT: account, tlv.NAME: name,
            tlv.HISTORY: answers.bill_history(entries)}
    check_answer_fits(tags)
    await finish(txn, svc, BillInquiry, approval={"bill_tlv": tags})


async def history_entries(pool: asyncpg.Pool, biller: Biller, account: str, tz: ZoneInfo
                          ) -> tuple[str | None, list[tuple[str, int, str]]]:
    """The account's name (None when the biller's connector must name it) and its
    entries, newest first; an account a built-in biller does not know: 25."""
    limit = answers.HISTORY_ENTRIES_MAX
    name: str | None = None
    if biller.connector == "builtin" and not biller.prepaid:
        rows = await pool.fetch(
            """SELECT name, period, amount_fen, status FROM bills WHERE biller_code = $1 AND account = $2
                ORDER BY period DESC, id DESC LIMIT $3""", biller.code, account, limit)
        if not rows:
            raise Decline(Outcome.BILL_NOT_FOUND, f"no bills for account {account}")
        return rows[0]["name"], [(r["period"], r["amount_fen"],
                                  answers.HISTORY_PAID if r["status"] == "paid" else answers.HISTORY_OPEN)
                                 for r in rows]
    if biller.connector == "builtin":
        name = await pool.fetchval("SELECT name FROM meters WHERE biller_code = $1 AND meter = $2",
                                   biller.code, account)
        if name is None:
            raise Decline(Outcome.BILL_NOT_FOUND, f"meter {account} is not registered")
    rows = await pool.fetch(
        """SELECT created_at, amount_fen FROM gw_transactions
            WHERE biller_code = $1 AND bill_account = $2 AND kind = 'bill_payment' AND status = 'approved'
            ORDER BY created_at DESC, id DESC LIMIT $3""", biller.code, account, limit)
    return name, [(_month(r["created_at"], tz), r["amount_fen"], answers.HISTORY_PAID) for r in rows]


def _month(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y%m")

"""Network management: sign-on with working-key download, sign-off, echo."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from gateway.acquiring.context import Services, Transaction
from gateway.domain.registry import end_working_keys, store_working_keys, touch_terminal
from gateway.keys import IssuedKeys

KEY_COUNT_BY_NETWORK_CODE = {"003": 2, "004": 3}  # PIK+MAK, PIK+MAK+TDK


def next_midnight(now: datetime) -> datetime:
    """Working keys expire at the next midnight of the gateway's local day."""
    return datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=now.tzinfo)


def issue_working_keys(txn: Transaction, svc: Services) -> IssuedKeys:
    """New working keys for the terminal, as many as its network code asks
    (003: PIK+MAK, 004: PIK+MAK+TDK), each under its TMK with its check value
    in the reply's key data (field 62)."""
    keys = svc.hsm.issue_working_keys(txn.terminal_record.tmk_lmk,
                                      KEY_COUNT_BY_NETWORK_CODE[txn.request.network_code])
    txn.reply["key_data"] = b"".join(
        wrapped + check for wrapped, check in zip(keys.under_tmk, keys.check_values)
    )
    return keys


async def sign_on(txn: Transaction, svc: Services) -> None:
    keys = issue_working_keys(txn, svc)
    await store_working_keys(svc.pool, txn.terminal_record.tid, keys.under_lmk, next_midnight(txn.now))


async def sign_off(txn: Transaction, svc: Services) -> None:
    await end_working_keys(svc.pool, txn.terminal_record.tid)


async def echo(txn: Transaction, svc: Services) -> None:
    await touch_terminal(svc.pool, txn.terminal_record.tid)

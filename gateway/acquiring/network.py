"""Network management: sign-on with working-key download, sign-off, echo."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from gateway.acquiring.context import Services, Transaction
from gateway.domain.registry import end_working_keys, store_working_keys, touch_terminal

KEY_COUNT_BY_NETWORK_CODE = {"003": 2, "004": 3}  # PIK+MAK, PIK+MAK+TDK


def next_midnight(now: datetime) -> datetime:
    """Working keys expire at the next midnight of the gateway's local day."""
    return datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=now.tzinfo)


async def sign_on(txn: Transaction, svc: Services) -> None:
    terminal = txn.terminal_record
    count = KEY_COUNT_BY_NETWORK_CODE[txn.request.network_code]
    keys = svc.hsm.issue_working_keys(terminal.tmk_lmk, count)
    await store_working_keys(svc.pool, terminal.tid, keys.under_lmk, next_midnight(txn.now))
    txn.reply["key_data"] = b"".join(
        wrapped + check for wrapped, check in zip(keys.under_tmk, keys.check_values)
    )


async def sign_off(txn: Transaction, svc: Services) -> None:
    await end_working_keys(svc.pool, txn.terminal_record.tid)


async def echo(txn: Transaction, svc: Services) -> None:
    await touch_terminal(svc.pool, txn.terminal_record.tid)

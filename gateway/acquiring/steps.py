"""Pipeline steps shared by every transaction: each does one check and either
returns or raises ``Decline`` (WIRE.md section 8, order of checks)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import structlog

from gateway import metrics
from gateway.acquiring.context import Services, StaleContext, Transaction
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.domain.registry import count_mac_failure, reset_mac_failures
from protocol.messages import Message

log = structlog.get_logger("posgw.security")

Step = Callable[[Transaction, Services], Awaitable[None]]


def require(request: Message, *names: str) -> None:
    """Each field named is present (30)."""
    for name in names:
        if not request.has(name):
            raise Decline(Outcome.FORMAT_ERROR, f"{name} missing")


async def identify_terminal(txn: Transaction, svc: Services) -> None:
    """The terminal is registered (97)."""
    txn.terminal = await svc.store.load_terminal(txn.request.terminal_id)
    if txn.terminal is None:
        raise Decline(Outcome.TERMINAL_UNKNOWN, "terminal not registered")


async def check_merchant(txn: Transaction, svc: Services) -> None:
    """Field 42 is the terminal's merchant (03); a terminal bound to no merchant skips it (WIRE.md 9.9)."""
    terminal = txn.terminal_record
    if terminal.bound and txn.request.merchant_id != terminal.mid:
        raise Decline(Outcome.MERCHANT_MISMATCH, "merchant id does not match the terminal")


async def check_bound(txn: Transaction, svc: Services) -> None:
    """The terminal is bound to a merchant: an unbound one's financial requests get 58 (WIRE.md 9.9)."""
    if not txn.terminal_record.bound:
        raise Decline(Outcome.NOT_PERMITTED, "terminal bound to no merchant")


async def check_keys_current(txn: Transaction, svc: Services) -> None:
    """The terminal signed on today (77)."""
    if not txn.terminal_record.keys_current(txn.now):
        raise Decline(Outcome.KEYS_NOT_CURRENT, "no current working keys")


async def verify_mac(txn: Transaction, svc: Services) -> None:
    """Field 64 is present and right under the terminal's MAK (A0)."""
    terminal = txn.terminal_record
    received = txn.request.mac
    if received is None or not hmac.compare_digest(
            svc.hsm.mac(terminal.mak_lmk, terminal.mac_algorithm, txn.request.mac_input), received):
        if txn.context is not None and txn.context.cached:  # the cached key may be an old one
            raise StaleContext("MAC does not verify under the cached key")
        freeze_after = svc.settings.mac_failures_freeze_after
        if await count_mac_failure(svc.pool, terminal.tid, freeze_after):
            metrics.TERMINALS_FROZEN_FOR_MAC.inc()
            log.warning("security_alert", alert="terminal_frozen_for_mac_failures", tid=terminal.tid,
                        failures_in_a_row=freeze_after)
        raise Decline(Outcome.MAC_INVALID, "MAC missing" if received is None else "MAC does not verify")
    txn.mac_verified = True
    if terminal.mac_failures:
        await reset_mac_failures(svc.pool, terminal.tid)


async def check_not_frozen(txn: Transaction, svc: Services) -> None:
    """Terminal, merchant and agent are active (58)."""
    if txn.terminal_record.frozen:
        raise Decline(Outcome.FROZEN, "terminal, merchant or agent frozen")

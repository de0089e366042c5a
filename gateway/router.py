"""Which pipeline a request takes, by MTI, processing code, 60.1 and 60.3."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import network, steps
from gateway.context import Services, Transaction
from gateway.outcomes import Decline, Outcome
from protocol.messages import Message

Step = Callable[[Transaction, Services], Awaitable[None]]

FINANCIAL_MTIS = frozenset({"0200", "0400", "0500"})
KNOWN_MTIS = frozenset({"0800", "0820"}) | FINANCIAL_MTIS


async def unknown_transaction(txn: Transaction, svc: Services) -> None:
    raise Decline(Outcome.UNKNOWN_TRANSACTION, "unknown message type or code")


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    steps: tuple[Step, ...]


_WHO = (steps.identify_terminal, steps.check_merchant)
_KEYED = _WHO + (steps.check_keys_current, steps.verify_mac)

SIGN_ON = Route("signon", _WHO + (steps.check_not_frozen, network.sign_on))
SIGN_OFF = Route("signoff", _WHO + (steps.check_not_frozen, network.sign_off))
ECHO = Route("echo", _WHO + (steps.check_not_frozen, network.echo))
UNKNOWN = Route("unknown", _WHO + (unknown_transaction,))
FINANCIAL = Route("financial", _KEYED + (steps.not_yet_supported,))


def route(request: Message) -> Route:
    mti, network_code = request.mti, request.network_code
    if mti == "0800":
        if request.txn_type == "00" and network_code in network.KEY_COUNT_BY_NETWORK_CODE:
            return SIGN_ON
        return UNKNOWN
    if mti == "0820" and request.txn_type == "00":
        if network_code == "002":
            return SIGN_OFF
        if network_code == "301":
            return ECHO
        return UNKNOWN
    if mti in FINANCIAL_MTIS:
        return FINANCIAL
    return UNKNOWN

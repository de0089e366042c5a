"""What a pipeline step sees: the transaction in progress and the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.acquiring.context_cache import ContextCache
from gateway.acquiring.operations import TxnKey
from gateway.acquiring.rrn import RrnAllocator
from gateway.acquiring.store import RequestContext, TransactionStore
from gateway.domain.registry import TerminalRecord
from gateway.domain.vocabulary import Kind
from gateway.keys import SoftHsm
from gateway.settings import Settings
from gateway.upstream.billers import Connectors
from protocol.framing import Frame
from protocol.messages import Message


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    hsm: SoftHsm
    rrns: RrnAllocator
    fee_account_id: int
    connectors: Connectors
    risk_defaults: dict[str, int]
    contexts: ContextCache  # terminals and cards as last read (gateway.acquiring.context_cache)
    store: TransactionStore  # reads contexts and terminals, records outcomes (gateway.acquiring.store)


@dataclass(slots=True)
class Transaction:
    frame: Frame
    request: Message
    now: datetime  # gateway local time (settings.timezone)
    kind: Kind = Kind.UNKNOWN  # its route (and its name in logs, metrics and gw_transactions)
    terminal: TerminalRecord | None = None
    mac_verified: bool = False
    reply: dict[str, Any] = field(default_factory=dict)  # extra response fields on approval, by name
    # Financial requests:
    key: TxnKey | None = None
    pan: str | None = None
    pan_hash: bytes | None = None  # the keyed hash the card is found by, computed once
    bill_fields: dict[str, str] | None = None  # field 59, decoded
    context: RequestContext | None = None
    recordable: bool = False  # past the repeat look-up: a storable answer is recorded under the key
    pin_result: str | None = None  # "wrong", or "ok" when a right PIN restarts a count of wrong ones
    answer: dict[str, Any] | None = None  # the response fields decided and recorded (stored answer)
    risk_limits: dict[str, int] | None = None  # effective limits, when the risk rules are on
    risk_rule: str | None = None  # the risk rule that declined it
    position: tuple[float, float] | None = None  # where the terminal is (reported LC or registered)
    recording_sent: bool = False  # its outcome left for the database: it may be recorded
    cache_allowed: bool = True  # its context may come from the cache (not when it runs again: StaleContext)
    found_original: Any = None  # the original a version 2 request names, as found (refund_flows)

    @property
    def terminal_record(self) -> TerminalRecord:
        assert self.terminal is not None, "the terminal must be identified first"
        return self.terminal

    @property
    def ctx(self) -> RequestContext:
        assert self.context is not None, "load_context must run first"
        return self.context

    def start_over(self) -> None:
        """Forget what the steps found, to run them again on a freshly read context."""
        fresh = Transaction(self.frame, self.request, self.now, self.kind, cache_allowed=False)
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))


class StaleContext(Exception):
    """The cached records a request was checked against have changed, or its MAC
    does not verify under the cached key: run the checks again on a fresh read
    (gateway.acquiring.context_cache)."""


class Answered(Exception):
    """The transaction's answer is decided and recorded (``txn.answer``): stop the pipeline."""

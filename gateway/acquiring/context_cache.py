"""Terminals and cards as this process last read them, so that a purchase or
a balance inquiry on a known terminal and card needs no read before its
checks: one round trip to the database (its recording) instead of two.

Each record is kept with its row versions (``xmin`` of its rows). A request
checked against cached records sends those versions with its outcome, and
``gw_finish_many`` records nothing for it when a row has changed since (on
this gateway or any other sharing the database): the request is then checked
again on a fresh read (``StaleContext``). A decline found against cached
records is never given either: the checks run again on a fresh read, so every
answer other than an approval comes from what the database holds now, and an
approval is only recorded if the records it was checked against are current.

With the risk rules on, a terminal is kept with its merchant's and its own
limit overrides (their version is part of the terminal's), and the rules
that need history, which every approval changes (the card's last position
for travel, the terminal's counts for spike), are decided by the recording
(``gw_risk_recheck``): a request either would decline is sent back for a
fresh read like a stale one, and declined there.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from gateway.acquiring.store import RequestContext
from gateway.domain.cards import CardRecord
from gateway.domain.registry import TerminalRecord

T = TypeVar("T")


class _Bounded(Generic[T]):
    """At most ``size`` entries; when full, the one stored longest ago goes."""

    __slots__ = ("size", "entries")

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[object, tuple[T, str]] = {}

    def get(self, key: object) -> tuple[T, str] | None:
        return self.entries.get(key)

    def put(self, key: object, record: T, version: str) -> None:
        self.entries.pop(key, None)
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = (record, version)

    def drop(self, key: object) -> None:
        self.entries.pop(key, None)


class ContextCache:
    """Terminals by terminal id and cards by PAN hash, each with its versions;
    ``size`` 0 keeps nothing (every request reads its context)."""

    def __init__(self, size: int) -> None:
        self.enabled = size > 0
        # a terminal, with its merchant's and its own risk limit overrides (None: none read)
        self.terminals: _Bounded[tuple[TerminalRecord, dict[str, int] | None, dict[str, int] | None]] = \
            _Bounded(size)
        self.cards: _Bounded[CardRecord] = _Bounded(size)

    def context(self, tid: str, pan_hash: bytes | None) -> RequestContext | None:
        """A context for a new request on this terminal and card, from the
        cache, or None when either is not cached."""
        if not self.enabled or pan_hash is None:
            return None
        terminal, card = self.terminals.get(tid), self.cards.get(pan_hash)
        if terminal is None or card is None:
            return None
        (record, merchant_limits, terminal_limits), version = terminal
        return RequestContext(record, None, card[0], None, None, False, merchant_limits, terminal_limits, None,
                              terminal_version=version, card_version=card[1], cached=True)

    def keep(self, context: RequestContext, pan_hash: bytes | None) -> None:
        """Remember a freshly read context's terminal and card."""
        if not self.enabled:
            return
        self.terminals.put(context.terminal.tid,
                           (context.terminal, context.merchant_limits, context.terminal_limits),
                           context.terminal_version)
        if context.card is not None and pan_hash is not None and context.card_version is not None:
            self.cards.put(pan_hash, context.card, context.card_version)

    def forget(self, tid: str, pan_hash: bytes | None) -> None:
        """Drop a terminal and a card (a row changed, or may have)."""
        self.terminals.drop(tid)
        if pan_hash is not None:
            self.cards.drop(pan_hash)

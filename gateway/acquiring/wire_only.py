"""A benchmark baseline (``posgw serve --wire-only``): the gateway's whole wire
path (TCP, framing, codec, response building, logs, metrics) answering
sign-on and echo for terminals read into memory once at start, without a
database round trip per request. Everything else is answered 12. It shows
what the wire costs on its own, so a benchmark of the real thing means
something on a noisy machine. Never run it in production."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from gateway.acquiring import steps
from gateway.acquiring.context import Services, Transaction
from gateway.acquiring.network import issue_working_keys
from gateway.acquiring.outcomes import Decline, Outcome
from gateway.acquiring.router import Route, unknown_transaction
from gateway.domain.registry import TERMINAL_COLUMNS, TERMINAL_JOINS, TerminalRecord, terminal_from_row
from gateway.domain.vocabulary import Kind
from protocol.messages import Message


async def load_terminals(pool: asyncpg.Pool) -> dict[str, TerminalRecord]:
    rows = await pool.fetch(f"SELECT {TERMINAL_COLUMNS}{TERMINAL_JOINS}")
    return {row["tid"]: terminal_from_row(row) for row in rows}


def wire_only_router(terminals: dict[str, TerminalRecord]) -> Callable[[Message], Route]:
    async def identify(txn: Transaction, svc: Services) -> None:
        txn.terminal = terminals.get(txn.request.terminal_id)
        if txn.terminal is None:
            raise Decline(Outcome.TERMINAL_UNKNOWN, "terminal not registered")

    async def sign_on(txn: Transaction, svc: Services) -> None:
        """Keys issued, not stored."""
        issue_working_keys(txn, svc)

    async def echo(txn: Transaction, svc: Services) -> None:
        """Answered from memory."""

    who = (identify, steps.check_merchant)
    routes = {("0800", "003"): Route(Kind.SIGN_ON, who + (sign_on,)),
              ("0800", "004"): Route(Kind.SIGN_ON, who + (sign_on,)),
              ("0820", "301"): Route(Kind.ECHO, who + (echo,))}
    unknown = Route(Kind.UNKNOWN, who + (unknown_transaction,))

    def route(request: Message) -> Route:
        return routes.get((request.mti, request.network_code), unknown)

    return route

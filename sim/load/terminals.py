"""The terminals of a load: each with its keys, STAN counter, request templates and
connection; chosen from the world and signed on."""

from __future__ import annotations

import asyncio
import hmac
import random
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from protocol import tlv
from protocol.crypto import encrypt_pin_block
from protocol.framing import FramingError
from protocol.messages import SECURITY_CONTROL
from sim.load.connection import Connection
from sim.load.family import FAMILY_TYPES, Family
from sim.load.frames import RequestTemplate, ResponseView
from sim.load.money import CARD, FLOAT, OwedReversal, Payer
from sim.load.options import UNMACCED_TYPES, LoadOptions, UsageError
from sim.load.world import CardSpec, TerminalSpec, World
from sim.terminal import (
    CURRENCY,
    ENTRY_MODE_READ,
    MAC_ALGORITHMS,
    STAN_MAX,
    KeyCheckError,
    ResponseMacError,
    Terminal,
    build_request,
)

SIGNON_CONCURRENCY = 64


class LoadTerminal:
    """One terminal of the load: its keys, STAN counter, templates and connection."""

    def __init__(self, spec: TerminalSpec, cards: Sequence[CardSpec], meters: Sequence[str],
                 biller: str | None, options: LoadOptions, stan_start: int) -> None:
        self.spec = spec
        self.cards = tuple(cards)
        self.meters = tuple(meters)
        self.biller = biller
        self.options = options
        self.terminal = Terminal(options.host, options.port, spec.tid, spec.mid, spec.tmk,
                                 mac_algorithm=spec.mac_algorithm, batch=options.batch,
                                 timeout_s=options.timeout_s)
        self._stan = (stan_start - 2) % STAN_MAX + 1  # the STAN before the first
        self._mac_of: Callable[[bytes], bytes] | None = None
        self._templates: dict[tuple[str, int], RequestTemplate] = {}
        self._pin_blocks: dict[int, bytes] = {}
        self._turn = 0
        self.connection: Connection | None = None
        self.owed: list[OwedReversal] = []  # reversals not answered yet, oldest first
        self.family = Family()  # its refundable purchases and open pre-authorizations

    def next_stan(self) -> int:
        self._stan = self._stan % STAN_MAX + 1
        return self._stan

    async def sign_on(self) -> str:
        """Sign on (on a connection of its own, closed after); the response code."""
        try:
            response = await self.terminal.sign_on(stan=f"{self.next_stan():06d}")
        finally:
            await self.terminal.close()
        if response.response_code == "00" and self.terminal.keys is not None:
            self._mac_of = partial(MAC_ALGORITHMS[self.spec.mac_algorithm], self.terminal.keys.mak)
            self._templates.clear()
            self._pin_blocks.clear()
        return response.response_code

    @property
    def mac_of(self) -> Callable[[bytes], bytes]:
        if self._mac_of is None:
            raise RuntimeError("not signed on")
        return self._mac_of

    def _pin_block(self, index: int) -> bytes:
        block = self._pin_blocks.get(index)
        if block is None:
            assert self.terminal.keys is not None
            card = self.cards[index]
            block = self._pin_blocks[index] = encrypt_pin_block(self.terminal.keys.pik, card.pin, card.pan)
        return block

    def _pool(self, kind: str) -> Sequence[Any]:
        """What requests of ``kind`` take in turn: cards, meters, or nothing (echo)."""
        return () if kind == "echo" else self.meters if kind.startswith("bill") else self.cards

    def card_in_turn(self) -> CardSpec:
        """The next card, taken in turn with the templates' cards."""
        self._turn += 1
        return self.cards[self._turn % len(self.cards)]

    def template(self, kind: str) -> RequestTemplate:
        """The template of the next request of ``kind``: cards and meters are taken in turn."""
        self._turn += 1
        pool = self._pool(kind)
        return self._template(kind, self._turn % len(pool) if pool else 0)

    def _template(self, kind: str, index: int) -> RequestTemplate:
        key = (kind, index)
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = RequestTemplate.of(self._request(kind, index),
                                                               macced=kind not in UNMACCED_TYPES,
                                                               payer=self._payer(kind, index))
        return found

    def _payer(self, kind: str, index: int) -> Payer | None:
        """Whose money a request of ``kind`` moves: the card of a purchase, the agent's float of a
        (cash) bill payment; None for the others."""
        if kind == "purchase":
            return CARD, self.cards[index].pan
        if kind == "bill-pay":
            return FLOAT, self.spec.agent
        return None

    def prepare(self, kinds: Iterable[str]) -> None:
        """Encode every template the run can take for ``kinds`` now, before the clock
        starts: building one costs more than a request from it, and a short run
        would otherwise build most of them on the clock, on the CPU the gateway
        under test shares. (A sign-on during the run clears them; they are then
        built again as needed.)"""
        for kind in kinds:
            if kind in FAMILY_TYPES:
                continue  # built whole per request
            for index in range(len(self._pool(kind)) or 1):
                self._template(kind, index)

    def _request(self, kind: str, index: int) -> Any:
        common = {"stan": "000000", "terminal_id": self.spec.tid, "merchant_id": self.spec.mid,
                  "currency": CURRENCY}
        batch = f"{self.options.batch:06d}"
        if kind == "echo":
            return build_request("0820", stan="000000", terminal_id=self.spec.tid, merchant_id=self.spec.mid,
                                 txn_data=f"00{batch}301")
        if kind in ("purchase", "balance"):
            card = self.cards[index]
            card_fields = {"pan": card.pan, "expiry": card.expiry, "entry_mode": ENTRY_MODE_READ,
                           "condition_code": "00", "pin_block": self._pin_block(index),
                           "security_control": SECURITY_CONTROL}
            if kind == "purchase":
                return build_request("0200", processing_code="000000", amount="0" * 12,
                                     txn_data=f"22{batch}000", **common, **card_fields)
            return build_request("0200", processing_code="310000", txn_data=f"01{batch}000",
                                 **common, **card_fields)
        assert self.biller is not None
        bill_data = tlv.encode({tlv.BILLER: self.biller, tlv.ACCOUNT: self.meters[index]})
        if kind == "bill-pay":
            return build_request("0200", processing_code="500000", amount="0" * 12, bill_data=bill_data,
                                 txn_data=f"41{batch}000", **common)
        return build_request("0200", processing_code="380000", bill_data=bill_data,
                             txn_data=f"40{batch}000", **common)

    async def open_connection(self) -> Connection:
        """The persistent connection (opened if need be), or a new one for ``per-txn``."""
        if self.options.connect == "persistent":
            if self.connection is None or self.connection.closed:
                self.connection = await Connection.open(self.options.host, self.options.port,
                                                        self.options.timeout_s)
            return self.connection
        return await Connection.open(self.options.host, self.options.port, self.options.timeout_s)

    def done_with(self, connection: Connection, *, broken: bool = False) -> None:
        """After a transaction: close a per-txn connection; forget a broken one."""
        if broken:
            connection.abort()
            if connection is self.connection:
                self.connection = None
        elif connection is not self.connection:
            connection.close()

    def verify_mac(self, view: ResponseView) -> bool:
        assert view.mac is not None
        return hmac.compare_digest(self.mac_of(view.mac_input), view.mac)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


async def sign_on_all(terminals: list[LoadTerminal], *, concurrency: int = SIGNON_CONCURRENCY,
                      on_done: Callable[[], None] | None = None) -> tuple[list[LoadTerminal], dict[str, Any]]:
    """Sign every terminal on, a bounded number at once; those that made it, and a summary."""
    gate = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}

    async def one(terminal: LoadTerminal) -> bool:
        async with gate:
            try:
                code = await terminal.sign_on()
                reason = None if code == "00" else f"response {code}"
            except TimeoutError:
                reason = "timeout"
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
            except (KeyCheckError, ResponseMacError, FramingError, ValueError) as exc:
                reason = type(exc).__name__
        if reason is not None:
            failures[reason] = failures.get(reason, 0) + 1
        if on_done is not None:
            on_done()
        return reason is None

    results = await asyncio.gather(*(one(t) for t in terminals))
    signed_on = [t for t, ok in zip(terminals, results) if ok]
    return signed_on, {"terminals": len(terminals), "signed_on": len(signed_on),
                       "failed": len(terminals) - len(signed_on), "failures": failures}


def check_world(world: World, options: LoadOptions) -> int:
    """The number of terminals to use; ``UsageError`` if the world cannot carry the mix."""
    count = len(world.terminals) if options.terminals is None else options.terminals
    if count < 1:
        raise UsageError("--terminals must be at least 1")
    if count > len(world.terminals):
        raise UsageError(f"--terminals {count}: the world has {len(world.terminals)} terminals")
    if any(kind in options.mix for kind in ("purchase", "balance", "refund", "preauth")) and not world.cards:
        raise UsageError("the mix has card transactions but the world has no cards")
    if any(kind in options.mix for kind in ("bill-pay", "bill-inquiry")) and not world.meters:
        raise UsageError("the mix has bill payments but the world has no prepaid biller with meters")
    return count


def make_terminals(world: World, options: LoadOptions, count: int) -> list[LoadTerminal]:
    starts = random.SystemRandom()  # not --seed: runs against one database must not reuse STANs
    return [
        LoadTerminal(spec, world.cards_for(index, count), world.meters_for(index, count), world.biller, options,
                     starts.randint(1, STAN_MAX) if options.stan_start is None else options.stan_start)
        for index, spec in enumerate(world.terminals[:count])
    ]
